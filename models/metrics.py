"""Evaluation metrics for the PAML reproduction, as pure numpy functions.

Inputs follow the pipeline's padded layout: ``pred`` and ``target``/``label``
have shape (U, Q) (one row per user, one column per query slot) and ``mask``
(U, Q) is True on real query items and False on padding. Values at padded
positions are never read, so padding may hold anything (including NaN).

Per-user functions return float64 arrays of shape (U,) with NaN where a user
has no valid value; the aggregate helpers average over the non-NaN users.
The per-user value is the unit of the minor-vs-major t-test (PAML, AAAI 2021).

The pooled AUC is scikit-learn's ``roc_auc_score``. The per-user AUC, the log-loss and
nDCG are masked batch computations because the library takes one user per call (its
per-call validation cost 2-3 ms, a third of the demo's evaluation time, and its nDCG
breaks ties differently, see ``ndcg_at_k``); tests/test_metrics.py checks all three
against scikit-learn on random inputs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt

NDCG_KS: tuple[int, ...] = (3, 5)
NEL_EPS: float = 1e-7
GROUP_MINOR: str = "minor"
GROUP_MAJOR: str = "major"
MIN_TTEST_GROUP_SIZE: int = 2

__all__ = [
    "NDCG_KS",
    "NEL_EPS",
    "binary_entropy",
    "ctr_metrics",
    "global_auc",
    "identical_values_quiet",
    "mean_ignoring_nan",
    "mean_ndcg",
    "ndcg_at_k",
    "paired_bootstrap_ci",
    "paired_ttest",
    "per_user_auc",
    "per_user_logloss",
    "per_user_mse",
    "per_user_nel",
    "rating_metrics",
    "ttest_groups",
    "weighted_nel",
]


# --------------------------------------------------------------------------- validation


def _as_padded(
    values: npt.ArrayLike, other: npt.ArrayLike, mask: npt.ArrayLike, names: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (values, other, mask) as float64/float64/bool 2-D arrays of one shape."""
    a = np.asarray(values, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    m = np.asarray(mask)
    if a.ndim != 2 or a.shape != b.shape or a.shape != m.shape:
        raise ValueError(
            f"expected 2-D arrays of one shape (users, query slots); got "
            f"{names[0]} {a.shape}, {names[1]} {b.shape}, mask {m.shape}"
        )
    # A float/int mask silently cast to bool would turn e.g. 0.5 into True; be explicit.
    if m.dtype != np.bool_:
        if not np.isin(m, (0, 1)).all():
            raise ValueError(f"mask must be boolean (or 0/1); got dtype {m.dtype}")
        m = m.astype(bool)
    return a, b, m


def _check_binary(label: np.ndarray, mask: np.ndarray) -> None:
    """AUC and log-loss are only defined for 0/1 labels; reject anything else early."""
    valid = label[mask]
    if not np.isin(valid, (0.0, 1.0)).all():
        bad = np.unique(valid[~np.isin(valid, (0.0, 1.0))])[:5]
        raise ValueError(f"labels on valid items must be 0 or 1; found e.g. {bad.tolist()}")


def _counts(mask: np.ndarray) -> np.ndarray:
    return mask.sum(axis=1)


def _masked_row_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-row mean over masked entries; NaN for rows with no entries (no warning)."""
    n = _counts(mask)
    total = np.where(mask, values, 0.0).sum(axis=1)
    out = np.full(mask.shape[0], np.nan)
    np.divide(total, n, out=out, where=n > 0)
    return out


# --------------------------------------------------------------------------- aggregates


def mean_ignoring_nan(values: npt.ArrayLike) -> float:
    """Mean of the non-NaN entries; NaN (without a RuntimeWarning) if there are none."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else math.nan


# --------------------------------------------------------------------------- rating metrics


def per_user_mse(pred: npt.ArrayLike, target: npt.ArrayLike, mask: npt.ArrayLike) -> np.ndarray:
    """Per-user mean squared error over the user's query items: mean_j (pred_j - target_j)^2.

    NaN for a user without query items.
    """
    p, t, m = _as_padded(pred, target, mask, ("pred", "target"))
    # Square before masking would overflow/NaN on garbage padding; mask inside the helper.
    diff = np.where(m, p - t, 0.0)
    return _masked_row_mean(diff * diff, m)


def ndcg_at_k(pred: npt.ArrayLike, target: npt.ArrayLike, mask: npt.ArrayLike, k: int,
              lowest_rating: float = 0.0) -> np.ndarray:
    """Per-user nDCG@k (Järvelin & Kekäläinen 2002, exponential-gain form).

    DCG@k = sum_{rank=1..min(k, n)} (2^r - 1) / log2(rank + 1), where items are ranked by
    ``pred`` descending and r is the true rating; ties in ``pred`` are broken by lower
    column index first (stable sort). IDCG@k is the same sum with the true ratings sorted
    descending. nDCG@k = DCG@k / IDCG@k.

    ``lowest_rating`` is the bottom of the rating scale. A scale reaching below 0 (Jester's
    -10..10) is graded from its bottom, r - lowest_rating: a negative rating's gain 2^r - 1 is
    negative, which made nDCG negative, and undefined for a user whose ratings are all <= 0.
    A scale from 0 up (1-5, 0-1) is graded as it is.

    NaN when the user has no query items, and also when IDCG@k <= 0 (all gains zero, e.g.
    every rating is 0): the ratio is undefined there, and treating it as 0 or 1 would bias
    the group means. NaN in a valid pred/target makes that user's value NaN.

    Without tied predictions this equals ``sklearn.metrics.ndcg_score`` given the gains
    2^r - 1 as ``y_true`` (tests check it on random inputs). We do not call the library:
    it averages the gains of tied predictions instead of the fixed tie rule above, returns
    0 (not NaN) when IDCG is 0, refuses users with a single query item, and has no mask
    for the padded (users, slots) layout, so it would need one call per user.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}")
    p, t, m = _as_padded(pred, target, mask, ("pred", "target"))
    n_users, n_slots = m.shape
    if n_slots == 0:
        return np.full(n_users, np.nan)
    depth = min(int(k), n_slots)

    grade = np.where(m, t - min(float(lowest_rating), 0.0), 0.0)
    # Each user's gains are 2^r - 1 divided by 2^(its top grade): the ratio DCG / IDCG is the same
    # (bit for bit on whole-number grades, where the division by a power of 2 is exact), and a scale
    # such as 0-10000 no longer overflows 2^r to inf (inf - inf made every nDCG NaN).
    top = np.where(m, grade, -np.inf).max(axis=1, keepdims=True, initial=-np.inf)
    top = np.where(np.isfinite(top), top, 0.0)
    gains = np.where(m, np.exp2(grade - top) - np.exp2(-top), 0.0)
    # Primary key: valid items first; secondary: -pred ascending. lexsort is stable, so equal
    # predictions keep column order (lower index first) -- the documented tie rule. Using a
    # separate mask key (rather than +inf for padding) keeps a valid pred of -inf ahead of
    # padding.
    neg_pred = np.where(m, -p, 0.0)
    order = np.lexsort((neg_pred, ~m), axis=1)[:, :depth]
    ranked_gains = np.take_along_axis(gains, order, axis=1)

    # Padding sorts below every valid gain (even negative ones) and contributes 0 after.
    ideal = -np.sort(-np.where(m, gains, -np.inf), axis=1)[:, :depth]
    ideal = np.where(np.isfinite(ideal), ideal, 0.0)

    # rank r (1-based) -> 1 / log2(r + 1)
    discount = 1.0 / np.log2(np.arange(2, depth + 2, dtype=np.float64))
    dcg = ranked_gains @ discount
    idcg = ideal @ discount

    out = np.full(n_users, np.nan)
    ok = (_counts(m) > 0) & (idcg > 0)
    np.divide(dcg, idcg, out=out, where=ok)
    # np.divide's `where` skips NaN rows' arithmetic but not NaN inputs on ok rows; make
    # NaN propagation explicit for users with NaN in valid pred/target.
    has_nan = (np.isnan(p) & m).any(axis=1) | (np.isnan(t) & m).any(axis=1)
    out[has_nan] = np.nan
    return out


def mean_ndcg(pred: npt.ArrayLike, target: npt.ArrayLike, mask: npt.ArrayLike, k: int, lowest_rating: float = 0.0) -> float:
    """Mean nDCG@k over users with at least one query item (and a positive IDCG)."""
    return mean_ignoring_nan(ndcg_at_k(pred, target, mask, k, lowest_rating))


def rating_metrics(pred: npt.ArrayLike, target: npt.ArrayLike, mask: npt.ArrayLike,
                   lowest_rating: float = 0.0) -> dict[str, float]:
    """{"mse", "ndcg@3", "ndcg@5"} for the rating (MovieLens) setting; `lowest_rating`: `ndcg_at_k`'s.

    "mse" is the mean of per-user MSEs over users with items -- each user weighs the same,
    matching the per-user unit of the minor/major t-test -- NOT the MSE pooled over all
    (user, item) pairs, which would weight users by their number of query items.
    """
    out = {"mse": mean_ignoring_nan(per_user_mse(pred, target, mask))}
    for k in NDCG_KS:
        out[f"ndcg@{k}"] = mean_ndcg(pred, target, mask, k, lowest_rating)
    return out


# --------------------------------------------------------------------------- CTR metrics


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """scikit-learn's ROC AUC of one pool (ties count 1/2, as Mann-Whitney U); NaN if a class is missing."""
    from sklearn.metrics import roc_auc_score

    if labels.size == 0 or labels.min() == labels.max():
        return math.nan
    return float(roc_auc_score(labels, scores))


AUC_PAIRS_PER_BLOCK: int = 4_000_000  # (user, positive, negative) comparisons held at once


def per_user_auc(pred: npt.ArrayLike, label: npt.ArrayLike, mask: npt.ArrayLike) -> np.ndarray:
    """Per-user ROC AUC over the user's query items: the Mann-Whitney statistic
    (#pairs pos > neg + 1/2 #tied pairs) / (n_pos n_neg), which ``roc_auc_score`` computes
    for one user per call (equal up to rounding of its last bits; tests check it).

    Ties in ``pred`` count 1/2. NaN for a user whose query set lacks positives or negatives.
    Labels on valid items must be 0/1; a user with both classes needs finite predictions
    (the library refuses NaN and infinity too).
    """
    p, y, m = _as_padded(pred, label, mask, ("pred", "label"))
    _check_binary(y, m)
    positive, negative = m & (y == 1.0), m & (y == 0.0)
    n_pos, n_neg = positive.sum(1), negative.sum(1)
    scored = (n_pos > 0) & (n_neg > 0)
    broken = scored & (m & ~np.isfinite(p)).any(1)
    if broken.any():
        user = int(np.argmax(broken))
        raise ValueError(f"AUC needs finite predictions; user row {user} has {p[user, m[user]].tolist()[:5]}")
    p = np.where(m, p, 0.0)  # padding may hold anything; it is never paired below
    out = np.full(m.shape[0], np.nan)
    width = max(m.shape[1] ** 2, 1)
    for start in range(0, m.shape[0], max(1, AUC_PAIRS_PER_BLOCK // width)):
        rows = slice(start, start + max(1, AUC_PAIRS_PER_BLOCK // width))
        pairs = positive[rows, :, None] & negative[rows, None, :]  # (B, Q pos, Q neg)
        above = p[rows, :, None] > p[rows, None, :]
        tied = p[rows, :, None] == p[rows, None, :]
        # Whole pair counts, then one division: exact up to that division's rounding.
        wins = (pairs & above).sum((1, 2)) + 0.5 * (pairs & tied).sum((1, 2))
        np.divide(wins, n_pos[rows] * n_neg[rows], out=out[rows], where=scored[rows])
    return out


def global_auc(pred: npt.ArrayLike, label: npt.ArrayLike, mask: npt.ArrayLike) -> float:
    """ROC AUC over all valid (user, item) pairs pooled; NaN if the pool lacks a class."""
    p, y, m = _as_padded(pred, label, mask, ("pred", "label"))
    _check_binary(y, m)
    return _auc(p[m], y[m])


def binary_entropy(p: float) -> float:
    """H(p) = -(p ln p + (1 - p) ln(1 - p)) in nats; requires 0 < p < 1."""
    p = float(p)
    # `not (0 < p < 1)` also rejects NaN.
    if not 0.0 < p < 1.0:
        raise ValueError(f"binary_entropy needs 0 < p < 1; got {p!r}")
    return -(p * math.log(p) + (1.0 - p) * math.log1p(-p))


def per_user_logloss(prob: npt.ArrayLike, label: npt.ArrayLike, mask: npt.ArrayLike, eps: float = NEL_EPS) -> np.ndarray:
    """Per-user mean query log-loss -(y ln q + (1 - y) ln(1 - q)), q = clip(prob, eps, 1 - eps).

    The per-user error of the CTR setting (the t-test unit) and the numerator of NEL.
    Equal to ``sklearn.metrics.log_loss`` on each user's clipped items (tests check it);
    kept as a masked batch because the library takes one user per call. NaN for a user
    without query items.
    """
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5); got {eps!r}")
    q, y, m = _as_padded(prob, label, mask, ("prob", "label"))
    _check_binary(y, m)
    # Clip (and neutralize padding) before the logs so padding/garbage never yields -inf.
    q = np.clip(np.where(m, q, 0.5), eps, 1.0 - eps)
    loss = -(y * np.log(q) + (1.0 - y) * np.log1p(-q))
    return _masked_row_mean(np.where(m, loss, 0.0), m)


def per_user_nel(
    prob: npt.ArrayLike,
    label: npt.ArrayLike,
    mask: npt.ArrayLike,
    train_ctr: float,
    eps: float = NEL_EPS,
) -> np.ndarray:
    """Per-user normalized entropy (He et al. 2014, "Practical lessons from predicting clicks
    on ads at Facebook"): ``per_user_logloss`` / H(train_ctr).

    H is ``binary_entropy`` (natural log, same base as the log-loss). 1.0 means no better than
    always predicting the training CTR; lower is better. NaN for a user without query items.
    """
    norm = binary_entropy(train_ctr)
    return per_user_logloss(prob, label, mask, eps) / norm


def weighted_nel(prob: npt.ArrayLike, label: npt.ArrayLike, mask: npt.ArrayLike, train_ctr: float) -> float:
    """Users' NEL averaged with weights = their number of query impressions.

    Equals the pooled log-loss over all valid impressions / H(train_ctr). NaN if there are
    no impressions at all.
    """
    nel = per_user_nel(prob, label, mask, train_ctr)
    n = _counts(np.asarray(mask).astype(bool)).astype(np.float64)
    has = n > 0
    if not has.any():
        return math.nan
    return float(np.sum(nel[has] * n[has]) / n[has].sum())


def ctr_metrics(prob: npt.ArrayLike, label: npt.ArrayLike, mask: npt.ArrayLike, train_ctr: float) -> dict[str, float]:
    """{"auc": mean per-user AUC (users with both classes), "global_auc": pooled AUC,
    "nel": impression-weighted NEL} for the CTR (Taobao) setting."""
    return {
        "auc": mean_ignoring_nan(per_user_auc(prob, label, mask)),
        "global_auc": global_auc(prob, label, mask),
        "nel": weighted_nel(prob, label, mask, train_ctr),
    }


# --------------------------------------------------------------------------- significance


@contextmanager
def identical_values_quiet() -> Iterator[None]:
    """Silence scipy's one warning about (nearly) identical values around a t-test, and only it.

    With constant per-user errors in a group, or a constant paired difference, scipy warns "Precision
    loss occurred in moment calculation due to catastrophic cancellation" and returns its defined
    result (t inf and p 0 for a constant non-zero difference, NaN for 0/0), which callers handle; the
    warning itself changes nothing and filled the run logs once per comparison.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Precision loss occurred in moment calculation", category=RuntimeWarning)
        yield


def ttest_groups(
    values: npt.ArrayLike,
    groups: npt.ArrayLike,
    a: str = GROUP_MINOR,
    b: str = GROUP_MAJOR,
) -> tuple[float, float]:
    """Two-tailed Student t-test (pooled variance, ``scipy.stats.ttest_ind(equal_var=True)``)
    of per-user ``values`` in group ``a`` vs group ``b``; NaN values are dropped first.

    Returns (statistic, p-value); statistic > 0 means mean(a) > mean(b). Raises ValueError
    if either group has fewer than 2 non-NaN values. If both groups are constant the
    statistic is undefined and scipy returns NaN.
    """
    v = np.asarray(values, dtype=np.float64)
    g = np.asarray(groups)
    if v.ndim != 1 or v.shape != g.shape:
        raise ValueError(f"values and groups must be 1-D of one shape; got {v.shape} and {g.shape}")
    keep = ~np.isnan(v)
    samples = {}
    for name in (a, b):
        samples[name] = v[keep & (g == name)]
        if samples[name].size < MIN_TTEST_GROUP_SIZE:
            raise ValueError(
                f"group {name!r} has {samples[name].size} non-NaN values; "
                f"the t-test needs at least {MIN_TTEST_GROUP_SIZE}"
            )
    # Imported here: scipy.stats takes 1.5 s to load on a 2 GHz core, and every CLI and Dagster
    # process imports this module; only the report's t-tests need it.
    from scipy import stats

    with identical_values_quiet():
        res = stats.ttest_ind(samples[a], samples[b], equal_var=True)
    return float(res.statistic), float(res.pvalue)


BOOTSTRAP_RESAMPLES: int = 2000
BOOTSTRAP_CONFIDENCE: float = 0.95


def _paired(a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) as float64 1-D arrays of one shape with every pair holding a NaN dropped."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"paired values must be 1-D of one shape; got {x.shape} and {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    if keep.sum() < MIN_TTEST_GROUP_SIZE:
        raise ValueError(f"{int(keep.sum())} complete pairs; a paired test needs at least {MIN_TTEST_GROUP_SIZE}")
    return x[keep], y[keep]


def paired_ttest(a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[float, float]:
    """Two-tailed paired t-test (``scipy.stats.ttest_rel``) of per-user values a_u vs b_u.

    t = mean(d) / (sd(d) / sqrt(n)) with d = a - b over the n users where both are defined,
    df = n - 1. Returns (statistic, p-value); statistic < 0 means a is lower (better, for an
    error). Raises ValueError with fewer than 2 complete pairs.
    """
    x, y = _paired(a, b)
    if np.array_equal(x, y):
        # Identical predictions (e.g. a network that kept its start, a reference row's blend):
        # no difference at all, where scipy's t would be 0/0.
        return 0.0, 1.0
    from scipy import stats  # late: see ttest_groups

    with identical_values_quiet():
        res = stats.ttest_rel(x, y)
    return float(res.statistic), float(res.pvalue)


def paired_bootstrap_ci(
    a: npt.ArrayLike, b: npt.ArrayLike, seed: int = 0,
    n_resamples: int = BOOTSTRAP_RESAMPLES, confidence: float = BOOTSTRAP_CONFIDENCE,
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a - b), resampling users (pairs) with replacement.

    The same draws as ``scipy.stats.bootstrap((a - b,), np.mean, method="percentile",
    rng=np.random.default_rng(seed))``: one (n_resamples, n) index matrix from the seeded
    generator. Pairs holding a NaN are dropped first. Returns (low, high).
    """
    if not 0.0 < confidence < 1.0 or n_resamples < 1:
        raise ValueError(f"need 0 < confidence < 1 and n_resamples >= 1; got {confidence}, {n_resamples}")
    x, y = _paired(a, b)
    diff = x - y
    index = np.random.default_rng(seed).integers(0, len(diff), (n_resamples, len(diff)))  # (B, n)
    means = diff[index].mean(1)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)
