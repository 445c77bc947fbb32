"""Inference: finding and loading weights, the detector and its class list, predictors for images, and exported
or quantized models loaded back."""
