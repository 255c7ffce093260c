"""Where the pipeline reads raw data and keeps its state, set from the environment in one place."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from pipelines.store import LineageStore

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_home() -> Path:
    """PAML_HOME, or `.paml/` in the repository."""
    return Path(os.environ.get("PAML_HOME", REPO_ROOT / ".paml")).resolve()


def default_data_dir() -> Path:
    """PAML_DATA_DIR, or `<PAML_HOME>/data` (where nothing real lives until a user puts it there)."""
    return Path(os.environ.get("PAML_DATA_DIR", default_home() / "data")).resolve()


class PamlResource(dg.ConfigurableResource):
    """Paths of the state directory (DuckDB, artifacts, reports) and the raw data directory."""

    home: str
    data_dir: str

    @property
    def home_path(self) -> Path:
        return Path(self.home)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def store(self) -> LineageStore:
        """The DuckDB lineage store under `home`."""
        return LineageStore(self.home_path)


def paml_resource(home: Path | None = None, data_dir: Path | None = None) -> PamlResource:
    """A PamlResource from explicit paths or the environment."""
    return PamlResource(home=str(home or default_home()), data_dir=str(data_dir or default_data_dir()))
