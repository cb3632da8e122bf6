"""Placeholder: filled in by the encoder work."""
