"""Importers of other frameworks' models: Darknet cfg/weights, GluonCV YOLOv3 parameters."""
