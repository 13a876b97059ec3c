"""State: in-memory commit and rollback of model, optimizer, sampler and user fields."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kiln.elastic import ElasticSampler, State  # noqa: E402


def make_state(**fields):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8),
                                torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sampler = ElasticSampler(100, global_batch_size=10, seed=1)
    return State(model, optimizer, sampler, **fields)


def train_one_step(state: State) -> None:
    x = torch.randn(10, 4)
    loss = state.model(x).pow(2).mean()
    state.optimizer.zero_grad()
    loss.backward()
    state.optimizer.step()
    state.sampler.advance(1)
    state.step += 1


def snapshot(state: State):
    return ({k: v.clone() for k, v in state.model.state_dict().items()},
            {i: {k: v.clone() for k, v in s.items()}
             for i, s in state.optimizer.state_dict()["state"].items()},
            state.sampler.state_dict(), state.step)


def assert_same(a, b):
    model_a, opt_a, sampler_a, step_a = a
    model_b, opt_b, sampler_b, step_b = b
    assert model_a.keys() == model_b.keys()
    for k in model_a:
        assert torch.equal(model_a[k], model_b[k]), k
    assert opt_a.keys() == opt_b.keys()
    for i in opt_a:
        for k in opt_a[i]:
            assert torch.equal(opt_a[i][k], opt_b[i][k]), (i, k)
    assert sampler_a == sampler_b and step_a == step_b


def test_restore_rolls_back_everything_to_the_last_commit():
    state = make_state(history=[1.0], best=0.5)
    for _ in range(3):
        train_one_step(state)
    state.commit()
    committed = snapshot(state)
    assert state.committed_step == 3

    for _ in range(2):
        train_one_step(state)
    state.history.append(2.0)
    state.best = 0.9
    state.restore()

    assert_same(snapshot(state), committed)
    assert state.history == [1.0] and state.best == 0.5


def test_the_committed_copy_does_not_follow_later_training_or_restores():
    state = make_state()
    train_one_step(state)
    state.commit()
    committed = snapshot(state)
    train_one_step(state)
    state.restore()
    train_one_step(state)  # the restored tensors are trained on again...
    state.restore()        # ...and the commit is still the one taken
    assert_same(snapshot(state), committed)


def test_commit_before_the_optimizer_has_state_restores_to_no_momentum():
    state = make_state()
    state.commit()
    train_one_step(state)
    assert state.optimizer.state_dict()["state"]
    state.restore()
    assert state.optimizer.state_dict()["state"] == {}
    assert state.step == 0 and state.sampler.consumed == 0


def test_commits_reuse_their_buffers():
    state = make_state()
    train_one_step(state)
    state.commit()
    first = state._committed["model"]["0.weight"]
    train_one_step(state)
    state.commit()
    assert state._committed["model"]["0.weight"] is first
    assert torch.equal(first, state.model.state_dict()["0.weight"])


def test_state_dict_round_trips_into_a_fresh_state():
    a = make_state(history=[0.3])
    for _ in range(4):
        train_one_step(a)
    torch.manual_seed(99)  # b starts from other weights
    b = make_state(history=[])
    b.model[0].weight.data.normal_()
    b.load_state_dict(a.state_dict())
    assert_same(snapshot(b), snapshot(a))
    assert b.history == [0.3]


def test_fields_read_and_write_as_attributes_and_unknown_ones_name_the_known():
    state = make_state(epochs_done=0)
    state.epochs_done += 1
    assert state.fields == {"epochs_done": 1}
    with pytest.raises(AttributeError, match=r"no field 'epoch_done'.*\['epochs_done'\]"):
        _ = state.epoch_done


def test_restore_before_commit_and_missing_parts_are_clear_errors():
    state = make_state()
    with pytest.raises(RuntimeError, match="before any State.commit"):
        state.restore()
    with pytest.raises(ValueError, match="no 'optimizer'"):
        state.load_state_dict({"step": 1, "model": state.model.state_dict(),
                               "sampler": state.sampler.state_dict()})


def test_describe_says_where_in_the_epoch():
    state = make_state()
    for _ in range(12):
        train_one_step(state)
    assert state.describe() == "step 12 (epoch 2, 20% done)"
    assert State().describe() == "step 0"
