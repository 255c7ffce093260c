"""Benchmarks (`make bench`); importing `models` first sets the thread environment (models/runtime.py)."""

import models  # noqa: F401
