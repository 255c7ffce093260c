"""Pipeline steps: pure functions over frames and tensors, each with a thin Dagster asset."""
