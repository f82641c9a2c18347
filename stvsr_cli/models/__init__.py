"""Architectures (one file each), the registry and the loader."""
