"""Cold-start predictions for a new user: encode the profile, adapt on a few ratings, score items.

This is what the method is for: a user the model has never seen gives a profile and a
handful of ratings (or clicks); the learner adapts its decision layers on them, with the
user's own inner learning rate, and ranks every other item.
"""

import difflib
import math

import numpy as np
import polars as pl
import torch

from assets.bundle import Bundle
from assets.meta_tasks import PAD_INDEX, UNKNOWN_INDEX
from assets.specs import DatasetSpec, spec_for
from models.tasks import TaskSplit, task_data_from_tensors


class ColdStartInputError(ValueError):
    """A profile field, item, label, seed or count the model cannot take, named in the message."""


def label_set(spec: DatasetSpec) -> str:
    """The labels a user may give, as the message shows them ('1..5', '0 or 1')."""
    if spec.task == "ctr":
        return f"{spec.label_min:g} or {spec.label_max:g} (not clicked / clicked)"
    if spec.label_step != 1:
        return f"numbers {spec.label_range_text()}"
    return f"whole numbers {spec.label_min:g}..{spec.label_max:g}"


def check_label(item: str, label: float, spec: DatasetSpec) -> float:
    """`label` if it is a finite label of `spec`'s dataset, else a ColdStartInputError naming item and value."""
    steps = (label - spec.label_min) / spec.label_step if math.isfinite(label) else math.nan
    if not math.isfinite(label) or abs(steps - round(steps)) > 1e-6 or not spec.label_min <= label <= spec.label_max:
        raise ColdStartInputError(
            f"label {label!r} of item {item!r} is not a {spec.name} label; give {label_set(spec)}"
        )
    return float(label) + 0.0  # '-0' is the label 0, printed as 0.0 rather than -0.0


def profile_in_buckets(profile: dict[str, str], spec: DatasetSpec) -> dict[str, str]:
    """A profile with each bucketed numeric feature given as a number ('age=30') turned into its
    bucket's label ('[25, 35)'), as cleaning does; labels and values out of bounds stay as given."""
    buckets = {f.name: f for f in spec.numeric if f.bins}
    converted = dict(profile)
    for field, text in profile.items():
        try:
            label = buckets[field].bucket(float(text)) if field in buckets else None
        except ValueError:  # already a bucket label
            label = None
        converted[field] = label or text
    return converted


def parse_label(item: str, text: str, spec: DatasetSpec) -> float:
    """A label given as text ('4', '1'), checked against `spec`'s label set."""
    try:
        value = float(text.strip())
    except ValueError:
        raise ColdStartInputError(f"label {text!r} of item {item!r} is not a number; give {label_set(spec)}") from None
    return check_label(item, value, spec)


def check_top(top: int) -> int:
    """`top` if at least one item is asked for."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ColdStartInputError(f"--top must be a whole number of at least 1, got {top!r}")
    return top


def check_seed(seed: int | None, trained: list[int]) -> int:
    """The seed to use: `seed` if the model was trained with it, the first trained seed if None."""
    if seed is None:
        return trained[0]
    if seed not in trained:
        raise ColdStartInputError(f"seed {seed} was not trained for this model; trained seeds: {', '.join(map(str, trained))}")
    return seed


def catalogue_ratings(ratings: dict[str, float], catalogue: set[str]) -> dict[str, float]:
    """`ratings` with each item id as the catalogue spells it: an id written as a whole float ('7.0', as
    pandas writes an integer column) is the integer id ('7') when only that is in the catalogue, as the
    readers take such ids (assets/custom_reader.py `whole_float_ids`). Two spellings of one item are an error."""
    import re

    from assets.custom_reader import WHOLE_FLOAT

    spelled: dict[str, str] = {}
    for given in ratings:
        item = given.strip()
        if item not in catalogue and re.match(WHOLE_FLOAT, item) and item[:-2] in catalogue:
            item = item[:-2]
        if item in spelled:
            raise ColdStartInputError(f"item {item!r} is given twice (as {spelled[item]!r} and {given!r})")
        spelled[item] = given
    return {item: ratings[given] for item, given in spelled.items()}


def encode_profile(profile: dict[str, str], vocab: pl.DataFrame, fields: tuple[str, ...]) -> list[int]:
    """Field values -> vocabulary indices (unseen values -> unknown); every field is required."""
    missing = [f for f in fields if f not in profile]
    extra = sorted(set(profile) - set(fields))
    if missing or extra:
        raise ColdStartInputError(f"profile needs exactly the fields {', '.join(fields)}; missing {missing}, unknown {extra}")
    codes = []
    for field in fields:
        match = vocab.filter((pl.col("field") == field) & (pl.col("value") == str(profile[field]).strip()))
        codes.append(int(match["index"][0]) if match.height else UNKNOWN_INDEX)
    return codes


def unknown_profile_fields(profile: dict[str, str], tasks: Bundle) -> dict[str, str]:
    """Profile fields whose value the model never saw in training (they use the unknown embedding)."""
    fields = tuple(tasks.info["user_fields"])
    codes = encode_profile(profile, tasks.frame("vocab"), fields)
    return {f: profile[f] for f, code in zip(fields, codes) if code == UNKNOWN_INDEX}


def known_values_hint(field: str, value: str, tasks: Bundle, listed: int = 12) -> str:
    """What the model knows of `field` when `value` is unseen: the value in another case (`F` for `f`) or
    close spellings, or else, for a field of at most `listed` values, all of them, most frequent first
    ('' otherwise). A hint only: the value is never changed for the user."""
    known = tasks.frame("vocab").filter(pl.col("field") == field)["value"].to_list()  # build_vocab's order: most frequent first
    value = value.strip()
    same = [v for v in known if v.casefold() == value.casefold()]
    numbers = _as_numbers([value, *known])
    # spelling is no guide to numbers: age 250 is not "close to 25"; their range is
    close = same or ([] if numbers else _closest(value, known))
    if close:
        return f"did you mean {' or '.join(close)}?"
    if 0 < len(known) <= listed:
        return f"known: {', '.join(sorted(known, key=float) if numbers else known)}"
    return f"known: {min(numbers[1:]):g} to {max(numbers[1:]):g}" if numbers and len(numbers) > 1 else ""


def _closest(value: str, known: list[str], most: int = 3, cutoff: float = 0.75) -> list[str]:
    """Up to `most` of `known` spelled like `value` (difflib's ratio >= cutoff), closest first, ties in
    `known`'s order (the most frequent first)."""
    scored = [(difflib.SequenceMatcher(None, value, v).ratio(), v) for v in known]
    return [v for score, v in sorted(scored, key=lambda sv: -sv[0]) if score >= cutoff][:most]


def _as_numbers(values: list[str]) -> list[float]:
    """The values as finite numbers, or [] when any of them is not one."""
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        return []
    return numbers if all(math.isfinite(n) for n in numbers) else []


def recommend(model: Bundle, tasks: Bundle, profile: dict[str, str], ratings: dict[str, float],
              top: int = 10, seed: int | None = None) -> tuple[pl.DataFrame, float]:
    """Adapt `model` (one seed) to a new user and rank all items they have not rated.

    Returns (item_id, score, rank) for the `top` items and the user's inner learning rate.
    Raises ColdStartInputError for an unknown item or seed, a label outside the dataset's
    label set (NaN, inf, 5 on click data), or `top` < 1.
    """
    from assets.method_assets import load_learner

    check_top(top)
    seed = check_seed(seed, list(model.info["seeds"]))
    spec = spec_for(tasks.info["dataset"])
    ratings = {item: check_label(item, label, spec) for item, label in ratings.items()}
    data = task_data_from_tensors(tasks.tensors, tasks.info)
    item_rows = dict(tasks.frame("items").iter_rows())
    ratings = catalogue_ratings(ratings, set(item_rows))
    unknown = sorted(i for i in ratings if i not in item_rows)
    if unknown:
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise ColdStartInputError(f"{len(unknown)} of the {len(ratings)} items given are not in the model's catalogue "
                                  f"({len(item_rows)} items): {', '.join(unknown[:10])}{more}")
    if not ratings:
        raise ColdStartInputError("give at least one rating (or click) to adapt on")
    candidates = sorted(set(item_rows) - set(ratings))
    if not candidates:
        raise ColdStartInputError(f"all {len(item_rows)} items of the model's catalogue are rated: none is left to recommend")
    # The support set in catalogue order, not the order given: the adapted weights sum over it, and
    # float sums in another order differed in the 7th digit, enough to swap two close items.
    rated = sorted(ratings, key=item_rows.__getitem__)
    user_fields = torch.tensor([encode_profile(profile, tasks.frame("vocab"), data.user_fields)])
    support = torch.tensor([[item_rows[i] for i in rated]])  # (1, n_rated)
    query = torch.tensor([[item_rows[i] for i in candidates]])  # (1, n_candidates)
    one_user = TaskSplit(
        user_fields=user_fields, support_items=support,
        support_labels=torch.tensor([[ratings[i] for i in rated]], dtype=torch.float32),
        support_mask=torch.ones_like(support, dtype=torch.bool), query_items=query,
        query_labels=torch.zeros(query.shape), query_mask=query != PAD_INDEX,
    )
    learner = load_learner(model, data, seed)
    learner.eval()
    outcome = learner.run(one_user, data.items, training=False)
    scores = outcome.query_pred.detach()[0]
    if data.task == "ctr":
        scores = torch.sigmoid(scores)
    order = np.argsort(-scores.numpy(), kind="stable")[:top]
    ranked = pl.DataFrame({
        "rank": np.arange(1, len(order) + 1), "item_id": [candidates[i] for i in order],
        "score": scores.numpy()[order].astype(np.float64),
    })
    return ranked, float(outcome.lr_per_user[0])


def item_attributes(frame: pl.DataFrame, items: pl.DataFrame, fields: tuple[str, ...]) -> pl.DataFrame:
    """`frame` (with `item_id`, row order kept) with the items' display attributes beside it.

    `items` is clean_logs' items frame; list attributes (a movie's genres) are joined by
    commas, and an item without a row keeps empty attributes.
    """
    shown = [f for f in fields if f in items.columns]
    attributes = items.select(
        "item_id", *(pl.col(f).list.join(", ") if isinstance(items.schema[f], pl.List) else pl.col(f).cast(pl.String)
                     for f in shown))
    return frame.join(attributes, on="item_id", how="left", maintain_order="left")

