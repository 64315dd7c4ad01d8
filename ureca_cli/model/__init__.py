"""The URECA model (placeholder docstring, being written)."""
