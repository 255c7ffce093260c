"""Reference predictors a practitioner tries first, scored on exactly the same query sets.

- global mean: the mean fitting label (the fitting click rate for CTR);
- item mean: each item's mean fitting label, shrunk toward the global mean;
- user + item bias: mu + b_item (from the fitting users) + b_user fitted on the user's own
  support set, both ridge-regularized (Koren, Bell, Volinsky 2009, baseline predictors);
- mf: biased matrix factorization mu + b_u + b_i + p_u . q_i fitted by alternating least
  squares on the fitting users' ratings (Koren, Bell, Volinsky 2009, eq. 5; Zhou et al. 2008
  for ALS); an evaluated user is folded in from its support set only: a ridge regression
  for (p_u, b_u) with the item side fixed, the same step that fitted the training users;
- item_knn: item-based neighbours on top of the bias baseline (Koren 2010, "Factor in the
  neighbors", eq. 2-3): b_ui + sum_j s_ij (r_uj - b_uj) / (beta + sum_j |s_ij|) over the k items
  of the user's support set most similar to item i, with Pearson-baseline similarities of the
  fitting users' residuals shrunk by n_ij / (n_ij + lambda). beta = 0 is Koren's formula; a
  positive damping beta pulls predictions with few or weak neighbours back to the baseline
  (without it one weakly similar neighbour moves a click prediction all the way to its
  residual, which log-loss punishes hard).

"Fitting users" are the splits a protocol allows (`PROTOCOL_SPLITS`): the paper's protocol fits on
training users only (their support and query ratings), the production protocol adds the
warm users a real system has. Every setting is chosen on validation users' query sets
(`tune_settings`); test users are only ever predicted. For click data (task "ctr") the same
least-squares predictors run on 0/1 labels and their outputs are clipped into (0, 1)
(`clip_for_task`), so that log-loss, NEL and AUC are defined.

Shapes: R fitting ratings, U evaluated users, S support / Q query slots, N item rows
(row 0 = padding), k factors.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from typing import Callable, NamedTuple, TypeVar

import numpy as np
import scipy.sparse as sp
import torch

from models import metrics as M
from models.configs import (  # noqa: F401 (re-exported)
    DEFAULT_PROTOCOL, EDGE_ROUNDS, MF_GRID_MAX_RATINGS, MF_GRID_SAMPLE_RATINGS, MF_GRID_SAMPLE_SEED, MF_RANK_MAX,
    PROTOCOL_SPLITS, REFERENCES, TUNED_REFERENCES, BiasConfig, BlendConfig, KNNConfig, MFConfig, ReferenceSettings,
    SearchGrid,
)
from models.grid_edges import AxisRule, GridEdge, search_with_edges
from models.runtime import thread_count
from models.tasks import TaskData, TaskSplit

T, R = TypeVar("T"), TypeVar("R")

# Bounds the dense (query items x support items) similarity blocks of item-kNN to ~64 MB each.
KNN_BLOCK_ENTRIES = 8_000_000
KNN_USER_CHUNK = 128
# Bounds the split-wide (query items x support items) table of rho_ij and n_ij that the user
# chunks of one split share (`pair_table`): ~1.2 GB at most (rho float64, n float32).
KNN_TABLE_ENTRIES = 100_000_000


@dataclass(frozen=True)
class Ratings:
    """The fitting users' observed ratings (or clicks), one entry per (user, item)."""

    users: np.ndarray  # (R,) int64, 0..n_users-1 over the fitting splits in order
    items: np.ndarray  # (R,) int64 item rows
    labels: np.ndarray  # (R,) float64
    n_users: int
    n_items: int  # item rows, padding row 0 included

    def indicator(self) -> sp.csr_matrix:
        """(n_users, n_items) 0/1 matrix of who rated what."""
        return sp.csr_matrix((np.ones(len(self.users)), (self.users, self.items)), shape=(self.n_users, self.n_items))


def protocol_splits(data: TaskData, protocol: str) -> tuple[str, ...]:
    """The splits whose users a protocol fits on; an error when `data` lacks one of them."""
    if protocol not in PROTOCOL_SPLITS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOL_SPLITS)}")
    missing = [s for s in PROTOCOL_SPLITS[protocol] if s not in data.splits]
    if missing:
        raise ValueError(f"protocol {protocol!r} fits on split(s) {', '.join(missing)}, which the task data lacks")
    return PROTOCOL_SPLITS[protocol]


def available_protocols(data: TaskData) -> list[str]:
    """The protocols whose fitting splits all exist in `data` ("paper" always does)."""
    return [p for p, splits in PROTOCOL_SPLITS.items() if all(s in data.splits for s in splits)]


def fitting_ratings(data: TaskData, splits: tuple[str, ...] = PROTOCOL_SPLITS[DEFAULT_PROTOCOL]) -> Ratings:
    """Every support and query rating of the users of `splits` (never validation or test users).

    Tasks of one split with the same identity (`TaskSplit.keys()`, e.g. the chunks of one warm
    user's history) are one fitting user: their ratings share a user bias, factor and
    neighbourhood, as a real system would hold one history per user.
    """
    forbidden = {"val", "test"} & set(splits)
    if forbidden:
        raise ValueError(f"references never fit on {', '.join(sorted(forbidden))} users; asked for splits {splits}")
    users, items, labels, offset = [], [], [], 0
    for name in splits:
        split = data.splits[name]
        _, identity = np.unique(split.keys().numpy(), return_inverse=True)  # (U,) 0..n_users-1
        for part in ("support", "query"):
            mask = getattr(split, f"{part}_mask").numpy()
            rows = np.broadcast_to(identity.reshape(-1, 1), mask.shape)
            users.append(rows[mask] + offset)
            items.append(getattr(split, f"{part}_items").numpy()[mask])
            labels.append(getattr(split, f"{part}_labels").numpy()[mask])
        offset += int(identity.max(initial=-1)) + 1
    return Ratings(np.concatenate(users).astype(np.int64), np.concatenate(items).astype(np.int64),
                   np.concatenate(labels).astype(np.float64), offset, int(data.items.fields.shape[0]))


def training_labels(data: TaskData, splits: tuple[str, ...] = PROTOCOL_SPLITS[DEFAULT_PROTOCOL]) -> tuple[np.ndarray, np.ndarray]:
    """(item rows, labels) of every fitting user's support and query items."""
    ratings = fitting_ratings(data, splits)
    return ratings.items, ratings.labels


# -- user + item bias ------------------------------------------------------------------------


@dataclass(frozen=True)
class BiasModel:
    """mu and the item biases fitted on the fitting users; user biases come per evaluated user."""

    mu: float
    item_bias: np.ndarray  # (N,)
    user_shrinkage: float

    def user_bias(self, items: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """b_u = sum(r - mu - b_i) / (user_shrinkage + n_u) over the user's (support) ratings; (U,)."""
        residual = (labels - self.mu - self.item_bias[items]) * mask
        return residual.sum(1) / (self.user_shrinkage + mask.sum(1))


def fit_bias(ratings: Ratings, config: BiasConfig) -> BiasModel:
    """mu = mean label; b_i = sum(r - mu) / (item_shrinkage + n_i) (0 for unseen items)."""
    mu = float(ratings.labels.mean())
    sums = np.bincount(ratings.items, weights=ratings.labels - mu, minlength=ratings.n_items)
    counts = np.bincount(ratings.items, minlength=ratings.n_items)
    return BiasModel(mu, sums / (config.item_shrinkage + counts), config.user_shrinkage)


def predict_bias(model: BiasModel, split: TaskSplit) -> np.ndarray:
    """(U, Q) mu + b_i + b_u, b_u from the support set."""
    user_bias = model.user_bias(split.support_items.numpy(), split.support_labels.numpy().astype(np.float64),
                                split.support_mask.numpy())
    return model.mu + model.item_bias[split.query_items.numpy()] + user_bias[:, None]


# -- biased matrix factorization -------------------------------------------------------------


@dataclass(frozen=True)
class MFModel:
    """The item side of a fitted biased MF; users are folded in by `fold_in`."""

    mu: float
    item_bias: np.ndarray  # (N,), 0 for items without fitting ratings
    item_factors: np.ndarray  # (N, k), 0 rows for items without fitting ratings
    reg: float
    user_bias_reg: float


def _ridge_penalty(rank: int, factor_reg: float, bias_reg: float) -> np.ndarray:
    """diag(reg, ..., reg, bias_reg): the ridge of one [factors, bias] solve; (k+1, k+1)."""
    return np.diag(np.r_[np.full(rank, factor_reg), bias_reg])


@dataclass(frozen=True)
class _RatingLayout:
    """The ratings as a CSR matrix over one side (users or items), built once per fit."""

    pattern: sp.csr_matrix  # (n_rows, n_cols), data all ones
    order: np.ndarray  # ratings in CSR order: pattern.data[j] belongs to rating order[j]

    @classmethod
    def of(cls, rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> "_RatingLayout":
        order = np.lexsort((cols, rows))
        indptr = np.searchsorted(rows[order], np.arange(n_rows + 1))
        return cls(sp.csr_matrix((np.ones(len(order)), cols[order], indptr), shape=(n_rows, n_cols)), order)

    def with_values(self, values: np.ndarray) -> sp.csr_matrix:
        """The same pattern holding `values` (one per rating, in rating order)."""
        return sp.csr_matrix((values[self.order], self.pattern.indices, self.pattern.indptr), shape=self.pattern.shape)


def _als_step(layout: _RatingLayout, target: np.ndarray, fixed: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """Ridge solve of every row's [factors, bias] with the other side's [factors, 1] fixed.

    Row r solves (sum_j x_j x_j' + penalty) w_r = sum_j target_rj x_j over its ratings, with
    x_j = fixed[j] ((n_cols, k+1)). Returns (n_rows, k+1); a row without ratings gets 0.
    """
    width = fixed.shape[1]
    upper = np.triu_indices(width)  # the Gram matrices are symmetric: sum only the upper triangle
    outer = fixed[:, upper[0]] * fixed[:, upper[1]]  # (n_cols, (k+1)(k+2)/2)
    summed = np.asarray(layout.pattern @ outer)  # (n_rows, (k+1)(k+2)/2)
    # Copied into place through one flat index per triangle (two-array fancy indexing of the
    # (n_rows, k+1, k+1) array cost more than the sparse product at rank 20); the same numbers.
    gram = np.empty((summed.shape[0], width * width))
    gram[:, upper[0] * width + upper[1]] = summed
    gram[:, upper[1] * width + upper[0]] = summed
    gram = gram.reshape(-1, width, width)
    np.add(gram, penalty, out=gram)
    rhs = np.asarray(layout.with_values(target) @ fixed)  # (n_rows, k+1)
    return np.linalg.solve(gram, rhs[:, :, None])[:, :, 0]


@dataclass(frozen=True)
class ALSLayout:
    """What every ALS fit on the same ratings shares, whatever its rank and ridges: the rated
    items and both CSR layouts (sorting 10 M ratings twice cost ~10 s a fit; a grid of 25 fits
    on the same ratings now sorts once)."""

    used: np.ndarray  # (n_used,) item rows with fitting ratings
    items: np.ndarray  # (R,) each rating's index into `used`
    by_user: _RatingLayout
    by_item: _RatingLayout

    @classmethod
    def of(cls, ratings: Ratings) -> "ALSLayout":
        used, items = np.unique(ratings.items, return_inverse=True)
        return cls(used, items, _RatingLayout.of(ratings.users, items, ratings.n_users, len(used)),
                   _RatingLayout.of(items, ratings.users, len(used), ratings.n_users))


def fit_mf(ratings: Ratings, config: MFConfig, bias: BiasConfig, start: np.ndarray | None = None,
           layout: ALSLayout | None = None) -> MFModel:
    """ALS for r_ui ~ mu + b_u + b_i + p_u . q_i (Koren et al. 2009, eq. 5), mu fixed at the mean.

    Minimizes sum (r_ui - mu - b_u - b_i - p_u.q_i)^2 + reg (|p_u|^2 + |q_i|^2)
    + user_shrinkage b_u^2 + item_shrinkage b_i^2: each step is an exact ridge solve, so
    the result depends only on the initial item factors: `start` (n_items, rank), else seeded
    draws. Fits that share a start stay in one factor space (models/factors.py cross-fits so).
    `layout` (`ALSLayout.of(ratings)`) spares fits on the same ratings sorting them again.
    """
    if config.rank < 1 or config.reg <= 0 or bias.user_shrinkage <= 0 or bias.item_shrinkage <= 0:
        raise ValueError(f"MF needs rank >= 1 and positive ridge strengths; got {config} and {bias}")
    mu = float(ratings.labels.mean())
    rng = np.random.default_rng(config.seed)
    initial = rng.normal(0.0, config.init_scale, (ratings.n_items, config.rank)) if start is None else start
    # Only items with fitting ratings take part (an unrated item's ridge solution is 0 anyway):
    # Book-Crossing's item rows are half unrated.
    layout = ALSLayout.of(ratings) if layout is None else layout
    used, items, by_user, by_item = layout.used, layout.items, layout.by_user, layout.by_item
    item_side = np.hstack([initial[used], np.zeros((len(used), 1))])  # (n_used, k+1): [q_i, b_i]
    user_penalty = _ridge_penalty(config.rank, config.reg, bias.user_shrinkage)
    item_penalty = _ridge_penalty(config.rank, config.reg, bias.item_shrinkage)
    ones_users, ones_items = np.ones((ratings.n_users, 1)), np.ones((len(used), 1))
    for _ in range(config.iterations):
        target = ratings.labels - mu - item_side[items, -1]
        user_side = _als_step(by_user, target, np.hstack([item_side[:, :-1], ones_items]), user_penalty)
        target = ratings.labels - mu - user_side[ratings.users, -1]
        item_side = _als_step(by_item, target, np.hstack([user_side[:, :-1], ones_users]), item_penalty)
    item_bias, item_factors = np.zeros(ratings.n_items), np.zeros((ratings.n_items, config.rank))
    item_bias[used], item_factors[used] = item_side[:, -1], item_side[:, :-1]
    return MFModel(mu, item_bias, item_factors, config.reg, bias.user_shrinkage)


def ridge_foldin(factors: torch.Tensor, residual: torch.Tensor, mask: torch.Tensor, reg: float,
                 bias_reg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each user's (b_u, p_u) = argmin sum_j (residual_j - b_u - q_j . p_u)^2 + bias_reg b_u^2 + reg ||p_u||^2.

    The fold-in of matrix factorization (Koren et al. 2009) over the user's own support set,
    batched: factors (B, S, r), residual (B, S) = r - mu - b_i, mask (B, S). Returns (B,), (B, r).
    """
    weights = mask.to(factors.dtype).unsqueeze(-1)  # (B, S, 1)
    design = torch.cat([torch.ones_like(factors[..., :1]), factors], dim=-1) * weights  # (B, S, r + 1)
    ridge = torch.full((factors.shape[-1] + 1,), reg, dtype=factors.dtype, device=factors.device)
    ridge[0] = bias_reg
    gram = design.transpose(1, 2) @ design + torch.diag(ridge)  # (B, r + 1, r + 1)
    solution = torch.linalg.solve(gram, design.transpose(1, 2) @ (residual.unsqueeze(-1) * weights))  # (B, r + 1, 1)
    return solution[:, 0, 0], solution[:, 1:, 0]


def fold_in(model: MFModel, items: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each user's (p_u (U, k), b_u (U,)) by ridge on its own ratings, the item side fixed
    (`ridge_foldin`, the solve the networks' fold-in uses too).

    items/labels/mask are (U, S): the support set of each evaluated user.
    """
    residual = np.asarray(labels, dtype=np.float64) - model.mu - model.item_bias[items]
    user_bias, factors = ridge_foldin(torch.from_numpy(model.item_factors[items]), torch.from_numpy(residual),
                                      torch.from_numpy(mask), model.reg, model.user_bias_reg)
    return factors.numpy(), user_bias.numpy()


def predict_mf(model: MFModel, split: TaskSplit) -> np.ndarray:
    """(U, Q) mu + b_i + b_u + p_u . q_i with (p_u, b_u) folded in from the support set."""
    factors, user_bias = fold_in(model, split.support_items.numpy(), split.support_labels.numpy().astype(np.float64),
                                 split.support_mask.numpy())
    query = split.query_items.numpy()
    return model.mu + model.item_bias[query] + user_bias[:, None] + np.einsum("uk,uqk->uq", factors, model.item_factors[query])


# -- item-based kNN with bias baselines ------------------------------------------------------


@dataclass(frozen=True)
class KNNModel:
    """The bias baseline and the fitting users' residuals z_ui = r_ui - b_ui."""

    bias: BiasModel
    residuals: sp.csc_matrix  # (fitting users, N) z_ui on rated entries
    rated: sp.csc_matrix  # (fitting users, N) 0/1


def fit_item_knn(ratings: Ratings, bias: BiasConfig) -> KNNModel:
    """Residuals of the fitting ratings from the bias baseline (b_u from each user's own ratings)."""
    baseline = fit_bias(ratings, bias)
    rated = ratings.indicator()
    item_residual = ratings.labels - baseline.mu - baseline.item_bias[ratings.items]
    counts = np.bincount(ratings.users, minlength=ratings.n_users)
    # The same b_u as BiasModel.user_bias, over all of the fitting user's ratings.
    user_bias = np.bincount(ratings.users, weights=item_residual, minlength=ratings.n_users) / (bias.user_shrinkage + counts)
    residual = item_residual - user_bias[ratings.users]
    residuals = sp.csc_matrix((residual, (ratings.users, ratings.items)), shape=rated.shape)
    return KNNModel(baseline, residuals, rated.tocsc())


def pearson_baseline(model: KNNModel, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unshrunk similarity rho_ij and co-rating count n_ij for items `rows` x `cols`.

    rho_ij = sum_u z_ui z_uj / sqrt(sum_u z_ui^2 * sum_u z_uj^2), every sum over the fitting
    users who rated both (Koren 2010, section 2.2); 0 where no user rated both.
    Returns two (len(rows), len(cols)) arrays.
    """
    z_rows, z_cols = model.residuals[:, rows], model.residuals[:, cols]
    b_rows, b_cols = model.rated[:, rows], model.rated[:, cols]
    numerator = (z_rows.T @ z_cols).toarray()
    row_energy = (z_rows.multiply(z_rows).T @ b_cols).toarray()
    col_energy = (b_rows.T @ z_cols.multiply(z_cols)).toarray()
    common = (b_rows.T @ b_cols).toarray()
    denominator = np.sqrt(row_energy * col_energy)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), 0.0)
    return rho, common


@dataclass(frozen=True)
class PairTable:
    """rho_ij and n_ij (`pearson_baseline`) for every query item x support item of one split."""

    q_items: np.ndarray  # (A,) sorted item rows
    s_items: np.ndarray  # (B,) sorted item rows
    rho: np.ndarray  # (A, B) float64
    common: np.ndarray  # (A, B) co-rating counts, float32 (exact: fewer than 2^24 fitting users) or float64


def _pairs(model: KNNModel, q_items: np.ndarray, s_items: np.ndarray, common_dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """`pearson_baseline` of q_items x s_items, in row blocks of at most KNN_BLOCK_ENTRIES pairs."""
    rho, common = np.zeros((len(q_items), len(s_items))), np.zeros((len(q_items), len(s_items)), dtype=common_dtype)
    step = max(1, KNN_BLOCK_ENTRIES // max(len(s_items), 1))
    for start in range(0, len(q_items), step):
        rho[start:start + step], common[start:start + step] = pearson_baseline(model, q_items[start:start + step], s_items)
    return rho, common


@dataclass(frozen=True)
class NeededPairs:
    """rho_ij and n_ij for only the (query item, support item) pairs some user of one split holds,
    when the whole query x support table would be too large (`pair_table`).

    Pairs are keyed by q_index * len(s_items) + s_index into the sorted item rows; a pair no user
    holds (padding) reads as rho = n = 0, which is what the padding row's table entries hold.
    """

    q_items: np.ndarray  # (A,) sorted item rows
    s_items: np.ndarray  # (B,) sorted item rows
    keys: np.ndarray  # (P,) sorted int64 keys of the held pairs
    rho: np.ndarray  # (P,) float64
    common: np.ndarray  # (P,) float64


def pair_table(model: KNNModel, split: TaskSplit) -> PairTable | NeededPairs | None:
    """The pairs every user of `split` needs, computed once for all its user chunks: the whole
    query x support table when it has at most KNN_TABLE_ENTRIES entries; else only the pairs
    some user holds (`needed_pairs`), or None (each chunk computes its own pairs) when the
    chunks' own products would not cost more than twice the whole table's (`product_cost`; few
    users of a large catalogue).

    Each product of `pearson_baseline` runs over every fitting user, so computing the pairs per
    chunk of KNN_USER_CHUNK users cost (users / chunk) x (fitting ratings): quadratic in the log.
    Every entry is a sum over the same fitting users in the same order whichever block holds it,
    so the table gives each chunk the very numbers its own blocks gave.
    """
    q_items, s_items = np.unique(split.query_items.numpy()), np.unique(split.support_items.numpy())
    if len(q_items) * len(s_items) > KNN_TABLE_ENTRIES:
        query, support = split.query_items.numpy(), split.support_items.numpy()
        per_chunk = sum(product_cost(model, np.unique(query[index.numpy()]), np.unique(support[index.numpy()]))
                        for index in _chunk_indices(len(query)))
        return needed_pairs(model, split, q_items, s_items) if per_chunk > 2 * product_cost(model, q_items, s_items) else None
    exact32 = model.rated.shape[0] < 2 ** 24  # a count of fitting users is exact in float32
    rho, common = _pairs(model, q_items, s_items, np.float32 if exact32 else np.float64)
    return PairTable(q_items, s_items, rho, common)


def product_cost(model: KNNModel, rows: np.ndarray, cols: np.ndarray) -> float:
    """What `pearson_baseline(model, rows, cols)`'s sparse products cost, up to a constant: a fitting
    user adds |its items in rows| x |its items in cols|, about (ratings of rows) x (ratings of cols)
    over the users. Every chunk of users holds the popular items, which is where per-chunk tables
    repeat the most work (measured: docs/benchmarks.md)."""
    ratings_per_item = np.diff(model.rated.indptr)  # CSC: each item's fitting ratings
    return float(ratings_per_item[rows].sum()) * float(ratings_per_item[cols].sum())


def held_pair_keys(split: TaskSplit, q_items: np.ndarray, s_items: np.ndarray) -> np.ndarray:
    """Sorted distinct keys (`NeededPairs`) of every user's (valid query item, valid support item)
    pair, gathered KNN_USER_CHUNK users at a time (a user holds |query| x |support| pairs)."""
    query, support = split.query_items.numpy(), split.support_items.numpy()
    q_mask, s_mask = split.query_mask.numpy(), split.support_mask.numpy()
    width = np.int64(len(s_items))
    found = [np.empty(0, dtype=np.int64)]
    for start in range(0, len(query), KNN_USER_CHUNK):
        rows = slice(start, start + KNN_USER_CHUNK)
        q_index = np.searchsorted(q_items, query[rows]).astype(np.int64)
        s_index = np.searchsorted(s_items, support[rows]).astype(np.int64)
        keys = q_index[:, :, None] * width + s_index[:, None, :]
        found.append(np.unique(keys[q_mask[rows][:, :, None] & s_mask[rows][:, None, :]]))
    return np.unique(np.concatenate(found))


def needed_pairs(model: KNNModel, split: TaskSplit, q_items: np.ndarray, s_items: np.ndarray) -> NeededPairs:
    """`pearson_baseline` of the pairs the users of `split` hold, each computed once: query items in
    row blocks, against the support items their held pairs need (at most KNN_BLOCK_ENTRIES entries
    a block). The same numbers as the whole table's entries (the same sums in the same order)."""
    keys = held_pair_keys(split, q_items, s_items)
    width = len(s_items)
    rho, common = np.zeros(len(keys)), np.zeros(len(keys))
    step = max(1, KNN_BLOCK_ENTRIES // max(width, 1))
    for start in range(0, len(q_items), step):
        lo, hi = np.searchsorted(keys, [start * width, (start + step) * width])
        if lo == hi:
            continue
        block_rows, block_cols = np.divmod(keys[lo:hi], width)
        cols, col_index = np.unique(block_cols, return_inverse=True)
        block_rho, block_common = pearson_baseline(model, q_items[start:start + step], s_items[cols])
        rho[lo:hi] = block_rho[block_rows - start, col_index]
        common[lo:hi] = block_common[block_rows - start, col_index]
    return NeededPairs(q_items, s_items, keys, rho, common)


def _held_values(pairs: NeededPairs, query: np.ndarray, support: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """rho and n (U, Q, S) of each user's (query slot, support slot) from `pairs`; 0 where not held."""
    q_index = np.searchsorted(pairs.q_items, query).astype(np.int64)
    s_index = np.searchsorted(pairs.s_items, support).astype(np.int64)
    keys = q_index[:, :, None] * np.int64(len(pairs.s_items)) + s_index[:, None, :]
    at = np.minimum(np.searchsorted(pairs.keys, keys), max(len(pairs.keys) - 1, 0))
    held = pairs.keys[at] == keys if len(pairs.keys) else np.zeros(keys.shape, dtype=bool)
    return (np.where(held, pairs.rho[at] if len(pairs.keys) else 0.0, 0.0),
            np.where(held, pairs.common[at] if len(pairs.keys) else 0.0, 0.0))


def _knn_blocks(model: KNNModel, split: TaskSplit, table: PairTable | NeededPairs | None = None,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every (user, query slot, support slot): rho_ij and n_ij, plus the support residuals.

    Returns rho (U, Q, S), n (U, Q, S) and r_uj - b_uj (U, S) with b_u from the support set.
    The pairs come from `table` (made for a split holding these users) or, without one, only
    the items these users touch are compared, in blocks of bounded size.
    """
    support, labels, mask = split.support_items.numpy(), split.support_labels.numpy().astype(np.float64), split.support_mask.numpy()
    query = split.query_items.numpy()
    user_bias = model.bias.user_bias(support, labels, mask)
    support_residual = (labels - model.bias.mu - model.bias.item_bias[support] - user_bias[:, None]) * mask
    if isinstance(table, NeededPairs):
        rho, common = _held_values(table, query, support)
        return rho, common, support_residual
    if table is not None:
        gather = (np.searchsorted(table.q_items, query)[:, :, None], np.searchsorted(table.s_items, support)[:, None, :])
        return table.rho[gather], table.common[gather].astype(np.float64), support_residual
    q_items, q_index = np.unique(query, return_inverse=True)
    s_items, s_index = np.unique(support, return_inverse=True)
    q_index, s_index = q_index.reshape(query.shape), s_index.reshape(support.shape)
    rho, common = _pairs(model, q_items, s_items)
    gather = (q_index[:, :, None], s_index[:, None, :])
    return rho[gather], common[gather], support_residual


def predict_knn_grid(model: KNNModel, split: TaskSplit, configs: list[KNNConfig],
                     table: PairTable | NeededPairs | None = None) -> list[np.ndarray]:
    """(U, Q) predictions of each config, b_ui + sum_j s_ij (r_uj - b_uj) / (beta + sum_j |s_ij|).

    s_ij = rho_ij n_ij / (n_ij + lambda); j runs over the k support items with the largest
    s_ij (ties: lower support slot first); without a neighbour of non-zero similarity the
    prediction is the baseline b_ui. The similarity blocks are computed once for all configs
    (or taken from `table`, made for a split holding these users: `pair_table`).
    """
    rho, common, support_residual = _knn_blocks(model, split, table)
    mask = split.support_mask.numpy()
    query = split.query_items.numpy()
    user_bias = model.bias.user_bias(split.support_items.numpy(), split.support_labels.numpy().astype(np.float64), mask)
    baseline = model.bias.mu + model.bias.item_bias[query] + user_bias[:, None]  # (U, Q)
    predictions = {c: np.empty_like(baseline) for c in configs}
    for shrinkage in sorted({c.shrinkage for c in configs}):
        similarity = np.where(mask[:, None, :], rho * common / (common + shrinkage), -np.inf)  # (U, Q, S)
        order = np.argsort(-similarity, axis=2, kind="stable")
        ranked = np.take_along_axis(similarity, order, 2)
        valid = np.isfinite(ranked)
        weight = np.where(valid, ranked, 0.0)
        residual = np.take_along_axis(np.broadcast_to(support_residual[:, None, :], ranked.shape), order, 2)
        numerator, norm = np.cumsum(weight * residual, 2), np.cumsum(np.abs(weight), 2)  # (U, Q, S)
        for config in (c for c in configs if c.shrinkage == shrinkage):
            last = min(config.k, ranked.shape[2]) - 1
            top_norm = norm[:, :, last] + config.damping
            offset = np.divide(numerator[:, :, last], top_norm, out=np.zeros_like(top_norm), where=top_norm > 0)
            predictions[config] = baseline + offset
    return [predictions[c] for c in configs]


def item_neighbours(model: KNNModel, config: KNNConfig, neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    """Each item's `neighbours` most similar items by the shrunk s_ij = rho_ij n_ij / (n_ij + lambda).

    Returns (N, M) item rows sorted ascending per row (0 = no neighbour, the padding row) and
    their similarities (0 there). An item is never its own neighbour. With M >= N - 1 every
    non-zero similarity is kept and `knn_foldin` equals `predict_knn` exactly; a smaller M
    drops the least similar pairs (a pair outside both lists counts as similarity 0).
    """
    n = model.rated.shape[1]
    m = max(1, min(neighbours, n))
    index, value = np.zeros((n, m), dtype=np.int64), np.zeros((n, m), dtype=np.float32)
    cols = np.arange(n)
    step = max(1, KNN_BLOCK_ENTRIES // max(n, 1))
    for start in range(1, n, step):  # row 0 is padding: no neighbours
        rows = np.arange(start, min(start + step, n))
        rho, common = pearson_baseline(model, rows, cols)
        similarity = rho * common / (common + config.shrinkage)
        similarity[np.arange(len(rows)), rows] = 0.0
        similarity[:, 0] = 0.0
        top = np.argpartition(-similarity, m - 1, axis=1)[:, :m] if m < n else np.broadcast_to(cols, similarity.shape)
        top_value = np.take_along_axis(similarity, top, 1)
        top = np.where(top_value != 0.0, top, 0)
        order = np.argsort(top, axis=1, kind="stable")
        index[rows], value[rows] = np.take_along_axis(top, order, 1), np.take_along_axis(top_value, order, 1)
    return index, value


def knn_foldin(rows: torch.Tensor, values: torch.Tensor, support_items: torch.Tensor, support_residual: torch.Tensor,
               support_mask: torch.Tensor, k: int, damping: float) -> torch.Tensor:
    """Item-kNN's offsets sum_j s_ij z_uj / (beta + sum_j |s_ij|) for B users' X items, batched.

    j runs over the k support items of largest s_ij (`predict_knn_grid`'s rule). `rows` and
    `values` (B, X, M) are each predicted item's sorted neighbour list (`item_neighbours`, of the
    user's table), in which s_ij is looked up; z_uj = r_uj - b_uj is `support_residual` (B, S).
    A support item is never its own neighbour, so an item's own rating does not predict it.
    """
    b, x, m = rows.shape
    wanted = support_items.unsqueeze(1).expand(b, x, support_items.shape[1]).contiguous()  # (B, X, S)
    position = torch.searchsorted(rows, wanted).clamp_max(m - 1)
    hit = (rows.gather(2, position) == wanted) & (wanted != 0)
    similarity = torch.where(hit, values.gather(2, position), torch.zeros_like(values[..., :1]))
    similarity = torch.where(support_mask.unsqueeze(1), similarity, torch.full_like(similarity, -torch.inf))
    # Ties at the k-th place are common (few co-ratings give equal shrunk similarities): the
    # lower support slot wins, as in `predict_knn_grid`. topk's order among ties is unspecified
    # and changed with the batch's width, so the same user got different predictions.
    top, slot = torch.sort(similarity, dim=2, descending=True, stable=True)
    top, slot = top[..., :k], slot[..., :k]
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    residual = support_residual.unsqueeze(1).expand_as(similarity).gather(2, slot)
    norm = top.abs().sum(2) + damping
    return torch.where(norm > 0, (top * residual).sum(2) / norm.clamp_min(1e-12), torch.zeros_like(norm))


def predict_knn(model: KNNModel, split: TaskSplit, config: KNNConfig) -> np.ndarray:
    """(U, Q) item-kNN predictions of one config, in chunks of users sharing one `pair_table`."""
    table = pair_table(model, split)
    return _in_user_chunks(split, lambda part: predict_knn_grid(model, part, [config], table)[0])


def _in_user_chunks(split: TaskSplit, predict) -> np.ndarray:
    """Apply `predict` to chunks of users (bounded memory) and stack the (U, Q) outputs."""
    parts = [predict(_rows(split, index)) for index in _chunk_indices(len(split))]
    return np.concatenate(parts, 0) if parts else np.zeros(tuple(split.query_items.shape))


def _chunk_indices(n: int) -> list[torch.Tensor]:
    """Row indices of consecutive blocks of KNN_USER_CHUNK users."""
    return [torch.arange(s, min(s + KNN_USER_CHUNK, n)) for s in range(0, n, KNN_USER_CHUNK)]


def _rows(split: TaskSplit, index) -> TaskSplit:
    """The users `index` of `split`, keeping the padded widths (so outputs stack)."""
    values = {f.name: getattr(split, f.name) for f in fields(split)}
    return TaskSplit(**{name: None if value is None else value[index] for name, value in values.items()})


# -- all references: tuning on validation users, prediction ----------------------------------


@dataclass(frozen=True)
class GridSample:
    """The fitting users the MF grid's points were fitted on when there were too many ratings
    (`grid_sample`); the chosen point is fitted on all of them."""

    users: int
    ratings: int
    of_users: int
    of_ratings: int
    seed: int


def grid_sample(ratings: Ratings, max_ratings: int, sample_ratings: int, seed: int) -> tuple[Ratings, GridSample | None]:
    """`ratings` itself when it holds at most `max_ratings`; else the ratings of seeded randomly
    ordered whole users, taken while their total stays within `sample_ratings` (users renumbered
    0..n-1 in their original order, items as they are), and what was drawn."""
    if len(ratings.users) <= max_ratings:
        return ratings, None
    counts = np.bincount(ratings.users, minlength=ratings.n_users)
    order = np.random.default_rng(seed).permutation(ratings.n_users)
    taken = max(1, int(np.searchsorted(np.cumsum(counts[order]), sample_ratings, side="right")))
    chosen = np.zeros(ratings.n_users, dtype=bool)
    chosen[order[:taken]] = True
    keep = chosen[ratings.users]
    renumber = np.cumsum(chosen) - 1  # (n_users,) new row of each chosen user
    sample = Ratings(renumber[ratings.users[keep]], ratings.items[keep], ratings.labels[keep], taken, ratings.n_items)
    return sample, GridSample(taken, int(keep.sum()), ratings.n_users, len(ratings.users), seed)



def validation_error(pred: np.ndarray, split: TaskSplit, task: str, train_ctr: float | None) -> float:
    """Mean over users of the per-user query error: MSE for ratings, log-loss for clicks."""
    target, mask = split.query_labels.numpy(), split.query_mask.numpy()
    if task == "ctr":
        per_user = M.per_user_nel(clip_for_task(pred, task), target, mask, train_ctr) * M.binary_entropy(train_ctr)
    else:
        per_user = M.per_user_mse(pred, target, mask)
    return M.mean_ignoring_nan(per_user)


def validation_settings(data: TaskData, protocol: str = DEFAULT_PROTOCOL) -> ReferenceSettings:
    """The reference rows' settings chosen on `data`'s validation users under `protocol`, as the
    `reference_settings` asset chooses them (assets/reference_eval.py): what a fold-in network uses."""
    return tune_settings(data, protocol_splits(data, protocol))[0]


class Tuning(NamedTuple):
    """What `tune_settings` chose, every trial behind it, the MF grid's user sample (None: every
    grid point was fitted on every fitting user) and the extendable grid edges its choices met."""

    settings: ReferenceSettings
    trials: list[dict]  # reference, setting (JSON-able dict), val_error per tried setting
    mf_sample: GridSample | None = None
    edges: tuple[GridEdge, ...] = ()


def edge_rules(grid: SearchGrid, max_support: int) -> dict[str, dict[str, AxisRule]]:
    """reference -> axis -> how it extends past the grid (`models/grid_edges.py`): factor-2 steps;
    natural bounds: MF rank 1 (the rank stops at `grid.mf_rank_max`, for cost), k 1 and `max_support` (the most support
    items a validation user has: a larger k changes no prediction), damping 0 (Koren's formula),
    the blend weight's [0, 1] (never extended); shrinkages and ridges halve toward 0 or double."""
    return {"user_item_bias": {"item_shrinkage": AxisRule(), "user_shrinkage": AxisRule()},
            "mf": {"rank": AxisRule(integer=True, low=1, cap=grid.mf_rank_max), "reg": AxisRule()},
            "item_knn": {"k": AxisRule(integer=True, low=1, high=max_support), "shrinkage": AxisRule(),
                         "damping": AxisRule()},
            "mf_knn": {"knn_weight": AxisRule(extend=False)}}


def tune_settings(
    data: TaskData, splits: tuple[str, ...] = PROTOCOL_SPLITS[DEFAULT_PROTOCOL], grid: SearchGrid = SearchGrid(),
) -> Tuning:
    """Choose each tuned reference's setting on the validation users' query sets.

    The bias pseudo-counts come first (MF and kNN reuse them), then MF's rank and ridge,
    then kNN's k and lambda. Ties go to the earlier grid entry. Returns the settings and
    one row per tried setting: reference, setting (JSON-able dict), val_error. With more than
    `grid.mf_max_ratings` fitting ratings the MF grid points are fitted on a user sample
    (`grid_sample`; their val_error is the sample fit's) and the chosen one on every fitting
    user, whose predictions the blend then uses. A choice on an extendable edge of its grid
    axis extends that axis, at most `grid.edge_rounds` rounds per reference (`search_with_edges`;
    the trials then hold the added points, `edges` what was met); with none, the search is the
    grid's alone.
    """
    ratings = fitting_ratings(data, splits)
    val, task = data.splits["val"], data.task
    train_ctr = float(ratings.labels.mean()) if task == "ctr" else None
    rules = edge_rules(grid, max(int(val.support_mask.sum(1).numpy().max(initial=1)), 1))
    trials: list[dict] = []
    edges: list[GridEdge] = []

    def search(name: str, axes: dict[str, tuple], config_of: Callable, errors_of: Callable[[list], list[float]]):
        found = search_with_edges(name, axes, rules[name], errors_of, grid.edge_rounds)
        trials.extend({"reference": name, "setting": asdict(config_of(*p)), "val_error": e}
                      for p, e in zip(found.points, found.errors))
        edges.extend(found.edges)
        return config_of(*found.points[found.chosen])

    def bias_errors(points: list[tuple[float, float]]) -> list[float]:
        errors = []
        for item_shrinkage, group in itertools.groupby(points, key=lambda p: p[0]):  # one fit per item shrinkage
            model = fit_bias(ratings, BiasConfig(item_shrinkage))
            for _, user_shrinkage in group:
                tried = BiasModel(model.mu, model.item_bias, user_shrinkage)
                errors.append(validation_error(predict_bias(tried, val), val, task, train_ctr))
        return errors

    bias = search("user_item_bias", {"item_shrinkage": grid.item_shrinkage, "user_shrinkage": grid.user_shrinkage},
                  BiasConfig, bias_errors)

    sample, drawn = grid_sample(ratings, grid.mf_max_ratings, grid.mf_sample_ratings, grid.mf_sample_seed)
    layout = ALSLayout.of(sample)
    mf_preds: dict[MFConfig, np.ndarray] = {}

    def mf_errors(points: list[tuple[int, float]]) -> list[float]:
        configs = [MFConfig(rank=r, reg=g) for r, g in points]
        mf_preds.update(zip(configs, in_threads(lambda c: predict_mf(fit_mf(sample, c, bias, layout=layout), val), configs)))
        return [validation_error(mf_preds[c], val, task, train_ctr) for c in configs]

    mf = search("mf", {"rank": grid.mf_rank, "reg": grid.mf_reg}, lambda r, g: MFConfig(rank=r, reg=g), mf_errors)
    mf_val = mf_preds[mf] if drawn is None else predict_mf(fit_mf(ratings, mf, bias), val)
    mf_preds.clear()

    knn_model = fit_item_knn(ratings, bias)
    table = pair_table(knn_model, val)
    knn_preds: dict[KNNConfig, np.ndarray] = {}

    def knn_errors(points: list[tuple[int, float, float]]) -> list[float]:
        configs = [KNNConfig(k, s, d) for k, s, d in points]
        chunks = [predict_knn_grid(knn_model, _rows(val, idx), configs, table) for idx in _chunk_indices(len(val))]
        knn_preds.update((c, np.concatenate([chunk[i] for chunk in chunks], 0)) for i, c in enumerate(configs))
        return [validation_error(knn_preds[c], val, task, train_ctr) for c in configs]

    knn = search("item_knn", {"k": grid.knn_k, "shrinkage": grid.knn_shrinkage, "damping": grid.knn_damping},
                 KNNConfig, knn_errors)
    table = None  # up to KNN_TABLE_ENTRIES pairs: free them before the blend

    # The blend a practitioner would try next, of the two rows as chosen above.
    knn_val = knn_preds[knn]  # the fits' own predictions: no refit (MF's: unless sampled)
    blend = search("mf_knn", {"knn_weight": grid.blend_knn_weight}, BlendConfig,
                   lambda points: [validation_error(blend_predictions(mf_val, knn_val, BlendConfig(w)), val, task, train_ctr)
                                   for (w,) in points])
    return Tuning(ReferenceSettings(bias, mf, knn, blend), trials, drawn, tuple(edges))


def in_threads(work: Callable[[T], R], items: list[T], threads: int | None = None) -> list[R]:
    """[work(item) for item in items], `threads` (PAML_THREADS) at a time, in order.

    For independent fits: each computes exactly what it would alone, so the results are the
    sequential ones bit for bit, and their sparse products and solves (numpy and scipy release
    the GIL there) use the cores the one-threaded fit leaves idle.
    """
    threads = min(threads or thread_count(), len(items))
    if threads <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(work, items))


def blend_predictions(mf: np.ndarray, knn: np.ndarray, config: BlendConfig) -> np.ndarray:
    """(1 - w) * MF + w * kNN (for clicks: of the two probabilities)."""
    return (1.0 - config.knn_weight) * mf + config.knn_weight * knn


def predict_reference(
    name: str, data: TaskData, split: TaskSplit, settings: ReferenceSettings = ReferenceSettings(),
    splits: tuple[str, ...] = PROTOCOL_SPLITS[DEFAULT_PROTOCOL],
) -> np.ndarray:
    """(U, Q) predictions of reference `name` for `split`'s query items, fitted on `splits`."""
    if name not in REFERENCES:
        raise ValueError(f"unknown reference {name!r}; known: {', '.join(REFERENCES)}")
    ratings = fitting_ratings(data, splits)
    query_items = split.query_items.numpy()
    if name == "global_mean":
        return np.full(query_items.shape, float(ratings.labels.mean()))
    if name == "item_mean":
        model = fit_bias(ratings, settings.bias)
        return model.mu + model.item_bias[query_items]
    if name == "user_item_bias":
        return predict_bias(fit_bias(ratings, settings.bias), split)
    if name == "mf":
        return predict_mf(fit_mf(ratings, settings.mf, settings.bias), split)
    knn = predict_knn(fit_item_knn(ratings, settings.bias), split, settings.knn)
    if name == "item_knn":
        return knn
    return blend_predictions(predict_mf(fit_mf(ratings, settings.mf, settings.bias), split), knn, settings.blend)


def predict_references(
    data: TaskData, split: TaskSplit, settings: ReferenceSettings = ReferenceSettings(),
    splits: tuple[str, ...] = PROTOCOL_SPLITS[DEFAULT_PROTOCOL], seconds: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Every reference's (U, Q) predictions, as `predict_reference` gives them, each model fitted once:
    the blend reuses the MF and kNN predictions (fitting both again doubled the two costliest rows).
    `seconds`, when given, receives each reference's wall-clock seconds (the blend's: the blend alone)."""
    predictions = {}
    for name in REFERENCES:
        start = time.perf_counter()
        if name == "mf_knn":
            predictions[name] = blend_predictions(predictions["mf"], predictions["item_knn"], settings.blend)
        else:
            predictions[name] = predict_reference(name, data, split, settings, splits)
        if seconds is not None:
            seconds[name] = time.perf_counter() - start
    return predictions


def clip_for_task(pred: np.ndarray, task: str, eps: float = 1e-4) -> np.ndarray:
    """Click probabilities must stay inside (0, 1); ratings are left as they are."""
    return np.clip(pred, eps, 1 - eps) if task == "ctr" else pred
