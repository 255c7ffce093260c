"""Issue 9's mechanisms: trained inputs for cold users, a learning LR module, AT-PAML's memory, the budget."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from models.factors import fit_item_factors
from models.references import BiasConfig, KNNConfig, MFConfig, fit_item_knn, fit_mf, fitting_ratings, predict_knn, predict_mf
from models.learners import LearnerConfig, LRModule, ModelFormError, build_learner, layer_groups
from models.network import ITEM_ID_FIELD, NetworkConfig, PreferenceNetwork, item_id_codes, trained_codes
from models.tasks import UNKNOWN_INDEX, task_data_from_tensors, training_view
from models.training import TrainConfig, predict_split, train
from models.user_memory import MemoryConfig, UserMemory
from pipelines.cli import expected_failure
from tests.model_fixtures import tiny_task_data

SMALL = NetworkConfig(embedding_dim=4, hidden=(8,), unknown_rate=0.0)


def test_codes_no_training_user_has_map_to_unknown():
    # Vocabulary of 6 codes; training users hold 2, 3 and 5. 0 stays padding, 1 unknown.
    remap = trained_codes(torch.tensor([3, 2, 5, 5]), 6)
    assert remap.tolist() == [0, UNKNOWN_INDEX, 2, 3, UNKNOWN_INDEX, 5]


def test_a_value_only_held_out_users_have_gets_the_trained_unknown_row():
    data = tiny_task_data()
    # A vocabulary with one more age code, which only a validation user has.
    data = replace(data, vocab_sizes={**data.vocab_sizes, "age": data.vocab_sizes["age"] + 1})
    free_code = data.vocab_sizes["age"] - 1
    val = data.splits["val"]
    codes = val.user_fields.clone()
    codes[0, 1] = free_code
    net = PreferenceNetwork(data, SMALL).eval()
    h_free = net.embedder.user(codes[:1], val.support_labels[:1], val.support_mask[:1])
    codes[0, 1] = UNKNOWN_INDEX
    h_unknown = net.embedder.user(codes[:1], val.support_labels[:1], val.support_mask[:1])
    assert torch.equal(h_free, h_unknown)


def test_unknown_rate_replaces_codes_only_while_training_and_per_user_not_per_batch():
    data = tiny_task_data()
    net = PreferenceNetwork(data, replace(SMALL, unknown_rate=0.5))
    batch = data.splits["train"]
    net.train()
    net.embedder.salt = 1
    first = net.embedder.user_of(batch)
    net.embedder.salt = 2
    assert not torch.equal(first, net.embedder.user_of(batch))  # another step drops other codes
    net.embedder.salt = 1
    # A user's drops depend on (salt, user, field), not on who else is in the batch.
    half = net.embedder.user_of(batch.select(torch.arange(3, 9)))
    assert torch.allclose(half, first[3:9])
    net.eval()
    assert torch.equal(net.embedder.user_of(batch), net.embedder.user_of(batch))


def test_hashed_dropout_drops_about_the_rate():
    from models.network import hashed_uniform

    u = hashed_uniform(7, torch.arange(20000), 3)
    assert abs(float((u < 0.2).float().mean()) - 0.2) < 0.01 and 0 <= float(u.min()) and float(u.max()) < 1
    assert torch.equal(u, hashed_uniform(7, torch.arange(20000), 3))
    assert not torch.equal(u, hashed_uniform(8, torch.arange(20000), 3))


def test_every_field_drops_as_its_own_hash_of_salt_owner_and_field_says():
    from models.network import drop_to_unknown

    data = tiny_task_data()
    net = PreferenceNetwork(data, replace(SMALL, unknown_rate=0.5)).train()
    embedder, batch = net.embedder, data.splits["train"]
    embedder.salt = 3
    keys = batch.keys()
    fields = embedder.user_fields
    assert len(fields) >= 2  # one draw for several fields is what is checked
    drawn = embedder.embed_fields(fields, batch.user_fields, keys)
    dropped = 0
    for i, field in enumerate(fields):  # the draw field by field, as one hash per field made it
        codes = getattr(embedder, f"remap__{field}")[batch.user_fields[:, i]]
        alone = drop_to_unknown(codes, 0.5, 3, keys, embedder.field_ids[field])
        dropped += int((alone != codes).sum())
        assert torch.equal(drawn[i], embedder.tables[field](alone)), field
    assert dropped > 0


def test_item_ids_of_items_no_training_user_rated_are_unknown():
    data = tiny_task_data()
    train_split = data.splits["train"]
    rated = set(torch.cat([train_split.support_items[train_split.support_mask],
                           train_split.query_items[train_split.query_mask]]).tolist())
    codes = item_id_codes(data)
    for row in range(1, codes.shape[0]):
        assert codes[row].item() == (row + 1 if row in rated else UNKNOWN_INDEX)
    net = PreferenceNetwork(data, replace(SMALL, item_id=True))
    assert ITEM_ID_FIELD in net.embedder.tables


def test_item_factors_ignore_held_out_labels_and_unrated_items():
    data = tiny_task_data()
    first = fit_item_factors([data.splits["train"]], int(data.items.fields.shape[0])).factors[0]
    shifted_test = replace(data.splits["test"], query_labels=data.splits["test"].query_labels + 3)
    data2 = replace(data, splits={**data.splits, "test": shifted_test})
    second = fit_item_factors([data2.splits["train"]], int(data.items.fields.shape[0])).factors[0]
    assert torch.equal(first, second)
    assert first[0].abs().sum() == 0  # padding row


def test_training_view_adds_warm_tasks_only_for_the_production_protocol():
    data = tiny_task_data()
    warm = data.splits["val"]  # any split's shape will do as warm tasks
    data = replace(data, splits={**data.splits, "warm": warm})
    paper = training_view(data, "paper")
    production = training_view(data, "production")
    assert "warm" not in paper.splits and "warm" not in production.splits
    assert len(paper.splits["train"]) == len(data.splits["train"])
    assert len(production.splits["train"]) == len(data.splits["train"]) + len(warm)
    assert torch.equal(production.splits["test"].query_labels, data.splits["test"].query_labels)
    with pytest.raises(ValueError, match="warm"):
        training_view(tiny_task_data(), "production")


def test_paml_step_size_lies_in_its_log_range_and_starts_spread():
    data = tiny_task_data()
    torch.manual_seed(0)
    config = LearnerConfig(inner_lr=0.01, lr_range=4.0, network=SMALL, lr_per_layer=False)
    learner = build_learner("paml", data, config)
    _, _, users = learner.prepare(data.splits["train"], data.items)
    alpha = learner.step_size(users)
    assert alpha.shape == (len(data.splits["train"]),)
    assert (alpha >= 0.01 / 4).all() and (alpha <= 0.01 * 4).all()
    assert alpha.std() > 0  # a small random last layer: users differ from the first step on
    alpha.sum().backward()
    assert learner.lr_module.layers[0].weight.grad.abs().sum() > 0


def test_paml_per_layer_gives_each_adapted_layer_its_own_per_user_rate():
    data = tiny_task_data()
    config = LearnerConfig(inner_lr=0.01, network=SMALL, lr_per_layer=True, lr_history=True)
    learner = build_learner("paml", data, config)
    groups = layer_groups(list(learner.net.adapted_params()))
    assert groups == {"decision.0.weight": 0, "decision.0.bias": 0, "decision.2.weight": 1, "decision.2.bias": 1,
                      "factor.user": 2}
    _, _, users = learner.prepare(data.splits["train"], data.items)
    alpha = learner.step_size(users)
    assert set(alpha) == set(groups) and all(a.shape == (len(users.h),) for a in alpha.values())
    assert torch.equal(alpha["decision.0.weight"], alpha["decision.0.bias"])
    outcome = learner.run(data.splits["train"], data.items)
    logs = [torch.log(alpha[name]) for name in ("decision.0.weight", "decision.0.bias", "decision.2.weight",
                                                "decision.2.bias", "factor.user")]
    expected = torch.exp(torch.stack(logs).mean(0))
    assert torch.allclose(outcome.lr_per_user, expected.detach())


def test_memory_keeps_one_slot_per_user_and_never_returns_a_user_as_its_own_neighbour():
    memory = UserMemory(2, MemoryConfig(k=2, capacity=8, delta=1.0))
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    memory.insert(points, torch.tensor([0.1, 0.2, 0.3, 0.4]), keys=torch.tensor([10, 11, 12, 13]))
    memory.insert(torch.tensor([[0.1, 0.0]]), torch.tensor([0.5]), keys=torch.tensor([10]))  # user 10 returns
    assert len(memory) == 4 and memory.lrs[0].item() == pytest.approx(0.5)
    query = torch.tensor([[0.1, 0.0]])
    assert memory.search(query).tolist() == [[0, 1]]  # its own copy is the nearest...
    assert memory.search(query, exclude=torch.tensor([10])).tolist() == [[1, 2]]  # ...unless excluded


def test_rows_of_one_insert_that_share_a_key_are_stored_once_as_the_last():
    # A warm user's chunks share its key (models/tasks.py concat_splits) and can share a meta-batch.
    memory = UserMemory(2, MemoryConfig(k=1, capacity=8, delta=1.0))
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
    memory.insert(points, torch.tensor([0.1, 0.2, 0.3]), keys=torch.tensor([7, 7, 8]))
    assert len(memory) == 2 and memory.keys[:2].tolist() == [7, 8]
    assert memory.embeddings[0].tolist() == [1.0, 0.0] and memory.lrs[0].item() == pytest.approx(0.2)
    # Stored twice, the copy at (0, 0) was returned as user 7's own neighbour: search skips one self-match.
    assert memory.keys[memory.search(torch.tensor([[0.4, 0.0]]), exclude=torch.tensor([7]))].tolist() == [[8]]
    memory.insert(torch.tensor([[2.0, 2.0], [3.0, 3.0]]), torch.tensor([0.4, 0.5]), keys=torch.tensor([7, 7]))
    assert len(memory) == 2 and memory.embeddings[0].tolist() == [3.0, 3.0]
    memory.insert(torch.tensor([[4.0, 4.0], [6.0, 6.0]]), torch.tensor([0.6, 0.7]))  # no keys: every row is stored
    assert len(memory) == 4


def test_at_paml_stores_a_user_whose_tasks_share_a_batch_once():
    data = tiny_task_data(users=12)
    train_split = data.splits["train"]
    data = replace(data, splits={**data.splits, "train": replace(train_split, user_index=torch.arange(12) // 2)})
    config = LearnerConfig(inner_lr=0.01, network=SMALL, memory=MemoryConfig(capacity=64, k=2))
    result = train("at_paml", data, config, TrainConfig(epochs=2, meta_batch=12, eval_every=2, batching="random"))
    memory = result.learner.memory
    assert len(memory) == 6 and sorted(memory.keys[:6].tolist()) == list(range(6))


def test_kernel_delta_is_calibrated_from_the_stored_neighbourhoods():
    # Four points on a line at 0, 1, 3, 6 with K = 2: each point's two nearest others have squared
    # distances (1, 9), (1, 4), (4, 9), (9, 25); spreads 8, 3, 5, 16; median 6.5 -> delta = 3 / 6.5.
    memory = UserMemory(1, MemoryConfig(k=2, capacity=8, kernel_scale=3.0))
    memory.insert(torch.tensor([[0.0], [1.0], [3.0], [6.0]]), torch.tensor([0.1, 0.1, 0.1, 0.1]))
    assert memory.delta == pytest.approx(3.0 / torch.tensor([8.0, 3.0, 5.0, 16.0]).median().item())


def test_at_paml_training_stores_each_training_user_once_and_excludes_itself():
    data = tiny_task_data(users=12)
    config = LearnerConfig(inner_lr=0.01, network=SMALL, memory=MemoryConfig(capacity=64, k=2))
    result = train("at_paml", data, config, TrainConfig(epochs=3, meta_batch=4, eval_every=3))
    memory = result.learner.memory
    assert len(memory) == 12 and sorted(memory.keys[:12].tolist()) == list(range(12))
    h = result.learner.net.embedder.user_of(data.splits["train"])
    found = memory.search(h, stamp=False, exclude=torch.arange(12))
    assert not (memory.keys[found] == torch.arange(12).unsqueeze(1)).any()


def at_paml_with_memory(h: torch.Tensor, ratios: torch.Tensor, **config):
    """An AT-PAML whose correction alpha'(h) is 0 and whose memory holds (h, log-ratios), delta 1, K = 2."""
    data = tiny_task_data()
    learner = build_learner("at_paml", data, LearnerConfig(inner_lr=0.1, network=SMALL, kernel_delta=1.0,
                                                           memory=MemoryConfig(capacity=16, k=2), **config))
    learner.memory = UserMemory(h.shape[1], MemoryConfig(capacity=16, k=2, delta=1.0))
    learner.memory.insert(h, ratios, torch.arange(h.shape[0]))
    learner.lr_module = LRModule(h.shape[1], 4, 1, init_std=0.0)  # alpha'(h) = 0 until its bias is set
    return learner


def users_at(h: torch.Tensor):
    from models.learners import UserBatch

    b = h.shape[0]
    return UserBatch(h, torch.zeros(b, 1, 1), torch.zeros(b, 1), torch.ones(b, 1), torch.arange(100, 100 + b), training=False)


def test_at_paml_step_size_by_hand():
    # Stored at 0, 1, 3 (1-d) with log-ratios 0.6, -0.3, 1.0; a user at 0.5: nearest two are 0 and 1,
    # both at squared distance 0.25, so w = 1/2 each (sigma negligible) and the reference is 0.15.
    learner = at_paml_with_memory(torch.tensor([[0.0], [1.0], [3.0]]), torch.tensor([0.6, -0.3, 1.0]),
                                  lr_range=4.0, memory_weight=0.5)
    alpha = learner.step_size(users_at(torch.tensor([[0.5]])))
    bound = math.log(4.0)
    assert alpha.item() == pytest.approx(0.1 * math.exp(bound * math.tanh(0.5 * 0.15 / bound)), rel=1e-4)
    # memory_weight 0: the memory plays no part, every user gets inner_lr * exp(alpha'(h)) = inner_lr.
    learner.config = replace(learner.config, memory_weight=0.0)
    assert learner.step_size(users_at(torch.tensor([[0.5]]))).item() == pytest.approx(0.1)


def test_at_paml_memory_settles_under_a_constant_correction_instead_of_integrating_it():
    # alpha'(h) = -0.4 for everyone (the LR module's bias), users re-stored generation after generation.
    h = torch.linspace(0, 1, 8).unsqueeze(1)
    for weight in (0.5, 1.0):
        learner = at_paml_with_memory(h, torch.zeros(8), lr_range=4.0, memory_weight=weight)
        with torch.no_grad():
            learner.lr_module.layers[2].bias.fill_(math.atanh(-0.4 / learner.config.correction_range))
        for _ in range(60):
            ratio = learner.log_ratio(users_at(h)).detach()
            learner.memory.insert(h, ratio, torch.arange(8))
        settled = learner.memory.lrs.detach()[:8]
        bound = math.log(4.0)
        # The fixed point of l = B tanh((-0.4 + rho l) / B), iterated by hand. Without the tanh, rho 1
        # (the paper's sum) would lower every stored value by 0.4 per generation, without end.
        fixed = -0.4
        for _ in range(200):
            fixed = bound * math.tanh((-0.4 + weight * fixed) / bound)
        assert torch.allclose(settled, torch.full((8,), fixed), atol=1e-3)
        assert -bound < fixed < -0.4  # never a zero rate, never below inner_lr / r
        if weight == 0.5:
            assert fixed > -0.4 / (1 - weight)  # near the linear fixed point alpha' / (1 - rho), inside the range


def test_an_at_paml_model_from_the_linear_rate_memory_is_refused():
    learner = at_paml_with_memory(torch.tensor([[0.0], [1.0], [3.0]]), torch.tensor([0.6, -0.3, 1.0]))
    state = learner.get_extra_state()
    assert int(state["form"]) == 2
    learner.set_extra_state(state)
    with pytest.raises(ModelFormError, match="form 1") as refused:
        learner.set_extra_state({k: v for k, v in state.items() if k != "form"})
    assert expected_failure(refused.value) == str(refused.value)  # the command line prints one line, no traceback


def test_training_stops_after_patience_and_keeps_the_best_evaluation():
    data = tiny_task_data()
    config = LearnerConfig(inner_lr=0.01, network=SMALL)
    result = train("melu", data, config, TrainConfig(epochs=50, meta_batch=4, eval_every=1, patience=2, outer_lr=0.05))
    steps = [log.step for log in result.history]
    assert result.stopped == "patience" and steps[-1] < 50 * 3
    losses = [log.val_loss for log in result.history]
    assert result.best_val_loss == min(losses) and result.best_step == steps[int(np.argmin(losses))]
    assert math.isclose(float(np.mean(predict_split(result.learner, data, "val").query_loss)), result.best_val_loss, rel_tol=1e-5)


def test_max_steps_bounds_training():
    data = tiny_task_data()
    result = train("melu", data, LearnerConfig(network=SMALL), TrainConfig(epochs=50, meta_batch=4, max_steps=5, eval_every=2))
    assert result.stopped == "max_steps" and result.history[-1].step == 5


def test_diagnostics_by_hand_on_a_tiny_model():
    data = tiny_task_data()
    torch.manual_seed(0)
    config = LearnerConfig(inner_lr=0.05, network=SMALL, memory=MemoryConfig(capacity=64, k=2))
    learner = build_learner("at_paml", data, config)
    learner.after_outer_step(learner.run(data.splits["train"], data.items))  # 12 stored: past warm-up
    preds = predict_split(learner, data, "test", diagnostics=True)
    # Unadapted loss: the same network with zero inner steps.
    unadapted = learner.eval().run(data.splits["test"], data.items, training=False, adapt=False).query_loss
    assert np.allclose(preds.query_loss_unadapted, unadapted.detach().numpy())
    # Attention: K = 2 weights per user; nearest weight >= 1/2 and entropy <= ln 2.
    assert (preds.nearest_weight >= 0.5 - 1e-6).all() and (preds.attention_entropy <= math.log(2) + 1e-6).all()
    # Every test user's codes were drawn from the training users' range here: count what is unknown.
    remap = learner.net.embedder
    expected = sum((getattr(remap, f"remap__{f}")[data.splits["test"].user_fields[:, i]] == UNKNOWN_INDEX).numpy()
                   for i, f in enumerate(data.user_fields))
    assert np.array_equal(preds.unknown_fields, expected)
    melu = predict_split(build_learner("melu", data, config), data, "test", diagnostics=True)
    assert np.isnan(melu.nearest_weight).all()


def test_a_training_users_cross_fitted_factors_never_saw_its_query_ratings():
    data = tiny_task_data(users=10)
    rows = int(data.items.fields.shape[0])
    tables = fit_item_factors([data.splits["train"]], rows, parts=("support", "query"), folds=5).factors
    assert tables.shape[0] == 6
    # Change the query labels of training user 0 (fold 0 -> table 1): only its fold's table is blind to it.
    train_split = data.splits["train"]
    labels = train_split.query_labels.clone()
    labels[0] = 6.0 - labels[0]
    changed = fit_item_factors([replace(train_split, query_labels=labels)], rows, parts=("support", "query"), folds=5).factors
    assert torch.equal(changed[1], tables[1])
    assert not torch.equal(changed[0], tables[0]) and not torch.equal(changed[2], tables[2])


def test_cross_fitted_tables_fitted_in_threads_are_the_sequential_ones_exactly(monkeypatch):
    from models.factors import fit_item_neighbours

    data = tiny_task_data(users=12)
    rows, train = int(data.items.fields.shape[0]), [data.splits["train"]]
    tables = {}
    for threads in ("1", "3"):
        monkeypatch.setenv("PAML_THREADS", threads)
        tables[threads] = (fit_item_factors(train, rows, MFConfig(rank=2, reg=3.0), folds=3),
                           fit_item_neighbours(train, rows, KNNConfig(5, 10.0), BiasConfig(), neighbours=4, folds=3))
    for one, three in zip(*tables.values()):
        for name in vars(one):
            assert torch.equal(getattr(one, name), getattr(three, name)), name
    assert tables["3"][0].factors.shape[0] == 4 and tables["3"][1].index.shape[0] == 4


def test_cross_fitted_tables_follow_the_fold_while_training_and_the_full_fit_otherwise():
    data = tiny_task_data()
    net = PreferenceNetwork(data, replace(SMALL, factor_dim=2, factor_fit="crossfit", factor_folds=3))
    keys = torch.arange(6)
    assert net.factor_tables(keys, training=True).tolist() == [1, 2, 3, 1, 2, 3]
    assert net.factor_tables(keys, training=False) is None
    rep = net.embedder.items(data.items)
    items = data.splits["train"].support_items[:6]
    x = net.inputs(torch.zeros(6, net.embedder.user_dim), items, rep, net.factor_tables(keys, training=True))
    assert torch.equal(x[3][1], rep.factors[2][items[1]])
    single = PreferenceNetwork(data, replace(SMALL, factor_dim=2, factor_fit="all"))
    assert single.embedder.mf_factors.shape[0] == 1



def test_ridge_foldin_by_hand():
    from models.references import ridge_foldin

    # One user, two support items with 1-d factors 1 and 2 and residuals 2 and 4, both ridges 1.
    # Design rows (1, 1), (1, 2): X^T X + I = [[3, 3], [3, 6]], X^T y = (6, 10).
    factors = torch.tensor([[[1.0], [2.0], [7.0]]])
    residual = torch.tensor([[2.0, 4.0, 100.0]])
    mask = torch.tensor([[True, True, False]])  # the padded third item must not count
    bias, factor = ridge_foldin(factors, residual, mask, reg=1.0, bias_reg=1.0)
    # det = 3*6 - 3*3 = 9; b = (6*6 - 3*10) / 9 = 6/9; p = (3*10 - 3*6) / 9 = 12/9.
    assert bias.item() == pytest.approx(6 / 9) and factor[0, 0].item() == pytest.approx(12 / 9)


def test_the_foldin_network_starts_exactly_at_the_mf_reference():
    # The network's MF is the reference row's MF (same fit, same fold-in), and with the output
    # layer and the user prior starting at zero its first prediction is that row's prediction.
    data = tiny_task_data()
    net_config = replace(SMALL, factor_dim=2, mf_foldin=True, knn_foldin=False, factor_fit="all", mf_reg=3.0,
                         mf_user_shrinkage=4.0, mf_item_shrinkage=6.0)
    learner = build_learner("melu", data, LearnerConfig(network=net_config)).eval()
    test = data.splits["test"]
    _, query_x, _ = learner.prepare(test, data.items, training=False)
    assert len(query_x) == 5
    reference = fit_mf(fitting_ratings(data), MFConfig(rank=2, reg=3.0), BiasConfig(item_shrinkage=6.0, user_shrinkage=4.0))
    expected = torch.from_numpy(predict_mf(reference, test)).float()
    mask = test.query_mask
    assert torch.allclose(query_x[4][..., 0][mask], expected[mask], atol=1e-4)
    score = learner.net.predict(learner.net.adapted_params(), query_x)
    assert torch.allclose(score[mask], expected[mask], atol=1e-4)


def distinct_items(data):
    """`data` with each user's support and query items all distinct, as real tasks are (kNN
    would read a query item's own support rating otherwise)."""
    generator = torch.Generator().manual_seed(1)
    splits = {}
    for name, split in data.splits.items():
        n_items = int(data.items.fields.shape[0]) - 1
        width = split.support_items.shape[1] + split.query_items.shape[1]
        rows = torch.stack([torch.randperm(n_items, generator=generator)[:width] + 1 for _ in range(len(split))])
        s = split.support_items.shape[1]
        splits[name] = replace(split, support_items=rows[:, :s], query_items=rows[:, s:])
    return replace(data, splits=splits)


KNN = dict(knn_foldin=True, knn_k=3, knn_shrinkage=5.0, knn_damping=0.1, knn_neighbours=50, mf_item_shrinkage=6.0,
           mf_user_shrinkage=4.0)


def test_the_knn_foldin_is_the_knn_reference_and_both_start_as_an_even_blend():
    data = distinct_items(tiny_task_data(users=20))
    test = data.splits["test"]
    mask = test.query_mask
    bias = BiasConfig(item_shrinkage=6.0, user_shrinkage=4.0)
    knn = torch.from_numpy(predict_knn(fit_item_knn(fitting_ratings(data), bias), test, KNNConfig(3, 5.0, 0.1))).float()
    only_knn = build_learner("melu", data, LearnerConfig(network=replace(SMALL, factor_dim=0, factor_fit="all", **KNN))).eval()
    _, query_x, _ = only_knn.prepare(test, data.items, training=False)
    assert query_x[-1].shape == (*mask.shape, 1)
    assert torch.allclose(query_x[-1][..., 0][mask], knn[mask], atol=1e-5)
    score = only_knn.net.predict(only_knn.net.adapted_params(), query_x)
    assert torch.allclose(score[mask], knn[mask], atol=1e-5)  # the output starts at the kNN row
    both = build_learner("melu", data, LearnerConfig(network=replace(SMALL, factor_dim=2, mf_foldin=True, mf_reg=3.0,
                                                                     factor_fit="all", **KNN))).eval()
    _, query_x, _ = both.prepare(test, data.items, training=False)
    mf = torch.from_numpy(predict_mf(fit_mf(fitting_ratings(data), MFConfig(rank=2, reg=3.0), bias), test)).float()
    score = both.net.predict(both.net.adapted_params(), query_x)
    assert torch.allclose(score[mask], (0.5 * mf + 0.5 * knn)[mask], atol=1e-4)


def test_knn_foldins_made_once_per_split_are_those_of_every_batch():
    # Training attaches each user's kNN fold-in predictions to the split once; a batch drawn
    # from it must get what the per-batch computation gives, from the tables of its mode.
    data = distinct_items(tiny_task_data(users=20))
    learner = build_learner("melu", data, LearnerConfig(network=replace(SMALL, factor_dim=0, factor_folds=2, **KNN)))
    net = learner.net
    train = data.splits["train"]
    index = torch.tensor([3, 0, 5, 1])
    for training in (True, False):
        batch = net.with_knn_foldins(train, training).select(index)
        assert batch.knn_support is not None and batch.knn_support.shape == batch.support_items.shape
        tables = net.factor_tables(batch.keys(), training)
        s, q = net.knn_predictions(batch.support_items, batch.support_labels, batch.support_mask, batch.query_items, tables)
        assert torch.allclose(batch.knn_support[batch.support_mask], s[batch.support_mask], atol=1e-6)
        assert torch.allclose(batch.knn_query[batch.query_mask], q[batch.query_mask], atol=1e-6)
        used = net.foldin_predictions(batch, *_item_rows(learner, batch, data), tables)
        cached = net.foldin_predictions(replace(batch, knn_support=batch.knn_support * 0 + 9.0), *_item_rows(learner, batch, data),
                                        tables)
        assert torch.equal(cached[0][..., -1], torch.full_like(s, 9.0))  # the attached numbers are used
        assert torch.allclose(used[1][..., -1][batch.query_mask], q[batch.query_mask], atol=1e-6)
    # Made with the training tables (each user's fold), used in evaluation (the full table):
    # not used, computed again.
    stale = net.with_knn_foldins(train, True).select(index)
    stale = replace(stale, knn_support=stale.knn_support * 0 + 9.0)
    support, _ = net.foldin_predictions(stale, *_item_rows(learner, stale, data), net.factor_tables(stale.keys(), False))
    assert not torch.any(support[..., -1][stale.support_mask] == 9.0)


def _item_rows(learner, batch, data):
    from models.learners import batch_item_rows

    rows, (support_items, query_items) = batch_item_rows(batch.support_items, batch.query_items)
    return learner.net.embedder.items(data.items, rows), support_items, query_items


def test_crossfitted_knn_tables_never_see_their_folds_query_labels():
    data = tiny_task_data(users=20)
    net = PreferenceNetwork(data, replace(SMALL, factor_dim=0, factor_folds=2, **KNN))
    train = data.splits["train"]
    fold = torch.arange(len(train)) % 2 == 0  # table 1 leaves out the query ratings of users 0, 2, ...
    labels = train.query_labels.clone()
    labels[fold] = 6.0 - labels[fold]
    changed = PreferenceNetwork(replace(data, splits={**data.splits, "train": replace(train, query_labels=labels)}),
                                replace(SMALL, factor_dim=0, factor_folds=2, **KNN))
    assert net.embedder.knn_value.shape[0] == 3
    assert torch.equal(net.embedder.knn_value[1], changed.embedder.knn_value[1])
    assert torch.equal(net.embedder.knn_mu[1], changed.embedder.knn_mu[1])
    assert not torch.equal(net.embedder.knn_value[0], changed.embedder.knn_value[0])  # the full table does see them


def test_fold_ins_take_the_reference_rows_settings_unless_set_elsewhere():
    from models.network import with_reference_settings
    from models.references import BlendConfig, ReferenceSettings

    chosen = ReferenceSettings(BiasConfig(item_shrinkage=25.0, user_shrinkage=3.0), MFConfig(rank=5, reg=7.0),
                               KNNConfig(k=40, shrinkage=300.0, damping=0.1), BlendConfig(0.45))
    assert ReferenceSettings.from_dict(chosen.as_dict()) == chosen
    plain = NetworkConfig(mf_foldin=False, knn_foldin=False)
    assert with_reference_settings(plain, chosen) == plain  # no fold-in: nothing to set
    both = with_reference_settings(replace(plain, mf_foldin=True, knn_foldin=True), chosen)
    assert (both.factor_dim, both.mf_reg, both.mf_item_shrinkage, both.mf_user_shrinkage) == (5, 7.0, 25.0, 3.0)
    assert (both.knn_k, both.knn_shrinkage, both.knn_damping) == (40, 300.0, 0.1)
    kept = with_reference_settings(replace(plain, knn_foldin=True, knn_shrinkage=50.0), chosen, frozenset({"knn_shrinkage"}))
    assert NetworkConfig().mf_foldin and NetworkConfig().knn_foldin  # both on by default
    assert (kept.knn_shrinkage, kept.knn_k, kept.factor_dim, kept.mf_reg) == (50.0, 40, plain.factor_dim, plain.mf_reg)


def test_click_fold_ins_enter_as_logits_so_the_network_starts_at_their_blend():
    data = distinct_items(tiny_task_data("ctr", users=20))
    test = data.splits["test"]
    mask = test.query_mask
    bias = BiasConfig(item_shrinkage=6.0, user_shrinkage=4.0)
    ratings = fitting_ratings(data)
    mf = predict_mf(fit_mf(ratings, MFConfig(rank=2, reg=3.0), bias), test)
    knn = predict_knn(fit_item_knn(ratings, bias), test, KNNConfig(3, 5.0, 0.1))
    logit = lambda p: torch.logit(torch.from_numpy(p).float().clamp(1e-4, 1 - 1e-4))  # noqa: E731
    learner = build_learner("melu", data, LearnerConfig(network=replace(SMALL, factor_dim=2, mf_foldin=True, mf_reg=3.0,
                                                                        factor_fit="all", **KNN))).eval()
    _, query_x, _ = learner.prepare(test, data.items, training=False)
    score = learner.net.predict(learner.net.adapted_params(), query_x)
    assert torch.allclose(score[mask], (0.5 * logit(mf) + 0.5 * logit(knn))[mask], atol=1e-4)


def test_warm_chunks_keep_their_identity_in_the_training_view():
    data = tiny_task_data()
    warm = replace(data.splits["val"], user_index=torch.arange(len(data.splits["val"])) // 3)  # chunks of 3 per user
    production = training_view(replace(data, splits={**data.splits, "warm": warm}), "production").splits["train"]
    n_train = len(data.splits["train"])
    assert production.keys()[:n_train].tolist() == list(range(n_train))
    assert production.keys()[n_train:].tolist() == [n_train + k // 3 for k in range(len(warm))]


def test_a_reloaded_production_model_refits_its_knn_lists_on_the_ratings_it_trained_on():
    from assets.bundle import Bundle
    from assets.method_assets import load_learner, train_method
    from tests.test_tuning import tensors_of

    data = tiny_task_data(users=20)
    warm = replace(data.splits["val"], user_index=torch.arange(len(data.splits["val"])) // 2)
    data = replace(data, splits={**data.splits, "warm": warm})
    tensors, info = tensors_of(data)
    tensors["warm__user_index"] = warm.user_index
    tasks = Bundle(tensors=tensors, info=info)
    config = LearnerConfig(network=replace(SMALL, factor_dim=2, factor_folds=2, knn_k=3, knn_shrinkage=5.0))
    model, _ = train_method("paml", tasks, config, TrainConfig(max_steps=3, eval_every=1, protocol="production", device="cpu"),
                            [0], processes=1)
    loaded = task_data_from_tensors(tasks.tensors, tasks.info)
    assert torch.equal(loaded.splits["warm"].user_index, warm.user_index)  # the identities travel in the tensors
    learner = load_learner(model, loaded, 0)
    trained_on = build_learner("paml", training_view(loaded, "production"), config)
    paper_only = build_learner("paml", loaded, config)
    # the lists are not saved with the model: rebuilt from the production ratings, as in training
    assert torch.equal(learner.net.embedder.knn_value, trained_on.net.embedder.knn_value)
    assert not torch.equal(learner.net.embedder.knn_value, paper_only.net.embedder.knn_value)
