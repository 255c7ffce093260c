"""Dataset specifications and the protocol constants the paper fixes.

Every number here is named once; functions take them as arguments with these
defaults, never as inline literals.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

DATASETS: tuple[str, ...] = ("movielens", "bookcrossing", "taobao")

# Paper, "Experimental Setup": validated cleaning, Pareto cold-start share, splits.
MIN_ITEMS_PER_USER = 2  # "two items for rating prediction and two clicked items for CTR"
COLD_START_SHARE = 0.8  # the 80% of users with the fewest logs (Pareto principle)
USER_SPLIT = (7, 1, 2)  # train : validation : test
SUPPORT_SHARE = 0.8  # each user's items 80:20 support/query
TOP_VALUE_SHARE = 0.3  # major/minor rule: a feature value is "top" if in the top 30% values
MAJOR_MIN_TOP_FEATURES = 3  # "more than two" features in the top values -> major

# A multi-valued item field keeps at most this many values per item (`max_values` in a spec sets
# a field's own): the task tensors store and gather every item's list padded to the longest, so
# one item with thousands of tags would cost catalogue x thousands (assets/meta_tasks.py
# `capped_lists`). 64 is over five times ML-1M's longest list (12 directors).
MULTI_VALUES_CAP = 64
# The largest cap a spec may set: training-time dropout keys a list's slots as row * 1024 + slot
# (models/network.py), so longer lists would share keys with the next row's.
MULTI_VALUES_LIMIT = 1024

Task = Literal["rating", "ctr"]


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset feeds the model and the major/minor rule.

    Attributes:
        name: partition key.
        task: "rating" (MSE, nDCG) or "ctr" (AUC, NEL).
        user_fields: categorical user features, one embedding each.
        item_fields: single-valued categorical item features.
        item_multi_fields: multi-hot item features (mean of embeddings).
        multi_caps: multi-hot field -> most values kept per item, where the spec sets one
            (`max_values`); other fields keep MULTI_VALUES_CAP (see `list_cap`).
        tagging_fields: user features used by the major/minor rule (paper Table 1).
        label_min, label_max: valid label range (inclusive).
        backoff: user field -> prefix lengths tried, longest first, for a value too rare
            among training users (see assets/meta_tasks.py `backoff_codes`); e.g. a zip code
            held by one training user falls back to its 3-digit, then 1-digit prefix.
        display_fields: item attributes shown to people beside item ids (`recommend`);
            `title` is kept by cleaning for display only, never fed to a model.
    """

    name: str
    task: Task
    user_fields: tuple[str, ...]
    item_fields: tuple[str, ...]
    item_multi_fields: tuple[str, ...]
    tagging_fields: tuple[str, ...]
    label_min: float
    label_max: float
    backoff: tuple[tuple[str, tuple[int, ...]], ...] = ()
    display_fields: tuple[str, ...] = ()
    label_step: float = 1.0  # ratings are label_min + k * label_step (0.5 for half stars)
    # Set by the dataset's spec file (assets/dataset_spec.py; the built-in ones in assets/builtin_specs/).
    user_domains: tuple[tuple[str, object], ...] = ()  # user field (user_id first) -> Domain or Parts
    item_id_domain: object | None = None  # Identifier
    time_domain: object | None = None  # EpochSeconds, or None when the log has no times
    numeric: tuple[NumericField, ...] = ()  # numeric features: bounds and buckets
    item_missing: tuple[tuple[str, tuple[str, ...]], ...] = ()  # item field -> values that mean "missing" besides placeholders
    # User features whose missing value is kept (null: the model's UNKNOWN) instead of rejecting the user.
    user_keep_missing: tuple[str, ...] = ()
    implicit_labels: tuple[float, ...] = ()  # labels that record an implicit interaction, not a rating (rejected)
    spec_file: str = ""  # the spec file the dataset is described by
    # A click log of positives only: unclicked catalogue items sampled per positive by cleaning
    # (assets/negative_sampling.py); 0 = none (every built-in dataset).
    negatives_per_positive: int = 0
    negatives_seed: int = 0  # the sampling's seed: the same spec and files give the same rows
    multi_caps: tuple[tuple[str, int], ...] = ()

    def list_cap(self, field: str) -> int:
        """The most values multi-hot `field` keeps per item (the spec's `max_values`, else MULTI_VALUES_CAP)."""
        return dict(self.multi_caps).get(field, MULTI_VALUES_CAP)

    def label_range_text(self) -> str:
        """The valid labels as a rejection reason names them: '1..5', or '0.5..5 in steps of 0.5'."""
        steps = "" if self.label_step == 1 else f" in steps of {self.label_step:g}"
        return f"{self.label_min:g}..{self.label_max:g}{steps}"



@dataclass(frozen=True)
class NumericField:
    """A numeric feature with inclusive bounds; with `bins` its value becomes the bucket holding it.

    Buckets are the half-open intervals between consecutive edges of (low, *bins, high), the
    last one closed: bins (18, 25) over [1, 100] give '[1, 18)', '[18, 25)', '[25, 100]'.
    """

    name: str
    low: float
    high: float
    bins: tuple[float, ...] = ()
    integer: bool = False  # whole numbers only, kept as integers (ML-1M's age codes, Book-Crossing's ages)

    def labels(self) -> tuple[str, ...]:
        """Every bucket's label, in order."""
        edges = (self.low, *self.bins, self.high)
        return tuple(f"[{a:g}, {b:g}{']' if i == len(edges) - 2 else ')'}" for i, (a, b) in enumerate(zip(edges, edges[1:])))

    def bucket(self, value: float) -> str | None:
        """The label of the bucket holding `value`, or None outside [low, high]."""
        if not self.low <= value <= self.high:
            return None
        return self.labels()[sum(value >= edge for edge in self.bins)]


class BuiltinSpecs(Mapping[str, DatasetSpec]):
    """The built-in datasets' specs, from their spec files in assets/builtin_specs/ (each read once,
    without its data: what every step after reading needs)."""

    def __init__(self) -> None:
        self._loaded: dict[str, DatasetSpec] = {}

    def __getitem__(self, name: str) -> DatasetSpec:
        if name not in DATASETS:
            raise KeyError(name)
        if name not in self._loaded:
            from assets.dataset_spec import load_builtin

            self._loaded[name] = load_builtin(name).spec
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(DATASETS)

    def __len__(self) -> int:
        return len(DATASETS)


SPECS: Mapping[str, DatasetSpec] = BuiltinSpecs()


def spec_for(dataset: str) -> DatasetSpec:
    """Return the spec of `dataset` (built in, or registered with `dataset add`), or raise naming the known ones."""
    if dataset in SPECS:
        return SPECS[dataset]
    from assets.dataset_spec import load_registered, registered_names

    if dataset in registered_names():
        return load_registered(dataset).spec
    raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(all_datasets())}")


def all_datasets() -> tuple[str, ...]:
    """The built-in datasets, then those registered in PAML_HOME/datasets (by name)."""
    from assets.dataset_spec import registered_names

    return (*DATASETS, *registered_names())
