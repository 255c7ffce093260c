"""User memory of AT-PAML: a nearest-neighbour store of (user embedding, learning rate).

PAML (AAAI 2021), adaptive-learning-rate part: a user's learning rate is

    alpha(h_i) = alpha'(h_i) + sum_k s_k / (sum_j s_j + sigma) * alpha(h_k),
    s_k = exp(-delta * ||h_i - h_k||^2),  sigma = 1e-5,

summed over the K stored users nearest to the embedding h_i. This module implements the
store and the second term ("reference learning rate"); alpha'(h_i) belongs to the model.
The stored value is whatever the model stores as a user's rate: `ATPAML` stores log-ratios
log(alpha / inner_lr) and combines them in log space (models/learners.py, docs/protocol.md).
Until K users are stored (warm-up) the caller uses a fixed alpha and only inserts. Stored
embeddings and learning rates are leaf tensors, so gradients of a loss built on
`reference_lr` reach them, and `apply_gradients` does node <- node - beta * grad(node).

Two search backends return the same thing, slot indices of the K nearest stored users:
"exact" (torch cdist + topk; works on any device) and "flann" (randomized kd-trees from the
FLANN library bundled with pyflann-py3, imported lazily). Only the search is approximate:
the weights are always recomputed exactly in torch from the neighbours' stored rows.
"""

from __future__ import annotations

import ctypes
import functools

import numpy as np
import torch
from torch import Tensor

from models.bounds import SettingError
from models.configs import MEMORY_BACKENDS, MemoryConfig  # noqa: F401 (re-exported)

# Upper bound on query x stored distance entries held at once by the exact search.
_EXACT_CHUNK_ELEMENTS = 1 << 24


def default_memory_k(training_users: int | None) -> int:
    """AT-PAML's K when no setting gives one: MemoryConfig's, or, with too few training users for the
    memory to hold K + 1 of them (a training user is never its own neighbour, so it attends only from
    then on), one less than there are, at least 1. The model assets, the search and torchrun's training
    all take K from here, so that a dataset with fewer than K + 1 training users trains AT-PAML
    everywhere instead of being refused by `check_memory_fills`. None or 0: not counted, the default."""
    return MemoryConfig.k if not training_users else max(1, min(MemoryConfig.k, training_users - 1))


MEMORY_FILLS_WHY = "(the memory attends once it holds K + 1 users, a user never being its own neighbour)"


def check_k_fits_users(k: int, training_users: int) -> None:
    """Refuse a K of at least `training_users`: the memory never holds K + 1 of them. Checked before the
    MemoryConfig is built, so that a huge K is told this, not that it exceeds the capacity or FLANN's checks."""
    if training_users <= k:
        raise SettingError(f"memory_k = {k} is too large for the {training_users} training users: memory_k must be at "
                           f"most {max(training_users - 1, 0)} {MEMORY_FILLS_WHY}; lower it, or leave it empty to fit K "
                           "to the users")


def last_of_each_key(keys: Tensor) -> Tensor:
    """(B,) bool: True on the last row of each key >= 0 and on every row without a key (-1)."""
    later_same = (keys.unsqueeze(0) == keys.unsqueeze(1)).triu(diagonal=1)  # [i, j]: row j > i has row i's key
    return (keys < 0) | ~later_same.any(dim=1)


def check_memory_fills(config: MemoryConfig, training_users: int) -> None:
    """Refuse a memory that can never leave warm-up, naming the setting, its value and its limit: it
    attends once it holds K + 1 users, so K must stay below both the training users and the capacity;
    otherwise every user would get the fixed inner_lr, as in MeLU. Called before training starts (the
    model assets) and again by training itself."""
    k, capacity = config.k, config.capacity
    check_k_fits_users(k, training_users)
    if capacity <= k:
        raise SettingError(f"memory_capacity = {capacity} is too small for memory_k = {k}: memory_capacity must be at "
                           f"least {k + 1} {MEMORY_FILLS_WHY}; raise it, or lower memory_k below {capacity}")


class UserMemory:
    """Store of (embedding, learning rate) pairs with K-NN lookup and LRU eviction.

    Slots 0..size-1 of the preallocated leaf buffers `embeddings` (capacity, d) and `lrs`
    (capacity,) are occupied; eviction overwrites a slot in place, so there are never holes
    and a slot index is also the row index given to FLANN. `last_used` holds each slot's
    LRU stamp: the value of `clock` (incremented once per `search`/`insert` call) at the
    last call that touched it.
    """

    def __init__(self, dim: int, config: MemoryConfig = MemoryConfig(), device: str | torch.device = "cpu"):
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim
        self.config = config
        self.device = torch.device(device)
        self.embeddings = torch.zeros(config.capacity, dim, device=self.device, requires_grad=True)
        self.lrs = torch.zeros(config.capacity, device=self.device, requires_grad=True)
        self.last_used = torch.zeros(config.capacity, dtype=torch.long, device=self.device)
        self.keys = torch.full((config.capacity,), -1, dtype=torch.long, device=self.device)  # -1 = no key
        self.size = 0
        self.clock = 0
        self.delta = config.delta if config.delta is not None else 1.0
        self._since_calibration = 0
        self._calibrated = config.delta is not None
        self._flann: _FlannKDTree | None = None
        self._index_stale = True

    def __len__(self) -> int:
        return self.size

    @property
    def in_warmup(self) -> bool:
        """True while fewer than K users are stored: the caller uses a fixed alpha and just inserts."""
        return self.size < self.config.k

    # ------------------------------------------------------------------ search

    def search(self, h: Tensor, stamp: bool = True, exclude: Tensor | None = None) -> Tensor:
        """(B, d) -> (B, K) long slot indices of the K nearest stored embeddings, nearest first.

        No gradient flows through the search. With `stamp` the returned slots get the current
        LRU stamp; evaluation searches without it, so scoring users never changes eviction.
        `exclude` (B,) keys: a slot stored under the query's own key is never returned (a
        training user must not find its own earlier copy). Raises RuntimeError during warm-up
        (fewer than K stored, or K + 1 with `exclude`).
        """
        k = self.config.k
        wanted = k + (exclude is not None)
        if self.size < wanted:
            raise RuntimeError(f"memory in warm-up: {self.size} stored < {wanted} needed")
        h = self._check_h(h)
        with torch.no_grad():
            query = h.detach().to(self.embeddings.dtype)
            if self.config.backend == "flann":
                idx = self._search_flann(query, wanted)
            else:
                idx = self._search_exact(query, k=wanted)
            if exclude is not None:
                # Move a self-match to the end (stable: the others keep their order), keep K.
                is_self = (self.keys[idx] == exclude.to(self.device).unsqueeze(1)).to(torch.int8)
                idx = idx.gather(1, torch.argsort(is_self, dim=1, stable=True))[:, :k]
            if stamp:
                self.clock += 1
                self.last_used[idx.reshape(-1)] = self.clock
        return idx

    def _search_exact(self, query: Tensor, stored: Tensor | None = None, k: int | None = None) -> Tensor:
        stored = self.embeddings.detach()[: self.size] if stored is None else stored
        k = self.config.k if k is None else k
        chunk = max(1, _EXACT_CHUNK_ELEMENTS // max(1, self.size))
        out = []
        for start in range(0, query.shape[0], chunk):
            dist = torch.cdist(query[start : start + chunk], stored)
            out.append(dist.topk(k, dim=1, largest=False, sorted=True).indices)
        if not out:
            return torch.empty(0, k, dtype=torch.long, device=self.device)
        return torch.cat(out)

    def _search_flann(self, query: Tensor, k: int | None = None) -> Tensor:
        k = self.config.k if k is None else k
        stored = self.embeddings.detach()[: self.size]
        if self._flann is None:
            self._flann = _FlannKDTree(self.config.flann_trees, self.config.flann_checks, self.config.seed)
        if self._index_stale:
            self._flann.build(_to_numpy32(stored))
            self._index_stale = False
        idx_np, _ = self._flann.query(_to_numpy32(query), k)
        idx = torch.from_numpy(idx_np).to(device=self.device, dtype=torch.long)
        # FLANN can leave result cells unfilled (-1 here, from our prefill) when the search
        # stops before K points were seen, and we also refuse indices outside 0..size-1 and
        # repeated indices. Such rows are answered by the exact search instead, so the caller
        # always gets K distinct valid slots.
        in_range = (idx >= 0) & (idx < self.size)
        sorted_idx = idx.sort(dim=1).values
        distinct = (sorted_idx[:, 1:] != sorted_idx[:, :-1]).all(dim=1)
        bad = ~(in_range.all(dim=1) & distinct)
        if bool(bad.any()):
            idx[bad] = self._search_exact(query[bad], stored, k)
        return idx

    # ---------------------------------------------------------- reference LR

    def reference_lr(self, h: Tensor, stamp: bool = True, exclude: Tensor | None = None,
                     with_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """(B, d) -> (B,) reference LR sum_k s_k / (sum_j s_j + sigma) * alpha(h_k) (and the (B, K) weights).

        s_k = exp(-delta * ||h_i - h_k||^2) over the K nearest stored users (PAML, AT-PAML),
        computed relative to the nearest one, exp(-delta (d_k^2 - d_1^2)): the common factor
        exp(-delta d_1^2) cancels in s_k / sum_j s_j and would only underflow below sigma.
        Differentiable w.r.t. h, the neighbours' stored embeddings and their stored LRs (the
        rows are gathered from the leaf buffers). Raises RuntimeError during warm-up.
        """
        idx = self.search(h, stamp=stamp, exclude=exclude)
        neighbours = self.embeddings[idx]  # (B, K, d), graph reaches self.embeddings
        neighbour_lrs = self.lrs[idx]  # (B, K)
        # Squared distance written out (not cdist): its gradient has no sqrt, so it stays
        # finite when h coincides with a stored embedding.
        sq_dist = (h.unsqueeze(1) - neighbours).pow(2).sum(dim=-1)
        s = torch.exp(-self.delta * (sq_dist - sq_dist.min(dim=1, keepdim=True).values.detach()))
        weights = s / (s.sum(dim=1, keepdim=True) + self.config.sigma)
        reference = (weights * neighbour_lrs).sum(dim=1)
        return (reference, weights) if with_weights else reference

    def calibrate(self) -> float:
        """Set delta = kernel_scale / median(d_K^2 - d_1^2) over (up to 1024) stored users' neighbourhoods.

        Each of the first stored users looks up its K nearest *other* stored users (exact
        search). A fixed `config.delta` is kept as it is. Returns the delta in use.
        """
        k = self.config.k
        if self.config.delta is not None or self.size < k + 1:
            return self.delta
        with torch.no_grad():
            stored = self.embeddings.detach()[: self.size]
            sample = stored[: min(self.size, 1024)]
            sq = torch.cdist(sample, stored).pow(2)  # (n, size)
            nearest = sq.topk(k + 1, dim=1, largest=False, sorted=True).values[:, 1:]  # drop the point itself
            spread = (nearest[:, -1] - nearest[:, 0]).median()
            if float(spread) > 0:
                self.delta = float(self.config.kernel_scale / spread)
                self._calibrated = True
        return self.delta

    # ----------------------------------------------------------------- writes

    def insert(self, h: Tensor, lr: Tensor, keys: Tensor | None = None) -> None:
        """Store detached copies of (B, d) embeddings and (B,) learning rates.

        With `keys` (B,) each user has one slot: a key already stored overwrites its own slot
        (a returning user replaces its earlier copy), and rows of this call that share a key are
        stored once, as the last of them. The other rows fill free slots first;
        past capacity the least-recently-used existing slots (smallest stamp, ties by lower
        slot index) are overwritten, never rows of this same call. With B > capacity only
        the last `capacity` rows are kept. The index is rebuilt (lazily, before the next
        search) and delta recalibrated every `calibrate_every` inserted rows.
        """
        h = self._check_h(h)
        lr = torch.as_tensor(lr, device=self.device).reshape(-1)
        if lr.numel() == 1 and h.shape[0] != 1:
            lr = lr.expand(h.shape[0])
        if lr.shape[0] != h.shape[0]:
            raise ValueError(f"lr has {lr.shape[0]} rows, h has {h.shape[0]}")
        capacity = self.config.capacity
        keys = torch.full((h.shape[0],), -1, dtype=torch.long, device=self.device) if keys is None else keys.to(self.device)
        if keys.shape[0] != h.shape[0]:
            raise ValueError(f"keys has {keys.shape[0]} rows, h has {h.shape[0]}")
        # One row per key and call, its last: a warm user's chunks share its key and often share a
        # meta-batch (equal lengths, bucketed batching); stored twice, one copy went stale and came
        # back as the user's own neighbour, since `search` skips one self-match only.
        last = last_of_each_key(keys)
        h, lr, keys = h[last][-capacity:], lr[last][-capacity:], keys[last][-capacity:]
        n_rows = h.shape[0]
        match = (keys.unsqueeze(1) == self.keys[: self.size].unsqueeze(0)) & (keys.unsqueeze(1) >= 0)  # (B, size)
        returning = match.any(dim=1)
        if bool(returning.any()):
            self._write(match[returning].float().argmax(dim=1), h[returning], lr[returning], keys[returning])
            h, lr, keys = h[~returning], lr[~returning], keys[~returning]
        b = h.shape[0]
        if b:
            n_new = min(b, capacity - self.size)
            slots = torch.arange(self.size, self.size + n_new, device=self.device)
            n_evict = b - n_new
            if n_evict:
                # Unique keys stamp * capacity + slot: smallest stamp first, ties by slot.
                key = self.last_used[: self.size] * capacity + torch.arange(self.size, device=self.device)
                evicted = key.topk(n_evict, largest=False, sorted=True).indices
                slots = torch.cat([slots, evicted])
            self.size += n_new
            self._write(slots, h, lr, keys)
        self._since_calibration += n_rows
        if self._since_calibration >= self.config.calibrate_every or not self._calibrated:
            self._since_calibration = 0
            self.calibrate()

    def _write(self, slots: Tensor, h: Tensor, lr: Tensor, keys: Tensor) -> None:
        """Store rows in `slots` with a fresh LRU stamp; the slots' old gradients are cleared."""
        with torch.no_grad():
            self.embeddings[slots] = h.detach().to(self.embeddings.dtype)
            self.lrs[slots] = lr.detach().to(self.lrs.dtype)
            self.keys[slots] = keys
            # A gradient accumulated for an evicted user must not move its successor.
            for leaf in (self.embeddings, self.lrs):
                if leaf.grad is not None:
                    leaf.grad[slots] = 0
            self.clock += 1
            self.last_used[slots] = self.clock
        self._index_stale = True

    def apply_gradients(self) -> None:
        """node_j <- node_j - beta * grad(node_j) for stored embeddings and LRs (PAML).

        Clears both gradients (sets them to None) and marks the index for rebuild; a no-op
        when neither leaf has a gradient.
        """
        if self.embeddings.grad is None and self.lrs.grad is None:
            return
        with torch.no_grad():
            for leaf in (self.embeddings, self.lrs):
                if leaf.grad is not None:
                    leaf[: self.size] -= self.config.beta * leaf.grad[: self.size]
                    leaf.grad = None
        self._index_stale = True

    def to(self, device: str | torch.device) -> "UserMemory":
        """Move the store to `device` (stored values stay leaves that take gradients)."""
        device = torch.device(device)
        if device == self.device:
            return self
        self.embeddings = self.embeddings.detach().to(device).requires_grad_(True)
        self.lrs = self.lrs.detach().to(device).requires_grad_(True)
        self.last_used = self.last_used.to(device)
        self.keys = self.keys.to(device)
        self.device = device
        self._index_stale = True
        return self

    # ------------------------------------------------------------ persistence

    def state_dict(self) -> dict[str, Tensor]:
        """Occupied rows only, as plain tensors: loadable with torch.load(weights_only=True)."""
        n = self.size
        return {
            "embeddings": self.embeddings.detach()[:n].clone(),
            "lrs": self.lrs.detach()[:n].clone(),
            "last_used": self.last_used[:n].clone(),
            "keys": self.keys[:n].clone(),
            "clock": torch.tensor(self.clock, dtype=torch.long),
            "delta": torch.tensor(self.delta, dtype=torch.float64),
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore a `state_dict`; the config (capacity, k, backend...) is the constructor's."""
        emb, lrs, last_used = state["embeddings"], state["lrs"], state["last_used"]
        n = emb.shape[0]
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise ValueError(f"embeddings must be (n, {self.dim}), got {tuple(emb.shape)}")
        if lrs.shape != (n,) or last_used.shape != (n,):
            raise ValueError("lrs and last_used must be (n,) with n = embeddings rows")
        if n > self.config.capacity:
            raise ValueError(f"{n} stored rows exceed capacity {self.config.capacity}")
        with torch.no_grad():
            self.embeddings.zero_()
            self.lrs.zero_()
            self.last_used.zero_()
            self.embeddings[:n] = emb.to(self.device, self.embeddings.dtype)
            self.lrs[:n] = lrs.to(self.device, self.lrs.dtype)
            self.last_used[:n] = last_used.to(self.device, torch.long)
            self.keys.fill_(-1)
            if "keys" in state:
                self.keys[:n] = state["keys"].to(self.device, torch.long)
        if "delta" in state:
            self.delta = float(state["delta"])
            self._calibrated = True
        self.embeddings.grad = None
        self.lrs.grad = None
        self.size = n
        self.clock = int(state["clock"])
        self._index_stale = True

    def _check_h(self, h: Tensor) -> Tensor:
        if h.ndim != 2 or h.shape[1] != self.dim:
            raise ValueError(f"h must be (B, {self.dim}), got {tuple(h.shape)}")
        return h


# ---------------------------------------------------------------- FLANN backend


def _to_numpy32(x: Tensor) -> np.ndarray:
    # A private C-contiguous float32 copy: FLANN 1.7 keeps a pointer to the indexed data
    # instead of copying it, so it must not alias the torch buffers we keep mutating.
    return np.array(x.detach().to("cpu", torch.float32).numpy(), dtype=np.float32, order="C", copy=True)


class _FlannParams(ctypes.Structure):
    """struct FLANNParameters of the libflann.so.1.7 bundled with pyflann-py3 0.1.0.

    Offsets read from that library's create_parameters()/init_flann_parameters(): it has
    LSH fields at 0x34..0x3c, so log_level sits at 0x40 and random_seed at 0x48 (80 bytes).
    pyflann's own 64-byte struct lacks the LSH fields, so the library reads log_level and
    random_seed from past its end: the seed actually used is heap garbage and
    FLANN(random_seed=...) is ignored. Hence this binding instead of pyflann.FLANN.
    """

    _fields_ = [
        ("algorithm", ctypes.c_int),
        ("checks", ctypes.c_int),
        ("cb_index", ctypes.c_float),
        ("eps", ctypes.c_float),
        ("trees", ctypes.c_int),
        ("leaf_max_size", ctypes.c_int),
        ("branching", ctypes.c_int),
        ("iterations", ctypes.c_int),
        ("centers_init", ctypes.c_int),
        ("target_precision", ctypes.c_float),
        ("build_weight", ctypes.c_float),
        ("memory_weight", ctypes.c_float),
        ("sample_fraction", ctypes.c_float),
        ("table_number", ctypes.c_uint),
        ("key_size", ctypes.c_uint),
        ("multi_probe_level", ctypes.c_uint),
        ("log_level", ctypes.c_int),
        ("random_seed", ctypes.c_long),
    ]


_FLANN_KDTREE = 1
_FLANN_LOG_ERROR = 2


@functools.lru_cache(maxsize=1)
def _flann_lib() -> ctypes.CDLL:
    try:
        from pyflann.bindings import flann_ctypes  # optional dependency: import only when used
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("backend='flann' needs pyflann-py3 (pip install pyflann-py3==0.1.0)") from exc
    # Our own handle on pyflann's bundled library, so declaring argtypes for our struct does
    # not change pyflann's function objects.
    lib = ctypes.CDLL(flann_ctypes.flannlib._name)
    if ctypes.sizeof(flann_ctypes.FLANNParameters) > ctypes.sizeof(_FlannParams):
        raise ImportError("unexpected pyflann parameter layout; _FlannParams must be re-derived")
    f32_2d = np.ctypeslib.ndpointer(np.float32, ndim=2, flags="C_CONTIGUOUS, ALIGNED")
    i32_2d = np.ctypeslib.ndpointer(np.int32, ndim=2, flags="C_CONTIGUOUS, ALIGNED, WRITEABLE")
    params = ctypes.POINTER(_FlannParams)
    lib.flann_build_index_float.restype = ctypes.c_void_p
    lib.flann_build_index_float.argtypes = [f32_2d, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_float), params]
    lib.flann_find_nearest_neighbors_index_float.restype = ctypes.c_int
    lib.flann_find_nearest_neighbors_index_float.argtypes = [
        ctypes.c_void_p, f32_2d, ctypes.c_int, i32_2d, f32_2d, ctypes.c_int, params]
    lib.flann_free_index_float.restype = ctypes.c_int
    lib.flann_free_index_float.argtypes = [ctypes.c_void_p, params]
    return lib


class _FlannKDTree:
    """Randomized kd-tree forest (FLANN 1.7) over a float32 point set; rebuilt, never appended.

    Not thread-safe across builds: FLANN seeds the C library's global rand() with srand().
    """

    def __init__(self, trees: int, checks: int, seed: int):
        self._lib = _flann_lib()
        self._params = _FlannParams(
            algorithm=_FLANN_KDTREE, checks=checks, cb_index=0.5, eps=0.0, trees=trees, leaf_max_size=4,
            branching=32, iterations=5, centers_init=0, target_precision=0.9, build_weight=0.01,
            memory_weight=0.0, sample_fraction=0.1, table_number=12, key_size=20, multi_probe_level=2,
            log_level=_FLANN_LOG_ERROR,
            # FLANN calls srand(random_seed) only when random_seed > 0, so seed 0 would mean
            # "leave rand() as it is" (not reproducible); shift by one.
            random_seed=seed + 1,
        )
        self._index: int | None = None
        self._data: np.ndarray | None = None  # kept alive: FLANN 1.7 indexes it in place

    def build(self, points: np.ndarray) -> None:
        self.free()
        speedup = ctypes.c_float(0)
        index = self._lib.flann_build_index_float(
            points, points.shape[0], points.shape[1], ctypes.byref(speedup), ctypes.byref(self._params))
        if not index:
            raise RuntimeError("flann_build_index_float failed")
        self._index, self._data = index, points

    def query(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, d) float32 -> int32 (B, k) row indices (-1 where unfilled), float32 squared L2."""
        if self._index is None or self._data is None:
            raise RuntimeError("query before build")
        indices = np.full((queries.shape[0], k), -1, dtype=np.int32)
        dists = np.full((queries.shape[0], k), np.inf, dtype=np.float32)
        if queries.shape[0]:
            rc = self._lib.flann_find_nearest_neighbors_index_float(
                self._index, queries, queries.shape[0], indices, dists, k, ctypes.byref(self._params))
            if rc < 0:
                raise RuntimeError("flann_find_nearest_neighbors_index_float failed")
        return indices, dists

    def free(self) -> None:
        if self._index is not None:
            self._lib.flann_free_index_float(self._index, ctypes.byref(self._params))
            self._index, self._data = None, None

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:  # interpreter shutdown: the library may already be gone
            pass
