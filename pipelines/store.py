"""The DuckDB lineage store: artifacts, lineage edges, runs, rejected rows, checks.

DuckDB allows one writer process and then no other reader, so every operation opens a
short connection, retries lock errors with backoff, and closes at once. An artifact's
files are written (content-addressed, atomically renamed) before its rows are
committed; rows are the source of truth, so a killed run leaves at worst an unused
directory and never a row that points at missing data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import duckdb
import polars as pl

from assets.bundle import Bundle, SourceFile

LOCK_RETRY_SECONDS = 120.0
LOCK_BACKOFF_START = 0.05

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, job_name VARCHAR, first_write_at TIMESTAMP,
    last_write_at TIMESTAMP, n_artifacts BIGINT);
CREATE TABLE IF NOT EXISTS artifacts (
    artifact_id VARCHAR PRIMARY KEY, seq BIGINT, run_id VARCHAR, asset_key VARCHAR,
    partition VARCHAR, kind VARCHAR, code_version VARCHAR, content_hash VARCHAR,
    location VARCHAR, n_rows BIGINT, n_bytes BIGINT, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS lineage_edges (
    artifact_id VARCHAR, input_artifact_id VARCHAR, PRIMARY KEY (artifact_id, input_artifact_id));
CREATE TABLE IF NOT EXISTS checks (
    run_id VARCHAR, asset_key VARCHAR, partition VARCHAR, check_name VARCHAR,
    expectation VARCHAR, column_name VARCHAR, success BOOLEAN, unexpected_count BIGINT,
    details VARCHAR, checked_at TIMESTAMP);
"""


# Views for SQL users, over the tables the `report` asset writes (same numbers as the report).
VIEWS = {
    "table1": "SELECT dataset, item, ours, paper FROM report_table1",
    "table2": "SELECT dataset, method, metric, mean, sd, n_seeds, best, significant, paper_mean, paper_sd FROM report_table2",
    "table3": "SELECT dataset, method, mean_major, sd_major, mean_minor, sd_minor, p_value FROM report_table3",
    "table4": "SELECT dataset, variant, mean_major, sd_major, mean_minor, sd_minor, p_value FROM report_table4",
}


class PartitionNotBuiltError(LookupError):
    """Raised when an asset partition is loaded that no run has materialized."""


@dataclass(frozen=True)
class ArtifactRow:
    """One stored materialization."""

    artifact_id: str
    asset_key: str
    partition: str
    content_hash: str
    location: str


def is_lock_error(error: Exception) -> bool:
    """True for DuckDB's 'another process holds the file' errors."""
    text = str(error)
    return "lock" in text.lower() and ("Could not set lock" in text or "Conflicting lock" in text)


@contextlib.contextmanager
def connect(path: Path, *, read_only: bool = False, retry_seconds: float = LOCK_RETRY_SECONDS) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open `path`, retrying while another process holds the lock; always close."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline, delay = time.monotonic() + retry_seconds, LOCK_BACKOFF_START
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.Error as error:
            if not is_lock_error(error) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        yield con
    finally:
        con.close()


class LineageStore:
    """Artifacts on disk under `home`, their rows in `home/paml.duckdb`."""

    def __init__(self, home: Path):
        self.home = Path(home)
        self.db_path = self.home / "paml.duckdb"
        self.snapshot_path = self.home / "paml-snapshot.duckdb"
        self.artifact_root = self.home / "artifacts"
        with connect(self.db_path) as con:
            con.execute(SCHEMA)

    # -- writing -----------------------------------------------------------------
    def write_files(self, bundle: Bundle, asset_key: str, partition: str) -> tuple[Path, int]:
        """Write the bundle's files to a content-addressed directory; return (dir, bytes)."""
        digest = bundle.content_hash()
        target = self.artifact_root / asset_key / (partition or "_") / digest[:24]
        if not (target / "info.json").is_file():
            staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
            (staging / "frames").mkdir(parents=True)
            for name, frame in bundle.frames.items():
                frame.write_parquet(staging / "frames" / f"{name}.parquet")
            if bundle.tensors:
                from safetensors.torch import save_file

                save_file({k: v.contiguous() for k, v in bundle.tensors.items()}, str(staging / "tensors.safetensors"))
            sources = [s.__dict__ for s in bundle.sources]
            (staging / "info.json").write_text(json.dumps({"info": bundle.info, "sources": sources}, indent=1, default=str))
            if target.exists():  # a half-written directory from a killed run
                shutil.rmtree(target)
            os.replace(staging, target)
        size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
        return target, size

    def record(
        self, bundle: Bundle, *, run_id: str, job_name: str, asset_key: str, partition: str,
        code_version: str | None, inputs: list[str], mirrors: dict[str, pl.DataFrame],
    ) -> ArtifactRow:
        """Write files, then in one transaction: the run, the artifact, its edges, mirrored tables."""
        location, size = self.write_files(bundle, asset_key, partition)
        digest = bundle.content_hash()
        artifact_id = hashlib.sha256(f"{run_id}|{asset_key}|{partition}".encode()).hexdigest()[:20]
        with connect(self.db_path) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(
                    "INSERT INTO runs VALUES (?, ?, now(), now(), 0) ON CONFLICT (run_id) DO NOTHING",
                    [run_id, job_name],
                )
                con.execute("DELETE FROM lineage_edges WHERE artifact_id = ?", [artifact_id])
                con.execute("DELETE FROM artifacts WHERE artifact_id = ?", [artifact_id])
                con.execute(
                    "INSERT INTO artifacts SELECT ?, coalesce(max(seq), 0) + 1, ?, ?, ?, 'bundle', ?, ?, ?, ?, ?, now() FROM artifacts",
                    [artifact_id, run_id, asset_key, partition, code_version, digest, str(location), bundle.row_count(), size],
                )
                for source in bundle.sources:
                    source_id = self._record_source(con, source, partition)
                    con.execute("INSERT INTO lineage_edges VALUES (?, ?) ON CONFLICT DO NOTHING", [artifact_id, source_id])
                for input_id in sorted(set(inputs)):
                    con.execute("INSERT INTO lineage_edges VALUES (?, ?) ON CONFLICT DO NOTHING", [artifact_id, input_id])
                for table, frame in mirrors.items():
                    self._mirror(con, table, frame, asset_key, partition, artifact_id)
                self._refresh_views(con, set(mirrors))
                con.execute(
                    "UPDATE runs SET last_write_at = now(), n_artifacts = n_artifacts + 1 WHERE run_id = ?", [run_id]
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            self._refresh_snapshot(con)
        return ArtifactRow(artifact_id, asset_key, partition, digest, str(location))

    @staticmethod
    def _record_source(con: duckdb.DuckDBPyConnection, source: SourceFile, partition: str) -> str:
        """Register a raw input file as an artifact of kind 'raw_file' (once per content)."""
        source_id = f"raw:{source.sha256[:24]}"
        con.execute(
            "INSERT INTO artifacts SELECT ?, coalesce(max(seq), 0) + 1, NULL, 'raw_file', ?, 'raw_file', NULL, ?, ?, NULL, ?, now() "
            "FROM artifacts ON CONFLICT (artifact_id) DO NOTHING",
            [source_id, partition, source.sha256, source.path, source.bytes],
        )
        return source_id

    @staticmethod
    def _mirror(
        con: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame, asset_key: str, partition: str, artifact_id: str
    ) -> None:
        """Replace `table`'s rows written by this (asset, partition) with `frame`.

        Every mirrored row carries the asset key, partition and artifact id it came from, so
        a table fed by several assets (e.g. `metrics` by every `<method>_eval`) stays exact.
        """
        rows = frame.with_columns(pl.lit(partition).alias("dataset")) if "dataset" not in frame.columns and partition else frame
        rows = rows.with_columns(
            pl.lit(asset_key).alias("asset_key"), pl.lit(partition).alias("partition"), pl.lit(artifact_id).alias("artifact_id")
        )
        con.register("mirror_rows", rows.to_arrow())
        try:
            con.execute(f'CREATE TABLE IF NOT EXISTS "{table}" AS SELECT * FROM mirror_rows LIMIT 0')
            existing = {r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}
            for name, dtype in con.execute("SELECT column_name, column_type FROM (DESCRIBE mirror_rows)").fetchall():
                if name not in existing:  # a new metric column, e.g. the first CTR dataset
                    con.execute(f'ALTER TABLE "{table}" ADD COLUMN "{name}" {dtype}')
            con.execute(f'DELETE FROM "{table}" WHERE asset_key = ? AND partition = ?', [asset_key, partition])
            con.execute(f'INSERT INTO "{table}" BY NAME SELECT * FROM mirror_rows')
        finally:
            with contextlib.suppress(duckdb.Error):  # after a failed statement the error above is the one to see
                con.unregister("mirror_rows")

    @staticmethod
    def _refresh_views(con: duckdb.DuckDBPyConnection, written: set[str]) -> None:
        """(Re)create the views whose source table was just written."""
        for view, select in VIEWS.items():
            source = select.rsplit("FROM ", 1)[1].strip()
            if source in written:
                con.execute(f'CREATE OR REPLACE VIEW "{view}" AS {select}')

    def record_checks(self, rows: list[dict]) -> None:
        """Append check outcomes (one row per expectation)."""
        if not rows:
            return
        with connect(self.db_path) as con:
            con.executemany(
                "INSERT INTO checks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
                [[r["run_id"], r["asset_key"], r["partition"], r["check_name"], r["expectation"],
                  r.get("column_name"), r["success"], r.get("unexpected_count"), r.get("details")] for r in rows],
            )
            self._refresh_snapshot(con)

    def _refresh_snapshot(self, con: duckdb.DuckDBPyConnection) -> None:
        """Copy the committed database to `paml-snapshot.duckdb` (staged, then renamed).

        Readers open the snapshot at any time, with any DuckDB client, without ever meeting
        the writer's lock; it is at most one write behind the live file. The copy runs on the
        writer's own connection, so no other writer can interleave.
        """
        staging = self.snapshot_path.with_name(f".{self.snapshot_path.name}.{uuid.uuid4().hex}")
        source = con.execute("SELECT current_database()").fetchone()[0]
        con.execute(f"ATTACH '{staging}' AS paml_snapshot")
        try:
            con.execute(f'COPY FROM DATABASE "{source}" TO paml_snapshot')
        finally:
            con.execute("DETACH paml_snapshot")
        os.replace(staging, self.snapshot_path)

    # -- reading -----------------------------------------------------------------
    def latest(self, asset_key: str, partition: str) -> ArtifactRow:
        """The newest artifact of (asset, partition), or PartitionNotBuiltError saying how to build it."""
        with connect(self.db_path) as con:
            row = con.execute(
                "SELECT artifact_id, content_hash, location FROM artifacts "
                "WHERE asset_key = ? AND partition = ? ORDER BY seq DESC LIMIT 1",
                [asset_key, partition],
            ).fetchone()
        if row is None:
            where = f" --partition {partition}" if partition else ""
            raise PartitionNotBuiltError(
                f"asset {asset_key!r}{' partition ' + repr(partition) if partition else ''} has never been built "
                f"in {self.db_path}; build it first: dagster asset materialize -m pipelines "
                f"--select '{asset_key}'{where} (or run its job with upstream assets)."
            )
        return ArtifactRow(row[0], asset_key, partition, row[1], row[2])

    def load(self, row: ArtifactRow) -> Bundle:
        """Read an artifact's files back into a Bundle (tensors with safetensors, no pickles)."""
        location = Path(row.location)
        meta = json.loads((location / "info.json").read_text())
        frames = {p.stem: pl.read_parquet(p) for p in sorted((location / "frames").glob("*.parquet"))}
        tensors = {}
        if (location / "tensors.safetensors").is_file():
            from safetensors.torch import load_file

            tensors = load_file(str(location / "tensors.safetensors"))
        sources = tuple(SourceFile(**s) for s in meta.get("sources", []))
        return Bundle(frames=frames, tensors=tensors, info=meta["info"], sources=sources)

    def query(self, sql: str, params: list | None = None, *, snapshot: bool = False) -> pl.DataFrame:
        """Run a read query and return a polars frame (a short read-only connection).

        `snapshot=True` reads the last committed snapshot, which no writer ever locks.
        """
        path = self.snapshot_path if snapshot and self.snapshot_path.is_file() else self.db_path
        with connect(path, read_only=True) as con:
            return con.sql(sql, params=params).pl() if params else con.sql(sql).pl()
