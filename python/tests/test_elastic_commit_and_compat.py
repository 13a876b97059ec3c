"""Step-boundary commits (no per-step copy of the model) and WMLA compatibility of
`FabricModel`'s keyword arguments.

The commit test runs real processes with a real gloo group over a real TCPStore (the
runtime's static mode, no master needed): a peer killed while the survivor is in its
gradient all-reduce must leave the survivor's model and optimizer exactly as they were at
the step boundary, and `State.restore` must roll back the rest.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from kiln.elastic import (ElasticRuntime, ElasticSampler, FabricModel,  # noqa: E402
                          LoggerCallback, PeerFailure, State)
from kiln.elastic.fabric import Callback  # noqa: E402

# ---- step-boundary commits --------------------------------------------------------------

WIDTH = 2000  # two 2000x2000 layers: an all-reduce of 32 MB, long enough to die inside


def _big_state() -> State:
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(WIDTH, WIDTH), torch.nn.BatchNorm1d(WIDTH),
                                torch.nn.Dropout(0.2), torch.nn.Linear(WIDTH, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sampler = ElasticSampler(64, global_batch_size=16, seed=2)
    return State(model, optimizer, sampler, losses=[], best=1.0)


def _step(runtime: ElasticRuntime, x: torch.Tensor, y: torch.Tensor,
          die_in_allreduce: bool = False) -> None:
    """One step as the runtime documents it: forward, backward, the one all-reduce,
    then the update. The forward changes batch-norm statistics and draws dropout masks
    before the all-reduce; the fields and sampler change only after it."""
    state = runtime.state
    batch = state.sampler.batch(runtime.rank, runtime.world_size)
    idx = torch.tensor(batch.indices)
    state.optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(state.model(x[idx]), y[idx],
                                             reduction="sum") / batch.global_size
    loss.backward()
    if die_in_allreduce:
        # Dies instead of contributing: the survivor is inside the all-reduce, waiting for
        # it (deterministic, unlike a timer racing the all-reduce's end).
        os.kill(os.getpid(), signal.SIGKILL)
    [total] = runtime.allreduce_gradients(state.model.parameters(), [float(loss)])
    state.optimizer.step()
    state.sampler.advance(runtime.world_size)
    state.losses.append(total)
    state.best = min(state.best, total)


def _snapshot(state: State) -> dict[str, Any]:
    return {"model": {k: v.clone() for k, v in state.model.state_dict().items()},
            "optimizer": {i: {k: v.clone() for k, v in s.items()}
                          for i, s in state.optimizer.state_dict()["state"].items()},
            "lr": [g["lr"] for g in state.optimizer.param_groups],
            "sampler": dict(state.sampler.state_dict()), "step": state.step,
            "fields": json.loads(json.dumps(state.fields)),
            "rng": torch.get_rng_state().clone()}


def _differences(a: dict[str, Any], b: dict[str, Any], parts: tuple[str, ...]) -> list[str]:
    out = []
    if "params" in parts:
        out += [f"model {k}" for k in a["model"]
                if "running" not in k and "num_batches" not in k
                and not torch.equal(a["model"][k], b["model"][k])]
    if "buffers" in parts:
        out += [f"buffer {k}" for k in a["model"]
                if ("running" in k or "num_batches" in k)
                and not torch.equal(a["model"][k], b["model"][k])]
    if "optimizer" in parts:
        if a["optimizer"].keys() != b["optimizer"].keys():
            out.append("optimizer state keys")
        else:
            out += [f"optimizer {i}.{k}" for i in a["optimizer"] for k in a["optimizer"][i]
                    if not torch.equal(a["optimizer"][i][k], b["optimizer"][i][k])]
    for key in ("lr", "sampler", "step", "fields"):
        if key in parts and a[key] != b[key]:
            out.append(f"{key}: {a[key]} != {b[key]}")
    if "rng" in parts and not torch.equal(a["rng"], b["rng"]):
        out.append("rng")
    return out


def _commit_worker(rank: int, port: int, results: Any) -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(64, WIDTH, generator=g), torch.randint(0, 4, (64,), generator=g)
    state = _big_state()
    env = {"WORLD_SIZE": "2", "RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port)}
    runtime = ElasticRuntime(state, environ=env, collective_timeout_s=300)
    for _ in range(3):  # both alive: momentum buffers exist, fields have history
        with runtime.step():
            _step(runtime, x, y)
    committed = state.committed_step
    boundary = _snapshot(state)
    try:
        with runtime.step():
            _step(runtime, x, y, die_in_allreduce=(rank == 1))
    except PeerFailure as failure:
        after_failure = _snapshot(state)
        untouched = _differences(boundary, after_failure, ("params", "optimizer", "lr"))
        state.restore()
        restored = _differences(boundary, _snapshot(state),
                                ("params", "buffers", "optimizer", "lr", "sampler", "step",
                                 "fields", "rng"))
        results.put({"raised": str(failure)[:200], "committed": committed,
                     "committed_copy": state.committed_copy,
                     "buffers_moved": bool(_differences(boundary, after_failure,
                                                        ("buffers",))),
                     "untouched": untouched, "restored": restored})
        return
    results.put({"raised": None})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_peer_dying_mid_allreduce_leaves_model_and_optimizer_as_at_the_boundary():
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_commit_worker, args=(r, port, results), daemon=True)
             for r in (0, 1)]
    for p in procs:
        p.start()
    try:
        got = results.get(timeout=180)
        procs[1].join(60)
        assert procs[1].exitcode == -signal.SIGKILL
        assert got["raised"], got
        assert got["committed"] == 3 and got["committed_copy"] is False
        # The failed step ran its forward (batch-norm statistics moved) but not its
        # update: the parameters, momentum and lr are those of the step boundary...
        assert got["buffers_moved"]
        assert got["untouched"] == []
        # ...and restore() brings back the rest exactly, RNG included.
        assert got["restored"] == []
        procs[0].join(30)
        assert procs[0].exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()


def _small_state() -> State:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8),
                                torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return State(model, optimizer, ElasticSampler(40, global_batch_size=8, seed=1),
                 history=[0.5])


def test_a_step_boundary_commit_rolls_back_the_small_parts():
    state = _small_state()
    state.model(torch.randn(8, 4)).sum().backward()
    state.optimizer.step()
    state.commit(copy=False)
    boundary = _snapshot(state)
    assert state.committed_copy is False and state.committed_step == 0

    state.model(torch.randn(8, 4))  # batch-norm statistics move, RNG is drawn
    state.optimizer.param_groups[0]["lr"] = 0.5  # an LR callback at the epoch's start
    state.sampler.advance(1)
    state.history.append(0.4)
    state.step += 1
    state.restore()
    assert _differences(boundary, _snapshot(state),
                        ("params", "buffers", "optimizer", "lr", "sampler", "step", "fields",
                         "rng")) == []


def test_a_step_boundary_commit_refuses_to_roll_back_an_updated_model():
    state = _small_state()
    state.commit(copy=False)
    state.model(torch.randn(8, 4)).sum().backward()
    state.optimizer.step()  # the update ran before the collective that failed
    with pytest.raises(RuntimeError, match="commit_every"):
        state.restore()


def test_the_runtime_copies_the_model_only_with_commit_every():
    x, y = torch.randn(40, 4), torch.randint(0, 2, (40,))

    def train(runtime: ElasticRuntime) -> list[torch.Tensor]:
        state = runtime.state
        for _ in range(5):
            with runtime.step():
                batch = state.sampler.batch(runtime.rank, runtime.world_size)
                idx = torch.tensor(batch.indices)
                state.optimizer.zero_grad()
                torch.nn.functional.cross_entropy(state.model(x[idx]), y[idx]).backward()
                runtime.allreduce_gradients(state.model.parameters())
                state.optimizer.step()
                state.sampler.advance(runtime.world_size)
        return [p.detach().clone() for p in state.model.parameters()]

    boundary = ElasticRuntime(_small_state(), environ={})
    assert boundary.copies_commits is False
    by_boundary = train(boundary)
    assert boundary.state.committed_step == 5 and boundary.state.committed_copy is False

    copying = ElasticRuntime(_small_state(), commit_every=2, environ={})
    assert copying.copies_commits is True
    by_copy = train(copying)
    assert copying.state.committed_step == 4 and copying.state.committed_copy is True
    for a, b in zip(by_boundary, by_copy):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="commit_every"):
        ElasticRuntime(_small_state(), commit_every=0, environ={})


def test_a_block_that_is_not_a_step_keeps_the_step_count_and_commits():
    state = _small_state()
    runtime = ElasticRuntime(state, environ={})
    with runtime.step():
        state.history.append(1.0)
    with runtime.step(counts_as_step=False):
        state.history.append(2.0)
    assert state.step == 1 and state.committed_step == 1
    state.history.append(3.0)
    state.restore()
    assert state.history == [0.5, 1.0, 2.0]


# ---- FabricModel: WMLA keyword arguments ------------------------------------------------

@pytest.fixture
def job_dirs(tmp_path, monkeypatch):
    for name in ("KILN_ELASTIC", "WORLD_SIZE", "RANK", "KILN_MAX_WORKERS", "CHECKPOINT_DIR",
                 "SUBID", "JOB_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    dirs = {name: tmp_path / name.lower() for name in ("RESULT_DIR", "LOG_DIR")}
    for name, path in dirs.items():
        path.mkdir()
        monkeypatch.setenv(name, str(path))
    return dirs


def _datasets():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return (torch.utils.data.TensorDataset(x, y),
            torch.utils.data.TensorDataset(x[:32], y[:32]))


def _model_and_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.LogSoftmax(dim=1))
    return model, torch.optim.SGD(model.parameters(), lr=0.5)


def _emetrics(log_dir) -> list[dict[str, Any]]:
    path = log_dir / "evaluation-metrics.txt"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() \
        else []


def test_wmla_1_2_arguments_custom_step_and_test_old_logger_and_onnx(job_dirs, capsys):
    model, optimizer = _model_and_optimizer()
    calls = {"step": 0, "test": 0}

    def custom_train(m, data, eva, train_loader, fn_args):
        inputs, labels = data
        opt = m.get_optimizer()
        opt.zero_grad()
        out = m(inputs)
        loss = m.get_loss_function()(out, labels)
        loss.backward()
        calls["step"] += 1
        assert fn_args == {"k": 1}
        return eva(out, labels), loss

    def custom_test(m, test_iter, fn_args):
        calls["test"] += 1
        total, n, correct = 0.0, 0, 0
        for inputs, labels in test_iter:
            out = m(inputs)
            total += float(m.get_loss_function()(out, labels)) * len(labels)
            correct += int((out.argmax(1) == labels).sum())
            n += len(labels)
        return total / n, correct / n

    old_form: list[tuple] = []

    class OldLogger(LoggerCallback):
        def log_train_metrics(self, loss, acc, completed_batch, worker=0):
            old_form.append(("train", loss, acc, completed_batch, worker))

        def log_test_metrics(self, loss, acc, completed_batch, worker=0):
            old_form.append(("test", loss, acc, completed_batch, worker))

    edt = FabricModel(model, _datasets, torch.nn.functional.nll_loss, optimizer,
                      enable_onnx=True, fn_step_train=custom_train, fn_test=custom_test,
                      fn_args={"k": 1}, driver_logger=OldLogger())
    history = edt.train(2, 16, 1, log_every=3)
    assert calls == {"step": 12, "test": 2}
    assert [row["steps"] for row in history] == [1, 2]
    assert history[-1]["accuracy"] > 0.9
    tests = [e for e in old_form if e[0] == "test"]
    assert [e[3] for e in tests] == [6, 12] and tests[-1][2] > 90  # accuracy in percent
    assert [e[3] for e in old_form if e[0] == "train"] == [3, 6, 9, 12]
    assert (job_dirs["RESULT_DIR"] / "model" / "trained_model.onnx").stat().st_size > 0
    # The custom logger took over both metric groups: Kiln wrote no emetrics.
    assert _emetrics(job_dirs["LOG_DIR"]) == []


def test_a_custom_step_trains_exactly_like_the_built_in_one(job_dirs):
    def custom_train(m, data, eva, train_loader, fn_args):
        inputs, labels = data
        out = m(inputs)
        loss = m.get_loss_function()(out, labels)
        loss.backward()
        return eva(out, labels), loss

    results = []
    for fn in (None, custom_train):
        model, optimizer = _model_and_optimizer()
        FabricModel(model, _datasets, torch.nn.functional.nll_loss, optimizer,
                    fn_step_train=fn).train(2, 16, 1)
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_wmla_4_arguments_loggers_metrics_and_onnx(job_dirs, capsys):
    model, optimizer = _model_and_optimizer()

    def mean_confidence(output, target):
        return output.exp().max(1).values.mean()

    worker_steps: list[int] = []
    driver: list[tuple] = []
    epoch_logs: list[dict] = []

    class WorkerLogger(LoggerCallback):
        def log_train_metrics(self, metrics, iteration, epoch, workers):
            worker_steps.append(iteration)

    class DriverLogger(LoggerCallback):
        def on_train_begin(self):
            driver.append(("begin",))

        def log_test_metrics(self, metrics, iteration, epoch):
            driver.append(("test", epoch))

        def on_train_end(self):
            driver.append(("end",))

    class Logs(Callback):
        def on_epoch_end(self, epoch, logs=None):
            epoch_logs.append(dict(logs))

    edt = FabricModel(model, _datasets, torch.nn.functional.nll_loss, optimizer,
                      metrics=["accuracy", mean_confidence, "auc"],
                      driver_logger_callback=DriverLogger(),
                      worker_logger_callback=WorkerLogger(), save_to_onnx=True,
                      keras_custom_objects={"x": 1}, user_callback=Logs())
    edt.train(2, 16, 1, num_dataloader_threads=4)
    out = capsys.readouterr().out
    assert "metric 'auc' is ignored" in out and "keras_custom_objects is ignored" in out
    assert worker_steps == list(range(1, 13))
    assert driver == [("begin",), ("test", 1), ("test", 2), ("end",)]
    assert [round(logs["step"]) for logs in epoch_logs] == [6, 12]
    assert all(0.5 <= logs["mean_confidence"] <= 1.0 for logs in epoch_logs)
    assert (job_dirs["RESULT_DIR"] / "model" / "trained_model.onnx").exists()
    # Test metrics went to the user's logger, training metrics still to Kiln's.
    assert {row["grouplabel"] for row in _emetrics(job_dirs["LOG_DIR"])} == {"train"}


def test_a_bare_logger_callback_keeps_kilns_metric_reporting(job_dirs):
    model, optimizer = _model_and_optimizer()
    FabricModel(model, _datasets, torch.nn.functional.nll_loss, optimizer,
                driver_logger=LoggerCallback()).train(2, 16, 1)
    rows = _emetrics(job_dirs["LOG_DIR"])
    assert [(row["grouplabel"], sorted(row["values"])) for row in rows] == [
        ("train", ["loss"]), ("test", ["accuracy", "loss"])] * 2


def test_conflicting_or_bad_wmla_arguments_are_clear_errors():
    model, optimizer = _model_and_optimizer()
    with pytest.raises(ValueError, match="driver_logger_callback"):
        FabricModel(model, _datasets, torch.nn.functional.nll_loss, optimizer,
                    driver_logger=LoggerCallback(), driver_logger_callback=LoggerCallback())
    with pytest.raises(TypeError, match="fn_step_train"):
        FabricModel(model, _datasets, torch.nn.functional.nll_loss, optimizer,
                    fn_step_train="train")
