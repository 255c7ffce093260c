"""Pure PyTorch models and meta-learners (no Dagster imports)."""

from models.runtime import configure_environment

# Before torch or polars load (they read part of their setup from the environment then).
configure_environment()
