"""Model promotion, champion / challenger: `<method>_champion` decides which model is in service.

Every retraining's model is a challenger. It replaces the model in service (the champion)
only if it is not worse on the same validation users: each user's validation query loss
(the loss models are selected on, mean over the model's seeds) under both models, compared
by a one-sided paired t-test (H1: the challenger's loss is higher). Every decision, promoted
or not, is a row of `model_registry` in DuckDB, and evaluation, the report and `recommend`
use the model in service.

A champion trained on another window of days encodes users and items with its own
vocabulary, so the validation users' cleaned feature values are encoded through it (as
meta_tasks would, backoff prefixes included), and items by id into its own item table.
Users the champion trained on are left out (it has seen their labels), and so are items one
of the two models has never seen; what remains is the same tasks for both.
"""

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np
import polars as pl

from assets.bundle import Bundle
from assets.meta_tasks import UNKNOWN_INDEX, padded

if TYPE_CHECKING:
    from models.tasks import TaskData, TaskSplit

PROMOTION_ALPHA = 0.05  # a challenger is rejected when worse at this one-sided significance level
# ... or when its mean validation loss is this much higher (relative), significant or not: with
# few comparable users a t-test cannot tell, and a much worse mean is reason enough.
PROMOTION_MAX_INCREASE = 0.10
MIN_PAIRED_USERS = 2  # a paired t-test needs at least two users
SAME_LOSS_TOLERANCE = 1e-12  # per-user loss differences below this are rounding, not a difference
TRAINING_SPLITS = ("train", "warm")  # splits whose users a model has seen labels of
COMPARED_SPLIT = "val"


@dataclass(frozen=True)
class Decision:
    """The outcome of one challenger against the model in service."""

    promoted: bool
    p_value: float | None
    reason: str


def decide(challenger_loss: np.ndarray, champion_loss: np.ndarray | None, alpha: float = PROMOTION_ALPHA,
           max_increase: float = PROMOTION_MAX_INCREASE) -> Decision:
    """Promote unless the challenger's per-user loss is significantly higher (one-sided paired
    t-test at `alpha`) or its mean is more than `max_increase` (relative) higher.

    `champion_loss` is None when no model is in service. Losses are per user, paired by position.
    """
    from scipy import stats

    if not np.all(np.isfinite(challenger_loss)):
        return Decision(False, None, "rejected: the challenger's validation loss is not finite")
    if champion_loss is None:
        return Decision(True, None, "promoted: no model in service")
    n = len(challenger_loss)
    if n < MIN_PAIRED_USERS:
        return Decision(True, None, f"promoted: {n} validation user(s) unseen by both models, too few to compare")
    diff = challenger_loss - champion_loss
    summary = (f"mean validation loss {challenger_loss.mean():.4f} vs {champion_loss.mean():.4f} in service "
               f"over {n} users")
    if np.allclose(diff, 0, rtol=0, atol=SAME_LOSS_TOLERANCE):
        return Decision(True, None, f"promoted: same validation losses as the model in service ({summary})")
    if np.allclose(diff, diff.mean(), rtol=0, atol=SAME_LOSS_TOLERANCE):
        p_value = 0.0 if diff.mean() > 0 else 1.0  # a constant shift: the t statistic is infinite, its sign decides
    else:
        p_value = float(stats.ttest_rel(challenger_loss, champion_loss, alternative="greater").pvalue)
    test = f"one-sided paired t-test p = {p_value:.3g}"
    if p_value < alpha:
        return Decision(False, p_value, f"rejected: worse, {summary}, {test} < {alpha}")
    if challenger_loss.mean() > champion_loss.mean() * (1 + max_increase):
        return Decision(False, p_value, f"rejected: mean loss more than {max_increase:.0%} higher, {summary}, {test}")
    return Decision(True, p_value, f"promoted: not worse, {summary}, {test}")


# -- the same validation users for two models ---------------------------------------------


def decode_split(tasks: Bundle, split: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A split's users and their item rows, in ids rather than indices.

    Returns (users: user_id, user_row; rows: user_id, item_id, label, set).
    """
    users = tasks.frame(f"users__{split}").select("user_id", "user_row").sort("user_row")
    item_of_row = dict(tasks.frame("items").select("row", "item_id").iter_rows())
    user_ids = users["user_id"].to_list()
    parts = []
    for part in ("support", "query"):
        items = tasks.tensors[f"{split}__{part}_items"].numpy()
        labels = tasks.tensors[f"{split}__{part}_labels"].numpy()
        user_row, slot = np.nonzero(tasks.tensors[f"{split}__{part}_mask"].numpy())
        parts.append(pl.DataFrame({
            "user_id": [user_ids[r] for r in user_row], "item_id": [item_of_row[int(i)] for i in items[user_row, slot]],
            "label": labels[user_row, slot].astype(np.float64), "set": part,
        }, schema={"user_id": pl.String, "item_id": pl.String, "label": pl.Float64, "set": pl.String}))
    return users, pl.concat(parts)


def seen_users(tasks: Bundle) -> set[str]:
    """Users whose labels a model trained on these tasks has seen."""
    return {u for split in TRAINING_SPLITS if f"users__{split}" in tasks.frames
            for u in tasks.frame(f"users__{split}")["user_id"].to_list()}


def shared_tasks(challenger_tasks: Bundle, champion_tasks: Bundle) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Validation users of the challenger's tasks that the champion never trained on, with
    only the items both models know; users left without support or query items drop out.

    Returns (users: user_id, user_row in the challenger's split; rows: user_id, item_id, label, set).
    """
    users, rows = decode_split(challenger_tasks, COMPARED_SPLIT)
    known = set(challenger_tasks.frame("items")["item_id"]) & set(champion_tasks.frame("items")["item_id"])
    rows = rows.filter(pl.col("item_id").is_in(known) & ~pl.col("user_id").is_in(seen_users(champion_tasks)))
    complete = rows.group_by("user_id").agg(pl.col("set").n_unique().alias("parts")).filter(pl.col("parts") == 2)
    users = users.join(complete.select("user_id"), on="user_id", how="semi").sort("user_id")
    return users, rows.join(users.select("user_id"), on="user_id", how="semi")


def lookup_codes(values: pl.Series, vocab: pl.DataFrame, prefixes: tuple[int, ...] = ()) -> np.ndarray:
    """Raw values -> one field's vocabulary indices: the value, else (a backoff field) its
    longest prefix 'abc*' in the vocabulary, else the unknown index (as meta_tasks encodes)."""
    index = dict(zip(vocab["value"].to_list(), vocab["index"].to_list()))

    def code(value: str | None) -> int:
        if value is None:
            return UNKNOWN_INDEX
        if value in index:
            return index[value]
        return next((index[value[:n] + "*"] for n in prefixes if value[:n] + "*" in index), UNKNOWN_INDEX)

    return np.array([code(v) for v in values.cast(pl.String).to_list()], dtype=np.int64)


def user_codes(raw_users: pl.DataFrame, user_ids: list[str], tasks: Bundle) -> np.ndarray:
    """(U, F_user) indices of `user_ids`' raw features (cleaned users) in `tasks`' vocabulary."""
    from assets.specs import spec_for

    backoff = dict(spec_for(tasks.info["dataset"]).backoff) if tasks.info.get("backoff_min_count", 0) > 1 else {}
    users = pl.DataFrame({"user_id": user_ids}).join(raw_users, on="user_id", how="left")
    vocab = tasks.frame("vocab")
    columns = [lookup_codes(users[f], vocab.filter(pl.col("field") == f), backoff.get(f, ())) for f in tasks.info["user_fields"]]
    return np.stack(columns, axis=1).reshape(len(user_ids), len(columns))


def encode_split(codes: np.ndarray, user_ids: list[str], rows: pl.DataFrame, tasks: Bundle) -> "TaskSplit":
    """Users (their feature indices `codes`, in `user_ids` order) and their rows as one split of
    `tasks`' encoding; every item must be in its item table."""
    import torch

    from models.tasks import TaskSplit

    members = pl.DataFrame({"user_id": user_ids, "user_row": np.arange(len(user_ids), dtype=np.int64)})
    located = rows.join(members, on="user_id").join(tasks.frame("items"), on="item_id")
    tensors = {}
    for part in ("support", "query"):
        chosen = located.filter(pl.col("set") == part).sort("user_row", "item_id")
        items, mask = padded(chosen, "user_row", "row", members.height, np.int64)
        labels, _ = padded(chosen, "user_row", "label", members.height, np.float32)
        tensors[part] = (torch.from_numpy(items), torch.from_numpy(labels), torch.from_numpy(mask))
    return TaskSplit(torch.from_numpy(codes.astype(np.int64)), *tensors["support"], *tensors["query"])


def comparison_splits(challenger_tasks: Bundle, champion_tasks: Bundle, raw_users: pl.DataFrame) -> "tuple[TaskSplit, TaskSplit] | None":
    """The same unseen validation users for both models, each in its own encoding; None if
    fewer than MIN_PAIRED_USERS remain. The challenger keeps its own feature indices; the
    champion's come from the users' cleaned (raw) values through its vocabulary."""
    users, rows = shared_tasks(challenger_tasks, champion_tasks)
    if users.height < MIN_PAIRED_USERS:
        return None
    ids = users["user_id"].to_list()
    ours = challenger_tasks.tensors[f"{COMPARED_SPLIT}__user_fields"].numpy()[users["user_row"].to_numpy()]
    theirs = user_codes(raw_users, ids, champion_tasks)
    return encode_split(ours, ids, rows, challenger_tasks), encode_split(theirs, ids, rows, champion_tasks)


def with_split(tasks: Bundle, split: "TaskSplit") -> "TaskData":
    """The TaskData of `tasks` with its validation split replaced by `split`."""
    from models.tasks import task_data_from_tensors

    data = task_data_from_tensors(tasks.tensors, tasks.info)
    return replace(data, splits={**data.splits, COMPARED_SPLIT: split})


def validation_losses(model: Bundle, data: "TaskData") -> dict[int, np.ndarray]:
    """Per seed of `model`: each validation user's query loss after adapting on its support set."""
    from assets.method_assets import load_learner
    from models.training import predict_split

    return {seed: predict_split(load_learner(model, data, seed), data, COMPARED_SPLIT).query_loss.astype(np.float64)
            for seed in model.info["seeds"]}


def diverged_seeds(model: Bundle) -> list[int]:
    """Seeds whose training never improved on the untrained model (every validation loss NaN or infinite)."""
    return [int(seed) for seed, best in model.info.get("best", {}).items() if not np.isfinite(best["val_loss"])]


def trained_users(model: Bundle, tasks: Bundle) -> int:
    """How many users' tasks `model` trained on: the training split, and the warm users under the production protocol."""
    splits = TRAINING_SPLITS if model.info.get("train_config", {}).get("protocol") == "production" else TRAINING_SPLITS[:1]
    return sum(int(tasks.info.get("n_users", {}).get(split, 0)) for split in splits)


def uncompared(n: int, challenger_users: int, champion_users: int) -> Decision:
    """The decision when fewer than MIN_PAIRED_USERS validation users are left to compare on: the
    challenger replaces the model in service only if it trained on at least as many users. A
    window that lost most of its days left one comparable user and used to be promoted blindly."""
    few = f"{n} validation user(s) unseen by both models, too few to compare"
    if challenger_users < champion_users:
        return Decision(False, None, f"rejected: {few}, and trained on {challenger_users} users, fewer than the "
                                     f"{champion_users} of the model in service")
    return Decision(True, None, f"promoted: {few}; trained on {challenger_users} users, the model in service on "
                                f"{champion_users}")


@dataclass(frozen=True)
class Champion:
    """The model in service for (dataset, method) and the tasks it was trained on."""

    model: Bundle
    tasks: Bundle


def compare(challenger: Bundle, challenger_tasks: Bundle, champion: Champion | None, raw_users: pl.DataFrame,
            alpha: float = PROMOTION_ALPHA, max_increase: float = PROMOTION_MAX_INCREASE) -> tuple[Decision, pl.DataFrame]:
    """Decide on `challenger` and return the per-seed validation losses behind the decision.

    `raw_users` are the cleaned users (user_id and raw feature values) of the challenger's data.

    The frame has one row per challenger seed: seed, n_users, val_loss (this seed),
    champion_val_loss (the champion's same seed, if it has it), mean_val_loss,
    champion_mean_val_loss (means over each model's seeds).
    """
    from models.learners import stored_model_problem
    from models.tasks import task_data_from_tensors

    schema = {"seed": pl.Int64, "n_users": pl.Int64, "val_loss": pl.Float64, "champion_val_loss": pl.Float64,
              "mean_val_loss": pl.Float64, "champion_mean_val_loss": pl.Float64}
    diverged = diverged_seeds(challenger)
    if diverged:
        seeds = ", ".join(str(s) for s in diverged)
        return (Decision(False, None, f"rejected: training never reached a finite validation loss (seed {seeds}); "
                                      "the stored weights are the untrained ones"),
                pl.DataFrame([{"seed": s} for s in challenger.info["seeds"]], schema=schema))
    # A model in service this code cannot load (another form of the method's step size, a network
    # trained by older code: a home kept across an upgrade) cannot be compared: the challenger replaces it.
    retired = stored_model_problem(champion.model.info) if champion is not None else None
    if retired is not None:
        champion = None
    if champion is None or champion.model.content_hash() == challenger.content_hash():
        data = task_data_from_tensors(challenger_tasks.tensors, challenger_tasks.info)
        losses = validation_losses(challenger, data)
        mean = float(np.mean([v.mean() for v in losses.values()]))
        rows = [{"seed": s, "n_users": len(v), "val_loss": float(v.mean()), "champion_val_loss": float(v.mean()) if champion else None,
                 "mean_val_loss": mean, "champion_mean_val_loss": mean if champion else None} for s, v in losses.items()]
        decision = decide(np.array([r["val_loss"] for r in rows]), None) if champion is None else \
            Decision(True, None, "promoted: same model as in service")
        if retired is not None and decision.promoted:
            decision = Decision(True, None, f"promoted: the model in service cannot be loaded by this code ({retired}), "
                                            "so it was replaced without a comparison")
        return decision, pl.DataFrame(rows, schema=schema)
    splits = comparison_splits(challenger_tasks, champion.tasks, raw_users)
    if splits is None:
        n = shared_tasks(challenger_tasks, champion.tasks)[0].height
        decision = uncompared(n, trained_users(challenger, challenger_tasks), trained_users(champion.model, champion.tasks))
        return decision, pl.DataFrame([{"seed": s, "n_users": n} for s in challenger.info["seeds"]], schema=schema)
    ours = validation_losses(challenger, with_split(challenger_tasks, splits[0]))
    theirs = validation_losses(champion.model, with_split(champion.tasks, splits[1]))
    ours_mean, theirs_mean = np.mean(list(ours.values()), axis=0), np.mean(list(theirs.values()), axis=0)
    decision = decide(ours_mean, theirs_mean, alpha, max_increase)
    frame = pl.DataFrame([{
        "seed": s, "n_users": len(ours_mean), "val_loss": float(v.mean()),
        "champion_val_loss": float(theirs[s].mean()) if s in theirs else None,
        "mean_val_loss": float(ours_mean.mean()), "champion_mean_val_loss": float(theirs_mean.mean()),
    } for s, v in ours.items()], schema=schema)
    return decision, frame


def decision_bundle(dataset: str, method: str, decision: Decision, losses: pl.DataFrame, challenger: dict[str, str | None],
                    champion: dict | None, trained_on: list[str]) -> Bundle:
    """`<method>_champion`'s bundle: the decision's registry rows and the model in service after it.

    `challenger` holds the artifact ids of the challenger's model, tasks and groups; `champion`
    is the registry row of the model in service before (None if none).
    """
    rows = decision_rows(dataset, method, decision, losses, challenger, champion, trained_on)
    service = {**challenger, "trained_on": trained_on, "last_day": trained_on[-1] if trained_on else None} \
        if decision.promoted else {k: champion[k] for k in ("model", "tasks", "groups", "trained_on", "last_day")}
    read = () if champion is None else (champion["model"], champion["tasks"])
    return Bundle(frames={"decisions": rows}, info={"method": method, "dataset": dataset, "in_service": service}, inputs=read)


def decision_rows(dataset: str, method: str, decision: Decision, losses: pl.DataFrame, challenger: dict[str, str | None],
                  champion: dict[str, str | None] | None, trained_on: list[str]) -> pl.DataFrame:
    """The `model_registry` rows of one decision (one per challenger seed).

    `challenger` / `champion` hold the model, tasks and groups artifact ids.
    """
    return losses.with_columns(
        pl.lit(dataset).alias("dataset"), pl.lit(method).alias("method"),
        pl.lit(challenger["model"]).alias("model_artifact"),
        pl.lit(champion["model"] if champion else None, dtype=pl.String).alias("champion_artifact"),
        pl.lit(challenger["tasks"]).alias("tasks_artifact"), pl.lit(challenger["groups"]).alias("groups_artifact"),
        pl.lit(trained_on[-1] if trained_on else None, dtype=pl.String).alias("last_day"),
        pl.lit(decision.p_value, dtype=pl.Float64).alias("p_value"), pl.lit(decision.promoted).alias("promoted"),
        pl.lit(decision.reason).alias("reason"),
    ).with_columns(pl.Series("trained_on", [trained_on] * losses.height, dtype=pl.List(pl.String)))


# -- evaluation and the report use the models in service ------------------------------------


def in_service(champions: Mapping[str, Bundle], load: Callable[[str], Bundle]) -> dict[str, dict]:
    """Per dataset: the model, tasks and groups in service (loaded by artifact id) and the days
    the model saw. `champions` are `<method>_champion` bundles by dataset."""
    chosen = {}
    for dataset in sorted(champions):
        service = champions[dataset].info["in_service"]
        chosen[dataset] = {"model": load(service["model"]), "tasks": load(service["tasks"]),
                           "groups": load(service["groups"]), "model_artifact": service["model"],
                           "last_day": service["last_day"]}
    return chosen


def tag_metrics(bundle: Bundle, service: dict[str, dict], inputs: tuple[str, ...]) -> Bundle:
    """The evaluation bundle with each metric row naming its model and the newest day it saw."""
    models = pl.DataFrame({"dataset": list(service), "model_artifact": [s["model_artifact"] for s in service.values()],
                           "last_day": [s["last_day"] for s in service.values()]},
                          schema={"dataset": pl.String, "model_artifact": pl.String, "last_day": pl.String})
    frames = dict(bundle.frames)
    if frames["metrics"].height:
        frames["metrics"] = frames["metrics"].join(models, on="dataset", how="left")
    return Bundle(frames=frames, tensors=bundle.tensors, info=bundle.info, sources=bundle.sources, inputs=inputs)


def metrics_over_days(history: pl.DataFrame, dataset: str) -> bytes | None:
    """Each method's primary test metric by the newest day its model saw (one line per method)."""
    part = history.filter(pl.col("dataset") == dataset)
    if part.height == 0:
        return None
    metric = "nel" if "nel" in set(part["metric"]) else "mse"
    part = part.filter(pl.col("metric") == metric).sort("last_day")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from assets.plots import figure_png

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for (method,), rows in part.group_by("method", maintain_order=True):
        ax.plot(rows["last_day"].to_list(), rows["mean"].to_list(), marker="o", label=method)
    ax.set_xlabel("newest day of logs the model saw")
    ax.set_ylabel(f"test {metric} (mean over seeds)")
    ax.set_title(f"{dataset}: test {metric} of the evaluated models over the days")
    ax.tick_params(axis="x", rotation=30, labelsize=7)
    ax.legend(fontsize=7)
    return figure_png(fig)


def evaluate_in_service(method: str, champions: Mapping[str, Bundle], load: Callable[[str], Bundle]) -> Bundle:
    """`<method>_eval`'s bundle: every dataset's model in service on the test users of the tasks
    it was trained with (never leaking, whichever day it is from)."""
    from assets.method_assets import evaluate_method

    service = in_service(champions, load)
    bundle = evaluate_method(method, {d: s["model"] for d, s in service.items()}, {d: s["tasks"] for d, s in service.items()},
                             {d: s["groups"] for d, s in service.items()})
    loaded = tuple(sorted({b.artifact_id for s in service.values() for b in (s["model"], s["tasks"], s["groups"]) if b.artifact_id}))
    return tag_metrics(bundle, service, loaded)


# -- Dagster assets --------------------------------------------------------------------
import dagster as dg  # noqa: E402
from pydantic import Field  # noqa: E402

from models.configs import METHOD_NAMES  # noqa: E402
from pipelines.lineage import TRAINED_ON_DAYS_SQL, TRAINED_WITH_SQL  # noqa: E402
from pipelines.outputs import bundle_output, table  # noqa: E402
from pipelines.partitions import dataset_partitions  # noqa: E402
from pipelines.resources import PamlResource  # noqa: E402
from pipelines.store import LineageStore  # noqa: E402


class PromotionConfig(dg.Config):
    """How a challenger is judged against the model in service."""

    alpha: float = Field(default=PROMOTION_ALPHA, gt=0, lt=1,
                         description="Reject the challenger when its validation loss is higher at this one-sided p-value.")
    max_increase: float = Field(default=PROMOTION_MAX_INCREASE, ge=0,
                                description="... or when its mean validation loss is this much higher (relative), significant or not.")


def registry_champion(store: LineageStore, dataset: str, method: str) -> dict | None:
    """The newest promoted decision of (dataset, method) in model_registry, or None."""
    import duckdb

    try:
        rows = store.query(
            "SELECT model_artifact AS model, tasks_artifact AS tasks, groups_artifact AS groups, trained_on, last_day "
            "FROM model_registry WHERE dataset = ? AND method = ? AND promoted ORDER BY recorded_at DESC LIMIT 1",
            [dataset, method])
    except duckdb.CatalogException:  # a database from before the registry: nothing was ever promoted
        return None
    return rows.row(0, named=True) if rows.height else None


def require_trained_on(store: LineageStore, model: Bundle, tasks: Bundle, name: str) -> None:
    """Fail, naming both, when the model was trained on other tasks than the ones it is judged with."""
    trained_with = store.query(TRAINED_WITH_SQL, [model.artifact_id, "meta_tasks"])
    # Stored hashes, not recomputed ones: a bundle read back from Parquet may hash differently.
    if trained_with.height and trained_with["content_hash"][0] != store.row(tasks.artifact_id).content_hash:
        raise ValueError(f"{name} (artifact {model.artifact_id}) was trained on meta_tasks {trained_with['artifact_id'][0]}, "
                         f"but meta_tasks is now {tasks.artifact_id} with other content: materialize {name} again first")


def build_champion_asset(method: str) -> dg.AssetsDefinition:
    """`<method>_champion`: promote the newest `<method>_model` unless it is worse than the model in service."""

    @dg.asset(
        name=f"{method}_champion", partitions_def=dataset_partitions, group_name="models", kinds={"pytorch", "duckdb"},
        code_version="1", ins={"challenger": dg.AssetIn(f"{method}_model"), "tasks": dg.AssetIn("meta_tasks"),
                               "groups": dg.AssetIn("user_groups"), "clean_logs": dg.AssetIn("clean_logs")},
        description=f"{method}: the model in service. The newest model replaces it unless worse on the same validation "
                    "users (one-sided paired t-test); every decision is a row of model_registry.",
    )
    def _champion(context: dg.AssetExecutionContext, config: PromotionConfig, paml: PamlResource,
                  challenger: Bundle, tasks: Bundle, groups: Bundle, clean_logs: Bundle) -> dg.MaterializeResult:
        store, dataset = paml.store(), context.partition_key
        require_trained_on(store, challenger, tasks, f"{method}_model[{dataset}]")
        previous = registry_champion(store, dataset, method)
        champion = previous and Champion(store.load(store.row(previous["model"])), store.load(store.row(previous["tasks"])))
        decision, losses = compare(challenger, tasks, champion, clean_logs.frame("users"), config.alpha, config.max_increase)
        days = store.query(TRAINED_ON_DAYS_SQL, [challenger.artifact_id])["partition"].to_list()
        ours = {"model": challenger.artifact_id, "tasks": tasks.artifact_id, "groups": groups.artifact_id}
        bundle = decision_bundle(dataset, method, decision, losses, ours, previous, days)
        context.log.info(f"{method} on {dataset}: {decision.reason}")
        return bundle_output(bundle, promoted=decision.promoted, reason=decision.reason,
                             model_in_service=bundle.info["in_service"]["model"], trained_on=", ".join(days) or "static files",
                             decisions=table(bundle.frame("decisions").drop("trained_on")))

    return _champion


CHAMPION_ASSETS = [build_champion_asset(m) for m in METHOD_NAMES]
