"""Length-bucketed meta-batches: every user once per epoch, little padding, seeded, and the same model math."""

import numpy as np
import pytest
import torch

from models.batching import epoch_batches, length_order, padding_share
from models.training import TrainConfig, predict_split, train
from tests.model_fixtures import tiny_task_data
from tests.test_learners import CONFIG

LENGTHS = torch.tensor([1, 9, 2, 8, 3, 7, 4, 6])


def draw(mode: str, seed: int = 0, pool: int = 4, lengths: torch.Tensor = LENGTHS, size: int = 2) -> list[torch.Tensor]:
    return epoch_batches(lengths, torch.zeros_like(lengths), size, torch.Generator().manual_seed(seed), mode, pool)


@pytest.mark.parametrize("mode", ["random", "bucketed"])
def test_every_user_once_per_epoch(mode):
    lengths = torch.randint(1, 50, (103,), generator=torch.Generator().manual_seed(3))
    batches = draw(mode, lengths=lengths, size=8)
    assert sorted(torch.cat(batches).tolist()) == list(range(103))
    assert sorted(len(b) for b in batches)[1:] == [8] * 12  # one short batch: 103 = 12 * 8 + 7


def test_random_mode_is_the_previous_permutation():
    # The old loop: randperm(n, generator) cut in order. Same generator state, same batches.
    expected = torch.randperm(8, generator=torch.Generator().manual_seed(5)).split(3)
    assert [b.tolist() for b in draw("random", seed=5, size=3)] == [b.tolist() for b in expected]


def test_one_pool_pairs_neighbouring_lengths():
    # Pool = all 8 users: sorted 1,2,3,4,6,7,8,9 cut in pairs, whatever the batch order.
    pairs = {tuple(sorted(LENGTHS[b].tolist())) for b in draw("bucketed", pool=4)}
    assert pairs == {(1, 2), (3, 4), (6, 7), (8, 9)}
    # By hand: slots 2 * (2 + 4 + 7 + 9) = 44, items 40.
    assert padding_share(draw("bucketed", pool=4), LENGTHS) == pytest.approx(4 / 44)


def test_bucketing_cuts_padding_on_skewed_lengths():
    # Like ML-1M's support sets: mean about 70, a long tail.
    lengths = torch.empty(2000).exponential_(1 / 70, generator=torch.Generator().manual_seed(0)).long().clamp(2, 400)
    random, bucketed = draw("random", lengths=lengths, size=32), draw("bucketed", lengths=lengths, size=32, pool=16)
    assert padding_share(random, lengths) > 0.6
    assert padding_share(bucketed, lengths) < 0.2


def test_seeded_and_different_across_epochs():
    assert [b.tolist() for b in draw("bucketed", seed=1)] == [b.tolist() for b in draw("bucketed", seed=1)]
    generator = torch.Generator().manual_seed(1)
    first = epoch_batches(LENGTHS, torch.zeros_like(LENGTHS), 2, generator, "bucketed", 2)
    second = epoch_batches(LENGTHS, torch.zeros_like(LENGTHS), 2, generator, "bucketed", 2)
    assert [b.tolist() for b in first] != [b.tolist() for b in second]


def test_unknown_mode_is_named():
    with pytest.raises(ValueError, match="'sorted'"):
        draw("sorted")
    with pytest.raises(ValueError, match="batching"):
        TrainConfig(batching="sorted")


def test_length_order_is_stable():
    assert length_order(torch.tensor([3, 1, 3, 2])).tolist() == [1, 3, 0, 2]


def test_predictions_come_back_in_row_order():
    # Evaluation batches users by length; every result must land on its own row.
    data = tiny_task_data(users=12)
    learner = train("reg_paml", data, CONFIG, TrainConfig(epochs=1, meta_batch=4, seed=0)).learner
    one_by_one = predict_split(learner, data, "test", batch_size=1)
    batched = predict_split(learner, data, "test", batch_size=5)
    mask = data.splits["test"].query_mask.numpy()
    np.testing.assert_array_equal(batched.mask, mask)
    # Padded slots hold whatever the batch's width left there; real query items must agree.
    np.testing.assert_allclose(batched.pred[mask], one_by_one.pred[mask], atol=1e-5)
    np.testing.assert_allclose(batched.lr_per_user, one_by_one.lr_per_user, atol=1e-6)
    np.testing.assert_allclose(batched.query_loss, one_by_one.query_loss, atol=1e-5)


@pytest.mark.parametrize("batching", ["random", "bucketed"])
def test_training_is_seeded_under_both_samplers(batching):
    data = tiny_task_data(users=12)
    config = TrainConfig(epochs=2, meta_batch=4, seed=2, batching=batching, bucket_pool=2)
    first = predict_split(train("paml", data, CONFIG, config).learner, data, "test").pred
    again = predict_split(train("paml", data, CONFIG, config).learner, data, "test").pred
    np.testing.assert_array_equal(first, again)


def test_a_time_budget_stops_training_and_keeps_the_best():
    data = tiny_task_data(users=12)
    result = train("melu", data, CONFIG, TrainConfig(epochs=1000, meta_batch=4, eval_every=2, max_seconds=0.0))
    assert result.stopped == "max_seconds" and result.history[-1].step == 1  # checked after every step
    assert np.isfinite(result.best_val_loss)
