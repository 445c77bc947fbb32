"""gluon-yolo3: a YOLOv3 detector for MXNet/Gluon built from registered, swappable parts."""
__version__ = "0.1.0"
