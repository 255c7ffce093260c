"""Pure PyTorch models and meta-learners (no Dagster imports)."""
