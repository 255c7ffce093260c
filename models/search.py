"""The validation search: Optuna's TPE sampler, median pruning, a journal that resumes and runs in parallel.

    python -m models.search --tasks DIR --journal FILE [--methods melu paml ...] --trials 20 \
        --workers 4 --device cuda --threads 2 [--max-steps 1000] [--stop-after 540]

DIR holds `tensors.safetensors` and `info.json` as `python -m pipelines.cli tune --export`
writes them: a dataset's task tensors without the test split (the loader below also drops
any test tensor it finds), so test users cannot be read. Needs torch, numpy, safetensors and
optuna only, so it runs on a machine without the data stack (docs/tuning.md).

- One journal file per dataset (Optuna's JournalStorage with a file backend), one study per
  method in it. Worker processes share the journal; the file can be copied between machines.
- Every method gets the same budget: `trials` finished trials (complete or pruned). A trial
  is `train()` with the sampled settings, the run's seed and TrainConfig's step budget and
  patience; its value is the best validation loss (the number train() selects models by).
  Every evaluation's validation loss is reported to the median pruner.
- Trial 0 of each study is the code defaults (enqueued), so the search can only improve on them.
- Resuming: a run holds `<journal>.run.lock`; trials it finds RUNNING were left by a killed
  run, so they are marked failed and their parameters enqueued again. Finished trials are
  never redone.
- Reproducible: the sampler is re-seeded before each trial from (seed, method, finished
  trials), so with one worker a search that was killed and resumed draws the same settings
  as one that ran through. With several workers the draws depend on the order in which
  trials finish; each trial's own result still depends only on its settings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from models.bounds import count_argument
from models.locks import file_lock, lock_holder
from models.runtime import device_argument, seed_argument

TENSORS_FILE, INFO_FILE = "tensors.safetensors", "info.json"
HIDDEN_SPLITS = ("test",)  # never loaded by the search
# SearchConfig fields a resumed study must keep (they decide what a trial's value means).
SAME_BUDGET = ("seed", "max_steps", "eval_every", "patience", "protocol", "prune_startup", "prune_warmup_evaluations",
               "startup_trials")


@dataclass(frozen=True)
class SearchConfig:
    """How a study samples, prunes and budgets its trials."""

    trials: int = 20  # finished trials per method (complete or pruned)
    seed: int = 0  # sampler seed and every trial's training seed
    startup_trials: int = 8  # random draws before TPE models the results (the defaults trial included)
    prune_startup: int = 5  # finished trials before the pruner stops any
    prune_warmup_evaluations: int = 1  # evaluations every trial gets before it can be pruned
    max_steps: int | None = None  # a smaller outer-step budget per trial; None = TrainConfig's
    eval_every: int | None = None  # None = TrainConfig's
    patience: int | None = None  # None = TrainConfig's
    protocol: str = "paper"
    device: str = "cpu"
    threads: int = 1  # torch threads per worker


# -- tasks ---------------------------------------------------------------------------------


def load_search_tasks(directory: Path):
    """TaskData of an exported directory, without the test split (never read, even when present)."""
    from safetensors import safe_open

    from models.tasks import task_data_from_tensors

    directory = Path(directory)
    if not (directory / TENSORS_FILE).is_file() or not (directory / INFO_FILE).is_file():
        raise FileNotFoundError(f"{directory}: expected {TENSORS_FILE} and {INFO_FILE} "
                                "(make them with: python -m pipelines.cli tune --datasets <dataset> --export DIR)")
    info = json.loads((directory / INFO_FILE).read_text())
    info["splits"] = [s for s in info.get("splits", ("train", "val")) if s not in HIDDEN_SPLITS]
    tensors = {}
    with safe_open(str(directory / TENSORS_FILE), framework="pt") as handle:
        for key in handle.keys():
            if key.split("__", 1)[0] not in HIDDEN_SPLITS:
                tensors[key] = handle.get_tensor(key)
    return task_data_from_tensors(tensors, info), info


def tasks_digest(directory: Path) -> str:
    """SHA-256 of the exported tensors file: which tasks a journal was searched on."""
    import hashlib

    digest = hashlib.sha256()
    with (Path(directory) / TENSORS_FILE).open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# -- storage and locks ---------------------------------------------------------------------


def journal_storage(journal: Path):
    """Optuna's JournalStorage on a plain file (created when missing)."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    journal = Path(journal)
    journal.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(journal), lock_obj=JournalFileOpenLock(str(journal))))


class JournalError(ValueError):
    """A journal that cannot serve this search: missing, empty, or made on other tasks (the message says which)."""


def study_name(method: str, protocol: str) -> str:
    """One study per method, form and protocol in a dataset's journal: "paper/paml", "paper/at_paml@2"
    (a method whose step size changed form gets a new study; the old one stays, unused)."""
    from models.learners import method_form

    form = method_form(method)
    return f"{protocol}/{method}" + (f"@{form}" if form > 1 else "")


def parse_study_name(name: str) -> tuple[str, str, int]:
    """(protocol, method, form) of a `study_name`."""
    protocol, rest = name.split("/", 1)
    method, _, form = rest.partition("@")
    return protocol, method, int(form) if form else 1


def create_study(storage, method: str, config: SearchConfig, tasks_sha256: str, base_learner, base_train,
                 incumbent: dict[str, Any] | None = None):
    """Load or create the study of `method`; a new study gets the code defaults as its first trial
    and `incumbent` (the settings file's choice, when it has one and it differs) as its second."""
    import optuna

    from models.settings import base_value, in_range, search_space

    name = study_name(method, config.protocol)
    study = optuna.create_study(storage=storage, study_name=name, direction="minimize", load_if_exists=True)
    attrs = study.user_attrs
    if "tasks_sha256" not in attrs:
        study.set_user_attr("tasks_sha256", tasks_sha256)
        study.set_user_attr("method", method)
        study.set_user_attr("search", asdict(config))
        defaults = {k.name: base_value(k, base_learner, base_train) for k in search_space(method, base_learner, base_train)}
        defaults = {k: v for k, v in defaults.items() if in_range(_knob(k), v)}
        study.enqueue_trial(defaults, user_attrs={"defaults": True})
        # The settings in use before this search compete under the same budget, so the search
        # never writes a choice worse on validation than the one it replaces.
        chosen = {k: v for k, v in (incumbent or {}).items() if k in defaults and in_range(_knob(k), v)}
        if chosen and {**defaults, **chosen} != defaults:
            study.enqueue_trial({**defaults, **chosen}, user_attrs={"incumbent": True})
    elif attrs["tasks_sha256"] != tasks_sha256:
        raise JournalError(f"study {name!r} in this journal was searched on other tasks (tensors sha256 "
                         f"{attrs['tasks_sha256'][:12]}, these: {tasks_sha256[:12]}): use a new journal")
    else:
        # A resumed study may get more trials, workers or another device, but every trial must
        # have trained under the same budget and seed.
        before = attrs.get("search", {})
        changed = [f"{k} {before[k]} -> {v}" for k, v in asdict(config).items() if k in SAME_BUDGET and k in before and before[k] != v]
        if changed:
            raise ValueError(f"study {name!r} was searched with other settings ({'; '.join(changed)}): rerun with "
                             "the study's settings or use a new journal")
        study.set_user_attr("search", asdict(config))
    return study


def _knob(name: str):
    from models.settings import KNOBS

    return KNOBS[name]


def recover_stale_trials(study, n_params: int) -> list[int]:
    """Mark trials left RUNNING by a killed run failed and enqueue their parameters again.

    Only called while holding the run lock, so no live worker owns a RUNNING trial. A trial
    killed while its parameters were being drawn (fewer than `n_params`) is not enqueued: the
    next draw, seeded from the same history, gives the same point.
    """
    from optuna.trial import TrialState

    stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for trial in stale:
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        if len(trial.params) == n_params:
            study.enqueue_trial(trial.params, user_attrs={**trial.user_attrs, "retry_of": trial.number})
    return [t.number for t in stale]


def distributions(method: str, base_learner, base_train) -> dict[str, Any]:
    """Optuna distributions of `method`'s knobs."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from models.settings import search_space

    out = {}
    for knob in search_space(method, base_learner, base_train):
        if knob.kind == "float":
            out[knob.name] = FloatDistribution(knob.low, knob.high, log=knob.log)
        elif knob.kind == "int":
            out[knob.name] = IntDistribution(int(knob.low), int(knob.high), log=knob.log)
        else:
            out[knob.name] = CategoricalDistribution(list(knob.choices))
    return out


def sampler_for(config: SearchConfig, method: str, finished: int):
    """TPE seeded by (seed, method, finished trials): the same history gives the same draw."""
    import warnings

    import optuna

    seed = (config.seed * 1_000_003 + zlib.crc32(method.encode()) + 7919 * finished) % (2 ** 31)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=config.startup_trials, multivariate=True,
                                          constant_liar=True)


def next_trial(study, method: str, config: SearchConfig, dists: dict, lock: Path):
    """Claim the next trial of `study` (None when the budget is used up): sampled under a lock,
    so parallel workers never exceed the budget and each draw sees every claimed trial."""
    from optuna.trial import TrialState

    with file_lock(lock):
        trials = study.get_trials(deepcopy=False)
        claimed = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) for t in trials)
        if claimed >= config.trials:
            return None
        finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        study.sampler = sampler_for(config, method, finished)
        return study.ask(fixed_distributions=dists)


class SearchWorkerError(RuntimeError):
    """A search worker process failed; it printed its own error (and traceback) on stderr before exiting."""


class DeadlineReached(Exception):
    """The run's time is up: the trial is handed back (enqueued again) for the next run."""


def run_trial(trial, method: str, data, base_learner, base_train, config: SearchConfig, deadline: float | None) -> float:
    """Train the trial's settings; report every evaluation to the pruner; return the best validation loss."""
    import optuna

    from models.settings import apply_params
    from models.training import train

    learner, train_config = apply_params(dict(trial.params), base_learner, base_train)

    def on_evaluation(log) -> None:
        if deadline is not None and time.time() > deadline:
            raise DeadlineReached()
        if not math.isfinite(log.val_loss):
            trial.set_user_attr("diverged_at_step", log.step)
            raise optuna.TrialPruned(f"validation loss {log.val_loss} at step {log.step}")
        trial.report(log.val_loss, log.step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {log.step}")

    result = train(method, data, learner, train_config, on_epoch=on_evaluation)
    if result.stopped == "diverged":  # the parameters went NaN: pruned, as when a NaN scoring showed it
        trial.set_user_attr("diverged_at_step", result.diverged_step)
        raise optuna.TrialPruned(result.warning)
    trial.set_user_attr("best_step", result.best_step)
    trial.set_user_attr("stopped", result.stopped)
    return float(result.best_val_loss)


def base_configs(config: SearchConfig, training_users: int | None = None):
    """The code defaults with the search's budget, seed, protocol and device; AT-PAML's K fitted to the
    `training_users` as the model assets fit it (models/user_memory.py `default_memory_k`): with fewer
    than K + 1 of them the default K = 8 was refused by training, and the search stopped at AT-PAML."""
    from models.learners import LearnerConfig
    from models.training import TrainConfig
    from models.user_memory import default_memory_k

    train = TrainConfig(seed=config.seed, protocol=config.protocol, device=config.device)
    overrides = {k: getattr(config, k) for k in ("max_steps", "eval_every", "patience") if getattr(config, k) is not None}
    learner = LearnerConfig()
    learner = replace(learner, memory=replace(learner.memory, k=default_memory_k(training_users)))
    return learner, replace(train, **overrides)


def with_fold_in_references(learner, train, data):
    """The configs with the fold-ins' MF and kNN at the reference rows' validation-chosen settings,
    as the model assets set them (models/settings.py `apply_settings`); a trial's own values win."""
    from models.references import validation_settings
    from models.settings import apply_settings

    if not (learner.network.uses_mf_foldin or learner.network.knn_foldin):
        return learner, train
    return apply_settings({}, learner, train, validation_settings(data, train.protocol))


def work(tasks: Path, journal: Path, methods: list[str], config: SearchConfig, worker: int,
         deadline: float | None = None, log=print) -> int:
    """One worker: for each method in turn, claim and run trials until its budget is used up.

    Returns the number of trials this worker finished.
    """
    import optuna
    from optuna.trial import TrialState

    from models.runtime import pin_threads

    pin_threads(config.threads)  # PAML_THREADS and torch's threads (models/runtime.py)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data, _ = load_search_tasks(tasks)
    storage = journal_storage(journal)
    from models.tasks import training_user_count

    base_learner, base_train = base_configs(config, training_user_count(data, config.protocol))
    base_learner, base_train = with_fold_in_references(base_learner, base_train, data)
    done = 0
    for method in methods:
        study = optuna.load_study(study_name=study_name(method, config.protocol), storage=storage)
        study.pruner = optuna.pruners.MedianPruner(
            n_startup_trials=config.prune_startup,
            n_warmup_steps=base_train.eval_every * config.prune_warmup_evaluations)
        dists = distributions(method, base_learner, base_train)
        while deadline is None or time.time() < deadline:
            trial = next_trial(study, method, config, dists, Path(f"{journal}.ask.lock"))
            if trial is None:
                break
            for key, value in {"worker": worker, "device": config.device, "threads": config.threads}.items():
                trial.set_user_attr(key, value)
            start = time.time()
            try:
                value = run_trial(trial, method, data, base_learner, base_train, config, deadline)
                state = TrialState.COMPLETE if math.isfinite(value) else TrialState.PRUNED
                study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
            except DeadlineReached:
                study.tell(trial, state=TrialState.FAIL)
                study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
                log(f"worker {worker}: time is up; {method} trial {trial.number} handed back")
                return done
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                raise
            done += 1
            log(f"worker {worker}: {method} trial {trial.number} {study.trials[trial.number].state.name.lower()} "
                f"({time.time() - start:.0f} s)")
    return done


def prepare(tasks: Path, journal: Path, methods: list[str], config: SearchConfig) -> list[int]:
    """Create the studies (trial 0: the defaults, 1: the settings file's choice) and hand back trials a
    killed run left RUNNING."""
    import optuna

    from models.settings import chosen_settings

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = journal_storage(journal)
    base_learner, base_train = base_configs(config)
    digest = tasks_digest(tasks)
    dataset = json.loads((Path(tasks) / INFO_FILE).read_text()).get("dataset")
    recovered = []
    for method in methods:
        incumbent = chosen_settings(dataset, method, protocol=config.protocol).params if dataset else {}
        study = create_study(storage, method, config, digest, base_learner, base_train, incumbent)
        recovered += recover_stale_trials(study, len(distributions(method, base_learner, base_train)))
    return recovered


class SearchRunningError(RuntimeError):
    """Another search holds the journal's run lock; its message is one line naming the holder and what to do."""


@contextlib.contextmanager
def search_lock(journal: Path) -> Iterator[None]:
    """Hold `<journal>.run.lock` for a whole search, or raise SearchRunningError at once: a second search on
    the same journal would recover the first one's running trials as killed ones and run them again."""
    lock = Path(f"{journal}.run.lock")
    with file_lock(lock, blocking=False) as mine:
        if not mine:
            raise SearchRunningError(
                f"another search is running on {journal}: {lock_holder(lock)} holds {lock.name}; wait for it to end (or "
                "stop it), then run this command again: it resumes from the journal")
        yield


def run_search(tasks: Path, journal: Path, methods: list[str], config: SearchConfig, workers: int = 1,
               stop_after: float | None = None, log=print, locked: bool = False) -> None:
    """Prepare the studies, then run `workers` worker processes on them until every budget is used.

    `locked`: the caller holds `search_lock(journal)` already (the tune command, around the export too).
    Raises when another run holds this journal (SearchRunningError) or when a worker fails.
    """
    from models.learners import METHODS

    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    journal = Path(journal)
    with contextlib.ExitStack() as held:
        if not locked:
            held.enter_context(search_lock(journal))
        recovered = prepare(tasks, journal, methods, config)
        if recovered:
            log(f"resumed {journal}: trials {recovered} were interrupted and are queued again")
        deadline = time.time() + stop_after if stop_after else None
        args = [sys.executable, "-m", "models.search", "--tasks", str(tasks), "--journal", str(journal),
                "--methods", *methods, "--config", json.dumps(asdict(config))]
        if deadline:
            args += ["--deadline", str(deadline)]
        env = {**os.environ, "PAML_THREADS": str(config.threads), "OMP_NUM_THREADS": str(config.threads),
               "MKL_NUM_THREADS": str(config.threads)}
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        processes = [subprocess.Popen([*args, "--worker", str(w)], env=env, cwd=root) for w in range(workers)]
        try:
            codes = [p.wait() for p in processes]
        except BaseException:
            for p in processes:
                p.terminate()
            for p in processes:
                p.wait()
            raise
        if any(codes):
            raise SearchWorkerError(f"search workers on {journal} exited with {codes}; a worker's own error is printed "
                                    "above (the finished trials are kept: run the same command again to resume)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.search", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=Path, required=True, help="directory with tensors.safetensors and info.json")
    parser.add_argument("--journal", type=Path, required=True, help="Optuna journal file (created or resumed)")
    parser.add_argument("--methods", nargs="+", help="default: every method")
    parser.add_argument("--trials", type=count_argument("trials"), default=SearchConfig.trials, help="finished trials per method")
    parser.add_argument("--workers", type=count_argument("workers"), default=1, help="worker processes")
    parser.add_argument("--device", type=device_argument, default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=count_argument("threads"), default=1, help="torch threads per worker")
    parser.add_argument("--seed", type=seed_argument, default=0)
    parser.add_argument("--protocol", default="paper", choices=["paper", "production"])
    parser.add_argument("--max-steps", type=count_argument("max_steps"), help="outer-step budget per trial (default: TrainConfig's)")
    parser.add_argument("--eval-every", type=count_argument("eval_every"), help="outer steps between evaluations (default: TrainConfig's)")
    parser.add_argument("--patience", type=count_argument("patience"), help="evaluations without improvement (default: TrainConfig's)")
    parser.add_argument("--stop-after", type=float, help="seconds; then no trial is started and running ones are handed back")
    parser.add_argument("--config", help=argparse.SUPPRESS)  # a worker's SearchConfig, as JSON
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from models.learners import METHODS

    methods = args.methods or list(METHODS)
    if args.worker is not None:
        config = SearchConfig(**json.loads(args.config))
        from models.factors import keep_fits_in

        # Trials that draw the same fold-in settings share their fitted tables, across the
        # workers and across resumed runs of this journal (models/factors.py).
        keep_fits_in(args.journal.parent / "fits")
        work(args.tasks, args.journal, methods, config, args.worker, args.deadline, log=lambda line: print(line, flush=True))
        return 0
    config = SearchConfig(trials=args.trials, seed=args.seed, protocol=args.protocol, device=args.device,
                          threads=args.threads, max_steps=args.max_steps, eval_every=args.eval_every, patience=args.patience)
    try:
        run_search(args.tasks, args.journal, methods, config, args.workers, args.stop_after,
                   log=lambda line: print(line, flush=True))
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
