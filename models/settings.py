"""The tunable knobs, where each one lives, and the settings file the validation search writes.

A knob is one field of LearnerConfig, NetworkConfig (`learner.network`), MemoryConfig
(`learner.memory`) or TrainConfig, with its search range and the methods that read it. The
table `SPACE` is the whole search space (docs/tuning.md prints it); models/search.py samples
it with Optuna, and the model assets apply a settings file's values with the same
`apply_params`, so a value means the same thing in a trial and in the final model.

Settings files: `models/settings/<dataset>.json`, written by `python -m pipelines.cli tune`
(never by hand), read by every `<method>_model` asset; `<dataset>.production.json` holds what a
search under the production protocol chose, read by the production protocol's models (a method it
lacks: the paper protocol's choice). Resolution of one setting:
code default <- the dataset's settings file for the protocol <- a value set in the run config.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from models.bounds import SettingError
from models.learners import METHODS, LearnerConfig, method_form
from models.training import TrainConfig

SETTINGS_DIR = Path(__file__).resolve().parent / "settings"
META_LEARNERS = ("melu", "meta_sgd", "paml", "at_paml", "reg_paml")
EVERY_METHOD = tuple(METHODS)
PAML_WITH_LR_MODULE = ("paml", "reg_paml")  # AT-PAML's step size has its own form (correction + memory)
BOUNDED_IN_LOG_SPACE = ("paml", "at_paml", "reg_paml")  # alpha in [inner_lr / lr_range, inner_lr * lr_range]
TARGETS = ("learner", "network", "memory", "train")


@dataclass(frozen=True)
class Knob:
    """One searched setting: a config field, its range, and the methods that read it."""

    name: str  # the field's name, also the parameter's name in Optuna and in settings files
    target: str  # "learner", "network" (learner.network), "memory" (learner.memory) or "train"
    kind: str  # "float", "int" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False  # sample on a log scale
    choices: tuple = ()
    methods: tuple[str, ...] = META_LEARNERS
    # A field (e.g. "network.factor_dim") that must be non-zero in the base config for the knob
    # to matter; otherwise the knob is left out instead of wasting trials on a no-op.
    requires: str | None = None

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"knob {self.name}: target must be one of {TARGETS}, got {self.target!r}")
        if self.kind == "categorical" and not self.choices:
            raise ValueError(f"knob {self.name}: a categorical knob needs choices")
        if self.kind in ("float", "int") and not (self.low is not None and self.high is not None and self.low < self.high):
            raise ValueError(f"knob {self.name}: needs low < high, got {self.low}, {self.high}")


SPACE: tuple[Knob, ...] = (
    Knob("inner_lr", "learner", "float", 0.005, 0.3, log=True),
    Knob("inner_steps", "learner", "categorical", choices=(1, 2, 3, 5)),
    Knob("outer_lr", "train", "float", 1e-4, 3e-3, log=True, methods=EVERY_METHOD),
    Knob("factor_lr_scale", "learner", "float", 1.0, 50.0, log=True, methods=EVERY_METHOD, requires="network.factor_dim"),
    Knob("unknown_rate", "network", "float", 0.0, 0.4, methods=EVERY_METHOD),
    # Not searched: whether the MF and kNN fold-ins are on (validation chose them, docs/protocol.md)
    # and their settings (MF's ridge, kNN's shrinkage, ...), which the reference rows' own
    # validation grid picks per dataset and protocol (`with_fold_in_references`): a few seconds
    # for a whole grid there, against a training run per point here, where drawing them at
    # random overrode the grid's choice in every trial.
    Knob("max_step_norm", "learner", "categorical", choices=(1.0, 2.0, 4.0), methods=EVERY_METHOD),
    Knob("weight_decay", "train", "float", 0.0, 0.2, methods=EVERY_METHOD),
    Knob("rate_lr", "train", "float", 1e-4, 1e-2, log=True, methods=("meta_sgd", "paml", "at_paml", "reg_paml")),
    Knob("lr_range", "learner", "float", 1.5, 8.0, methods=BOUNDED_IN_LOG_SPACE),
    Knob("lr_per_layer", "learner", "categorical", choices=(True, False), methods=PAML_WITH_LR_MODULE),
    Knob("lr_history", "learner", "categorical", choices=(True, False), methods=PAML_WITH_LR_MODULE),
    Knob("lr_per_parameter", "learner", "categorical", choices=(False, True), methods=PAML_WITH_LR_MODULE),
    Knob("gamma", "learner", "float", 1e-5, 1e-1, log=True, methods=("reg_paml",)),
    Knob("correction_range", "learner", "float", 0.25, 2.0, methods=("at_paml",)),
    # 0 = the memory plays no part; 1 = the paper's sum, which integrates the correction.
    Knob("memory_weight", "learner", "float", 0.0, 1.0, methods=("at_paml",)),
    Knob("kernel_scale", "memory", "float", 0.5, 6.0, methods=("at_paml",)),
    Knob("finetune_lr", "learner", "float", 1e-4, 1e-1, log=True, methods=("transfer",)),
    Knob("finetune_steps", "learner", "categorical", choices=(1, 3, 5, 10), methods=("transfer",)),
)
KNOBS: dict[str, Knob] = {knob.name: knob for knob in SPACE}


def target_fields(target: str) -> set[str]:
    """The field names of one knob target's config class."""
    from models.network import NetworkConfig
    from models.user_memory import MemoryConfig

    classes = {"learner": LearnerConfig, "network": NetworkConfig, "memory": MemoryConfig, "train": TrainConfig}
    return {f.name for f in fields(classes[target])}


def knob_exists(knob: Knob) -> bool:
    """True when the code has the knob's field (a knob can be listed before its field lands)."""
    return knob.name in target_fields(knob.target)


def base_value(knob: Knob, learner: LearnerConfig, train: TrainConfig) -> Any:
    """The knob's value in the given configs."""
    owner = {"learner": learner, "network": learner.network, "memory": learner.memory, "train": train}[knob.target]
    value = getattr(owner, knob.name)
    if knob.name == "rate_lr" and value is None:
        return train.outer_lr  # None means "the outer rate": the same setting, spelled as a number
    return value


def _required(path: str, learner: LearnerConfig, train: TrainConfig) -> Any:
    target, name = path.split(".", 1)
    owner = {"learner": learner, "network": learner.network, "memory": learner.memory, "train": train}[target]
    return getattr(owner, name)


def search_space(method: str, learner: LearnerConfig = LearnerConfig(), train: TrainConfig = TrainConfig()) -> list[Knob]:
    """The knobs searched for `method` given the base configs, in SPACE's order."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    return [k for k in SPACE if method in k.methods and knob_exists(k)
            and (k.requires is None or _required(k.requires, learner, train))]


def in_range(knob: Knob, value: Any) -> bool:
    """Whether `value` lies in the knob's searched range."""
    if knob.kind == "categorical":
        return value in knob.choices
    return value is not None and knob.low <= value <= knob.high


def apply_params(params: dict[str, Any], learner: LearnerConfig, train: TrainConfig) -> tuple[LearnerConfig, TrainConfig]:
    """The configs with `params` (knob name -> value) set; an unknown name is an error naming it."""
    parts: dict[str, dict[str, Any]] = {t: {} for t in TARGETS}
    for name, value in params.items():
        if name not in KNOBS:
            raise ValueError(f"unknown setting {name!r}; known: {', '.join(KNOBS)}")
        knob = KNOBS[name]
        if not knob_exists(knob):
            raise ValueError(f"setting {name!r} names no field of the {knob.target} config in this code")
        parts[knob.target][name] = value
    network = replace(learner.network, **parts["network"])
    memory = replace(learner.memory, **parts["memory"])
    return replace(learner, network=network, memory=memory, **parts["learner"]), replace(train, **parts["train"])


# -- settings files ------------------------------------------------------------------------


@dataclass(frozen=True)
class ChosenSettings:
    """What one model uses: the parameters and where they came from."""

    params: dict[str, Any]
    file: str | None  # path relative to the repository (or as given), None when no file exists
    sha256: str | None
    trial: int | None  # the study's trial number that chose them
    value: float | None  # its validation loss

    def provenance(self) -> dict[str, Any]:
        """The JSON a model bundle's info records."""
        return {"file": self.file, "sha256": self.sha256, "trial": self.trial, "value": self.value, "params": self.params}


def settings_path(dataset: str, directory: Path | None = None, protocol: str = "paper") -> Path:
    """models/settings/<dataset>.json for the paper protocol, <dataset>.<protocol>.json for another
    (or under `directory`). One file per protocol: a search under the production protocol chose its
    values on what that protocol trains on, and must not replace what the paper protocol's models use."""
    suffix = "" if protocol == "paper" else f".{protocol}"
    return Path(directory or SETTINGS_DIR) / f"{dataset}{suffix}.json"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def display_path(path: Path) -> str:
    """A path relative to the repository when inside it."""
    try:
        return path.resolve().relative_to(SETTINGS_DIR.parent.parent).as_posix()
    except ValueError:
        return str(path)


def chosen_settings(dataset: str | None, method: str, directory: Path | None = None,
                    protocol: str = "paper") -> ChosenSettings:
    """The settings file's choice for (dataset, method) under `protocol`; no file or no entry: empty params.

    A protocol other than the paper's reads its own file (`settings_path`) when that file has an entry
    for the method, else the paper protocol's choice, as when no search ever ran under it."""
    if dataset and protocol != "paper":
        own = _file_choice(dataset, method, directory, protocol)
        if own is not None:
            return own
    return (_file_choice(dataset, method, directory, "paper") if dataset else None) or ChosenSettings({}, None, None, None, None)


def _file_choice(dataset: str, method: str, directory: Path | None, protocol: str) -> ChosenSettings | None:
    """One protocol's settings file's choice for `method`: None without the file; empty params (with the
    file's provenance) when the file has no usable entry for it."""
    path = settings_path(dataset, directory, protocol)
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise SettingError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}): {error.msg}") from None
    check_settings_file(content, path, dataset, protocol)
    entry = content["methods"].get(method)
    if entry is None and protocol != "paper":
        return None
    if entry is None:
        return ChosenSettings({}, display_path(path), file_sha256(path), None, None)
    if entry.get("form", 1) != method_form(method):
        # Chosen for another form of the method's step size: its values would mean other things.
        warnings.warn(f"{path}: {method}'s settings were searched for form {entry.get('form', 1)} of the method, this code "
                      f"has form {method_form(method)}; using the code defaults until `python -m pipelines.cli tune` "
                      "searches it again", stacklevel=2)
        return ChosenSettings({}, display_path(path), file_sha256(path), None, None)
    return ChosenSettings(dict(entry["params"]), display_path(path), file_sha256(path), entry.get("trial"), entry.get("value"))


# What `pipelines/tune.py` writes (`settings_content`, `with_other_methods`); anything else is a typo
# whose value would silently not be used.
FILE_KEYS = frozenset({"dataset", "written_by", "date", "journal_sha256", "tasks_sha256", "search", "selection", "methods"})
ENTRY_KEYS = frozenset({"trial", "value", "params", "protocol", "form", "finished_trials", "chosen_by"})


def check_settings_file(content: Any, path: Path, dataset: str, protocol: str = "paper") -> None:
    """Refuse a settings file that would not mean what it says, naming the file, the key and the value:
    not an object, an unknown key, another dataset's file, an unknown method, an entry searched under
    another protocol than the file's, a setting unknown or not read by its method, a value of the wrong
    type or outside what the configs accept."""
    if not isinstance(content, dict):
        raise SettingError(f"{path}: a settings file is a JSON object with a \"methods\" object, got {type(content).__name__}")
    unknown = sorted(set(content) - FILE_KEYS)
    if unknown:
        raise SettingError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(FILE_KEYS))}")
    if content.get("dataset", dataset) != dataset:
        raise SettingError(f"{path}: written for dataset {content['dataset']!r}, read for {dataset!r}: its values were chosen on "
                         f"the other dataset's validation users; run `python -m pipelines.cli tune --datasets {dataset}` "
                         f"(or, to reuse them on purpose, set \"dataset\" to {dataset!r})")
    methods = content.get("methods")
    if not isinstance(methods, dict):
        raise SettingError(f"{path}: \"methods\" must be an object of method -> entry, got {methods!r}")
    for method, entry in methods.items():
        if method not in METHODS:
            raise SettingError(f"{path}: unknown method {method!r} in \"methods\"; known: {', '.join(METHODS)}")
        if not isinstance(entry, dict) or not isinstance(entry.get("params"), dict):
            raise SettingError(f"{path}: {method}'s entry must be an object with a \"params\" object, got {entry!r}")
        unknown = sorted(set(entry) - ENTRY_KEYS)
        if unknown:
            raise SettingError(f"{path}: {method}'s entry has unknown key(s) {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(sorted(ENTRY_KEYS))}")
        if entry.get("protocol", protocol) != protocol:
            raise SettingError(f"{path}: {method}'s entry was searched under the {entry['protocol']!r} protocol, and this "
                             f"file is read for the {protocol!r} protocol; its choice belongs in "
                             f"{settings_path(dataset, path.parent, entry['protocol']).name}")
        for name, value in entry["params"].items():
            check_setting(path, method, name, value)


def check_setting(path: Path, method: str, name: str, value: Any) -> None:
    """One setting of a file's entry for `method`: a knob the method reads, a value of its type that the configs accept."""
    where = f"{path}: {method} setting {name} = {value!r}"
    if name not in KNOBS or not knob_exists(KNOBS[name]):
        raise SettingError(f"{where}: unknown setting {name!r}; known: {', '.join(k for k in KNOBS if knob_exists(KNOBS[k]))}")
    knob = KNOBS[name]
    if method not in knob.methods:
        raise SettingError(f"{where}: {method} does not read {name} (read by {', '.join(knob.methods)})")
    if not value_fits(knob, value):
        raise SettingError(f"{where}: expected {knob_type(knob)}")
    try:
        apply_params({name: value}, LearnerConfig(), TrainConfig())
    except ValueError as error:  # the configs' own refusal, with the file's name
        raise SettingError(f"{where}: {error}") from None


def knob_type(knob: Knob) -> str:
    """The JSON type a knob's value must have, in words."""
    if knob.kind == "categorical" and all(isinstance(c, bool) for c in knob.choices):
        return "true or false"
    if knob.kind == "int" or (knob.kind == "categorical" and all(isinstance(c, int) for c in knob.choices)):
        return "a whole number"
    return "a finite number"


def value_fits(knob: Knob, value: Any) -> bool:
    """Whether `value` has the knob's type (a bool is not a number here, nor a float a whole number)."""
    expected = knob_type(knob)
    if expected == "true or false":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if expected == "a whole number":
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)


def apply_settings(params: dict[str, Any], learner: LearnerConfig, train: TrainConfig, references=None,
                   keep: frozenset[str] = frozenset()) -> tuple[LearnerConfig, TrainConfig]:
    """`learner` and `train` <- the fold-ins' MF and kNN at the reference rows' validation choices
    (`references`: models/references.py `ReferenceSettings`, or None to leave them) <- `params`.

    The one place where the model assets, the search, the distributed trainer and the benchmarks
    resolve a model's settings, so that each of them trains the same model. A field named in
    `params` or in `keep` (e.g. one the run config sets) is never taken from the references.
    """
    from models.network import with_reference_settings  # deferred: models.network is heavy to import

    learner, train = apply_params(params, learner, train)
    if references is not None:
        learner = replace(learner, network=with_reference_settings(learner.network, references, frozenset(params) | keep))
    return learner, train


def tuned_configs(dataset: str | None, method: str, train: TrainConfig | None = None,
                  references=None) -> tuple[LearnerConfig, TrainConfig]:
    """The configs a model asset trains (dataset, method) with: the code defaults (or `train`) <-
    the fold-ins' reference settings, when given <- the settings file's choice for `train`'s protocol
    (`apply_settings`)."""
    train = train or TrainConfig()
    return apply_settings(chosen_settings(dataset, method, protocol=train.protocol).params, LearnerConfig(), train, references)


def write_settings(content: dict[str, Any], dataset: str, directory: Path | None = None, protocol: str = "paper") -> Path:
    """Write a protocol's settings file (stable key order, so equal content gives equal bytes and hash)."""
    path = settings_path(dataset, directory, protocol)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
    staging.replace(path)
    return path
