"""Inference engines: uint8 NHWC batches in, float32 probabilities out."""
