"""Item factors of a biased matrix factorization, as an item feature for every method.

MeLU's item features (genre, director, actor, rating class) do not carry item identity, and
the collaborative signal that matrix factorization lives on needs it. Learning an identity
embedding end to end inside meta-training memorizes the training users (they are revisited
every epoch); a factorization fitted once on the training users' ratings, with ridge
penalties, gives every item a well-regularized factor q_i instead. The network's
dot-product head (models/network.py) then folds a new user in by Eq. (1)'s gradient steps on
its user factor, starting from a prior the meta-learner learns from the user's features.

Fitted on the rows the protocol allows (the training split's support and query ratings;
the warm users' too under the production protocol), never on validation or test users.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np
import scipy
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from models.kept_fits import COUNTS, fit_counts, fits_directory, fits_kept_in, keep_fits_in  # noqa: F401 (re-exported)
from models.locks import file_lock
from models.references import BiasConfig, KNNConfig, MFConfig, Ratings, fit_item_knn, fit_mf, in_threads, item_neighbours
from models.tasks import TaskSplit


def split_triples(split: TaskSplit, parts: tuple[str, ...] = ("support", "query")) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user row, item row, label) of every observed entry of `parts` of `split`."""
    users, items, labels = [], [], []
    for part in parts:
        mask = getattr(split, f"{part}_mask").cpu().numpy()
        rows = np.broadcast_to(np.arange(mask.shape[0])[:, None], mask.shape)
        users.append(rows[mask])
        items.append(getattr(split, f"{part}_items").cpu().numpy()[mask])
        labels.append(getattr(split, f"{part}_labels").cpu().numpy()[mask])
    return np.concatenate(users), np.concatenate(items), np.concatenate(labels).astype(np.float64)


@dataclass(frozen=True)
class FactorTables:
    """Fitted item sides, one table per fit (T = 1, or folds + 1 cross-fitted): mu (T,), b_i (T, N+1), q_i (T, N+1, r)."""

    mu: torch.Tensor
    item_bias: torch.Tensor
    factors: torch.Tensor


@dataclass(frozen=True)
class FittingRows:
    """Every observed entry an item side is fitted on: user (numbered across splits), item row,
    label, and whether it is a query rating (cross-fitting leaves those out per fold)."""

    users: np.ndarray  # (R,) int64
    items: np.ndarray  # (R,) int64
    labels: np.ndarray  # (R,) float64
    is_query: np.ndarray  # (R,) bool
    n_users: int

    def digest(self) -> str:
        """SHA-256 of the rows: two fits on equal digests (and settings) give equal tables."""
        digest = hashlib.sha256(f"{self.n_users}:{len(self.users)}\n".encode())
        for array in (self.users, self.items, self.labels, self.is_query):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()


def fitting_rows(splits: list[TaskSplit], parts: tuple[str, ...]) -> FittingRows:
    """The entries of `parts` of `splits` an item side is fitted on, users numbered across splits
    by their keys (`TaskSplit.keys`: identities where set, else row numbers)."""
    triples = [split_triples(s, parts) for s in splits]
    # Users by identity (a warm user's chunks are one user), numbered across splits.
    keys = [s.keys().cpu().numpy() for s in splits]
    offsets = np.cumsum([0] + [int(k.max()) + 1 if len(k) else 0 for k in keys])
    users = np.concatenate([k[u] + off for (u, _, _), k, off in zip(triples, keys, offsets)]).astype(np.int64)
    items = np.concatenate([i for _, i, _ in triples]).astype(np.int64)
    labels = np.concatenate([y for _, _, y in triples])
    is_query = np.concatenate([
        np.concatenate([np.full(int(getattr(s, f"{part}_mask").sum()), part == "query") for part in parts])
        for s in splits])
    return FittingRows(users, items, labels, is_query, int(offsets[-1]))


def crossfit_keeps(users: np.ndarray, is_query: np.ndarray, folds: int) -> list[np.ndarray]:
    """Which ratings each table is fitted on: all of them, then per fold all but that fold's query ratings."""
    everything = np.ones(len(users), dtype=bool)
    if folds <= 1:
        return [everything]
    return [everything] + [~(is_query & (users % folds == fold)) for fold in range(folds)]


def fit_item_factors(splits: list[TaskSplit], n_item_rows: int, mf: MFConfig = MFConfig(), bias: BiasConfig = BiasConfig(),
                     parts: tuple[str, ...] = ("support", "query"), folds: int = 0) -> FactorTables:
    """Item sides of the reference MF (models/references.py `fit_mf`) fitted on `parts` of `splits`:
    one table, or with `folds` > 1 folds + 1 tables.

    Cross-fitting (`folds` > 1): table 0 is fitted on every rating; table k (1..folds) leaves
    out the *query* ratings of the users in fold k (user row % folds == k - 1). A training user
    of fold k is then judged on query ratings its factors never saw, as a new user is, while
    the factors still learn from (almost) every rating. Every table starts from the same fit
    on support ratings only (no query rating of anyone), which keeps the factor spaces aligned
    without letting a left-out rating in through the start. Deterministic for a seed.
    """
    return item_factors_of(fitting_rows(splits, parts), n_item_rows, mf, bias, folds)


def item_factors_of(rows: FittingRows, n_item_rows: int, mf: MFConfig, bias: BiasConfig, folds: int) -> FactorTables:
    """`fit_item_factors` on rows already gathered (`fitting_rows`)."""
    users, items, labels, is_query, n_users = rows.users, rows.items, rows.labels, rows.is_query, rows.n_users

    def fit(keep: np.ndarray, start: np.ndarray | None = None):
        return fit_mf(Ratings(users[keep], items[keep], labels[keep], n_users, n_item_rows), mf, bias, start)

    start = fit(~is_query).item_factors if folds > 1 else None
    # The folds + 1 fits share only the start: PAML_THREADS at a time, each the numbers it gives alone.
    fits = in_threads(lambda keep: fit(keep, start), crossfit_keeps(users, is_query, folds))
    return FactorTables(mu=torch.tensor([f.mu for f in fits], dtype=torch.float32),
                        item_bias=torch.from_numpy(np.stack([f.item_bias for f in fits])).float(),
                        factors=torch.from_numpy(np.stack([f.item_factors for f in fits])).float())


@dataclass(frozen=True)
class NeighbourTables:
    """Item-kNN's item side per fit (T tables as in `FactorTables`): the bias baseline mu (T,) and
    b_i (T, N+1), and each item's neighbour rows (T, N+1, M) with their similarities (T, N+1, M)."""

    mu: torch.Tensor
    item_bias: torch.Tensor
    index: torch.Tensor
    value: torch.Tensor


def fit_item_neighbours(splits: list[TaskSplit], n_item_rows: int, knn: KNNConfig, bias: BiasConfig, neighbours: int,
                        parts: tuple[str, ...] = ("support", "query"), folds: int = 0) -> NeighbourTables:
    """The reference item-kNN (models/references.py) fitted on `parts` of `splits`, as neighbour
    lists (`item_neighbours`): one table, or folds + 1 cross-fitted ones as in `fit_item_factors`
    (table k leaves out the query ratings of fold k's users)."""
    return item_neighbours_of(fitting_rows(splits, parts), n_item_rows, knn, bias, neighbours, folds)


def item_neighbours_of(rows: FittingRows, n_item_rows: int, knn: KNNConfig, bias: BiasConfig, neighbours: int,
                       folds: int) -> NeighbourTables:
    """`fit_item_neighbours` on rows already gathered (`fitting_rows`)."""
    users, items, labels, is_query, n_users = rows.users, rows.items, rows.labels, rows.is_query, rows.n_users

    def fit(keep: np.ndarray) -> tuple:
        model = fit_item_knn(Ratings(users[keep], items[keep], labels[keep], n_users, n_item_rows), bias)
        return (model.bias, *item_neighbours(model, knn, neighbours))

    fits = in_threads(fit, crossfit_keeps(users, is_query, folds))  # independent: PAML_THREADS at a time
    return NeighbourTables(mu=torch.tensor([b.mu for b, _, _ in fits], dtype=torch.float32),
                           item_bias=torch.from_numpy(np.stack([b.item_bias for b, _, _ in fits])).float(),
                           index=torch.from_numpy(np.stack([i for _, i, _ in fits])),
                           value=torch.from_numpy(np.stack([v for _, _, v in fits])))


# -- fitted item sides, remembered by content ----------------------------------------------

Tables = TypeVar("Tables", FactorTables, NeighbourTables)

# Item sides kept per process: a network is built on the same rows many times (every seed and
# method of a training job, every evaluation, promotion and report step loads a model, and
# `load_learner` rebuilds its network), and each build refitted them: seven ALS fits and six
# all-pairs kNN similarity passes, about a second each time on the demo's 2,000 items.
# Bounded by size, the oldest dropped first (the newest is always kept): kNN lists take 12 bytes
# per neighbour slot, about 30 MB on taobao, 53 MB on ML-1M and up to 400 MB on Book-Crossing.
REMEMBERED_BYTES = 1 << 30  # 1 GiB
_remembered: OrderedDict[tuple, FactorTables | NeighbourTables] = OrderedDict()
_lock = threading.Lock()
LOG = logging.getLogger(__name__)

# ... and on disk, across processes, where a directory is set (`keep_fits_in`; the pipeline sets
# PAML_HOME/fits): a step run on its own (`dagster asset materialize --select reg_paml_eval`, a
# scheduled evaluation, a spawned training worker) starts with an empty process, and at 3 M
# ratings its model loads refitted for about a minute each. Content-addressed, so never stale
# for the same code; bounded by size, the least recently used file removed first.
STORED_BYTES = 4 << 30  # 4 GiB
@functools.cache
def fit_code_version() -> str:
    """A digest of what a fit's numbers depend on besides its key: this module's and the reference
    models' source, numpy's and scipy's versions. A stored fit of other code is never read."""
    digest = hashlib.sha256(f"numpy {np.__version__} scipy {scipy.__version__}\n".encode())
    for module in ("factors.py", "references.py"):
        digest.update((Path(__file__).parent / module).read_bytes())
    return digest.hexdigest()


def stored_fit_path(directory: Path, key: tuple) -> Path:
    """The file of the fit of `key` (its repr holds the rows' digest and frozen settings)."""
    name = hashlib.sha256(f"{fit_code_version()}\n{key!r}".encode()).hexdigest()[:40]
    return directory / f"{key[0]}-{name}.safetensors"


def read_stored_fit(path: Path, kind: type[Tables]) -> Tables | None:
    """The tables stored at `path`, or None when there is no such file or it cannot be read
    (the caller refits and writes it again)."""
    try:
        tensors = load_file(str(path))
        tables = kind(**{f.name: tensors[f.name] for f in fields(kind)})
    except (OSError, KeyError, ValueError, RuntimeError, SafetensorError):
        return None
    try:
        os.utime(path)  # recently used: evicted last
    except OSError:  # a read-only home still serves its fits
        pass
    return tables


def write_stored_fit(path: Path, tables: FactorTables | NeighbourTables, limit: int = STORED_BYTES) -> None:
    """Store `tables` at `path` atomically (a killed writer leaves a `.partial` file, never a
    partial fit), then drop the least recently used fits beyond `limit` bytes (this one stays).

    The bytes are written here, not by safetensors' `save_file`: that stages its own `.tmpXXXXXX`
    file (mode 0600), which a killed writer left behind for good, and reports a full disk or a
    read-only directory as a SafetensorError instead of the OSError the caller handles.

    Raises:
        OSError: the directory cannot be written (full, read-only); nothing is left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for partial, modified, _ in _files_with_times(path.parent, ".*.partial"):
        if now - modified > 3600:  # a killed writer's: no writer takes an hour
            partial.unlink(missing_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    serialized = save({f.name: getattr(tables, f.name).contiguous() for f in fields(tables)})
    try:
        with staging.open("wb") as handle:
            handle.write(serialized)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    total = 0
    for stored, _, size in sorted(_files_with_times(path.parent, "*.safetensors"), key=lambda f: f[1], reverse=True):
        total += size
        if total > limit and stored != path:
            stored.unlink(missing_ok=True)
            # its lock file too (empty); a process still waiting on it at worst fits it once more
            stored.with_name(f".{stored.name}.lock").unlink(missing_ok=True)


def _files_with_times(directory: Path, pattern: str) -> list[tuple[Path, float, int]]:
    """(path, modified, bytes) of the files matching `pattern`; one removed meanwhile by another
    process is left out."""
    found = []
    for path in directory.glob(pattern):
        try:
            status = path.stat()
        except FileNotFoundError:
            continue
        found.append((path, status.st_mtime, status.st_size))
    return found


@contextlib.contextmanager
def fitting_alone(path: Path | None) -> Iterator[None]:
    """Hold `path`'s lock file while its fit is read or made: processes that need the same fit at
    once (parallel training workers, Dagster's multiprocess executor) fit it once, the others
    wait and read it. Without a directory, or where the lock cannot be taken (a read-only
    directory), nothing is held."""
    with contextlib.ExitStack() as held:
        if path is not None:
            try:
                held.enter_context(file_lock(path.with_name(f".{path.name}.lock")))
            except OSError:
                pass
        yield


def remembered_fit(key: tuple, fit: Callable[[], Tables], kind: type[Tables]) -> Tables:
    """`fit()`, or a copy of what it returned for an equal `key` earlier in this process, or
    the tables stored for `key` in `fits_directory()`.

    `key` must hold everything the fit depends on (`FittingRows.digest` for the rows, the
    item count and the frozen settings): fits are deterministic, so an equal key means equal
    tables. Copies, because a network's buffers are overwritten in place by `load_state_dict`.
    """
    with _lock:
        tables = _remembered.get(key)
        if tables is not None:
            _remembered.move_to_end(key)
            COUNTS["reused"] += 1
    if tables is None:
        directory = fits_directory()
        path = stored_fit_path(directory, key) if directory is not None else None
        with fitting_alone(path):  # outside `_lock`: another thread's lookups need not wait for a fit
            tables, counted = (read_stored_fit(path, kind) if path is not None else None), "loaded"
            if tables is None:
                tables, counted = fit(), "fitted"
                if path is not None:
                    try:
                        write_stored_fit(path, tables)
                    except OSError as error:  # a read-only or full home: the fit itself is good
                        # a log line, not a warning: the CLI prints one line, Dagster's step log keeps it
                        LOG.warning(f"could not keep the fitted item side in {path.parent}: {error}")
        with _lock:
            _remembered[key] = tables
            COUNTS[counted] += 1
            while len(_remembered) > 1 and sum(map(table_bytes, _remembered.values())) > REMEMBERED_BYTES:
                _remembered.popitem(last=False)
    return type(tables)(**{f.name: getattr(tables, f.name).clone() for f in fields(tables)})


def table_bytes(tables: FactorTables | NeighbourTables) -> int:
    """Bytes held by the tensors of fitted tables."""
    return sum(getattr(tables, f.name).nbytes for f in fields(tables))


def forget_fits() -> None:
    """Drop every remembered item side (the next build refits) and zero the counts."""
    with _lock:
        _remembered.clear()
        COUNTS.update(fitted=0, reused=0, loaded=0)
