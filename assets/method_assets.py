"""Training and evaluation assets for every method: `<method>_model` and `<method>_eval`.

`<method>_model` (one per dataset partition) meta-trains the method for each seed, picks
each seed's epoch on validation users, and stores the state dicts as safetensors.
`<method>_eval` (not partitioned) adapts every dataset's models on the test users'
support sets, scores the query sets, and writes `user_metrics`, `metrics` and
`significance` (the method's row of the paper's Table 2 and Table 3).
"""

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import polars as pl
from dagster import get_dagster_logger

from assets.bundle import Bundle
from assets.evaluation import aggregate, minor_vs_major, user_diagnostics, user_metrics_frame
from assets.specs import all_datasets, spec_for
# torch and the models' arithmetic load inside the functions that compute, so that loading the Dagster
# definitions does not import them (models/configs.py).
from models.configs import (
    DEFAULT_PROTOCOL, METHOD_NAMES, WARM_SPLIT, LearnerConfig, MemoryConfig, NetworkConfig, ReferenceSettings, TrainConfig,
)

if TYPE_CHECKING:
    from models.learners import MetaLearner
    from models.parallel import JobResult
    from models.settings import ChosenSettings
    from models.tasks import TaskData
    from models.training import EpochLog


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def training_users(tasks: Bundle, protocol: str) -> int:
    """The distinct users a model trains on under `protocol` (models/tasks.py `training_view`), as AT-PAML's
    memory counts them, one slot per user: the training split's users (one task each), and under the
    production protocol the warm users too, each once however many tasks its history was cut into. Their
    tasks (`n_users` of meta_tasks' info counts the warm split's tasks) would let a memory that can never
    hold K + 1 users pass the check before training."""
    counts = tasks.info.get("n_users", {})
    if protocol != "production":
        return int(counts.get("train", 0))
    warm = tasks.frames.get(f"users__{WARM_SPLIT}")  # a row per task: user_id, chunk, user_row
    warm_users = warm["user_id"].n_unique() if warm is not None else int(counts.get(WARM_SPLIT, 0))
    return int(counts.get("train", 0)) + warm_users


def train_method(
    method: str, tasks: Bundle, learner_config: LearnerConfig, train_config: TrainConfig, seeds: list[int],
    on_epoch: Callable[[int, "EpochLog"], None] = lambda seed, log: None, settings: dict | None = None,
    processes: int | None = None,
) -> tuple[Bundle, float]:
    """Train `method` once per seed; tensors hold each seed's selected state dict.

    `settings` (the settings file, its hash and trial that chose the tuned values) and the
    training process's threads, device and kernel flag go into the info (and the run's row).
    Returns the bundle and the mean training throughput (users per second).
    """
    [(bundle, speed)] = train_variants(tasks, [(method, learner_config)], train_config, seeds,
                                       lambda variant, seed, log: on_epoch(seed, log), processes, settings)
    return bundle, speed


def train_variants(
    tasks: Bundle, variants: list[tuple[str, LearnerConfig]], train_config: TrainConfig, seeds: list[int],
    on_epoch: Callable[[int, int, "EpochLog"], None] = lambda variant, seed, log: None, processes: int | None = None,
    settings: dict | None = None,
) -> list[tuple[Bundle, float]]:
    """Train every (method, settings) variant once per seed, the runs side by side where the
    device has room (models/parallel.py); one model bundle and mean users/s per variant.

    `settings` (where the tuned values came from: ModelConfig.settings_provenance) goes into
    every variant's info, beside the runs' threads, device and kernel flag (`runtime`).
    """
    from models.parallel import TrainJob, run_jobs
    from models.tasks import task_data_from_tensors

    data = task_data_from_tensors(tasks.tensors, tasks.info)
    jobs = [TrainJob(method, learner_config, replace(train_config, seed=seed))
            for method, learner_config in variants for seed in seeds]
    results = run_jobs(data, jobs, processes,
                       on_epoch=lambda i, log: on_epoch(i // len(seeds), seeds[i % len(seeds)], log))
    return [variant_bundle(method, learner_config, train_config, seeds, tasks.info["dataset"],
                           results[v * len(seeds): (v + 1) * len(seeds)], settings)
            for v, (method, learner_config) in enumerate(variants)]


def variant_bundle(method: str, learner_config: LearnerConfig, train_config: TrainConfig, seeds: list[int],
                   dataset: str, results: "list[JobResult]", settings: dict | None = None) -> tuple[Bundle, float]:
    """The model bundle of one variant's runs (one per seed) and its mean users/s."""
    from models.checkpoint import flatten_state
    from models.learners import method_form

    tensors, history, best, speeds = {}, [], {}, []
    for seed, result in zip(seeds, results):
        tensors.update(flatten_state(result.state, prefix=f"seed{seed}/"))
        # Wall-clock timings stay out of the bundle: its content hash must not change on rerun.
        history += [{"seed": seed, "step": log.step, "epoch": log.epoch, "train_loss": log.train_loss, "val_loss": log.val_loss,
                     "max_grad_norm": log.max_grad_norm, **{f"train_{k}": v for k, v in log.terms.items()}}
                    for log in result.history]
        speeds += [log.users_per_second for log in result.history]
        best[str(seed)] = {"epoch": result.best_epoch, "step": result.best_step, "val_loss": result.best_val_loss,
                           "stopped": result.stopped, **({"warning": result.warning} if result.warning else {})}
    frames = {"history": pl.DataFrame(history).with_columns(pl.lit(method).alias("method"))}
    # How the runs computed (threads, device, deterministic kernels): numbers can differ in
    # the last digits between thread counts or devices, so the record belongs to the model.
    runtime = {k: v for k, v in results[0].runtime.items() if k != "torch"} if results else {}
    info = {"method": method, "form": method_form(method), "seeds": seeds, "best": best, "learner_config": asdict(learner_config),
            "train_config": {**asdict(train_config), "seed": None}, "dataset": dataset,
            "settings": settings, "runtime": runtime}
    return Bundle(frames=frames, tensors=tensors, info=info), float(np.mean(speeds)) if speeds else 0.0


def load_learner(model: Bundle, data: "TaskData", seed: int) -> "MetaLearner":
    """Rebuild the trained learner of `seed` from a `<method>_model` bundle.

    Built on the tasks the model trained on (its protocol's `training_view`): what the network
    fits when it is built and does not save (the kNN fold-in's neighbour lists) must come from
    the same ratings as in training.
    """
    from models.checkpoint import unflatten_state
    from models.learners import ModelFormError, build_learner, learner_config_from_dict, stored_model_problem
    from models.tasks import training_view

    problem = stored_model_problem(model.info)
    if problem is not None:
        raise ModelFormError(unloadable_message(model, problem))
    protocol = model.info["train_config"].get("protocol", DEFAULT_PROTOCOL)
    learner = build_learner(model.info["method"], training_view(data, protocol), learner_config_from_dict(model.info["learner_config"]))
    try:
        learner.load_state_dict(unflatten_state(model.tensors, prefix=f"seed{seed}/"))
    except RuntimeError as error:  # missing, unexpected or reshaped weights: the network changed since
        raise ModelFormError(unloadable_message(model, f"its weights do not fit this code's network{filled_note(model.info)} "
                                                       f"({str(error).strip().splitlines()[-1].strip()})")) from None
    if note := filled_note(model.info):
        # Said in the run's log: the user should know the model in use is older code's, read with declared values.
        get_dagster_logger().info(f"{model_name(model)}, seed {seed}, was trained by older code and is{note}")
    return learner


def filled_note(info: dict) -> str:
    """' built with the values before they existed of the fields its settings lack (<field> = <value>, ...)'
    for a stored model of older code read with them (models/config_fields.py); '' when it lacks none."""
    from models.learners import settings_of_older_code

    filled = settings_of_older_code(info["learner_config"])
    if not filled:
        return ""
    return (" built with the values before they existed of the fields its settings lack "
            f"({', '.join(f'{k} = {v!r}' for k, v in filled.items())})")


def model_name(model: Bundle) -> str:
    """'the <method> model of <dataset> (artifact <id>)', as messages about a stored model name it."""
    artifact = f" (artifact {model.artifact_id})" if model.artifact_id else ""
    return f"the {model.info.get('method', '?')} model of {model.info.get('dataset', '?')}{artifact}"


def unloadable_message(model: Bundle, problem: str) -> str:
    """One line: which stored model this code cannot load, why, and the command that trains it again."""
    return (f"{model_name(model)} cannot be loaded by this code: {problem}; train it again "
            f"(the model in service is replaced by the new one): dg launch --job training_job --partition {model.info.get('dataset', '?')}")


def score(
    dataset: str, method: str, seed: int, data: "TaskData", tasks: Bundle, groups: Bundle,
    pred: np.ndarray, lr_per_user: np.ndarray, protocol: str = DEFAULT_PROTOCOL,
    diagnostics: dict[str, np.ndarray] | None = None,
) -> tuple[pl.DataFrame, list[dict]]:
    """Per-user and aggregate test metrics of one set of (U, Q) test predictions.

    `protocol` names the data the predictor was fitted on (models/references.py PROTOCOL_SPLITS);
    `diagnostics` are extra per-user columns (assets/evaluation.py `user_diagnostics`).
    """
    from models.references import training_labels

    test = data.splits["test"]
    target, mask = test.query_labels.numpy(), test.query_mask.numpy()
    train_ctr = float(training_labels(data)[1].mean()) if data.task == "ctr" else None
    lowest = lowest_rating(dataset) if data.task == "rating" else 0.0
    users, group_frame = tasks.frame("users__test"), groups.frame("groups")
    frame = user_metrics_frame(users, group_frame, pred, target, mask, lr_per_user, data.task, train_ctr, diagnostics, lowest)
    frame = frame.with_columns(pl.lit(dataset).alias("dataset"), pl.lit(protocol).alias("protocol"), pl.lit(method).alias("method"),
                               pl.lit(seed, dtype=pl.Int64).alias("seed"))
    group_of_row = users.join(group_frame, on="user_id", how="left").sort("user_row")["group"].fill_null("").to_numpy()
    rows = [{"dataset": dataset, "protocol": protocol, "method": method, "seed": seed, **row}
            for row in aggregate(pred, target, mask, group_of_row, data.task, train_ctr, lowest)]
    return frame, rows


def lowest_rating(dataset: str) -> float:
    """The bottom of `dataset`'s rating scale (its spec's label.min: nDCG grades from it when it is
    below 0); 0 for a name without a spec (task data made up in a test), whose nDCG grades from 0."""
    return float(spec_for(dataset).label_min) if dataset in all_datasets() else 0.0


def evaluate_dataset(method: str, dataset: str, model: Bundle, tasks: Bundle, groups: Bundle) -> tuple[list[pl.DataFrame], list[dict]]:
    """Per-user and aggregate test metrics, with the per-user diagnostics, of every seed of one dataset's model."""
    from models.tasks import task_data_from_tensors
    from models.training import predict_split

    data = task_data_from_tensors(tasks.tensors, tasks.info)
    protocol = model.info["train_config"].get("protocol", DEFAULT_PROTOCOL)  # the rows say what the model trained on
    memory_k = int(model.info["learner_config"]["memory"]["k"])
    user_frames, rows = [], []
    for seed in model.info["seeds"]:
        preds = predict_split(load_learner(model, data, seed), data, "test", diagnostics=True)
        frame, aggregates = score(dataset, method, seed, data, tasks, groups, preds.pred, preds.lr_per_user, protocol,
                                  user_diagnostics(preds, memory_k))
        user_frames.append(frame)
        rows += aggregates
    return user_frames, rows


def metrics_bundle(method: str, user_frames: list[pl.DataFrame], rows: list[dict], datasets: list[str]) -> Bundle:
    """The frames every evaluation asset stores: user_metrics, metrics, significance."""
    user_metrics = pl.concat(user_frames, how="diagonal_relaxed") if user_frames else pl.DataFrame()
    metrics = pl.DataFrame(rows) if rows else pl.DataFrame()
    significance = minor_vs_major(user_metrics) if user_frames else pl.DataFrame()
    return Bundle(frames={"user_metrics": user_metrics, "metrics": metrics, "significance": significance},
                  info={"method": method, "datasets": datasets})


def evaluate_method(method: str, models: dict[str, Bundle], tasks: dict[str, Bundle], groups: dict[str, Bundle]) -> Bundle:
    """Evaluate every dataset that has a trained model (and its tasks and groups)."""
    user_frames, rows, evaluated = [], [], []
    for dataset in sorted(models):
        if dataset not in tasks or dataset not in groups:
            continue
        frames, aggregates = evaluate_dataset(method, dataset, models[dataset], tasks[dataset], groups[dataset])
        user_frames += frames
        rows += aggregates
        evaluated.append(dataset)
    return metrics_bundle(method, user_frames, rows, evaluated)


# -- Dagster assets ----------------------------------------------------------------------
from contextlib import contextmanager  # noqa: E402
from typing import Iterator, Literal  # noqa: E402

import dagster as dg  # noqa: E402
from pydantic import Field, field_validator  # noqa: E402

from models.bounds import SettingError  # noqa: E402
from models.configs import BATCHING, MEMORY_BACKENDS, PROTOCOLS  # noqa: E402
from models.runtime import SEED_MAX  # noqa: E402

from pipelines.outputs import bundle_output, inline_plot, table  # noqa: E402
from pipelines.partitions import dataset_partitions  # noqa: E402
from pipelines.resources import PamlResource  # noqa: E402

LEARNER_DEFAULTS = LearnerConfig()
MEMORY_DEFAULTS = MemoryConfig()
TRAIN_DEFAULTS = TrainConfig()
TUNED_HELP = " Empty = the tuned value for this dataset and method (models/settings/<dataset>.json), else the code default."
# Values a run config may name: Dagster checks a Literal before the run starts (the key, the value and the
# choices in one line), where a free string failed deep in training (models/, torch) without the key.
Protocol = Literal[PROTOCOLS]  # type: ignore[valid-type]
Batching = Literal[BATCHING]  # type: ignore[valid-type]
MemoryBackend = Literal[MEMORY_BACKENDS]  # type: ignore[valid-type]
DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?)$"
# The network's fold-in settings a run config may set. No longer searched (models/settings.py SPACE), so they
# are applied here: through the settings' knobs, as before, they were silently dropped.
FOLD_IN_FIELDS = ("mf_foldin", "mf_reg", "knn_foldin", "knn_shrinkage")


def seeds_in_range(key: str, seeds: list[int]) -> list[int]:
    """`seeds` when each lies in 0..SEED_MAX and none repeats, else a ValueError naming `key` and the values."""
    bad = [seed for seed in seeds if not 0 <= seed <= SEED_MAX]
    if bad:
        raise ValueError(f"{key}: {bad} out of range; each seed must lie in 0..{SEED_MAX}")
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ValueError(f"{key}: {seeds}; give one or more distinct seeds")
    return seeds


@contextmanager
def refusing_settings(step: str) -> Iterator[None]:
    """A setting refused while `step` resolves its settings, before it trains (a SettingError: a value the
    configs, the settings file or the dataset's users do not allow), fails the step with Dagster's Failure:
    its one line heads the step's and the run's failure message (and the CLI prints it alone), where the
    ValueError's traceback through Dagster ended in it."""
    try:
        yield
    except SettingError as error:
        raise dg.Failure(description=f"{step}: {error}", allow_retries=False) from None


class ModelConfig(dg.Config):
    """Training settings of one method (defaults and their reasons: docs/protocol.md, docs/tuning.md)."""

    epochs: int = Field(default=TRAIN_DEFAULTS.epochs, ge=1, description="Upper bound on passes over the training users.")
    max_steps: int = Field(default=TRAIN_DEFAULTS.max_steps, ge=1, description="Outer-step budget.")
    eval_every: int = Field(default=TRAIN_DEFAULTS.eval_every, ge=1, description="Outer steps between two scorings of the validation users.")
    patience: int = Field(default=TRAIN_DEFAULTS.patience, ge=1, description="Evaluations without improvement before training stops (the best one is kept).")
    protocol: Protocol = Field(default=TRAIN_DEFAULTS.protocol, description="'paper' (cold-start training users only) or 'production' (+ the warm users' tasks).")
    batching: Batching = Field(default=TRAIN_DEFAULTS.batching, description="'bucketed' (meta-batches of similar-length users, little padding) or 'random' (models/batching.py).")
    processes: int | None = Field(default=None, ge=1, description="Runs (seeds, ablation variants) trained side by side in their own processes; empty = one per run on a GPU, on CPU one per 2 threads (models/parallel.py).")
    meta_batch: int = Field(default=TRAIN_DEFAULTS.meta_batch, ge=1, description="Users (tasks) per outer step.")
    outer_lr: float | None = Field(default=None, description="Adam learning rate of the outer loop." + TUNED_HELP)
    inner_lr: float | None = Field(default=None, description="Base inner step size (MeLU's fixed alpha; PAML's starting alpha)." + TUNED_HELP)
    inner_steps: int | None = Field(default=None, description="Inner gradient steps on the support set." + TUNED_HELP)
    first_order: bool = Field(default=LEARNER_DEFAULTS.first_order, description="Drop second-order terms of the meta-gradient.")
    seeds: list[int] = Field(default=[0, 1, 2], description=f"One trained model per seed (the paper: 3 trials), each in 0..{SEED_MAX}.")
    device: str = Field(default="auto", pattern=DEVICE_PATTERN, description="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'.")
    embedding_dim: int = Field(default=LEARNER_DEFAULTS.network.embedding_dim, ge=1, description="Embedding size per field.")
    hidden: list[int] = Field(default=list(LEARNER_DEFAULTS.network.hidden), description="Decision layer widths.")
    statistics: bool = Field(default=LEARNER_DEFAULTS.network.statistics, description="Rating statistics as features (models/features.py).")
    item_id: bool = Field(default=LEARNER_DEFAULTS.network.item_id, description="The item's identity as an item field.")
    factor_dim: int | None = Field(default=None, description=f"Rank of the dot-product head on MF item factors (0 = none); empty = {LEARNER_DEFAULTS.network.factor_dim}, or with the MF fold-in the MF reference row's rank.")
    unknown_rate: float | None = Field(default=None, description="Share of codes replaced by UNKNOWN while meta-training." + TUNED_HELP)
    mf_foldin: bool | None = Field(default=None, description="Add the MF fold-in's prediction to the score (the network starts at the MF reference row); empty = on.")
    mf_reg: float | None = Field(default=None, description="Ridge strength of the network's MF (item factors and the fold-in); empty = the MF reference row's (reference_settings).")
    knn_foldin: bool | None = Field(default=None, description="Add item-kNN's fold-in prediction to the score (with the MF fold-in: start at their even blend); empty = on.")
    knn_shrinkage: float | None = Field(default=None, description="Similarity shrinkage lambda of the network's item-kNN; empty = the kNN reference row's (reference_settings).")
    factor_lr_scale: float | None = Field(default=None, description="The user factor's inner step relative to the decision layers'." + TUNED_HELP)
    lr_per_layer: bool | None = Field(default=None, description="PAML family: one alpha(h_i) per adapted layer." + TUNED_HELP)
    lr_history: bool | None = Field(default=None, description="PAML family: the LR module also reads an encoding of the support set." + TUNED_HELP)
    lr_per_parameter: bool | None = Field(default=None, description="PAML/REG-PAML: alpha(h_i) scales a learned rate per adapted weight (Meta-SGD's)." + TUNED_HELP)
    lr_init_std: float = Field(default=LEARNER_DEFAULTS.lr_init_std, description="PAML family: init spread of the LR module's last layer.")
    rate_lr: float | None = Field(default=None, description="Adam rate of the LR module / Meta-SGD rates." + TUNED_HELP)
    weight_decay: float | None = Field(default=None, description="AdamW's decoupled weight decay on the network." + TUNED_HELP)
    max_step_norm: float | None = Field(default=None, description="Bound on one inner update's norm." + TUNED_HELP)
    lr_hidden: int = Field(default=LEARNER_DEFAULTS.lr_hidden, description="PAML family: hidden width of the LR module.")
    lr_range: float | None = Field(default=None, description="PAML family: alpha(h) lies in [inner_lr / lr_range, inner_lr * lr_range]." + TUNED_HELP)
    gamma: float | None = Field(default=None, ge=0, description="REG-PAML: regularizer weight gamma." + TUNED_HELP)
    correction_range: float | None = Field(default=None, description="AT-PAML: alpha'(h) in (-c, c), in log-ratio units." + TUNED_HELP)
    memory_weight: float | None = Field(default=None, description="AT-PAML: weight rho of the neighbours' mean log-ratio (1 = the paper's)." + TUNED_HELP)
    memory_capacity: int = Field(default=MEMORY_DEFAULTS.capacity, ge=1, description="AT-PAML: stored users before LRU eviction.")
    memory_k: int | None = Field(default=None, ge=1, description=f"AT-PAML: neighbours K; empty = {MEMORY_DEFAULTS.k}, lowered "
                                 "to the training users less one where fewer than K + 1 train (the memory must fill).")
    memory_beta: float = Field(default=MEMORY_DEFAULTS.beta, description="AT-PAML: SGD step on stored embeddings and LRs.")
    memory_backend: MemoryBackend = Field(default=MEMORY_DEFAULTS.backend, description="AT-PAML: 'exact' (torch) or 'flann' (randomized kd-tree).")
    kernel_delta: float | None = Field(default=None, description="AT-PAML: fixed kernel delta; empty = calibrated from the stored embeddings.")
    kernel_scale: float | None = Field(default=None, description="AT-PAML: calibrated kernel, farthest neighbour weighs exp(-kernel_scale) of the nearest." + TUNED_HELP)
    finetune_steps: int | None = Field(default=None, description="Transfer: fine-tuning steps per test user." + TUNED_HELP)
    finetune_lr: float | None = Field(default=None, description="Transfer: fine-tuning step size." + TUNED_HELP)
    settings_dir: str = Field(default="", description="Directory of the tuned settings files (<dataset>.json); empty = models/settings.")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        return seeds_in_range("seeds", seeds)

    @field_validator("settings_dir")
    @classmethod
    def _settings_dir(cls, settings_dir: str) -> str:
        # A directory that is not there gave every model the code defaults, without a word.
        if settings_dir and not Path(settings_dir).is_dir():
            what = "is a file, not a directory" if Path(settings_dir).exists() else "does not exist"
            raise ValueError(f"settings_dir: {settings_dir!r} {what}; give the directory holding <dataset>.json "
                             "(empty = models/settings)")
        return settings_dir

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, hidden: list[int]) -> list[int]:
        if any(width < 1 for width in hidden):
            raise ValueError(f"hidden: {hidden}; every layer width must be >= 1")
        return hidden

    def learner_config(self, method: str, dataset: str | None, references: Bundle | None = None,
                       training_users: int | None = None) -> LearnerConfig:
        """Code defaults <- tuned settings of (dataset, method) <- values set in this config; with fold-ins,
        their MF and kNN settings from `references` (the `reference_settings` asset) unless those two set them.
        `training_users` (the users the protocol trains on) fits AT-PAML's default K to them (`default_memory_k`)."""
        return self._configs(method, dataset, self._references(references), training_users)[0]

    def _references(self, references: Bundle | None) -> ReferenceSettings | None:
        """The reference rows' settings `reference_settings` chose under this config's protocol, if any."""
        chosen = (references.info["settings"] if references is not None else {}).get(self.protocol)
        return ReferenceSettings.from_dict(chosen) if chosen is not None else None

    def training_configs(self, method: str, dataset: str, references: Bundle | None,
                         training_users: int) -> tuple[LearnerConfig, TrainConfig]:
        """The learner and training configs `method` trains with on `dataset` (`learner_config`, `train_config`),
        refused with a SettingError before anything trains when a value cannot work: AT-PAML's memory must be
        able to leave warm-up with `training_users` (`check_memory_fills`). A memory_k the users cannot fill is
        refused first, before the configs are built: a huge K was told it exceeds the capacity (or FLANN's checks)."""
        from models.user_memory import check_k_fits_users, check_memory_fills

        if method == "at_paml" and self.memory_k is not None:
            check_k_fits_users(self.memory_k, training_users)
        learner, train = self._configs(method, dataset, self._references(references), training_users)
        if method == "at_paml":
            check_memory_fills(learner.memory, training_users)
        return learner, train

    def memory_note(self, method: str, learner: LearnerConfig, training_users: int) -> str:
        """The warning that AT-PAML's default K was lowered to fit `training_users` ('' when it was not)."""
        k = learner.memory.k
        if method != "at_paml" or self.memory_k is not None or k == MEMORY_DEFAULTS.k:
            return ""
        return (f"at_paml: {training_users} training users, too few for the memory's default K = {MEMORY_DEFAULTS.k} "
                f"neighbours (it attends only once it holds K + 1 users, never a user's own slot): K = {k} instead, each "
                f"user attending to {k} of the other training users; set memory_k to choose K")

    def train_config(self, method: str, dataset: str | None) -> TrainConfig:
        return self._configs(method, dataset)[1]

    def chosen(self, method: str, dataset: str | None) -> "ChosenSettings":
        """The settings file's choice for (dataset, method) under this config's protocol."""
        from models.settings import chosen_settings

        return chosen_settings(dataset, method, Path(self.settings_dir) if self.settings_dir else None, self.protocol)

    def explicit(self) -> dict:
        """Tunable settings given in this run config (they win over the settings file)."""
        from models.settings import KNOBS

        return {name: getattr(self, name) for name in KNOBS if getattr(self, name, None) is not None}

    def fold_in_values(self) -> dict:
        """The fold-ins' settings given in this run config (not searched: they win over the reference rows' choice)."""
        return {name: getattr(self, name) for name in FOLD_IN_FIELDS if getattr(self, name) is not None}

    def settings_provenance(self, method: str, dataset: str | None) -> dict:
        """What a model bundle records: the settings file, its hash, the trial, and what the run config overrode."""
        return {**self.chosen(method, dataset).provenance(), "run_config": {**self.explicit(), **self.fold_in_values()}}

    def _configs(self, method: str, dataset: str | None, references: ReferenceSettings | None = None,
                 training_users: int | None = None) -> tuple[LearnerConfig, TrainConfig]:
        from models.settings import apply_settings
        from models.user_memory import default_memory_k

        network = NetworkConfig(embedding_dim=self.embedding_dim, hidden=tuple(self.hidden), statistics=self.statistics,
                                item_id=self.item_id,
                                factor_dim=LEARNER_DEFAULTS.network.factor_dim if self.factor_dim is None else self.factor_dim,
                                **self.fold_in_values())
        k = self.memory_k if self.memory_k is not None else default_memory_k(training_users)
        memory = MemoryConfig(capacity=self.memory_capacity, k=k, beta=self.memory_beta, backend=self.memory_backend)
        learner = LearnerConfig(first_order=self.first_order, network=network, lr_hidden=self.lr_hidden, memory=memory,
                                kernel_delta=self.kernel_delta, lr_init_std=self.lr_init_std)
        train = TrainConfig(epochs=self.epochs, meta_batch=self.meta_batch, device=resolve_device(self.device),
                            max_steps=self.max_steps, eval_every=self.eval_every, patience=self.patience, protocol=self.protocol,
                            batching=self.batching)
        return apply_settings({**self.chosen(method, dataset).params, **self.explicit()}, learner, train, references,
                              keep=frozenset({"factor_dim"} if self.factor_dim is not None else ()) | set(self.fold_in_values()))


def build_model_asset(method: str) -> dg.AssetsDefinition:
    """`<method>_model`: train `method` on one dataset's tasks, one model per seed."""

    @dg.asset(
        name=f"{method}_model", partitions_def=dataset_partitions, group_name="models", kinds={"pytorch", "safetensors"},
        code_version="1", ins={"meta_tasks": dg.AssetIn("meta_tasks"), "reference_settings": dg.AssetIn("reference_settings")},
        description=f"{method}: meta-trained per seed, epoch chosen on validation users; state dicts as safetensors.",
    )
    def _model(context: dg.AssetExecutionContext, config: ModelConfig, paml: PamlResource, meta_tasks: Bundle,
               reference_settings: Bundle) -> dg.Output[Bundle]:
        # `paml` keeps the fold-ins' fitted tables in PAML_HOME/fits (its setup): without it a model
        # step run in its own process (the multiprocess executor, `asset materialize`) stored none, and
        # the champion step fitted them all again (about 4 CPU-minutes at 10 M ratings).
        dataset = context.partition_key
        users = training_users(meta_tasks, config.protocol)
        with refusing_settings(f"{method}_model ({dataset})"):
            chosen = config.chosen(method, dataset)
            learner, train_config = config.training_configs(method, dataset, reference_settings, users)
        if chosen.file is not None and chosen.trial is None:
            context.log.warning(f"{chosen.file} holds no usable settings for {method}: it trains with the code defaults "
                                "and the run config's values (`python -m pipelines.cli tune --methods ...` searches them)")
        elif chosen.file is None and config.settings_dir:  # a directory given on purpose, without this dataset's file
            context.log.warning(f"settings_dir {config.settings_dir} holds no {dataset}.json: {method} trains with the "
                                "code defaults and the run config's values")
        if note := config.memory_note(method, learner, users):
            context.log.warning(note)
        bundle, users_per_second = train_method(
            method, meta_tasks, learner, train_config, config.seeds,
            lambda seed, log: context.log.info(progress_line(f"seed {seed}", log)),
            settings=config.settings_provenance(method, dataset), processes=config.processes)
        for seed_best in bundle.info["best"].values():
            if "warning" in seed_best:
                context.log.warning(seed_best["warning"])
        curves = bundle.frame("history").group_by("epoch").agg(pl.col("train_loss", "val_loss").mean()).sort("epoch")
        plot = inline_plot({"train loss": curves["train_loss"].to_list(), "validation loss": curves["val_loss"].to_list()},
                           "mean over seeds by epoch")
        return bundle_output(bundle, best_epochs=dg.MetadataValue.json(bundle.info["best"]),
                             **({"training_curves": plot} if plot else {}), device=bundle.info["train_config"]["device"],
                             users_per_second=round(users_per_second, 1), runtime=dg.MetadataValue.json(bundle.info["runtime"]))

    return _model


def build_eval_asset(method: str) -> dg.AssetsDefinition:
    """`<method>_eval`: the Table-2 row of the method's model in service for every dataset that has one."""

    @dg.asset(
        name=f"{method}_eval", group_name="evaluation", kinds={"pytorch", "duckdb"}, code_version="3",
        ins={"champions": dg.AssetIn(f"{method}_champion")},
        description=f"{method}: the model in service adapted on test users' support sets, scored on their query sets "
                    "(the test users of the tasks it was trained with); user_metrics, metrics, significance.",
    )
    def _eval(context: dg.AssetExecutionContext, paml: PamlResource, champions) -> dg.MaterializeResult:
        from assets.promotion import evaluate_in_service

        # the datasets without a champion: the IO manager has said so on the console, the metadata keeps them
        missing = sorted(set(dataset_partitions.get_partition_keys()) - set(champions))
        if not champions:  # a run that evaluates nothing says what to build, not only an INFO line among DEBUG ones
            context.log.warning(f"{method}: nothing to evaluate, no dataset has a {method} model in service in this "
                                f"Dagster instance; train one first: dg launch --job training_job --partition DATASET "
                                f"(after its data_job; `python -m pipelines.cli demo --dataset DATASET` does both)")
        store = paml.store()
        started = time.perf_counter()
        bundle = evaluate_in_service(method, champions, lambda artifact: store.load(store.row(artifact)))
        summary = metrics_summary(bundle.frame("metrics"))
        if summary.height:
            context.log.info(evaluation_line(bundle.frame("user_metrics").height, time.perf_counter() - started, summary))
        headline = {f"{r['dataset']}/{r['metric']}": float(r["mean"]) for r in summary.filter(pl.col("population") == "all").iter_rows(named=True)} \
            if summary.height else {}
        return bundle_output(bundle, datasets_evaluated=", ".join(bundle.info["datasets"]) or "none",
                             datasets_without_model=", ".join(missing) or "none", summary=table(summary), **headline)

    return _eval


def progress_line(run: str, log: "EpochLog") -> str:
    """One console line per validation scoring of a run (pipelines/progress.py prints it)."""
    if log.step == 0:  # the untrained start, scored as a selection candidate: nothing trained yet
        return f"{run} start (untrained): validation loss {log.val_loss:.4f}"
    return (f"{run} step {log.step} (epoch {log.epoch:.1f}): train loss {log.train_loss:.4f}, "
            f"validation loss {log.val_loss:.4f}, {log.users_per_second:.0f} users/s")


def metrics_summary(metrics: pl.DataFrame) -> pl.DataFrame:
    """Mean and sd over seeds of each (dataset, population, metric) of a `metrics` frame."""
    if not metrics.height:
        return metrics
    return metrics.group_by("dataset", "population", "metric").agg(
        mean=pl.col("value").mean(), sd=pl.col("value").std()).sort("dataset", "metric", "population")


def evaluation_line(users: int, seconds: float, summary: pl.DataFrame) -> str:
    """One console line per evaluation: users scored, their rate, each dataset's metrics over all users."""
    everyone = summary.filter(pl.col("population") == "all")
    scores = "; ".join(f"{dataset} " + ", ".join(f"{m} {v:.4f}" for m, v in zip(part["metric"], part["mean"]))
                       for (dataset,), part in everyone.group_by("dataset", maintain_order=True))
    return f"scored {users} test users (all seeds) in {seconds:.1f} s, {users / max(seconds, 1e-9):.0f} users/s: {scores}"


MODEL_ASSETS = [build_model_asset(m) for m in METHOD_NAMES]
EVAL_ASSETS = [build_eval_asset(m) for m in METHOD_NAMES]
