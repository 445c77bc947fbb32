"""Distributed training on MXNet's parameter server: kvstore helpers, the guards against hangs, the launcher."""
