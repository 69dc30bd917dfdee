"""Measurement tools — timing and accuracy — each small and device-aware, none convolution-aware."""
