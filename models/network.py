"""The preference network of MeLU (Lee et al., KDD 2019), generalized to any feature spec.

One embedding table per categorical field (multi-hot fields are the mean of their
values' embeddings), the user's and the item's embeddings concatenated, then decision
layers (FC + ReLU, 64-64 by default) and a linear output: a rating, or a click logit.
Only the decision layers (and the user factor, below) are adapted in the inner loop; the
embeddings are meta-learned (`NetworkConfig.adapted`).

Additions of ours, each a `NetworkConfig` switch applied to every method alike:

- `statistics` (models/features.py): the user's support-set statistics and the item's
  training statistics, each projected to one more embedding-sized block.
- `item_id`: the item's identity as one more item field. MeLU's item features (genre,
  director, ...) cannot tell two films of the same director apart; collaborative filtering
  lives on exactly that signal.
- `factor_dim`: a dot-product head beside the decision layers, score += (P h + u) . q_i, with
  the item factor q_i = Q[item] + W e_i (the item's factor from the reference row's biased MF,
  models/factors.py, plus a projection of the item's features, so an item seen rarely or never
  falls back to its features) and u a user factor
  that the inner loop adapts from zero: a matrix factorization whose fold-in is Eq. (1)'s
  gradient step, so a per-user step size alpha(h_i) decides how far each user moves from the
  population's prior P h.
- Codes the training users never produced (a zip code only test users have, an item no
  training user rated) map to the UNKNOWN row, which `unknown_rate` trains by replacing
  codes with UNKNOWN during meta-training (a hash of step, owner and field decides which):
  validation and test users then meet a trained row instead of a random, never-updated one.
- `mf_foldin`: MF's own prediction mu + b_i + b_u + q_i . p_u, with (b_u, p_u) solved by ridge
  on the user's support set (the reference row's fold-in), added to the score with a learned
  weight; the output layer and P start at zero, so the network starts at the MF row.
- `knn_foldin`: item-kNN's prediction mu + b_i + b_u + sum_j s_ij z_uj / (beta + sum_j |s_ij|)
  over the user's support items (the item-kNN reference row's rule, with each item's M most
  similar items kept), added with its own learned weight: with both fold-ins the network starts
  from an even blend of the two classic rows and learns how to combine them with the user's
  features and the inner loop.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import NamedTuple

import torch
from torch import nn

from models.batching import length_order
from models.configs import FOLDIN_WEIGHT, ITEM_ID_FIELD, USER_FACTOR, NetworkConfig  # noqa: F401 (re-exported)
from models.inner import Fold, folded_key
from models.factors import FactorTables, NeighbourTables, fitting_rows, item_factors_of, item_neighbours_of, remembered_fit
from models.references import BiasConfig, KNNConfig, MFConfig, ReferenceSettings, knn_foldin, ridge_foldin
from models.features import ITEM_STATS, USER_STATS, LabelScale, item_statistics, label_scale, support_statistics
from models.tasks import PAD_INDEX, UNKNOWN_INDEX, ItemTable, TaskData, TaskSplit

Inputs = tuple[torch.Tensor, ...]  # (user (.., Du), items (.., S, Di)[, user factor (.., r), item factors (.., S, r)])


def with_reference_settings(config: NetworkConfig, settings: ReferenceSettings, keep: frozenset[str] = frozenset()) -> NetworkConfig:
    """The fold-ins' MF and kNN set to the reference rows' validation-chosen settings
    (models/references.py `tune_settings`), except the fields named in `keep` (set by the
    run config or the settings file). With the MF fold-in the head's rank `factor_dim` becomes
    the MF row's rank too, so the fold-in is that row. A network without fold-ins is returned as it is.
    """
    values: dict = {}
    if config.uses_mf_foldin or config.knn_foldin:
        values.update(mf_user_shrinkage=settings.bias.user_shrinkage, mf_item_shrinkage=settings.bias.item_shrinkage)
    if config.uses_mf_foldin:
        values.update(mf_reg=settings.mf.reg, factor_dim=settings.mf.rank)
    if config.knn_foldin:
        values.update(knn_k=settings.knn.k, knn_shrinkage=settings.knn.shrinkage, knn_damping=settings.knn.damping)
    return replace(config, **{k: v for k, v in values.items() if k not in keep})


class ItemRepresentation(NamedTuple):
    """Embedded items: decision-layer inputs (R, Di), and with the dot-product head the factors
    (T, R, r) of each of the T fitted tables (one unless cross-fitted), with MF's mu (T,) and item
    biases (T, R) when the factors come from MF."""

    features: torch.Tensor
    factors: torch.Tensor | None
    mu: torch.Tensor | None = None
    item_bias: torch.Tensor | None = None
    mf_factors: torch.Tensor | None = None


def trained_codes(codes: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(vocab_size,) code -> itself where `codes` holds it, else UNKNOWN; padding stays padding."""
    seen = torch.zeros(vocab_size, dtype=torch.bool)
    seen[codes.reshape(-1)] = True
    remap = torch.where(seen, torch.arange(vocab_size), torch.full((vocab_size,), UNKNOWN_INDEX))
    remap[PAD_INDEX] = PAD_INDEX
    return remap


def training_item_rows(data: TaskData) -> torch.Tensor:
    """The item rows some training user rated (support or query): the items a model learns."""
    split = data.splits["train"]
    return torch.cat([split.support_items[split.support_mask], split.query_items[split.query_mask]]).unique()


def item_id_codes(data: TaskData) -> torch.Tensor:
    """(N+1,) item row -> item-ID code: row + 1 for items training users rated, else UNKNOWN."""
    n_rows = int(data.items.fields.shape[0])
    codes = torch.full((n_rows,), UNKNOWN_INDEX, dtype=torch.long)
    rows = training_item_rows(data)
    codes[rows] = rows + 1
    codes[PAD_INDEX] = PAD_INDEX
    return codes


_MIX_1, _MIX_2 = -4658895280553007687, -7723592293110705685  # splitmix64's multipliers as signed int64


def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[index] for a (N, ...) table and an integer index of any shape.

    The same values as advanced indexing, but its backward adds rows with `index_add_` where
    indexing's accumulates with `index_put_`: 0.13 against 2.1 ms forward and backward for one
    32-user ML-1M batch's support features on 2 CPU cores (docs/benchmarks.md).
    """
    return table.index_select(0, index.reshape(-1)).view(*index.shape, *table.shape[1:])


def hashed_uniform(salt: int, *keys: torch.Tensor | int) -> torch.Tensor:
    """Pseudo-uniform numbers in [0, 1), a deterministic function of (salt, keys) (broadcast).

    Dropout decided by a hash of (step salt, user or item identity, field) instead of by the
    position in a random stream gives every data-parallel shard exactly the draws the single
    process makes for the same users and items.
    """
    x = torch.as_tensor(salt, dtype=torch.long)
    for key in keys:
        x = (x ^ torch.as_tensor(key, dtype=torch.long, device=x.device if isinstance(key, int) else key.device)) * _MIX_1
        x = (x ^ (x >> 29)) * _MIX_2
        x = x ^ (x >> 32)
    return ((x >> 11) & ((1 << 24) - 1)).to(torch.float32) / float(1 << 24)


def drop_to_unknown(codes: torch.Tensor, rate: float, salt: int, *keys: torch.Tensor | int) -> torch.Tensor:
    """Replace each non-padding code by UNKNOWN with probability `rate`, decided by hashed_uniform(salt, *keys)."""
    if rate <= 0:
        return codes
    drop = (hashed_uniform(salt, *keys).to(codes.device) < rate) & (codes != PAD_INDEX)
    return torch.where(drop, torch.full_like(codes, UNKNOWN_INDEX), codes)


class FieldEmbedder(nn.Module):
    """Embeddings of the user's and the items' categorical fields (and the item's identity)."""

    def __init__(self, data: TaskData, config: NetworkConfig, scale: LabelScale | None = None):
        """`scale` (the training labels' constants) switches the rating statistics on."""
        super().__init__()
        dim = config.embedding_dim
        self.unknown_rate = config.unknown_rate
        self.salt = 0  # set once per training step (MetaLearner.prepare): which codes the step drops
        self.user_fields, self.item_fields, self.multi_fields = data.user_fields, data.item_fields, data.item_multi_fields
        self.item_id = config.item_id
        vocab = dict(data.vocab_sizes)
        n_rows = int(data.items.fields.shape[0])
        if config.item_id:
            vocab[ITEM_ID_FIELD] = n_rows + 1  # codes: 0 pad, 1 unknown, row + 1 for trained rows
        self.tables = nn.ModuleDict({
            field: nn.Embedding(vocab[field], dim, padding_idx=PAD_INDEX)
            for field in (*self.user_fields, *self.item_fields, *self.multi_fields) + ((ITEM_ID_FIELD,) if config.item_id else ())
        })
        # Buffers: a saved model keeps the code maps (and statistics) it was trained with.
        train = data.splits["train"]
        for i, field in enumerate(self.user_fields):
            self.register_buffer(f"remap__{field}", trained_codes(train.user_fields[:, i], vocab[field]))
        trained_rows = training_item_rows(data)
        for i, field in enumerate(self.item_fields):
            self.register_buffer(f"remap__{field}", trained_codes(data.items.fields[trained_rows, i], vocab[field]))
        for field in self.multi_fields:
            self.register_buffer(f"remap__{field}", trained_codes(data.items.multi[field][trained_rows], vocab[field]))
        if config.item_id or config.factor_dim:
            self.register_buffer("item_codes", item_id_codes(data))
        self.factor_dim, self.factor_source = config.factor_dim, config.factor_source
        # The rows the MF factors and the kNN lists are fitted on, and their cross-fitted folds.
        parts = ("support",) if config.factor_fit == "support" else ("support", "query")
        folds = config.factor_folds if config.factor_fit == "crossfit" else 0
        bias = BiasConfig(config.mf_item_shrinkage, config.mf_user_shrinkage)
        fit_mf_side, fit_knn_side = bool(config.factor_dim and config.factor_source == "mf"), config.knn_foldin
        rows = fitting_rows([train], parts) if fit_mf_side or fit_knn_side else None
        fitted_on = (rows.digest(), n_rows, bias, folds) if rows is not None else ()  # what both fits depend on
        if fit_mf_side:
            mf = MFConfig(rank=config.factor_dim, reg=config.mf_reg)
            fitted = remembered_fit(("mf", *fitted_on, mf),
                                    lambda: item_factors_of(rows, n_rows, mf, bias, folds), FactorTables)
            self.register_buffer("mf_factors", fitted.factors)  # (T, N+1, r)
            self.register_buffer("mf_item_bias", fitted.item_bias)  # (T, N+1)
            self.register_buffer("mf_mu", fitted.mu)  # (T,)
        if fit_knn_side:
            knn = KNNConfig(config.knn_k, config.knn_shrinkage, config.knn_damping)
            tables = remembered_fit(("knn", *fitted_on, knn, config.knn_neighbours),
                                    lambda: item_neighbours_of(rows, n_rows, knn, bias, config.knn_neighbours, folds),
                                    NeighbourTables)
            # Not saved with the model (tens of MB per seed): a build on the same data gets them
            # back, deterministic, from the fit remembered in this process, the fits directory
            # (models/factors.py `keep_fits_in`) or a refit.
            for name in ("mu", "item_bias", "index", "value"):
                self.register_buffer(f"knn_{name}", getattr(tables, name), persistent=False)
        if config.factor_dim and config.factor_source != "mf":
            self.item_factor_table = nn.Embedding(n_rows + 1, config.factor_dim, padding_idx=PAD_INDEX)
            nn.init.normal_(self.item_factor_table.weight, std=0.01)
            with torch.no_grad():
                self.item_factor_table.weight[PAD_INDEX].zero_()
        self.statistics = scale is not None
        if scale is not None:
            self.register_buffer("scale", torch.tensor([scale.center, scale.scale, scale.user_log_count, scale.item_log_count]))
            self.register_buffer("item_stats", item_statistics(data, scale))
            self.user_stats_proj = nn.Linear(len(USER_STATS), dim)
            self.item_stats_proj = nn.Linear(len(ITEM_STATS), dim)
        self._dim = dim
        if config.factor_dim:
            self.item_factor_proj = nn.Linear(self.item_dim, config.factor_dim, bias=False)

    @property
    def user_dim(self) -> int:
        return (len(self.user_fields) + self.statistics) * self._dim

    @property
    def item_dim(self) -> int:
        return (len(self.item_fields) + len(self.multi_fields) + self.item_id + self.statistics) * self._dim

    def label_scale(self) -> LabelScale:
        # 0-d tensors rather than floats: reading them back would sync a GPU on every batch.
        return LabelScale(*self.scale.unbind())

    def embed_fields(self, fields: tuple[str, ...], codes: torch.Tensor, owners: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Embed the (N, F) `codes` of `fields` (one column each): untrained codes -> UNKNOWN, some
        dropped to UNKNOWN in training; one embedding (N, dim) per field.

        `owners` (N,) identify whose codes they are (user keys, item rows): the drop is a hash of
        (step salt, owner, field), drawn for every field at once (the same numbers as one hash per
        field: the hash is elementwise; each call costs some 0.2 ms of small operations on a 2 GHz core).
        """
        if not fields:
            return []
        rows = torch.stack([getattr(self, f"remap__{f}")[codes[:, i]] for i, f in enumerate(fields)], dim=1)
        if self.training and owners is not None:
            field_ids = self.field_ids  # a dict built per call: once, not once per field
            ids = torch.tensor([field_ids[f] for f in fields], dtype=torch.long, device=rows.device)
            rows = drop_to_unknown(rows, self.unknown_rate, self.salt, owners.unsqueeze(1), ids)
        return [self.tables[f](rows[:, i]) for i, f in enumerate(fields)]

    @property
    def field_ids(self) -> dict[str, int]:
        return {f: i for i, f in enumerate((*self.user_fields, *self.item_fields, *self.multi_fields, ITEM_ID_FIELD))}

    def unknown_fields(self, user_fields: torch.Tensor) -> torch.Tensor:
        """(B, F_user) True where a field's value has no trained row (falls back to UNKNOWN)."""
        return torch.stack([getattr(self, f"remap__{f}")[user_fields[:, i]] == UNKNOWN_INDEX
                            for i, f in enumerate(self.user_fields)], dim=1)

    def user(self, user_fields: torch.Tensor, support_labels: torch.Tensor | None = None,
             support_mask: torch.Tensor | None = None, keys: torch.Tensor | None = None) -> torch.Tensor:
        """(B, F_user) codes (and the support sets, with statistics) -> user embedding h (B, Du).

        `keys` (B,) identify the users for the training-time dropout (none without them).
        """
        parts = self.embed_fields(self.user_fields, user_fields, keys)
        if self.statistics:
            if support_labels is None or support_mask is None:
                raise ValueError("this network uses support-set statistics: pass support_labels and support_mask")
            stats = support_statistics(support_labels, support_mask, self.label_scale())
            parts.append(self.user_stats_proj(stats.to(self.scale.dtype)))
        return torch.cat(parts, dim=-1)

    def user_of(self, tasks: TaskSplit) -> torch.Tensor:
        """The user embeddings h of a batch of tasks."""
        return self.user(tasks.user_fields, tasks.support_labels, tasks.support_mask, tasks.keys())

    def items(self, table: ItemTable, rows: torch.Tensor | None = None) -> ItemRepresentation:
        """Embeddings of item `rows` (default: every row); multi-hot fields mean-pooled."""
        rows = torch.arange(table.fields.shape[0], device=table.fields.device) if rows is None else rows
        fields = table.fields[rows]
        parts = self.embed_fields(self.item_fields, fields, rows)
        for field in self.multi_fields:
            codes = getattr(self, f"remap__{field}")[table.multi[field][rows]]  # (R, M)
            if self.training:
                slots = torch.arange(codes.shape[1], device=codes.device)
                codes = drop_to_unknown(codes, self.unknown_rate, self.salt, rows.unsqueeze(1) * 1024 + slots,
                                        self.field_ids[field])
            present = (codes != PAD_INDEX).unsqueeze(-1).float()  # (R, M, 1)
            summed = (self.tables[field](codes) * present).sum(1)  # (R, dim)
            parts.append(summed / present.sum(1).clamp_min(1.0))
        ids = None
        if self.item_id or self.factor_dim:
            ids = self.item_codes[rows]
            if self.training:
                ids = drop_to_unknown(ids, self.unknown_rate, self.salt, rows, self.field_ids[ITEM_ID_FIELD])
        if self.item_id:
            parts.append(self.tables[ITEM_ID_FIELD](ids))
        if self.statistics:
            parts.append(self.item_stats_proj(self.item_stats[rows]))
        features = torch.cat(parts, dim=-1)
        factors = None
        if self.factor_dim:
            # Identity plus features: an unknown item's factor is its features' projection alone.
            known_rows = torch.where(ids > UNKNOWN_INDEX, rows, torch.zeros_like(rows))
            if self.factor_source == "mf":
                identity = self.mf_factors[:, known_rows]  # (T, R, r)
            else:
                identity = self.item_factor_table(known_rows).unsqueeze(0)  # (1, R, r)
            factors = identity + self.item_factor_proj(features)
            if self.factor_source == "mf":
                return ItemRepresentation(features, factors, self.mf_mu, self.mf_item_bias[:, known_rows], identity)
        return ItemRepresentation(features, factors)


def decision_layers(in_dim: int, hidden: tuple[int, ...]) -> nn.Sequential:
    """FC + ReLU layers, then one linear output unit."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, 1))
    return nn.Sequential(*layers)


class UserFactor(nn.Module):
    """The dot-product head's user side: prior P h (meta-learned) and the adapted offset u."""

    def __init__(self, user_dim: int, rank: int):
        super().__init__()
        self.proj = nn.Linear(user_dim, rank, bias=False)
        self.user = nn.Parameter(torch.zeros(rank))


class PreferenceNetwork(nn.Module):
    """Embeddings + decision layers (+ dot-product head); predictions functional in the adapted parameters."""

    def __init__(self, data: TaskData, config: NetworkConfig = NetworkConfig()):
        super().__init__()
        self.config = config
        self.task = data.task
        scale = label_scale(data)
        self.embedder = FieldEmbedder(data, config, scale if config.statistics else None)
        self.decision = decision_layers(self.embedder.user_dim + self.embedder.item_dim, config.hidden)
        if config.factor_dim:
            self.factor = UserFactor(self.embedder.user_dim, config.factor_dim)
        self.foldins = int(config.uses_mf_foldin) + int(config.knn_foldin)
        if self.foldins:
            # How much of each fold-in's prediction (MF's, then kNN's) the score keeps: an even blend.
            self.foldin_weight = nn.Parameter(torch.full((self.foldins,), 1.0 / self.foldins))
            # Start exactly at the fold-ins' blend: the decision layers' output and the user prior
            # begin at zero, so meta-training moves away from it only as far as validation users reward.
            with torch.no_grad():
                self.decision[-1].weight.zero_()
                if config.factor_dim:
                    self.factor.proj.weight.zero_()
        # Start at the training labels' centre (a click rate's logit for CTR), not at 0: from 0,
        # the first support gradients on 1-5 star ratings are large enough to throw a fixed-rate
        # inner loop off course.
        with torch.no_grad():
            self.decision[-1].bias.fill_(output_bias(scale.center, data.task))
        # The output's starting value (the labels' centre, a logit for clicks): fold-ins enter around it.
        self.register_buffer("decision_center", torch.tensor(float(output_bias(float(scale.center), data.task))))
        allowed = ("decision.", USER_FACTOR, FOLDIN_WEIGHT)
        if not self.adapted_params() or any(not n.startswith(allowed) for n in self.adapted_params()):
            # The inner loop runs on precomputed embeddings, so only the head can adapt.
            raise ValueError(f"adapted={config.adapted!r} must select decision-layer parameters "
                             f"(or {USER_FACTOR!r}, {FOLDIN_WEIGHT!r}), e.g. ('decision.',)")

    def adapted_params(self) -> dict[str, torch.Tensor]:
        """The parameters the inner loop adapts, by name (e.g. 'decision.0.weight')."""
        return {n: p for n, p in self.named_parameters() if n.startswith(self.config.adapted)}

    def fold(self, x: Inputs) -> Fold | None:
        """The first decision layer's user columns multiply the user's embedding x[0] alone, once
        per user: the inner loop may carry them as one vector per user (models/inner.py `Fold`)."""
        name = "decision.0.weight"
        return Fold(name, x[0]) if name in self.adapted_params() else None

    def inputs(self, user_embedding: torch.Tensor, items: torch.Tensor, item_rep: ItemRepresentation,
               factor_table: torch.Tensor | None = None, foldin: torch.Tensor | None = None) -> Inputs:
        """Decision inputs of a batch: user embedding (B, Du), item embeddings (B, S, Di), with
        the dot-product head the user prior P h (B, r) and the item factors (B, S, r), and last,
        with fold-ins, their predictions (B, S, F) (`foldin_predictions`).

        `factor_table` (B,) picks each user's table of cross-fitted factors (0, the table fitted
        on every rating, when None). The user half is kept apart rather than concatenated to every
        item: the first layer applies its user columns once per user instead of once per item.
        """
        x: Inputs = (user_embedding, gather_rows(item_rep.features, items))
        if item_rep.factors is not None:
            tables, n_rows = self.table_index(items.shape[0], factor_table, items.device), item_rep.factors.shape[1]
            factors = gather_rows(item_rep.factors.flatten(0, 1), tables.unsqueeze(1) * n_rows + items)  # (B, S, r)
            x = (*x, self.factor.proj(user_embedding), factors)
        return x if foldin is None else (*x, foldin)

    @staticmethod
    def table_index(n_users: int, factor_table: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        return torch.zeros(n_users, dtype=torch.long, device=device) if factor_table is None else factor_table

    def mf_predictions(self, item_rep: ItemRepresentation, support_items: torch.Tensor, support_labels: torch.Tensor,
                       support_mask: torch.Tensor, query_items: torch.Tensor,
                       factor_table: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """MF's fold-in predictions mu + b_i + b_u + q_i . p_u for the support (B, S) and query (B, Q) items.

        (b_u, p_u) come from the user's support set alone (`ridge_foldin`), over the MF item side
        of the user's table (a training user's fold never saw its query ratings).
        """
        table = self.table_index(support_items.shape[0], factor_table, support_items.device)  # (B,)
        mu = item_rep.mu[table].unsqueeze(1)  # (B, 1)
        bias = item_rep.item_bias[table.unsqueeze(1), support_items]  # (B, S)
        mf_q = item_rep.mf_factors  # MF's own item factors, without the learned feature projection
        support_q = mf_q[table.unsqueeze(1), support_items]  # (B, S, r)
        residual = (support_labels - mu - bias) * support_mask
        user_bias, user_factor = ridge_foldin(support_q.detach(), residual.detach(), support_mask,
                                              self.config.mf_reg, self.config.mf_user_shrinkage)

        def predict(items: torch.Tensor) -> torch.Tensor:
            q = mf_q[table.unsqueeze(1), items]
            return (mu + item_rep.item_bias[table.unsqueeze(1), items] + user_bias.unsqueeze(1)
                    + (q * user_factor.unsqueeze(1)).sum(-1)).detach()

        return predict(support_items), predict(query_items)

    def knn_predictions(self, support_items: torch.Tensor, support_labels: torch.Tensor, support_mask: torch.Tensor,
                        query_items: torch.Tensor, factor_table: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Item-kNN's predictions mu + b_i + b_u + offset for the support (B, S) and query (B, Q) items.

        Item rows (not batch-local indices); b_u and the residuals z_uj come from the support set,
        over the kNN item side of the user's table; a support item never predicts itself.
        """
        e = self.embedder
        table = self.table_index(support_items.shape[0], factor_table, support_items.device).unsqueeze(1)  # (B, 1)
        mask = support_mask.to(support_labels.dtype)
        residual = (support_labels - e.knn_mu[table] - e.knn_item_bias[table, support_items]) * mask
        user_bias = residual.sum(1, keepdim=True) / (self.config.mf_user_shrinkage + mask.sum(1, keepdim=True))  # (B, 1)
        z = (residual - user_bias) * mask

        def predict(items: torch.Tensor) -> torch.Tensor:
            offset = knn_foldin(e.knn_index[table, items], e.knn_value[table, items],
                                support_items, z, support_mask, self.config.knn_k, self.config.knn_damping)
            return e.knn_mu[table] + e.knn_item_bias[table, items] + user_bias + offset

        return predict(support_items), predict(query_items)

    @torch.no_grad()
    def with_knn_foldins(self, split: TaskSplit, training: bool, chunk: int = 256) -> TaskSplit:
        """`split` with item-kNN's fold-in predictions of every user attached (`TaskSplit.knn_*`),
        from the tables its users get `training` or not (`factor_tables`); `split` itself without kNN.
        The attached predictions are this network's: pass the split to no other.

        Users go in chunks of similar support length (the work grows with S^2 per user).
        """
        if not self.config.knn_foldin or len(split) == 0:
            return split
        keys = split.keys()
        tables = self.table_index(len(split), self.factor_tables(keys, training), keys.device)
        knn_support = torch.zeros(split.support_items.shape, dtype=split.support_labels.dtype, device=keys.device)
        knn_query = torch.zeros(split.query_items.shape, dtype=split.query_labels.dtype, device=keys.device)
        order = length_order(split.support_mask.sum(1))
        for start in range(0, len(split), chunk):
            index = order[start: start + chunk]
            part = split.select(index)
            s, q = self.knn_predictions(part.support_items, part.support_labels, part.support_mask,
                                        part.query_items, tables[index])
            knn_support[index, : s.shape[1]] = s
            knn_query[index, : q.shape[1]] = q
        return replace(split, knn_support=knn_support, knn_query=knn_query, knn_tables=tables)

    def foldin_predictions(self, batch: TaskSplit, item_rep: ItemRepresentation, support_items: torch.Tensor,
                           query_items: torch.Tensor, factor_table: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The fold-ins' predictions stacked (B, S, F) and (B, Q, F), MF's first; (None, None) without fold-ins.

        `support_items`/`query_items` index `item_rep` (the batch's item rows); `batch` holds the rows themselves.
        """
        support, query = [], []
        if self.config.uses_mf_foldin:
            s, q = self.mf_predictions(item_rep, support_items, batch.support_labels, batch.support_mask, query_items,
                                       factor_table)
            support.append(s), query.append(q)
        if self.config.knn_foldin:
            cached = batch.knn_support is not None and torch.equal(
                batch.knn_tables, self.table_index(len(batch), factor_table, batch.knn_tables.device))
            if cached:
                s, q = batch.knn_support, batch.knn_query
            else:
                with torch.no_grad():
                    s, q = self.knn_predictions(batch.support_items, batch.support_labels, batch.support_mask,
                                                batch.query_items, factor_table)
            support.append(s), query.append(q)
        if not support:
            return None, None
        support, query = torch.stack(support, -1), torch.stack(query, -1)
        if self.task == "ctr":
            # Click probabilities enter as logits, the score's own scale, so the network starts at
            # the fold-ins' blend in logit space.
            support, query = (torch.logit(p.clamp(1e-4, 1 - 1e-4)) for p in (support, query))
        return support, query

    def factor_tables(self, keys: torch.Tensor, training: bool) -> torch.Tensor | None:
        """(B,) which cross-fitted factor table each task uses: its fold's while training, else the full one."""
        if not (self.config.factor_dim or self.config.knn_foldin) or self.config.factor_fit != "crossfit" or not training:
            return None
        return 1 + keys % self.config.factor_folds

    def predict(self, params: dict[str, torch.Tensor], x: Inputs) -> torch.Tensor:
        """Decision layers on the [user ; item] concatenation (+ the dot product) -> one score per item (..., S).

        `params` replaces the adapted parameters; the others are the module's own. Plain
        F.linear calls instead of functional_call(self.decision, ...): the same function,
        without module-swapping machinery that dominates the vmapped inner loop's time.
        """
        expected = 2 + 2 * bool(self.config.factor_dim) + bool(self.foldins)
        if len(x) != expected:
            raise ValueError(f"the inputs hold {len(x)} parts, this network takes {expected}: build them with "
                             "`inputs` (and the fold-ins' predictions with `foldin_predictions`)")
        user, items = x[0], x[1]  # (..., Du), (..., S, Di)
        layers = [m for m in self.decision if isinstance(m, nn.Linear)]
        hidden = items
        for index, layer in enumerate(layers):
            slot = 2 * index  # position of the Linear in the Sequential (Linear, ReLU, ...)
            weight = params.get(f"decision.{slot}.weight", layer.weight)
            bias = params.get(f"decision.{slot}.bias", layer.bias)
            if index == 0 and folded_key(f"decision.{slot}.weight") in params:
                # The inner loop's Fold: `weight` holds the item columns, z = W_user h per user.
                hidden = linear(items, weight, bias) + params[folded_key(f"decision.{slot}.weight")].unsqueeze(-2)
            elif index == 0:
                # split, not two slices: a slice's backward zero-fills the whole (per-user) weight
                # gradient and the two are then added; split's backward is one concatenation.
                user_weight, item_weight = weight.split([user.shape[-1], items.shape[-1]], dim=-1)
                user_part = (user @ user_weight.T).unsqueeze(-2) if weight.dim() == 2 else linear(user.unsqueeze(1), user_weight)
                hidden = linear(items, item_weight, bias) + user_part
            else:
                hidden = linear(hidden, weight, bias)
            if index < len(layers) - 1:
                hidden = torch.relu(hidden)
        score = hidden.squeeze(-1)
        if self.config.factor_dim:
            prior, item_factors = x[2], x[3]  # (..., r), (..., S, r)
            user_factor = prior + params.get(USER_FACTOR, self.factor.user)
            score = score + (item_factors * user_factor.unsqueeze(-2)).sum(-1)
        if self.foldins:
            # The fold-ins' predictions enter around the output's starting value.
            weight = params.get(FOLDIN_WEIGHT, self.foldin_weight)  # (F,) or per user (..., F)
            score = score + ((x[-1] - self.decision_center) * weight.unsqueeze(-2)).sum(-1)
        return score


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x W^T + b with x (B, S, in), for one weight (out, in) or one per user (B, out, in), and a
    bias (out,) or one per user (B, out) (only the adapted parameters have a user dimension)."""
    per_user_bias = bias is not None and bias.dim() == 2
    if weight.dim() == 2:
        out = nn.functional.linear(x, weight, None if per_user_bias else bias)
        return out + bias.unsqueeze(1) if per_user_bias else out
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1) if per_user_bias else bias, x, weight.transpose(1, 2))


def output_bias(center: float, task: str) -> float:
    """The output unit's initial bias: the mean rating, or the logit of the mean click rate."""
    if task == "rating":
        return center
    rate = min(max(center, 1e-3), 1 - 1e-3)
    return math.log(rate / (1 - rate))


def task_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, task: str) -> torch.Tensor:
    """Masked mean loss over the last dimension: MSE for ratings, log-loss on logits for clicks."""
    if task == "rating":
        per_item = (pred - target) ** 2
    else:
        per_item = nn.functional.binary_cross_entropy_with_logits(pred, target, reduction="none")
    weights = mask.to(pred.dtype)
    return (per_item * weights).sum(-1) / weights.sum(-1).clamp_min(1.0)
