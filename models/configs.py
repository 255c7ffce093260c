"""The settings' dataclasses and the names every layer shares, without torch.

The Dagster definitions read these when they load (the run configs' defaults and choices, the
methods and protocols the asset factories iterate over); torch and the models' arithmetic load
only when a step computes, so that every Dagster process, the UI's code server and the CLI start
without them. Each class and name is re-exported by the module it belongs to (NetworkConfig by
models/network.py, LearnerConfig by models/learners.py, TrainConfig by models/training.py,
MemoryConfig by models/user_memory.py, the reference rows' settings by models/references.py), where
its behaviour is documented.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from models.bounds import SettingError, check_count, check_positive
from models.config_fields import added_field

# -- users, splits, protocols (models/tasks.py)
SPLITS = ("train", "val", "test")
WARM_SPLIT = "warm"  # the most active users (production protocol only; never validation or test)

# Codes of every categorical field: 0 pads (empty multi-hot slots, padded items), 1 stands for a
# value the model has not learned (unseen, missing, or only held by non-training users).
PAD_INDEX = 0
UNKNOWN_INDEX = 1
FIRST_VALUE_INDEX = 2

PROTOCOLS = ("paper", "production")

# The methods, in the order of the paper's tables (models/learners.py `METHODS` builds them).
METHOD_NAMES = ("melu", "meta_sgd", "transfer", "paml", "at_paml", "reg_paml")


# -- meta-batches (models/batching.py)
BATCHING = ("bucketed", "random")


# -- the reference rows (models/references.py)
REFERENCES = ("global_mean", "item_mean", "user_item_bias", "mf", "item_knn", "mf_knn")
TUNED_REFERENCES = ("user_item_bias", "mf", "item_knn", "mf_knn")
PROTOCOL_SPLITS: dict[str, tuple[str, ...]] = {"paper": ("train",), "production": ("train", WARM_SPLIT)}
DEFAULT_PROTOCOL = "paper"
# The MF grid's 25 ALS fits cost ~ (fitting ratings) x rank^2 each: on a 10 M-rating log (2 M and 9 M
# fitting ratings) both protocols' grids had not finished in 14.5 minutes on two cores. Above
# MF_GRID_MAX_RATINGS fitting ratings the grid points are fitted on a seeded sample of whole fitting
# users holding at most MF_GRID_SAMPLE_RATINGS ratings, and the chosen point alone on every fitting
# user (`grid_sample`). No built-in dataset gets there (at most 868,121: ML-1M under the production
# protocol), so their grids are whole and their choices what they were.
MF_GRID_MAX_RATINGS = 2_000_000
MF_GRID_SAMPLE_RATINGS = 500_000
MF_GRID_SAMPLE_SEED = 0
# Grid edges (`models/grid_edges.py`): a choice on an extendable edge of a grid axis is reported
# (`Tuning.edges`, the `reference_settings` asset's metadata, info and log) and, with EDGE_ROUNDS > 0,
# that axis is extended by factor-2 steps, at most EDGE_ROUNDS rounds per reference. 0 by default:
# the built-in datasets' choices lie on such edges (ML-1M's kNN lambda 3000 and production rank 20,
# Book-Crossing's MF reg 50 and kNN k 2, taobao's kNN lambda and damping), and extending changes
# their kNN choices (docs/protocol.md, "Reference rows"); `edge_rounds` in the `reference_settings`
# run config (SearchGrid(edge_rounds=3) in code) extends.
EDGE_ROUNDS = 0
# MF's rank is extended to at most MF_RANK_MAX: an ALS fit's cost grows about as rank^3 here (ML-1M's
# 868,121 production ratings, one thread: 3.6 CPU-s at rank 20, 17 at 40, 97 at 80).
MF_RANK_MAX = 40


@dataclass(frozen=True)
class BiasConfig:
    """Ridge strengths (pseudo-counts) of the bias estimates."""

    item_shrinkage: float = 10.0
    user_shrinkage: float = 5.0


@dataclass(frozen=True)
class MFConfig:
    """Biased MF by ALS. Bias ridge strengths are the tuned `BiasConfig`'s pseudo-counts."""

    rank: int = 5
    reg: float = 10.0  # ridge strength on p_u and q_i (not scaled by the number of ratings)
    iterations: int = 25  # ALS sweeps (user step, then item step)
    seed: int = 0  # initial item factors ~ N(0, init_scale^2)
    init_scale: float = 0.1


@dataclass(frozen=True)
class KNNConfig:
    """Item-kNN: neighbours per prediction, similarity shrinkage lambda, damping beta."""

    k: int = 20
    shrinkage: float = 100.0
    damping: float = 0.0


@dataclass(frozen=True)
class BlendConfig:
    """The MF + kNN blend: (1 - knn_weight) * MF + knn_weight * kNN, both with their own settings."""

    knn_weight: float = 0.5


@dataclass(frozen=True)
class SearchGrid:
    """Validation grids of the tuned references (docs/protocol.md gives the reasons)."""

    item_shrinkage: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0)
    user_shrinkage: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 300.0)
    mf_rank: tuple[int, ...] = (1, 2, 5, 10, 20)
    mf_reg: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0, 50.0)
    knn_k: tuple[int, ...] = (2, 5, 10, 20, 30, 40, 60, 80, 160)
    knn_shrinkage: tuple[float, ...] = (10.0, 100.0, 300.0, 1000.0, 3000.0)
    knn_damping: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
    blend_knn_weight: tuple[float, ...] = tuple(i / 20 for i in range(21))
    mf_max_ratings: int = MF_GRID_MAX_RATINGS  # above this many fitting ratings, the MF grid runs on a sample
    mf_sample_ratings: int = MF_GRID_SAMPLE_RATINGS
    mf_sample_seed: int = MF_GRID_SAMPLE_SEED
    # A choice on an extendable edge of an axis adds the next factor-2 value past it and chooses
    # again, at most this many rounds per reference (`models/grid_edges.py`); 0: only report edges.
    edge_rounds: int = EDGE_ROUNDS
    mf_rank_max: int = MF_RANK_MAX  # the largest rank an extension tries (an MF fit costs ~ rank^3)


@dataclass(frozen=True)
class ReferenceSettings:
    """One setting per tuned reference (MF and kNN reuse the bias pseudo-counts)."""

    bias: BiasConfig = field(default_factory=BiasConfig)
    mf: MFConfig = field(default_factory=MFConfig)
    knn: KNNConfig = field(default_factory=KNNConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "ReferenceSettings":
        """The settings `as_dict` wrote (e.g. read back from a bundle's JSON)."""
        return cls(BiasConfig(**values["bias"]), MFConfig(**values["mf"]), KNNConfig(**values["knn"]),
                   BlendConfig(**values.get("blend", {})))


# -- AT-PAML's user memory (models/user_memory.py)
MEMORY_BACKENDS = ("exact", "flann")  # torch's exact search, FLANN's randomized kd-trees


@dataclass(frozen=True)
class MemoryConfig:
    """Hyper-parameters of the user memory; sigma = 1e-5 is the paper's value."""

    capacity: int = 4096  # max stored users; LRU eviction past it
    k: int = 8  # neighbours K
    # Gaussian kernel width: s_k = exp(-delta * ||h_i - h_k||^2). None = calibrated to the stored
    # embeddings' scale: delta = kernel_scale / median(d_K^2 - d_1^2) over stored users'
    # neighbourhoods, so that a typical user's farthest neighbour weighs exp(-kernel_scale)
    # times its nearest. A fixed delta cannot follow the embeddings as they train.
    delta: float | None = None
    kernel_scale: float = 3.0
    calibrate_every: int = 256  # inserted rows between two calibrations (deterministic)
    sigma: float = 1e-5  # paper's constant in the normaliser sum_j s_j + sigma
    beta: float = 1e-3  # SGD step for stored embeddings and LRs
    backend: str = "exact"  # "exact" (torch cdist+topk) or "flann" (randomized kd-tree)
    flann_trees: int = 4
    # Measured (benchmarks/memory_recall.py; N(0, I) 32-d points, K=8, 4 trees, 200 queries):
    # recall@8 vs exact at 1536 checks is ~0.98 with 3000 stored, ~0.96 with 4096 (the default
    # capacity) and ~0.93 with 5000; 1024 checks drops below 0.9 from ~4k stored. Isotropic
    # Gaussians are the hard case for kd-trees; real embeddings have lower intrinsic dimension.
    flann_checks: int = 1536
    seed: int = 0

    def __post_init__(self) -> None:
        # Named as a run config names them (assets/method_assets.py ModelConfig: memory_k, memory_capacity, ...).
        check_count("memory_k", self.k)
        if self.capacity < self.k:
            raise SettingError(f"memory_capacity must be at least memory_k ({self.k}), got {self.capacity}")
        if self.delta is not None:
            check_positive("kernel_delta", self.delta, finite=True)
        check_positive("kernel_scale", self.kernel_scale, finite=True)
        for name, value in (("sigma", self.sigma), ("memory_beta", self.beta)):
            if not 0 <= value < math.inf:  # `not` refuses NaN too
                raise SettingError(f"{name} must be a number >= 0, got {value!r}")
        check_count("calibrate_every", self.calibrate_every)
        if self.backend not in MEMORY_BACKENDS:
            raise SettingError(f"memory_backend must be one of {', '.join(MEMORY_BACKENDS)}, got {self.backend!r}")
        check_count("flann_trees", self.flann_trees)
        # Only FLANN's search reads flann_checks: the exact search took any K up to the capacity, yet a
        # memory_k above 1536 was refused with a message about FLANN.
        if self.backend == "flann" and not (self.flann_checks == -1 or self.flann_checks >= self.k):
            raise SettingError(f"memory_k = {self.k} is above flann_checks = {self.flann_checks}, the leaves FLANN visits: "
                               "lower memory_k, or use memory_backend 'exact'")
        if self.seed < 0:
            raise SettingError(f"memory seed must be >= 0, got {self.seed}")


# -- the network (models/network.py)
ITEM_ID_FIELD = "item_id"
USER_FACTOR = "factor.user"  # the adapted user factor u of the dot-product head
FOLDIN_WEIGHT = "foldin_weight"  # the fold-ins' weights in the score (adapted only when `adapted` names it)


@dataclass(frozen=True)
class NetworkConfig:
    """Sizes of the preference network (defaults: MeLU's, plus the switches of models/network.py's docstring)."""

    embedding_dim: int = 32
    hidden: tuple[int, ...] = (64, 64)
    adapted: tuple[str, ...] = ("decision.", USER_FACTOR)  # parameter-name prefixes the inner loop adapts
    statistics: bool = True  # rating statistics as features (models/features.py); False = MeLU's inputs
    item_id: bool = False  # the item's identity as an item field
    factor_dim: int = 8  # rank of the dot-product head; 0 = no head
    factor_source: str = "mf"  # item factors: "mf" = fixed, from a ridge factorization (models/factors.py); "learned"
    # Rows the factorization is fitted on: "support" keeps the training users' query ratings out,
    # so meta-training's query loss judges the factors on ratings they never saw, as at test time;
    # "all" fits every training rating; "crossfit" fits every rating for validation and test users
    # and, for a training user, factors that left its fold's query ratings out (models/factors.py).
    factor_fit: str = "crossfit"
    factor_folds: int = 5
    # The matrix-factorization fold-in as a feature: each user's (b_u, p_u) solved by ridge on its
    # own support set over the fixed item side, and mu + b_i + b_u + q_i . p_u added to the score
    # with a meta-learned weight: the network starts from MF's prediction and learns what the
    # user's features and the inner loop add to it (models/references.py `ridge_foldin`).
    mf_foldin: bool = True  # acts only with the MF head (factor_dim > 0, factor_source "mf"): see `uses_mf_foldin`
    # The MF behind the factors and the fold-in (the classic reference's model, models/references.py):
    # ridge on p_u and q_i, and pseudo-counts of b_u and b_i.
    mf_reg: float = MFConfig.reg
    mf_user_shrinkage: float = BiasConfig.user_shrinkage
    mf_item_shrinkage: float = BiasConfig.item_shrinkage
    unknown_rate: float = 0.2  # share of codes replaced by UNKNOWN while meta-training
    # Item-kNN's fold-in as a feature (models/references.py `knn_foldin`): fitted on the same rows
    # and cross-fitted like the MF factors (`factor_fit`), with the reference row's k, lambda and
    # beta, and each item's `knn_neighbours` most similar items kept.
    # Before them (a116243) there was no kNN fold-in; the other knn_ fields act only with it.
    knn_foldin: bool = added_field(True, before=False)
    knn_k: int = added_field(KNNConfig.k, before=KNNConfig.k)
    knn_shrinkage: float = added_field(KNNConfig.shrinkage, before=KNNConfig.shrinkage)
    knn_damping: float = added_field(KNNConfig.damping, before=KNNConfig.damping)
    knn_neighbours: int = added_field(200, before=200)

    @property
    def uses_mf_foldin(self) -> bool:
        """The MF fold-in needs the MF item side: the head's factors fitted by MF (`factor_dim` > 0)."""
        return self.mf_foldin and self.factor_dim > 0 and self.factor_source == "mf"

    def __post_init__(self) -> None:
        if not 0.0 <= self.unknown_rate < 1.0:
            raise SettingError(f"unknown_rate must lie in [0, 1), got {self.unknown_rate}")
        if self.factor_dim < 0:
            raise SettingError(f"factor_dim must be >= 0, got {self.factor_dim}")
        # The ridge solves need a strength above 0 (models/references.py `fit_mf`): refused here, when
        # the settings are read, not once the fold-ins are fitted in the training process.
        for name in ("mf_reg", "mf_user_shrinkage", "mf_item_shrinkage"):
            check_positive(name, getattr(self, name), finite=True)
        for name in ("knn_shrinkage", "knn_damping"):
            if not 0 <= getattr(self, name) < math.inf:  # `not` refuses NaN too
                raise SettingError(f"{name} must be a number >= 0, got {getattr(self, name)!r}")
        if self.factor_source not in ("mf", "learned"):
            raise ValueError(f"factor_source must be 'mf' or 'learned', got {self.factor_source!r}")
        if self.knn_k < 1 or self.knn_neighbours < 1:
            raise ValueError(f"knn_k and knn_neighbours must be >= 1, got {self.knn_k} and {self.knn_neighbours}")
        if self.factor_fit not in ("support", "all", "crossfit"):
            raise ValueError(f"factor_fit must be 'support', 'all' or 'crossfit', got {self.factor_fit!r}")


# -- the learners (models/learners.py)
@dataclass(frozen=True)
class LearnerConfig:
    """Settings shared by the learners; method-specific fields say which method reads them."""

    inner_lr: float = 5e-2  # base inner step size (MeLU: the fixed one; PAML: the geometric centre)
    inner_steps: int = 1
    first_order: bool = False
    network: NetworkConfig = field(default_factory=NetworkConfig)
    lr_hidden: int = 64  # PAML family: width of the LR module's hidden layer
    lr_range: float = 4.0  # PAML family: alpha(h) in [inner_lr / lr_range, inner_lr * lr_range]
    lr_per_layer: bool = True  # PAML family: one alpha(h_i) per adapted layer instead of one per user
    lr_history: bool = True  # PAML family: the LR module also reads an encoding of the support set
    lr_init_std: float = 0.1  # PAML family: init spread of the LR module's last layer (0 = every user starts equal)
    # PAML/REG-PAML: alpha(h_i) scales a learned rate per adapted parameter (Meta-SGD's, started at
    # inner_lr) instead of the one inner_lr: Meta-SGD says which weights move, PAML how far per user.
    lr_per_parameter: bool = added_field(False, before=False)
    gamma: float = 1e-3  # REG-PAML regularizer weight
    correction_range: float = 1.0  # AT-PAML: alpha'(h) in (-c, c), in log-ratio units (x e^±c)
    # AT-PAML: rho, the weight of the neighbours' mean log-ratio (1 = the paper's). Before it (8a67be0)
    # AT-PAML's memory had form 1, which this code refuses; every other method ignores rho.
    memory_weight: float = added_field(0.5, before=1.0)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    kernel_delta: float | None = None  # AT-PAML: fixed delta of s_k = exp(-delta ||h_i - h_k||^2); None = calibrated
    finetune_steps: int = 5  # transfer: fine-tuning steps on a test user's support set
    finetune_lr: float = 5e-3  # transfer: fine-tuning step size
    # The dot-product head's user factor takes steps this many times larger than the decision
    # layers: folding a user in needs steps near 1 / (largest eigenvalue of Q_S^T Q_S / n),
    # far above the rates that keep the decision layers stable (models/network.py).
    factor_lr_scale: float = 10.0
    max_step_norm: float | None = 2.0  # bound on one inner update's norm (models/inner.py); None = Eq. (1) as is
    # How the inner loop runs over users (models/inner.py `InnerConfig.vectorize`): the same function;
    # "broadcast" in plain batched products, "vmap" (the former path) kept for comparison.
    inner_vectorize: str = added_field("broadcast", before="vmap")
    # With "broadcast": the first layer's user columns travel as one vector per user (models/inner.py
    # `Fold`), not as a (B, 64, Du) copy; the same function, False kept for the benchmark. The fold
    # came in 2d6a60c, before the field (5ef6bcf): models that lack the field were trained with it.
    inner_fold: bool = added_field(True, before=True)

    def __post_init__(self) -> None:
        # `not x > 0` (not `x <= 0`) so that NaN is refused too. +inf passes: training stops on the
        # NaN it causes with a message naming the setting (models/training.py `divergence_advice`).
        for name in ("inner_lr", "finetune_lr", "factor_lr_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise SettingError(f"{name} must be a number > 0, got {value!r}")
        for name in ("inner_steps", "finetune_steps", "lr_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SettingError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.max_step_norm is not None and not self.max_step_norm > 0:
            raise SettingError(f"max_step_norm must be > 0 (or None: no bound), got {self.max_step_norm!r}")
        if self.kernel_delta is not None and not self.kernel_delta > 0:
            raise SettingError(f"kernel_delta must be > 0 (or None: calibrated), got {self.kernel_delta!r}")
        for name in ("gamma", "correction_range", "lr_init_std"):
            if not getattr(self, name) >= 0:
                raise SettingError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.lr_range >= 1.0:
            raise SettingError(f"lr_range must be >= 1 (alpha lies in [inner_lr / r, inner_lr * r]), got {self.lr_range}")
        if not self.memory_weight >= 0:
            raise SettingError(f"memory_weight must be >= 0, got {self.memory_weight}")


# -- the outer loop (models/training.py)
@dataclass(frozen=True)
class TrainConfig:
    """Outer-loop settings."""

    epochs: int = 100  # upper bound on passes over the training users
    meta_batch: int = 32  # users per outer step (MeLU: 32 tasks)
    outer_lr: float = 5e-4  # Adam
    rate_lr: float | None = 3e-3  # Adam rate of the step-size machinery (LR module, Meta-SGD rates); None = outer_lr
    weight_decay: float = 0.05  # AdamW's decoupled decay on the network's parameters (not on the step-size machinery)
    max_grad_norm: float | None = 10.0  # clip the meta-gradient's norm; None = no clipping
    max_steps: int = 3000  # outer-step budget
    max_seconds: float | None = None  # wall-clock budget of the outer loop (None = none); the best evaluation is kept
    eval_every: int = 100  # outer steps between two scorings of the validation users
    patience: int = 5  # evaluations without a better validation loss before stopping
    eval_batch: int | None = None  # users per evaluation batch; None = 256 on CPU, GPU_EVAL_BATCH on a GPU
    seed: int = 0
    device: str = "cpu"
    protocol: str = "paper"  # "paper": cold-start training users only; "production": + warm users' tasks
    batching: str = "bucketed"  # meta-batches of similar-length users ("random": full-random, padded to the longest)
    bucket_pool: int = 16  # "bucketed": meta-batches per length-sorted pool (models/batching.py)
    threads: int | None = None  # torch threads; None = PAML_THREADS (models/runtime.py)

    def __post_init__(self) -> None:
        if self.batching not in BATCHING:
            raise SettingError(f"batching must be one of {', '.join(BATCHING)}, got {self.batching!r}")
        for name in ("epochs", "meta_batch", "max_steps", "eval_every", "patience", "bucket_pool"):
            check_count(name, getattr(self, name))
        check_positive("outer_lr", self.outer_lr)
        for name in ("rate_lr", "max_grad_norm"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        if self.max_seconds is not None and not self.max_seconds >= 0:  # 0: stop after the first step
            raise SettingError(f"max_seconds must be >= 0 (or None: no limit), got {self.max_seconds!r}")
        if self.eval_batch is not None:
            check_count("eval_batch", self.eval_batch)
        if not self.weight_decay >= 0:  # `not >=` also refuses NaN
            raise SettingError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
