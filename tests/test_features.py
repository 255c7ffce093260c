"""Rating statistics as features: values by hand, no leak of query labels, and their use."""

import math
from dataclasses import replace

import pytest
import torch

from models.features import LabelScale, item_statistics, label_scale, support_statistics
from models.learners import LearnerConfig, build_learner
from models.network import NetworkConfig, PreferenceNetwork
from models.tasks import TaskSplit
from tests.model_fixtures import tiny_task_data


def two_user_data():
    """Train split by hand: user 0 rated items 1, 2 (support) as 4, 2; user 1 rated item 1 as 3."""
    data = tiny_task_data()
    train = data.splits["train"]
    support_items = torch.tensor([[1, 2], [1, 0]])
    split = TaskSplit(
        user_fields=train.user_fields[:2], support_items=support_items,
        support_labels=torch.tensor([[4.0, 2.0], [3.0, 0.0]]), support_mask=support_items != 0,
        query_items=torch.tensor([[3], [2]]), query_labels=torch.tensor([[5.0], [1.0]]),
        query_mask=torch.ones(2, 1, dtype=torch.bool),
    )
    return replace(data, splits={**data.splits, "train": split})


def test_label_scale_and_item_statistics_by_hand():
    data = two_user_data()
    scale = label_scale(data)
    # Support labels 4, 2, 3: mean 3, sample sd 1; largest support set 2; item 1 has 2 ratings.
    assert scale.center == pytest.approx(3.0) and scale.scale == pytest.approx(1.0)
    assert scale.user_log_count == pytest.approx(max(math.log(3), 1.0))
    assert scale.item_log_count == pytest.approx(max(math.log(3), 1.0))
    stats = item_statistics(data, scale, shrinkage=2.0)
    # Item 1: (4-3 + 3-3) / (2 + 2) = 0.25; item 2: (2-3) / (1 + 2) = -1/3; item 3 only in a query set: 0.
    assert stats[1, 0].item() == pytest.approx(0.25)
    assert stats[2, 0].item() == pytest.approx(-1 / 3)
    assert stats[3].tolist() == [0.0, 0.0]  # the query label 5 must not leak into item 3's features
    assert stats[1, 1].item() == pytest.approx(math.log(3) / scale.item_log_count)


def test_support_statistics_ignore_padding():
    scale = LabelScale(center=3.0, scale=2.0, user_log_count=math.log(5), item_log_count=1.0)
    labels = torch.tensor([[5.0, 1.0, 99.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [False, False, False]])
    stats = support_statistics(labels, mask, scale)
    # User 0: mean 3 -> 0; sd 2 -> 1; count 2 -> log 3 / log 5. User 1 (empty): centre, 0, 0.
    assert stats[0].tolist() == pytest.approx([0.0, 1.0, math.log(3) / math.log(5)])
    assert stats[1].tolist() == pytest.approx([0.0, 0.0, 0.0])


def test_user_embedding_depends_on_the_support_set_and_requires_it():
    torch.manual_seed(0)
    data = tiny_task_data()
    net = PreferenceNetwork(data, NetworkConfig(embedding_dim=4, hidden=(8,)))
    batch = data.splits["train"]
    h = net.embedder.user_of(batch)
    shifted = net.embedder.user_of(replace(batch, support_labels=batch.support_labels + 1.0))
    assert h.shape == (len(batch), net.embedder.user_dim) and net.embedder.user_dim == 3 * 4
    assert not torch.allclose(h, shifted)
    with pytest.raises(ValueError, match="support_labels"):
        net.embedder.user(batch.user_fields)
    plain = PreferenceNetwork(data, NetworkConfig(embedding_dim=4, hidden=(8,), statistics=False))
    assert plain.embedder.user(batch.user_fields).shape == (len(batch), 2 * 4)


@pytest.mark.parametrize("task", ["rating", "ctr"])
def test_output_starts_at_the_training_label_centre(task):
    data = tiny_task_data(task)
    learner = build_learner("melu", data, LearnerConfig(network=NetworkConfig(embedding_dim=4, hidden=(8,))))
    center = label_scale(data).center
    expected = center if task == "rating" else math.log(center / (1 - center))
    assert learner.net.decision[-1].bias.item() == pytest.approx(expected, rel=1e-5)
