"""ElasticSampler: the partition of each epoch over a changing world."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kiln.elastic import ElasticSampler  # noqa: E402


def run_epoch(sampler: ElasticSampler, worlds: list[int]) -> list[int]:
    """Consumes one epoch, the world of step i being worlds[i % len(worlds)]; returns
    every index handed out, in order."""
    seen: list[int] = []
    epoch = sampler.epoch
    i = 0
    while sampler.epoch == epoch:
        world = worlds[i % len(worlds)]
        step = [sampler.batch(r, world) for r in range(world)]
        assert {b.global_size for b in step} == {sampler.step_size(world)}
        for b in step:
            seen.extend(b.indices)
        sampler.advance(world)
        i += 1
    return seen


@pytest.mark.parametrize("worlds", [[1], [2], [3], [1, 2], [2, 1, 3, 3, 1], [4, 2]])
def test_every_sample_is_visited_exactly_once_per_epoch_whatever_the_world_changes(worlds):
    sampler = ElasticSampler(103, global_batch_size=10, seed=7)
    for _ in range(3):
        seen = run_epoch(sampler, worlds)
        assert sorted(seen) == list(range(103))


def test_a_world_change_mid_epoch_repartitions_only_the_rest_of_the_epoch():
    a = ElasticSampler(100, global_batch_size=8, seed=3)
    b = ElasticSampler(100, global_batch_size=8, seed=3)
    # Same global batches whatever the split: the union of the ranks' shares of each
    # step is the same slice of the permutation.
    for world_a, world_b in [(1, 2), (2, 3), (3, 1), (2, 2), (1, 4)] * 3:
        step_a = sorted(i for r in range(world_a) for i in a.batch(r, world_a).indices)
        step_b = sorted(i for r in range(world_b) for i in b.batch(r, world_b).indices)
        assert step_a == step_b
        a.advance(world_a)
        b.advance(world_b)


def test_shares_differ_by_at_most_one_and_ranks_are_contiguous():
    sampler = ElasticSampler(50, global_batch_size=11, shuffle=False)
    shares = [sampler.batch(r, 3).indices for r in range(3)]
    assert [len(s) for s in shares] == [4, 4, 3]
    assert shares[0] + shares[1] + shares[2] == list(range(11))


def test_more_ranks_than_samples_gives_some_ranks_nothing():
    sampler = ElasticSampler(5, global_batch_size=2, shuffle=False)
    shares = [sampler.batch(r, 3) for r in range(3)]
    assert [len(s.indices) for s in shares] == [1, 1, 0]
    assert all(s.global_size == 2 for s in shares)


def test_last_step_of_an_epoch_is_partial_unless_drop_last():
    keep = ElasticSampler(10, global_batch_size=4, shuffle=False)
    assert [keep.steps_per_epoch(1), keep.steps_left_in_epoch(2)] == [3, 3]
    keep.advance(1)
    keep.advance(1)
    assert keep.step_size(2) == 2
    assert keep.advance(2) is True and keep.epoch == 1 and keep.consumed == 0

    drop = ElasticSampler(10, global_batch_size=4, drop_last=True, shuffle=False)
    assert drop.steps_per_epoch(1) == 2
    drop.advance(1)
    assert drop.advance(1) is True and drop.epoch == 1


def test_per_device_batch_grows_with_the_world_and_still_covers_the_epoch():
    sampler = ElasticSampler(64, batch_size_per_device=4, seed=1)
    assert sampler.step_size(1) == 4 and sampler.step_size(3) == 12
    assert sorted(run_epoch(sampler, [1, 3, 2])) == list(range(64))


def test_order_is_deterministic_per_seed_and_epoch_and_differs_between_epochs():
    a = ElasticSampler(1000, global_batch_size=1000, seed=5)
    b = ElasticSampler(1000, global_batch_size=1000, seed=5)
    first = a.batch(0, 1).indices
    assert first == b.batch(0, 1).indices
    assert first != list(range(1000))
    a.advance(1)
    assert a.batch(0, 1).indices != first
    c = ElasticSampler(1000, global_batch_size=1000, seed=6)
    assert c.batch(0, 1).indices != first


def test_state_round_trips_and_resumes_at_the_same_samples():
    a = ElasticSampler(77, global_batch_size=5, seed=2)
    for _ in range(20):
        a.advance(2)
    b = ElasticSampler(77, global_batch_size=5, seed=2)
    b.load_state_dict(a.state_dict())
    assert (b.epoch, b.consumed) == (a.epoch, a.consumed)
    assert b.batch(1, 3) == a.batch(1, 3)


def test_state_of_another_dataset_or_seed_is_refused_with_a_clear_error():
    a = ElasticSampler(77, global_batch_size=5, seed=2)
    with pytest.raises(ValueError, match="dataset_size=77 seed=2"):
        ElasticSampler(78, global_batch_size=5, seed=2).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="same seed"):
        ElasticSampler(77, global_batch_size=5, seed=3).load_state_dict(a.state_dict())


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of global_batch_size"),
    ({"global_batch_size": 4, "batch_size_per_device": 2}, "exactly one"),
    ({"global_batch_size": 0}, "global_batch_size must be a positive int"),
    ({"batch_size_per_device": -1}, "batch_size_per_device must be a positive int"),
])
def test_bad_arguments_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ElasticSampler(10, **kwargs)


def test_bad_rank_or_world_is_refused():
    sampler = ElasticSampler(10, global_batch_size=2)
    with pytest.raises(ValueError, match="rank must be in"):
        sampler.batch(2, 2)
    with pytest.raises(ValueError, match="world_size must be a positive int"):
        sampler.batch(0, 0)
    with pytest.raises(ValueError, match="dataset_size must be a positive int"):
        ElasticSampler(0, global_batch_size=2)
