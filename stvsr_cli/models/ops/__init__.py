"""Operators shared by architectures (deformable convolution)."""
