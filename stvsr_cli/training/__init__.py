"""stvsr train: data, the training loop, export."""
