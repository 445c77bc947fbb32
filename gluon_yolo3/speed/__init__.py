"""Speed on this machine: convolution FLOPs, inference latency and training throughput."""
