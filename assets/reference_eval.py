"""Asset `reference_eval`: the reference rows a practitioner tries first.

Global mean, item mean, user + item bias, biased MF with fold-in, item-kNN and the blend of
MF and kNN (models/references.py), each tuned on validation users and scored on exactly the test
users' query sets the meta-learners are scored on. Rows go to the same `user_metrics`,
`metrics` and `significance` tables (method `ref_<name>`), once per protocol the task data
allows: "paper" (fitted on training users) always, "production" (training + warm users)
when the tasks hold a warm split.

The tuning on validation users happens once per dataset, in the partitioned asset
`reference_settings` (the networks' fold-ins read its choice too); `reference_eval` reuses that
choice and its trials when it was made on the same meta_tasks, and tunes again only otherwise.
"""

import json
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from assets.bundle import Bundle
from assets.method_assets import metrics_bundle, score
from models.grid_edges import UNDER_TUNED, GridEdge
# torch and the reference rows' arithmetic (models/references.py) load inside the functions that compute,
# so that loading the Dagster definitions does not import them (models/configs.py).
from models.configs import EDGE_ROUNDS, REFERENCES, WARM_SPLIT, ReferenceSettings, SearchGrid

if TYPE_CHECKING:
    from models.references import GridSample
    from models.tasks import TaskData

REFERENCE_SEED = 0  # deterministic predictors (MF's initial factors use MFConfig.seed): one "seed"


@dataclass(frozen=True)
class ProtocolChoice:
    """The reference rows' settings chosen on validation users under one protocol (`tune_settings`),
    with every trial behind the choice: reference, setting (a JSON-able dict), val_error, the
    fitting users the MF grid points were fitted on when they were a sample (`grid_sample`), and
    the extendable grid edges the choices met (`models/grid_edges.py`)."""

    settings: ReferenceSettings
    trials: list[dict]
    mf_sample: "GridSample | None" = None
    edges: tuple[GridEdge, ...] = ()


def choose_protocol(data: "TaskData", protocol: str, grid: SearchGrid = SearchGrid()) -> ProtocolChoice:
    """Tune every reference on the validation users, fitted on the splits `protocol` allows."""
    from models.references import protocol_splits, tune_settings

    return ProtocolChoice(*tune_settings(data, protocol_splits(data, protocol), grid))


@dataclass(frozen=True)
class ProtocolReferences:
    """One dataset and protocol: the tuned settings, the validation trials and the test predictions."""

    settings: ReferenceSettings
    trials: list[dict]  # reference, setting, val_error per tried setting
    predictions: dict[str, np.ndarray]  # reference name -> (U, Q) test predictions
    seconds: dict[str, float]  # wall-clock seconds: "tuning" (when tuned here) and each reference's fit + prediction
    edges: tuple[GridEdge, ...] = ()  # the extendable grid edges the choices met


def fit_protocol(data: "TaskData", protocol: str, grid: SearchGrid = SearchGrid(), choice: ProtocolChoice | None = None) -> ProtocolReferences:
    """Fit each reference on the protocol's splits with `choice`'s settings and predict test users;
    without a `choice`, tune on validation users first (`choose_protocol`)."""
    from models.references import clip_for_task, predict_references, protocol_splits

    splits = protocol_splits(data, protocol)
    seconds = {}
    if choice is None:
        start = time.perf_counter()
        choice = choose_protocol(data, protocol, grid)
        seconds["tuning"] = time.perf_counter() - start
    raw = predict_references(data, data.splits["test"], choice.settings, splits, seconds)
    predictions = {name: clip_for_task(raw[name], data.task) for name in REFERENCES}
    return ProtocolReferences(choice.settings, choice.trials, predictions, seconds, choice.edges)


@dataclass(frozen=True)
class DatasetReferences:
    """Scored reference rows of one dataset under every protocol its task data allows."""

    user_frames: list[pl.DataFrame]
    rows: list[dict]  # `metrics` rows
    tuning: list[dict]  # TUNING_SCHEMA rows
    settings: dict[str, dict]  # protocol -> chosen settings
    seconds: dict[str, dict[str, float]]  # protocol -> wall-clock seconds
    edges: dict[str, list[dict]]  # protocol -> the extendable grid edges its choices met (`GridEdge.as_dict`), if any


def with_warm_identities(data: "TaskData", tasks: Bundle) -> "TaskData":
    """The warm split with one identity per warm user (its tasks are chunks of one history).

    `users__warm` (user_id, chunk, user_row) of the `meta_tasks` bundle says whose chunk each
    task is; the references then fit each warm user once, with all of its ratings.
    """
    import torch

    if WARM_SPLIT not in data.splits or f"users__{WARM_SPLIT}" not in tasks.frames:
        return data
    if data.splits[WARM_SPLIT].user_index is not None:  # the bundle's tensors carry them (meta_tasks >= 3)
        return data
    users = tasks.frame(f"users__{WARM_SPLIT}").sort("user_row")
    if users.height != len(data.splits[WARM_SPLIT]):
        raise ValueError(f"users__{WARM_SPLIT} has {users.height} rows for {len(data.splits[WARM_SPLIT])} warm tasks")
    identity = torch.from_numpy(users["user_id"].cast(pl.String).rank("dense").to_numpy().astype(np.int64) - 1)
    return replace(data, splits={**data.splits, WARM_SPLIT: replace(data.splits[WARM_SPLIT], user_index=identity)})


def evaluate_dataset(dataset: str, data: "TaskData", tasks: Bundle, groups: Bundle, grid: SearchGrid = SearchGrid(),
                     choices: dict[str, ProtocolChoice] | None = None) -> DatasetReferences:
    """Fit and score every reference on one dataset, once per available protocol, with the settings
    of `choices` (protocol -> the choice `reference_settings` made on these tasks); a protocol
    without one is tuned here."""
    from models.references import available_protocols

    data = with_warm_identities(data, tasks)
    user_frames, rows, tuning, settings, seconds, edges = [], [], [], {}, {}, {}
    no_lr = np.full(len(data.splits["test"]), np.nan)
    for protocol in available_protocols(data):
        fitted = fit_protocol(data, protocol, grid, (choices or {}).get(protocol))
        for name, pred in fitted.predictions.items():
            frame, aggregates = score(dataset, f"ref_{name}", REFERENCE_SEED, data, tasks, groups, pred, no_lr, protocol)
            user_frames.append(frame)
            rows += aggregates
        settings[protocol] = fitted.settings.as_dict()
        tuning += tuning_rows(dataset, protocol, fitted)
        seconds[protocol] = {k: round(v, 2) for k, v in fitted.seconds.items()}
        if fitted.edges:
            edges[protocol] = [e.as_dict() for e in fitted.edges]
    return DatasetReferences(user_frames, rows, tuning, settings, seconds, edges)


def evaluate_references(tasks: dict[str, Bundle], groups: dict[str, Bundle], grid: SearchGrid = SearchGrid(),
                        choices: dict[str, dict[str, ProtocolChoice]] | None = None) -> tuple[Bundle, dict]:
    """Every reference on every dataset that has tasks and groups, under every available protocol;
    `choices` (dataset -> protocol -> choice made on these tasks) spares tuning again.

    Returns the bundle (user_metrics, metrics, significance, and `tuning`: every validation
    trial with `chosen` marking the settings used; info["settings"] by dataset and protocol, and
    info["grid_edges"], only where a choice met an extendable grid edge, the same way)
    and the wall-clock seconds by dataset and protocol (kept out of the bundle, so that its
    content hash does not change on rerun).
    """
    from models.tasks import task_data_from_tensors

    results = {dataset: evaluate_dataset(dataset, task_data_from_tensors(tasks[dataset].tensors, tasks[dataset].info),
                                         tasks[dataset], groups[dataset], grid, (choices or {}).get(dataset))
               for dataset in sorted(set(tasks) & set(groups))}
    scored = metrics_bundle("references", [f for r in results.values() for f in r.user_frames],
                            [row for r in results.values() for row in r.rows], list(results))
    tuning = pl.DataFrame([row for r in results.values() for row in r.tuning], schema=TUNING_SCHEMA)
    edges = {d: r.edges for d, r in results.items() if r.edges}
    bundle = Bundle(frames={**scored.frames, "tuning": tuning},
                    info={**scored.info, "settings": {d: r.settings for d, r in results.items()},
                          **({"grid_edges": edges} if edges else {})})
    return bundle, {d: r.seconds for d, r in results.items()}


TUNING_SCHEMA = {"dataset": pl.String, "protocol": pl.String, "reference": pl.String, "setting": pl.String,
                 "val_error": pl.Float64, "chosen": pl.Boolean}


def tuning_rows(dataset: str, protocol: str, fitted: ProtocolReferences) -> list[dict]:
    """The validation trials as rows; `setting` is JSON, `chosen` marks the setting that was used."""
    used = {"user_item_bias": fitted.settings.bias, "mf": fitted.settings.mf, "item_knn": fitted.settings.knn,
            "mf_knn": fitted.settings.blend}
    rows = []
    for trial in fitted.trials:
        setting = trial["setting"]
        is_chosen = setting == asdict(used[trial["reference"]])
        rows.append({"dataset": dataset, "protocol": protocol, "reference": trial["reference"],
                     "setting": json.dumps(setting, sort_keys=True), "val_error": trial["val_error"], "chosen": is_chosen})
    return rows


def chosen_reference_settings(tasks: Bundle, grid: SearchGrid = SearchGrid()) -> dict[str, ProtocolChoice]:
    """protocol -> the reference rows' settings chosen on one dataset's validation users (`tune_settings`)."""
    from models.references import available_protocols
    from models.tasks import task_data_from_tensors

    data = with_warm_identities(task_data_from_tensors(tasks.tensors, tasks.info), tasks)
    return {protocol: choose_protocol(data, protocol, grid) for protocol in available_protocols(data)}


TRIALS_SCHEMA = {"protocol": pl.String, "reference": pl.String, "setting": pl.String, "val_error": pl.Float64}


def choices_bundle(choices: dict[str, ProtocolChoice]) -> Bundle:
    """`reference_settings`' bundle: info["settings"] (protocol -> settings, what the networks'
    fold-ins read) and the frame `trials` (every validation trial, `setting` as JSON); where the MF
    grid ran on a user sample, info["mf_grid_sample"] (protocol -> `GridSample` as a dict), and where
    a choice met an extendable grid edge, info["grid_edges"] (protocol -> [`GridEdge` as a dict]);
    each key only exists then, so that a bundle of a whole grid without edges is what it was before."""
    trials = [{"protocol": protocol, "reference": t["reference"], "setting": json.dumps(t["setting"], sort_keys=True),
               "val_error": t["val_error"]} for protocol, choice in choices.items() for t in choice.trials]
    info = {"settings": {protocol: choice.settings.as_dict() for protocol, choice in choices.items()}}
    samples = {protocol: asdict(choice.mf_sample) for protocol, choice in choices.items() if choice.mf_sample is not None}
    if samples:
        info["mf_grid_sample"] = samples
    edges = {protocol: [e.as_dict() for e in choice.edges] for protocol, choice in choices.items() if choice.edges}
    if edges:
        info["grid_edges"] = edges
    return Bundle(frames={"trials": pl.DataFrame(trials, schema=TRIALS_SCHEMA)}, info=info)


def grid_sample_note(bundle: Bundle) -> dict[str, str]:
    """protocol -> how the MF grid points were fitted, for the asset's metadata and log."""
    samples = bundle.info.get("mf_grid_sample", {})
    return {protocol: (f"MF grid on a seeded sample of {s['users']:,} of {s['of_users']:,} fitting users "
                       f"({s['ratings']:,} of {s['of_ratings']:,} ratings, seed {s['seed']}); the chosen setting "
                       f"fitted on all" if (s := samples.get(protocol)) else "MF grid on every fitting user")
            for protocol in bundle.info["settings"]}


def edge_note(dataset: str, protocol: str, edge: GridEdge) -> str:
    """One line on an edge a choice met: where, the grid's range, what extending did."""
    low, high = edge.grid
    line = (f"{dataset} ({protocol}): {edge.reference} {edge.axis} chosen {edge.chosen:g}, on the {edge.side} edge "
            f"of its grid {low:g}..{high:g}")
    if not edge.added:
        return line + "; not extended (set edge_rounds in reference_settings' run config to extend it)"
    line += (f"; extended to {', '.join(f'{v:g}' for v in edge.added)}: final {edge.final:g} ({edge.status}), "
             f"validation error {edge.grid_error:.6g} -> {edge.final_error:.6g}")
    return line + ("; still on the edge: under-tuned, widen the grid (models/configs.py SearchGrid)"
                   if edge.status in UNDER_TUNED else "")


def grid_edge_notes(dataset: str, bundle: Bundle) -> dict[str, list[str]]:
    """protocol -> a line per extendable grid edge its choices met (empty: every choice inside its grid,
    or at a natural bound), for the asset's metadata and log."""
    edges = bundle.info.get("grid_edges", {})
    return {protocol: [edge_note(dataset, protocol, GridEdge.from_dict(e)) for e in edges.get(protocol, [])]
            for protocol in bundle.info["settings"]}


def stored_choices(bundle: Bundle) -> dict[str, ProtocolChoice] | None:
    """The choices `choices_bundle` stored; None for a bundle without its trials (stored before they were kept)."""
    from models.references import GridSample

    if "trials" not in bundle.frames:
        return None
    trials, samples = bundle.frame("trials"), bundle.info.get("mf_grid_sample", {})
    edges = bundle.info.get("grid_edges", {})
    return {protocol: ProtocolChoice(
                ReferenceSettings.from_dict(settings),
                [{"reference": r["reference"], "setting": json.loads(r["setting"]), "val_error": r["val_error"]}
                 for r in trials.filter(pl.col("protocol") == protocol).iter_rows(named=True)],
                GridSample(**samples[protocol]) if protocol in samples else None,
                tuple(GridEdge.from_dict(e) for e in edges.get(protocol, [])))
            for protocol, settings in bundle.info["settings"].items()}


# -- Dagster assets ------------------------------------------------------------------------
import dagster as dg  # noqa: E402

from assets.markdown import markdown_table  # noqa: E402
from pipelines.lineage import TRAINED_WITH_SQL  # noqa: E402
from pipelines.outputs import bundle_output  # noqa: E402
from pipelines.partitions import dataset_partitions  # noqa: E402
from pipelines.resources import PamlResource  # noqa: E402
from pipelines.store import LineageStore  # noqa: E402
from pydantic import Field  # noqa: E402


class ReferenceSettingsConfig(dg.Config):
    """How far `reference_settings` may search beyond its grids (docs/protocol.md, "Reference rows")."""

    edge_rounds: int = Field(
        default=EDGE_ROUNDS, ge=0, le=8,
        description="Rounds of factor-2 extension of a grid axis whose chosen value lies on its edge (0: report the "
                    "edge, extend nothing; the built-in datasets' searched settings were made with 0).")


@dg.asset(
    partitions_def=dataset_partitions, group_name="models", kinds={"numpy"}, code_version="4",
    ins={"tasks": dg.AssetIn("meta_tasks")},
    description="The classic reference rows' settings (bias pseudo-counts, MF, item-kNN, their blend), chosen on "
                "validation users per protocol, with every trial; the networks' MF and kNN fold-ins and "
                "`reference_eval` take theirs from here.",
)
def reference_settings(context: dg.AssetExecutionContext, config: ReferenceSettingsConfig, tasks: Bundle) -> dg.Output[Bundle]:
    started = time.perf_counter()
    context.log.info("tuning the reference rows (bias, MF, item-kNN, blend) on the validation users ...")
    bundle = choices_bundle(chosen_reference_settings(tasks, SearchGrid(edge_rounds=config.edge_rounds)))
    notes, edges = grid_sample_note(bundle), grid_edge_notes(context.partition_key, bundle)
    for protocol, chosen in bundle.info["settings"].items():
        context.log.info(f"chosen ({protocol}): {chosen}; {notes[protocol]}")
        for line in edges[protocol]:
            context.log.warning(f"grid edge: {line}")
    context.log.info(f"{bundle.frame('trials').height} validation trials in {time.perf_counter() - started:.1f} s")
    return bundle_output(bundle, chosen_settings=dg.MetadataValue.json(bundle.info["settings"]),
                         mf_grid=dg.MetadataValue.json(notes), grid_edges=dg.MetadataValue.json(edges))


def choices_for(store: LineageStore, settings: dict[str, Bundle], tasks: dict[str, Bundle]) -> dict[str, dict[str, ProtocolChoice]]:
    """Per dataset, the stored `reference_settings` choices made on exactly these meta_tasks (by the
    content hash lineage recorded); a dataset whose settings came from other tasks is left out."""
    chosen = {}
    for dataset, bundle in settings.items():
        if dataset not in tasks or bundle.artifact_id is None or tasks[dataset].artifact_id is None:
            continue
        made_on = store.query(TRAINED_WITH_SQL, [bundle.artifact_id, "meta_tasks"])
        if made_on.height and made_on["content_hash"][0] == store.row(tasks[dataset].artifact_id).content_hash:
            choice = stored_choices(bundle)
            if choice is not None:
                chosen[dataset] = choice
    return chosen


@dg.asset(
    group_name="evaluation", kinds={"numpy", "duckdb"}, code_version="4",
    ins={"tasks": dg.AssetIn("meta_tasks"), "groups": dg.AssetIn("user_groups"), "settings": dg.AssetIn("reference_settings")},
    description="Reference rows (global/item mean, user+item bias, biased MF, item-kNN, MF + kNN blend), with the settings "
                "`reference_settings` chose on validation users, on the same query sets.",
)
def reference_eval(context: dg.AssetExecutionContext, paml: PamlResource, tasks: dict, groups: dict, settings: dict) -> dg.Output[Bundle]:
    if not set(tasks) & set(groups):  # as `<method>_eval`: a run that evaluates nothing says what to build
        context.log.warning("reference_eval: nothing to evaluate, no dataset has meta_tasks and user_groups in this "
                            "Dagster instance; build them first: dg launch --job data_job --partition DATASET")
    choices = choices_for(paml.store(), settings, tasks)
    retuned = sorted(set(tasks) & set(groups) - set(choices))
    if retuned:
        context.log.info(f"no reference_settings chosen on the current meta_tasks of {', '.join(retuned)}: tuned here")
    bundle, seconds = evaluate_references(tasks, groups, choices=choices)
    for dataset in retuned:  # reference_settings warned of the others' edges
        for protocol, edges in bundle.info.get("grid_edges", {}).get(dataset, {}).items():
            for edge in edges:
                context.log.warning(f"grid edge: {edge_note(dataset, protocol, GridEdge.from_dict(edge))}")
    for dataset, per_protocol in seconds.items():
        for protocol, timing in per_protocol.items():
            context.log.info(f"references on {dataset} ({protocol}): {bundle.info['settings'][dataset][protocol]}; seconds {timing}")
    chosen = bundle.frame("tuning").filter(pl.col("chosen")).drop("chosen")
    return bundle_output(bundle, datasets_evaluated=", ".join(bundle.info["datasets"]) or "none",
                         chosen_settings=dg.MetadataValue.json(bundle.info["settings"]),
                         validation_choice=markdown_table(chosen), seconds=dg.MetadataValue.json(seconds))
