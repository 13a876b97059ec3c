"""FabricModel: the WMLA-style trainer, in one process and as elastic workers of the
Fashion-MNIST example (examples/fashion_mnist/elastic/train_elastic.py) meeting at the
in-test `FakeMaster`; real processes, real gloo groups, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

torch = pytest.importorskip("torch")

from conftest import PYTHON_DIR, REPO_ROOT, WORKLOAD_PYTHON, RecordingServer  # noqa: E402
from test_elastic_runtime import FakeMaster  # noqa: E402

from kiln.elastic import Callback, FabricModel  # noqa: E402

EXAMPLE = os.path.join(REPO_ROOT, "examples", "fashion_mnist", "elastic", "train_elastic.py")
DATA = "/usr/share/datasets/fashion-mnist"
needs_data = pytest.mark.skipif(
    not os.path.exists(os.path.join(DATA, "train-images-idx3-ubyte.gz")),
    reason="Fashion-MNIST is not installed")


def toy_datasets():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(120, 6, generator=g)
    y = (x[:, 0] > 0).long()
    return (torch.utils.data.TensorDataset(x[:100], y[:100]),
            torch.utils.data.TensorDataset(x[100:], y[100:]))


def toy_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    return model, torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.5)


class Recorder(Callback):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin",))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_batch_end(self, step, logs=None):
        self.calls.append(("batch_end", step))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, sorted(logs)))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


def test_callbacks_run_in_order_with_validation_logs(tmp_path, monkeypatch):
    monkeypatch.setenv("RESULT_DIR", str(tmp_path / "result"))
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "log"))
    model, optimizer = toy_model()
    recorder = Recorder()
    fabric = FabricModel(model, toy_datasets, torch.nn.functional.cross_entropy, optimizer,
                         user_callback=recorder)
    history = fabric.train(2, 25, 2)  # global batch 50: 2 steps per epoch
    assert recorder.calls == [
        ("train_begin",), ("epoch_begin", 0), ("batch_end", 1), ("batch_end", 2),
        ("epoch_end", 0, ["accuracy", "loss", "rank", "step", "val_accuracy", "val_loss",
                          "world_size"]),
        ("epoch_begin", 1), ("batch_end", 3), ("batch_end", 4),
        ("epoch_end", 1, ["accuracy", "loss", "rank", "step", "val_accuracy", "val_loss",
                          "world_size"]),
        ("train_end",)]
    assert [row["steps"] for row in history] == [1, 2]
    assert history[-1]["accuracy"] > 0.8  # a linearly separable toy problem
    assert json.loads((tmp_path / "result" / "val_dict_list.json").read_text()) == history
    scripted = torch.jit.load(str(tmp_path / "result" / "model" / "model.pt"))
    x = toy_datasets()[1].tensors[0]
    torch.testing.assert_close(scripted(x), model.eval()(x))


def test_global_batch_gradient_matches_one_plain_sgd_step():
    model, optimizer = toy_model()
    plain, plain_opt = toy_model()
    fabric = FabricModel(model, toy_datasets, torch.nn.functional.cross_entropy, optimizer)
    fabric.train(1, 100, 1, shuffle=False, checkpoint_freq=0)  # one step: the whole set
    x, y = toy_datasets()[0].tensors
    plain_opt.zero_grad()
    torch.nn.functional.cross_entropy(plain(x), y).backward()
    plain_opt.step()
    for a, b in zip(model.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b)


def test_scale_lr_scales_the_step_not_the_optimizers_setting():
    model, optimizer = toy_model()
    plain, plain_opt = toy_model()
    fabric = FabricModel(model, toy_datasets, torch.nn.functional.cross_entropy, optimizer)
    # batch 100 per device, 4 engines, world of 1: lr x 1/4 for the one step.
    fabric.train(1, 100, 4, scale_lr=True, shuffle=False, checkpoint_freq=0)
    assert optimizer.param_groups[0]["lr"] == 0.5
    for g in plain_opt.param_groups:
        g["lr"] = 0.125
    x, y = toy_datasets()[0].tensors
    torch.nn.functional.cross_entropy(plain(x), y).backward()
    plain_opt.step()
    for a, b in zip(model.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0, "batch_size": 4}, "epochs must be an int >= 1"),
    ({"epochs": 1, "batch_size": 4, "engines_number": 0}, "engines_number must be a positive"),
    ({"epochs": 1, "batch_size": 4, "validation_freq": 0}, "validation_freq must be"),
    ({"epochs": 1, "batch_size": 4, "scale_lr": True, "global_batch_size": 8},
     "cannot be combined with global_batch_size"),
])
def test_bad_arguments_name_the_field(kwargs, message):
    model, optimizer = toy_model()
    fabric = FabricModel(model, toy_datasets, torch.nn.functional.cross_entropy, optimizer)
    with pytest.raises(ValueError, match=message):
        fabric.train(**kwargs)


def test_datasets_function_must_return_two_map_style_datasets():
    model, optimizer = toy_model()
    fabric = FabricModel(model, lambda: [1, 2, 3], torch.nn.functional.cross_entropy,
                         optimizer)
    with pytest.raises(ValueError, match=r"must return \(train_dataset, test_dataset\)"):
        fabric.train(1, 4)


# ---- the example, in processes ----------------------------------------------------------

EXAMPLE_ARGS = ["--train-subset", "3000", "--test-subset", "500", "--epochs", "2",
                "--batch-size", "32", "--max-workers", "2", "--log-every", "5"]


def example_env(tmp_path, name: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KILN_") and k not in ("RESULT_DIR", "LOG_DIR", "SUBID",
                                                      "CHECKPOINT_DIR", "DATA_DIR")}
    env.update(PYTHONPATH=PYTHON_DIR, KILN_SLOTS="1", RESULT_DIR=str(tmp_path / name / "result"),
               LOG_DIR=str(tmp_path / name / "log"),
               CHECKPOINT_DIR=str(tmp_path / name / "checkpoint"))
    env.update(extra)
    return env


def history_of(tmp_path, name: str) -> list:
    return json.loads((tmp_path / name / "result" / "val_dict_list.json").read_text())


@needs_data
def test_the_example_runs_bare_and_resumes_from_its_checkpoint(tmp_path, server: RecordingServer):
    env = example_env(tmp_path, "bare", KILN_MASTER=server.url, KILN_JOB_ID="5", KILN_TOKEN="t")
    first = subprocess.run([WORKLOAD_PYTHON, EXAMPLE, *EXAMPLE_ARGS, "--epochs", "1"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "generation 1" not in first.stdout  # a local run forms no group
    assert (tmp_path / "bare" / "checkpoint" / "elastic-checkpoint.pt").exists()
    second = subprocess.run([WORKLOAD_PYTHON, EXAMPLE, *EXAMPLE_ARGS, "--epochs", "2"],
                            env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resumed from checkpoint" in second.stdout
    assert "at step 47 (epoch 2, 0% done)" in second.stdout
    assert [row["steps"] for row in history_of(tmp_path, "bare")] == [1, 2]
    lines = [json.loads(l) for l in
             (tmp_path / "bare" / "log" / "evaluation-metrics.txt").read_text().splitlines()]
    assert [l["etimes"]["iteration"]["value"] for l in lines if l["grouplabel"] == "test"] \
        == ["1", "2"]
    test_reports = [r for r in server.stored_reports() if r["group"] == "test"]
    assert [r["step"] for r in test_reports] == [1, 2]
    assert set(test_reports[0]["metrics"]) == {"loss", "accuracy"}


def train_reports_at_least(master: FakeMaster, step: int) -> bool:
    with master.cond:
        return any(r["group"] == "train" and r["step"] >= step for r in master.reports)


def wait_until(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@needs_data
def test_killing_an_example_worker_mid_epoch_keeps_the_training_of_an_undisturbed_run(
        tmp_path):
    undisturbed = subprocess.run([WORKLOAD_PYTHON, EXAMPLE, *EXAMPLE_ARGS],
                                 env=example_env(tmp_path, "undisturbed"), cwd=tmp_path,
                                 capture_output=True, text=True, timeout=300)
    assert undisturbed.returncode == 0, undisturbed.stdout + undisturbed.stderr

    master = FakeMaster(first_size=2)
    procs = {}
    try:
        for task in ("51", "52"):
            env = example_env(tmp_path, task, KILN_ELASTIC="1", KILN_MASTER=master.url,
                              KILN_JOB_ID="1", KILN_TASK_ID=task, KILN_MAX_WORKERS="2")
            procs[task] = subprocess.Popen(
                [WORKLOAD_PYTHON, EXAMPLE, *EXAMPLE_ARGS, "--step-delay-ms", "30"], env=env,
                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_until(lambda: train_reports_at_least(master, 20))  # mid-epoch 1 (47 steps)
        victim = master.history[0]["members"][1]
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait()
        master.drop(victim)  # the agent's report
        survivor = next(t for t in procs if t != victim)
        out, _ = procs[survivor].communicate(timeout=300)
        assert procs[survivor].returncode == 0, out
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        master.close()
    assert [h["members"] for h in master.history] == [master.history[0]["members"], [survivor]]
    assert "2 generation(s) seen by this worker" in out
    got, expected = history_of(tmp_path, survivor), history_of(tmp_path, "undisturbed")
    assert [r["steps"] for r in got] == [1, 2]
    for g, e in zip(got, expected):
        assert abs(g["accuracy"] - e["accuracy"]) <= 0.01, (got, expected)
