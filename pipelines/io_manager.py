"""The IO manager that stores Bundles and records their lineage in DuckDB.

Each output becomes an `artifacts` row (run, asset, partition, code version, content
hash, location, rows, bytes) with `lineage_edges` to every artifact the step loaded
and to the raw files it read, committed in one transaction with any mirrored tables.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from pathlib import Path

import dagster as dg
import polars as pl

from assets.bundle import Bundle
from pipelines.store import LineageStore, PartitionNotBuiltError

# (asset name pattern, frame) -> DuckDB table holding the newest materialization's rows.
MIRRORS: dict[tuple[str, str], str] = {
    ("clean_logs", "rejected"): "rejected_rows",
    ("clean_logs", "accounting"): "raw_file_rows",
    ("user_splits", "users"): "user_splits",
    ("user_groups", "groups"): "user_groups",
    ("user_groups", "table1"): "table1_stats",
    ("user_groups", "shares"): "group_shares",
    ("*_eval", "user_metrics"): "user_metrics",
    ("*_eval", "metrics"): "metrics",
    ("*_eval", "significance"): "significance",
    ("*_model", "history"): "training_history",
    ("reg_paml_gamma_ablation", "metrics"): "ablation_metrics",
    ("reg_paml_gamma_ablation", "significance"): "ablation_significance",
    ("report", "significance"): "significance",
    ("report", "table1"): "report_table1",
    ("report", "table2"): "report_table2",
    ("report", "table3"): "report_table3",
    ("report", "table4"): "report_table4",
}


def mirrors_for(asset_key: str, bundle: Bundle) -> dict[str, pl.DataFrame]:
    """The bundle's frames that go to DuckDB tables, by table name."""
    return {table: bundle.frames[frame] for (pattern, frame), table in MIRRORS.items()
            if fnmatch.fnmatchcase(asset_key, pattern) and frame in bundle.frames}


def _partition(context: dg.InputContext | dg.OutputContext) -> str:
    return context.asset_partition_key if context.has_asset_partitions else ""


def _code_version(context: dg.OutputContext) -> str | None:
    try:
        return context.step_context.job_def.asset_layer.get(context.asset_key).code_version
    except Exception:  # noqa: BLE001 - outside a job (direct calls in tests) there is no asset layer
        return None


class BundleIOManager(dg.IOManager):
    """Stores Bundles through a LineageStore; remembers what each step loaded."""

    def __init__(self, store: LineageStore):
        self.store = store
        self._loaded: dict[tuple[str, str], list[str]] = defaultdict(list)

    def handle_output(self, context: dg.OutputContext, obj: Bundle) -> None:
        if not isinstance(obj, Bundle):
            raise TypeError(f"asset {context.asset_key.to_user_string()} returned {type(obj).__name__}, expected Bundle")
        asset_key, partition = context.asset_key.to_user_string(), _partition(context)
        mirrors = mirrors_for(asset_key, obj)
        row = self.store.record(
            obj, run_id=context.run_id, job_name=context.job_name, asset_key=asset_key, partition=partition,
            code_version=_code_version(context), inputs=self._loaded.pop((context.run_id, context.step_key), []),
            mirrors=mirrors,
        )
        context.add_output_metadata({
            "artifact_id": row.artifact_id,
            "content_hash": row.content_hash,
            "location": dg.MetadataValue.path(str(self.store.path_of(row))),
            **{f"mirrored_to_{t}": len(f) for t, f in mirrors.items()},
        })

    def load_input(self, context: dg.InputContext) -> Bundle | dict[str, Bundle]:
        """One partition -> its Bundle; several (a fan-in) -> {partition: Bundle} of those built."""
        asset_key = context.asset_key.to_user_string()
        step = context.step_context
        loaded = self._loaded[(step.run_id, step.step.key)]
        if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
            bundles = {}
            for partition in context.asset_partition_keys:
                try:
                    row = self.store.latest(asset_key, partition)
                except PartitionNotBuiltError:
                    context.log.info(f"{asset_key}: partition {partition!r} not built yet; left out")
                    continue
                loaded.append(row.artifact_id)
                bundles[partition] = self.store.load(row)
            return bundles
        row = self.store.latest(asset_key, _partition(context))
        loaded.append(row.artifact_id)
        return self.store.load(row)


class LineageIOManager(dg.ConfigurableIOManagerFactory):
    """Bundles as Parquet/safetensors under `home/artifacts`, lineage in `home/paml.duckdb`."""

    home: str

    def create_io_manager(self, context: dg.InitResourceContext) -> BundleIOManager:
        return BundleIOManager(LineageStore(Path(self.home)))
