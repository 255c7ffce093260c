"""Test session set-up: the thread environment before torch and polars load (models/runtime.py)."""

import models  # noqa: F401
