"""The IO manager that stores Bundles and records their lineage in DuckDB.

Each output becomes an `artifacts` row (run, asset, partition, code version, content
hash, location, rows, bytes) with `lineage_edges` to every artifact the step loaded
and to the raw files it read, committed in one transaction with any mirrored tables.

Inputs are resolved through Dagster's event log, not through "the newest artifact in
DuckDB": for every upstream partition the run's partition mapping asks for, the latest
materialization Dagster recorded names the artifact (its `artifact_id` metadata) and the
data version (= content hash). A newer artifact that Dagster never recorded (a run killed
between the DuckDB commit and the event, another instance sharing PAML_HOME) is never
picked up. Only when the instance has no record of the upstream asset at all (a throwaway
`dagster asset materialize` instance without DAGSTER_HOME) does loading fall back to the
newest stored artifact, and the step log says so.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import dagster as dg
import polars as pl

from assets.bundle import Bundle, StoredParts
from pipelines.outputs import column_schema, frames_table
from pipelines.store import LineageStore, NoDatabaseError, PartitionNotBuiltError

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
    # the production protocol's rows join the evaluations' (their `protocol` column tells them apart)
    ("production_protocol", "metrics"): "metrics",
    ("production_protocol", "user_metrics"): "user_metrics",
    ("production_protocol", "significance"): "significance",
    ("production_protocol", "history"): "training_history",  # its rows named by asset_key = 'production_protocol'
    ("report", "significance"): "significance",
    ("report", "table1"): "report_table1",
    ("report", "table2"): "report_table2",
    ("report", "table3"): "report_table3",
    ("report", "table4"): "report_table4",
    ("report", "diagnostics"): "report_diagnostics",
}

# (asset name pattern, frame) -> DuckDB history table: rows are appended, never replaced.
APPENDS: dict[tuple[str, str], str] = {
    ("*_champion", "decisions"): "model_registry",
    ("*_eval", "metrics"): "metrics_history",
}

# The frame whose rows and columns Dagster shows as the asset's row count and column schema.
PRIMARY_FRAMES: dict[str, str] = {
    "taobao_daily_logs": "interactions",
    "taobao_log_window": "interactions",
    "raw_logs": "interactions",
    "clean_logs": "interactions",
    "cold_start_users": "users",
    "user_splits": "items",
    "user_groups": "groups",
    "meta_tasks": "vocab",
    "*_model": "history",
    "*_champion": "decisions",
    "*_eval": "user_metrics",
    "reg_paml_gamma_ablation": "user_metrics",
    "production_protocol": "user_metrics",
    "report": "table2",
}


def _matching(table: Mapping[tuple[str, str], str], asset_key: str, bundle: Bundle) -> dict[str, pl.DataFrame | StoredParts]:
    return {name: bundle.frames[frame] if frame in bundle.frames else bundle.parts[frame]
            for (pattern, frame), name in table.items() if fnmatch.fnmatchcase(asset_key, pattern) and bundle.has(frame)}


def mirrors_for(asset_key: str, bundle: Bundle) -> dict[str, pl.DataFrame | StoredParts]:
    """The bundle's frames that go to DuckDB tables, by table name."""
    return _matching(MIRRORS, asset_key, bundle)


def appends_for(asset_key: str, bundle: Bundle) -> dict[str, pl.DataFrame | StoredParts]:
    """The bundle's frames appended to DuckDB history tables, by table name."""
    return _matching(APPENDS, asset_key, bundle)


def primary_frame(asset_key: str, bundle: Bundle) -> str | None:
    """The frame that stands for the asset in Dagster's row count and column schema."""
    for pattern, frame in PRIMARY_FRAMES.items():
        if fnmatch.fnmatchcase(asset_key, pattern) and bundle.has(frame):
            return frame
    return None


def canonical_metadata(asset_key: str, bundle: Bundle) -> dict[str, object]:
    """`dagster/row_count` and `dagster/column_schema` of the primary frame, and every frame's size."""
    metadata: dict[str, object] = {"frames": frames_table(bundle.frames, bundle.parts)} if bundle.frames or bundle.parts else {}
    frame = primary_frame(asset_key, bundle)
    if frame in bundle.parts:
        metadata["dagster/row_count"] = bundle.parts[frame].height()
        metadata["dagster/column_schema"] = column_schema(bundle.parts[frame].schema())
    elif frame is not None:
        metadata["dagster/row_count"] = bundle.frames[frame].height
        metadata["dagster/column_schema"] = column_schema(bundle.frames[frame].schema)
    return metadata


def _code_version(context: dg.OutputContext) -> str | None:
    try:
        return context.step_context.job_def.asset_layer.get(context.asset_key).code_version
    except Exception:  # noqa: BLE001 - outside a job (direct calls in tests) there is no asset layer
        return None


@dataclass(frozen=True)
class Resolved:
    """An upstream partition as Dagster recorded it: the artifact and the event that named it."""

    artifact_id: str
    event_id: int | None  # Dagster's storage id of the materialization; None when resolved from DuckDB


class PartitionBundles(Mapping[str, Bundle]):
    """A window input: every upstream partition Dagster has a materialization for.

    Keys are resolved when the step starts (so a materialization landing mid-step cannot
    swap one in); each Bundle is read, and its lineage edge recorded, when first accessed.
    `missing` names the partitions the mapping asked for that were never materialized.
    """

    def __init__(self, resolved: dict[str, Resolved], missing: tuple[str, ...], load: Callable[[Resolved], Bundle]):
        self.resolved = resolved
        self.missing = missing
        self._load = load
        self._cache: dict[str, Bundle] = {}

    def __getitem__(self, partition: str) -> Bundle:
        if partition not in self._cache:
            self._cache[partition] = self._load(self.resolved[partition])
        return self._cache[partition]

    def release(self, partition: str) -> None:
        """Forget partition's Bundle (read again on the next access): a step that walks every
        partition once holds one at a time."""
        self._cache.pop(partition, None)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self.resolved))

    def __len__(self) -> int:
        return len(self.resolved)


def latest_record(instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition: str | None):
    """Dagster's newest materialization record of (asset, partition), or None."""
    records_filter = dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition] if partition else None)
    records = instance.fetch_materializations(records_filter, limit=1).records
    return records[0] if records else None


class BundleIOManager(dg.IOManager):
    """Stores Bundles through a LineageStore; remembers what each step loaded."""

    def __init__(self, store: LineageStore):
        self.store = store
        self._loaded: dict[tuple[str, str], dict[str, int | None]] = defaultdict(dict)
        self._told: dict[tuple[str, str], set[tuple[str, ...]]] = defaultdict(set)  # missing partitions logged, per step

    # -- writing -----------------------------------------------------------------
    def handle_output(self, context: dg.OutputContext, obj: Bundle) -> None:
        if not isinstance(obj, Bundle):
            raise TypeError(f"asset {context.asset_key.to_user_string()} returned {type(obj).__name__}, expected Bundle")
        asset_key = context.asset_key.to_user_string()
        partition = context.asset_partition_key if context.has_asset_partitions else ""
        mirrors, appends = mirrors_for(asset_key, obj), appends_for(asset_key, obj)
        self._told.pop((context.run_id, context.step_key), None)
        # before the store deletes the bundle's scratch files
        metadata = canonical_metadata(asset_key, obj)
        mirrored = {f"mirrored_to_{t}": f.height if isinstance(f, pl.DataFrame) else f.height()
                    for t, f in {**mirrors, **appends}.items()}
        row = self.store.record(
            obj, run_id=context.run_id, job_name=context.job_name, asset_key=asset_key, partition=partition,
            code_version=_code_version(context), inputs=self._loaded.pop((context.run_id, context.step_key), {}),
            mirrors=mirrors, appends=appends,
        )
        context.add_output_metadata({
            "artifact_id": row.artifact_id,
            "content_hash": row.content_hash,
            "location": dg.MetadataValue.path(str(self.store.path_of(row))),
            **metadata,
            **mirrored,
        })

    # -- reading -----------------------------------------------------------------
    def load_input(self, context: dg.InputContext) -> Bundle | dict[str, Bundle] | PartitionBundles | None:
        """One partition -> its Bundle; a fan-in -> {partition: Bundle} of the partitions Dagster has
        materializations for; a window over a partitioned upstream -> PartitionBundles (read on
        access); a mapping to no partition at all -> None."""
        if not context.has_asset_partitions:
            return self._load(context, self._resolve(context, [None])[0][None])
        partitions = list(context.asset_partition_keys)
        fan_in = self._fan_in(context)
        if fan_in:
            resolved, missing = self._resolve(context, partitions)
            if missing:
                # A step reading several fan-ins (the report reads 8) usually misses the same datasets in
                # each: said once at INFO, the repeats at DEBUG (still in the run's log, not on the console).
                # A window picks its own partitions and says which of those are missing (taobao_log_window:
                # the days of its window), so the hundreds of days outside it are DEBUG too.
                told = self._told[(context.step_context.run_id, context.step_context.step.key)]
                log = context.log.debug if fan_in == "window" or tuple(missing) in told else context.log.info
                told.add(tuple(missing))
                log(f"{context.asset_key.to_user_string()}: {len(missing)} partition(s) never "
                    f"materialized, left out: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
            if fan_in == "window":
                return PartitionBundles(resolved, tuple(missing), lambda ref: self._load(context, ref))
            return {partition: self._load(context, ref) for partition, ref in sorted(resolved.items())}
        if not partitions:  # e.g. raw_logs[movielens] has no taobao log window upstream
            return None
        resolved, missing = self._resolve(context, partitions)
        if missing:
            self._raise_not_built(context.asset_key.to_user_string(), partitions[0])
        return self._load(context, resolved[partitions[0]])

    @staticmethod
    def _fan_in(context: dg.InputContext) -> str | None:
        """'all' when an unpartitioned step reads every partition, 'window' when a partitioned step
        maps to all upstream partitions (and picks some), None for partition-to-partition loads."""
        assets_def = context.step_context.assets_def
        if assets_def is None or assets_def.partitions_def is None:
            return "all"
        if len(assets_def.keys) != 1:  # a partitioned check reads the partition of the asset it checks
            return None
        graph = context.step_context.job_def.asset_layer.asset_graph
        mapping = graph.get_partition_mapping(next(iter(assets_def.keys)), context.asset_key)
        return "window" if isinstance(mapping, dg.AllPartitionMapping) else None

    def _resolve(self, context: dg.InputContext, partitions: list[str | None]) -> tuple[dict, list[str]]:
        """Which artifact Dagster recorded for each partition; the ones it never recorded."""
        instance, key = context.instance, context.asset_key
        if partitions == [None]:
            record = latest_record(instance, key, None)
            resolved = {None: self._from_record(record, key, None)} if record else self._from_store(context, [""])
            if not resolved:
                self._raise_not_built(key.to_user_string(), None)
            return {None: next(iter(resolved.values()))}, []
        materialized = instance.get_materialized_partitions(key)
        if not materialized:  # this instance never saw the asset: the store is the only record
            resolved = self._from_store(context, partitions)
        else:
            resolved = {p: self._from_record(latest_record(instance, key, p), key, p) for p in partitions if p in materialized}
        return resolved, [p for p in partitions if p not in resolved]

    def _from_record(self, record, key: dg.AssetKey, partition: str | None) -> Resolved:
        """The artifact a materialization event names (by its metadata, else by its data version)."""
        event = record.asset_materialization
        artifact = event.metadata.get("artifact_id")
        if artifact is not None:
            return Resolved(str(artifact.value), record.storage_id)
        version = (event.tags or {}).get("dagster/data_version", "")
        rows = self.store.query(
            "SELECT artifact_id FROM artifacts WHERE asset_key = ? AND partition = ? AND content_hash = ? "
            "ORDER BY seq DESC LIMIT 1", [key.to_user_string(), partition or "", version])
        if rows.height == 0:
            raise PartitionNotBuiltError(
                f"Dagster recorded {key.to_user_string()}{' partition ' + repr(partition) if partition else ''} "
                f"(data version {version}) but {self.store.db_path} holds no such artifact; rematerialize it.")
        return Resolved(rows.item(), record.storage_id)

    def _from_store(self, context: dg.InputContext, partitions: list[str]) -> dict[str | None, Resolved]:
        """The newest stored artifact per partition (for an instance with no record of the asset)."""
        asset_key = context.asset_key.to_user_string()
        try:
            rows = self.store.query(
                "SELECT partition, artifact_id FROM artifacts WHERE asset_key = ? AND partition IN (SELECT unnest(?)) "
                "QUALIFY seq = max(seq) OVER (PARTITION BY partition)", [asset_key, partitions])
        except NoDatabaseError:  # a new home has stored nothing: the caller says what to build first
            return {}
        if rows.height:
            context.log.warning(
                f"{asset_key}: this Dagster instance has no materialization of it (is DAGSTER_HOME set?); using the "
                f"newest stored artifact of {', '.join(sorted(rows['partition'])[:5]) or 'it'}"
                f"{' ...' if rows.height > 5 else ''}")
        return {(p or None): Resolved(a, None) for p, a in rows.iter_rows()}

    def _load(self, context: dg.InputContext, ref: Resolved) -> Bundle:
        step = context.step_context
        self._loaded[(step.run_id, step.step.key)][ref.artifact_id] = ref.event_id
        return self.store.load(self.store.row(ref.artifact_id))

    @staticmethod
    def _raise_not_built(asset_key: str, partition: str | None) -> None:
        where = f" partition {partition!r}" if partition else ""
        raise PartitionNotBuiltError(
            f"asset {asset_key!r}{where} has never been built in this Dagster instance; build it first: "
            f"dg launch --assets {asset_key}{' --partition ' + partition if partition else ''} "
            "(or run its job with upstream assets).")


class LineageIOManager(dg.ConfigurableIOManagerFactory):
    """Bundles as Parquet/safetensors under `home/artifacts`, lineage in `home/paml.duckdb`."""

    home: str

    def create_io_manager(self, context: dg.InitResourceContext) -> BundleIOManager:
        # Every step uses the IO manager (not every one the paml resource): the run gets its process tag here.
        from pipelines.instance import tag_run_process

        tag_run_process(context)
        return BundleIOManager(LineageStore(Path(self.home)))

