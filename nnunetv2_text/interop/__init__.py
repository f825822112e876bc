"""Interoperability with other text-promptable segmentation models (VoxTell)."""
