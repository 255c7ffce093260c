"""The Dagster resource that hands every step its paths (pipelines/locations.py) and its store."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from pipelines.locations import default_data_dir, default_home, default_shards
from pipelines.store import LineageStore


class PamlResource(dg.ConfigurableResource):
    """Paths of the state directory (DuckDB, artifacts, reports) and the raw data directory;
    how many user shards taobao's data steps cut the log into (0: none, the whole log in memory)."""

    home: str
    data_dir: str
    shards: int = 0
    _counts_before: dict = PrivateAttr(default_factory=dict)

    @property
    def home_path(self) -> Path:
        return Path(self.home)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Steps that load a model rebuild its network, which fits the fold-ins' item sides: keep
        # them in the home so a step run on its own reads them instead (models/factors.py).
        from assets.compressed import keep_copies_in
        from models.kept_fits import fit_counts, keep_fits_in

        keep_fits_in(self.home_path / "fits")
        keep_copies_in(self.home_path)  # compressed raw files' text, beside the rest of this home's state
        self._counts_before = fit_counts()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        from assets.compressed import keep_copies_in
        from models.kept_fits import fit_counts, keep_fits_in

        keep_fits_in(None)
        keep_copies_in(None)
        counts = {k: v - self._counts_before.get(k, 0) for k, v in fit_counts().items()}
        if any(counts.values()) and context.log is not None:  # shows the store at work: read, not refitted
            context.log.info(f"fold-in item sides this run: {counts['fitted']} fitted, {counts['loaded']} read from "
                             f"{self.home_path / 'fits'}, {counts['reused']} reused in memory")

    def store(self) -> LineageStore:
        """The DuckDB lineage store under `home`."""
        return LineageStore(self.home_path)

    def scratch(self, run_id: str, step: str) -> Path:
        """An empty directory for the files one step of one run writes before the store adopts
        them (`Bundle.scratch`, deleted once stored). No run reads another's: what a killed run
        leaves under `home/scratch/` can be deleted whenever no run is going."""
        path = self.home_path / "scratch" / f"{step}-{run_id}"  # flat: nothing is left behind once it is removed
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


def paml_resource(home: Path | None = None, data_dir: Path | None = None, shards: int | None = None) -> PamlResource:
    """A PamlResource from explicit paths or the environment."""
    return PamlResource(home=str(home or default_home()), data_dir=str(data_dir or default_data_dir()),
                        shards=default_shards() if shards is None else shards)
