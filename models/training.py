"""The outer loop: meta-batches of training users, Adam, model selection on validation users.

The budget is counted in outer steps, not epochs: validation users are scored every
`eval_every` steps, training stops after `patience` evaluations without improvement (or at
`max_steps`), and the best evaluation's parameters are kept. A fixed epoch count gave a
small dataset (518 training users = 17 steps an epoch) a tenth of the updates of a large one.
Progress goes to a callback once per evaluation, so callers (a Dagster asset, a benchmark,
a test) decide where it is logged.

A step whose meta-gradient holds NaN or infinity after clipping ends training there
(`stopped == "diverged"`): the optimizer would write NaN into the parameters, and every
later scoring would be NaN. The best finite evaluation before it is kept, and `TrainResult.warning` says
which method, seed and step diverged and which setting to lower; so does a run whose every
validation scoring was non-finite (its parameters are the untrained ones, `best_val_loss` is
inf, and promotion rejects it, assets/promotion.py). A finite best validation loss more than
POOR_FIT_FACTOR times that of predicting the training labels' mean (a huge but finite step size
gives ~1e34) gets such a warning too; training itself is unchanged.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from models.batching import epoch_batches, length_order
from models.configs import TrainConfig  # noqa: F401 (re-exported)
from models.learners import ATPAML, LearnerConfig, MetaLearner, build_learner
from models.runtime import apply_torch_threads
from models.tasks import TaskData, TaskSplit, training_view

if TYPE_CHECKING:
    from models.distributed import Collective


CPU_EVAL_BATCH = 256
# A GPU scores thousands of small tasks at once as fast as 256 (ML-1M's 482 validation users
# in one batch); the batch is sorted by length, so padding stays small.
GPU_EVAL_BATCH = 4096


def eval_batch_size(config: TrainConfig) -> int:
    """The configured evaluation batch, or the device's default."""
    if config.eval_batch is not None:
        return config.eval_batch
    return GPU_EVAL_BATCH if config.device.startswith("cuda") else CPU_EVAL_BATCH


@dataclass
class EpochLog:
    """Progress at one evaluation: the outer step, the epochs done, losses since the last one."""

    epoch: float  # outer steps done / steps per epoch
    train_loss: float  # mean meta-objective over the steps since the last evaluation
    val_loss: float
    seconds: float  # training time since the last evaluation
    users_per_second: float
    step: int = 0
    # Since the last evaluation: the largest meta-gradient norm before clipping, and the
    # objective's terms (REG-PAML: the mean query loss and the largest regularizer value), so
    # that a spike in the training loss shows what blew up.
    max_grad_norm: float = float("nan")
    terms: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    """The selected model and how training went."""

    learner: MetaLearner
    best_epoch: float
    best_val_loss: float
    history: list[EpochLog] = field(default_factory=list)
    best_step: int = 0
    stopped: str = ""  # why training ended: "patience", "max_steps", "max_seconds", "epochs" or "diverged"
    warning: str = ""  # set when a step diverged, no validation scoring was finite or the best was far worse than
    # predicting the training mean (`poor_fit`): what happened, what to lower
    diverged_step: int | None = None  # the outer step whose meta-gradient was not finite (stopped == "diverged")


@dataclass(frozen=True)
class Predictions:
    """Adapted predictions for one split: (U, Q) arrays plus the step size each user got.

    With `diagnostics` (evaluation only): each user's query loss *before* adaptation (the
    adaptation gain is the difference), AT-PAML's weight of the nearest neighbour and the
    entropy of its attention (NaN for other methods), and how many of the user's categorical
    fields fell back to the UNKNOWN row because no training user had the value.
    """

    pred: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    lr_per_user: np.ndarray
    query_loss: np.ndarray
    query_loss_unadapted: np.ndarray | None = None
    nearest_weight: np.ndarray | None = None
    attention_entropy: np.ndarray | None = None
    unknown_fields: np.ndarray | None = None


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG (parameter init) and return a generator for data order.

    Also switches torch to deterministic kernels for the whole process: with 2 CPU threads
    some backward accumulations ran in a varying order (taobao MeLU with 3 inner steps: the
    validation loss of two identical runs differed in the 7th digit from epoch 4 on), and the
    deterministic kernels cost no measurable time here. cuBLAS needs its workspace setting
    before its first use; where that is too late, torch warns instead of failing.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def predict_split(learner: MetaLearner, data: TaskData, split: str, batch_size: int = CPU_EVAL_BATCH,
                  diagnostics: bool = False, tasks: TaskSplit | None = None) -> Predictions:
    """Adapt on every user's support set of `split` and predict its query set.

    `tasks`: the split's tasks with this learner's kNN fold-ins attached already
    (`PreferenceNetwork.with_knn_foldins`), on the learner's device.
    """
    apply_torch_threads()
    data = data.to(next(learner.parameters()).device)
    if tasks is None:
        tasks = learner.net.with_knn_foldins(data.splits[split], training=False)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("pred", "loss", "lr", "unadapted", "nearest", "entropy", "unknown")}
    width = tasks.query_mask.shape[1]
    # Users in order of support length, so a batch is padded to little more than its own users;
    # `restore` puts every result back in row order.
    order = length_order(tasks.support_mask.sum(1).cpu()).to(tasks.user_fields.device)
    restore = torch.argsort(order)
    learner.eval()
    for start in range(0, len(tasks), batch_size):
        index = order[start: start + batch_size]
        batch = tasks.select(index)
        outcome = learner.run(batch, data.items, training=False)
        pred = outcome.query_pred.detach()
        if data.task == "ctr":
            pred = torch.sigmoid(pred)
        padded = pred.new_zeros((len(index), width))
        padded[:, : pred.shape[1]] = pred
        out["pred"].append(padded)
        out["loss"].append(outcome.query_loss.detach())
        out["lr"].append(outcome.lr_per_user.detach())
        if diagnostics:
            out["unadapted"].append(learner.run(batch, data.items, training=False, adapt=False).query_loss.detach())
            nearest, entropy = attention_summary(outcome.attention, len(index), pred)
            out["nearest"].append(nearest)
            out["entropy"].append(entropy)
            out["unknown"].append(learner.net.embedder.unknown_fields(batch.user_fields).sum(1).to(pred.dtype))
    learner.train()
    cat = lambda xs: torch.cat(xs)[restore.to(xs[0].device)].cpu().numpy() if xs else np.zeros((0,))  # noqa: E731
    extra = {}
    if diagnostics:
        extra = {"query_loss_unadapted": cat(out["unadapted"]), "nearest_weight": cat(out["nearest"]),
                 "attention_entropy": cat(out["entropy"]), "unknown_fields": cat(out["unknown"])}
    return Predictions(
        pred=cat(out["pred"]).reshape(len(tasks), width), target=tasks.query_labels.cpu().numpy(),
        mask=tasks.query_mask.cpu().numpy(), lr_per_user=cat(out["lr"]), query_loss=cat(out["loss"]), **extra,
    )


def attention_summary(weights: torch.Tensor | None, n_users: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) weight of the nearest neighbour and entropy (nats) of the normalized weights; NaN without attention."""
    if weights is None:
        nan = like.new_full((n_users,), float("nan"))
        return nan, nan
    p = weights / weights.sum(1, keepdim=True).clamp_min(1e-12)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(1)
    return weights[:, 0], entropy


def outer_optimizer(learner: MetaLearner, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; the step-size machinery (LR module, history encoder, Meta-SGD's rates) may have its own rate."""
    rate_prefixes = ("lr_module.", "history.", "rates.")
    trainable = [(n, p) for n, p in learner.named_parameters() if p.requires_grad]
    rates = [p for n, p in trainable if n.startswith(rate_prefixes)]
    others = [p for n, p in trainable if not n.startswith(rate_prefixes)]
    groups = [{"params": others, "weight_decay": config.weight_decay}]
    if rates:
        groups.append({"params": rates, "lr": config.rate_lr if config.rate_lr is not None else config.outer_lr,
                       "weight_decay": 0.0})
    # The fused kernel updates every parameter in one pass (one launch on a GPU) instead of a dozen
    # small operations per tensor: 0.58 against 1.32 ms per ML-1M step on 2 CPU cores
    # (docs/benchmarks.md). Its rounding differs from the per-tensor loop's in the last bits.
    fused = torch.device(config.device).type in ("cpu", "cuda") or None
    return torch.optim.AdamW(groups, lr=config.outer_lr, fused=fused)


def train(
    method: str, data: TaskData, learner_config: LearnerConfig, config: TrainConfig,
    on_epoch: Callable[[EpochLog], None] = lambda log: None, collective: "Collective | None" = None,
) -> TrainResult:
    """Meta-train `method` on the training users; keep the evaluation with the lowest validation loss.

    With a `collective` (data-parallel training, see models/distributed.py) every process
    draws the same meta-batches, computes its contiguous shard of each, and gradients are
    summed across processes with each shard's loss weighted by its share of the batch: the
    update is that of one process on the whole batch.
    """
    if collective is not None and config.max_seconds is not None:
        raise ValueError("max_seconds would stop data-parallel processes at different steps; use max_steps")
    if "val" in data.splits and len(data.splits["val"]) == 0:
        raise ValueError(f"{method}: the validation split has no users, so no model can be selected")
    apply_torch_threads(config.threads)
    generator = seed_everything(config.seed)
    data = training_view(data, config.protocol).to(config.device)
    learner = build_learner(method, data, learner_config).to(config.device)
    optimizer = outer_optimizer(learner, config)
    train_tasks = learner.net.with_knn_foldins(data.splits["train"], training=True)
    if isinstance(learner, ATPAML):  # the memory holds one slot per key (a warm user's chunks share one)
        learner.check_memory_fills(int(train_tasks.keys().unique().numel()))
    # Scored at every evaluation: the validation users' kNN fold-ins are made once.
    val_tasks = learner.net.with_knn_foldins(data.splits["val"], training=False) if "val" in data.splits else None
    support_lengths, query_lengths = train_tasks.support_mask.sum(1).cpu(), train_tasks.query_mask.sum(1).cpu()
    steps_per_epoch = max(1, -(-len(train_tasks) // config.meta_batch))
    best = (float("inf"), 0, copy.deepcopy(learner.state_dict()))
    history: list[EpochLog] = []
    step, losses, stale, stopped, users, warning, diverged_step = 0, [], 0, "epochs", 0, "", None
    grad_norms: list[float] = []
    terms: dict[str, list[float]] = {}
    start = began = time.perf_counter()

    def evaluate() -> bool:
        """Score validation users, log, keep the best; True when patience ran out."""
        nonlocal best, losses, stale, start, grad_norms, terms, users
        seconds = time.perf_counter() - start
        val_loss = float(np.mean(predict_split(learner, data, "val", eval_batch_size(config), tasks=val_tasks).query_loss))
        log = EpochLog(round(step / steps_per_epoch, 3), float(np.mean(losses)) if losses else float("nan"),
                       val_loss, seconds, users / seconds if seconds > 0 else 0.0, step,
                       max(grad_norms) if grad_norms else float("nan"),
                       {k: (max(v) if k.startswith("max_") else float(np.mean(v))) for k, v in terms.items()})
        grad_norms, terms = [], {}
        history.append(log)
        on_epoch(log)
        if val_loss < best[0]:
            best, stale = (val_loss, step, copy.deepcopy(learner.state_dict())), 0
        else:
            stale += 1
        losses, users, start = [], 0, time.perf_counter()
        return stale >= config.patience

    # The starting point is a candidate too: a network that starts at a strong prior (the MF
    # fold-in) is kept as it is when no training step makes validation users better off.
    evaluate()
    done = False
    for _ in range(config.epochs):
        for batch in epoch_batches(support_lengths, query_lengths, config.meta_batch, generator,
                                   config.batching, config.bucket_pool):
            batch = batch.to(config.device)
            local = batch if collective is None else batch.tensor_split(collective.world_size)[collective.rank]
            outcome = learner.run(train_tasks.select(local), data.items)
            loss = learner.objective(outcome) * (len(local) / len(batch))
            optimizer.zero_grad()
            loss.backward()
            batch_loss = float(loss.detach())
            if collective is not None:
                batch_loss, = collective.all_reduce_grads(learner, batch_loss)
            # A few users with extreme support sets can send a second-order meta-gradient off by
            # orders of magnitude; clipping keeps one batch from wrecking the model.
            norm = torch.nn.utils.clip_grad_norm_(learner.parameters(), config.max_grad_norm or float("inf"))
            if not math.isfinite(float(norm)) and not gradients_finite(learner):
                # Stop before the optimizer writes NaN into the parameters. (A norm that overflowed
                # on finite gradients is harmless: clipping scales them to 0.) Not scored: the
                # candidates stay the evaluations before this step, as when training ran on in NaN.
                warning = (f"{method}, seed {config.seed}: training diverged at outer step {step + 1} (objective "
                           f"{batch_loss}, meta-gradient norm {float(norm)}); kept the best validation scoring before it "
                           f"(step {best[1]}{': the untrained network' if best[1] == 0 else ''}). "
                           f"{divergence_advice(method, learner_config, config, step == 0 and method != 'transfer')}")
                done, stopped, losses, diverged_step = True, "diverged", [], step + 1
                break
            grad_norms.append(float(norm))
            for name, value in learner.objective_terms.items():
                terms.setdefault(name, []).append(value)
            optimizer.step()
            learner.after_outer_step(outcome, collective)
            losses.append(batch_loss)
            step, users = step + 1, users + len(batch)
            if step % config.eval_every == 0 and evaluate():
                done, stopped = True, "patience"
                break
            if step >= config.max_steps:
                done, stopped = True, "max_steps"
                break
            if config.max_seconds is not None and time.perf_counter() - began > config.max_seconds:
                done, stopped = True, "max_seconds"
                break
        if done:
            break
    if losses or not history:
        evaluate()
    if not math.isfinite(best[0]):
        warning = warning + (" " if warning else "") + (f"{method}, seed {config.seed}: no validation scoring was finite ({', '.join(f'step {log.step}: {log.val_loss}' for log in history[:3])}"
                   f"{', ...' if len(history) > 3 else ''}); the parameters are the untrained ones. "
                   f"{divergence_advice(method, learner_config, config, True)}")
    elif (poor := poor_fit(method, best[0], data, learner_config, config)):
        warning = warning + (" " if warning else "") + poor
    learner.load_state_dict(best[2])
    return TrainResult(learner=learner, best_epoch=round(best[1] / steps_per_epoch, 3), best_val_loss=best[0],
                       history=history, best_step=best[1], stopped=stopped, warning=warning,
                       diverged_step=diverged_step)


# A best validation loss this many times that of predicting every label with the training labels' mean
# (`mean_prediction_loss`) is no model: far beyond any method's honest miss (ML-1M's networks reach 0.8
# of a variance of 1.25), and what a huge but finite step gives (validation MSE ~1e34 with inner_lr 1e6).
POOR_FIT_FACTOR = 100.0


def mean_prediction_loss(data: TaskData) -> float:
    """The loss of predicting the training users' mean label for every item (support and query sets):
    the labels' variance for ratings (MSE), the entropy of the click rate in nats for clicks (log-loss)."""
    train = data.splits["train"]
    labels = torch.cat([train.support_labels[train.support_mask.bool()],
                        train.query_labels[train.query_mask.bool()]]).double()  # (N,)
    if not len(labels):
        return float("nan")
    if data.task == "rating":
        return float(labels.var(unbiased=False))
    rate = float(labels.mean())
    return -sum(p * math.log(p) for p in (rate, 1.0 - rate) if p > 0)


def poor_fit(method: str, best_val_loss: float, data: TaskData, learner_config: LearnerConfig, config: TrainConfig) -> str:
    """A warning when the best (finite) validation loss is more than POOR_FIT_FACTOR times the mean
    prediction's loss, "" otherwise (or when the labels do not vary: then every loss is a multiple of 0).
    Every scoring was that bad, the untrained network's included, so the inner step is named first."""
    baseline = mean_prediction_loss(data)
    if not (math.isfinite(best_val_loss) and baseline > 0 and best_val_loss > POOR_FIT_FACTOR * baseline):
        return ""
    return (f"{method}, seed {config.seed}: the best validation loss, {best_val_loss:.3g}, is {best_val_loss / baseline:.3g} "
            f"times that of predicting the training labels' mean ({baseline:.3g}; more than {POOR_FIT_FACTOR:g} times "
            f"is no model). {divergence_advice(method, learner_config, config, True)}")


def gradients_finite(learner: MetaLearner) -> bool:
    """Whether every meta-gradient the optimizer is about to apply is finite."""
    return all(bool(torch.isfinite(p.grad).all()) for p in learner.parameters() if p.grad is not None)


def divergence_advice(method: str, learner_config: LearnerConfig, config: TrainConfig, adaptation: bool) -> str:
    """Which settings to lower after a non-finite loss: the inner step's when the untrained network's
    adaptation already fails (`adaptation`), the outer step's once training has moved the network."""
    if adaptation and method == "transfer":
        return (f"Lower finetune_lr (now {learner_config.finetune_lr}) or finetune_steps (now {learner_config.finetune_steps}), "
                f"or set max_step_norm (now {learner_config.max_step_norm}).")
    if adaptation:
        return (f"Lower inner_lr (now {learner_config.inner_lr}) or inner_steps (now {learner_config.inner_steps}), "
                f"or set max_step_norm (now {learner_config.max_step_norm}).")
    rates = f", rate_lr (now {config.rate_lr})" if method in ("meta_sgd", "paml", "at_paml", "reg_paml") else ""
    return f"Lower outer_lr (now {config.outer_lr}){rates}, or max_grad_norm (now {config.max_grad_norm})."
