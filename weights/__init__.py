"""Package data: the model registry (registry.toml) and the small weights we ship."""
