"""Smoke tests of examples/fashion_mnist/train.py: real (small) training, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from conftest import PYTHON_DIR, REPO_ROOT, WORKLOAD_PYTHON, RecordingServer

TRAIN_PY = os.path.join(REPO_ROOT, "examples", "fashion_mnist", "train.py")
DATA = "/usr/share/datasets/fashion-mnist"

pytestmark = pytest.mark.skipif(
    not os.path.exists(os.path.join(DATA, "train-images-idx3-ubyte.gz")),
    reason="Fashion-MNIST is not installed")


def workload_env(tmp_path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KILN_") and k not in ("RESULT_DIR", "LOG_DIR", "SUBID",
                                                      "CHECKPOINT_DIR", "DATA_DIR")}
    env.update(PYTHONPATH=PYTHON_DIR, KILN_SLOTS="1", RESULT_DIR=str(tmp_path / "result"),
               LOG_DIR=str(tmp_path / "log"))
    env.update(extra)
    return env


def test_small_run_writes_every_output(tmp_path, server: RecordingServer):
    env = workload_env(tmp_path, KILN_MASTER=server.url, KILN_JOB_ID="3",
                       KILN_TOKEN="t", TRAINING_ID="training-3")
    done = subprocess.run(
        [WORKLOAD_PYTHON, TRAIN_PY, "--train-limit", "2000", "--test-limit", "500",
         "--epochs", "1"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "epoch 1/1 batch 32/32 loss" in done.stdout
    assert "epoch 1 test_loss" in done.stdout

    lines = [json.loads(l) for l in
             (tmp_path / "log" / "evaluation-metrics.txt").read_text().splitlines()]
    assert {l["grouplabel"] for l in lines} == {"train", "test"}
    [test_line] = [l for l in lines if l["grouplabel"] == "test"]
    assert test_line["meta"]["training_id"] == "training-3"
    assert test_line["etimes"]["iteration"] == {"type": 2, "value": "1"}
    assert set(test_line["values"]) == {"loss", "accuracy"}
    assert test_line["values"]["accuracy"]["type"] == 3

    rows = json.loads((tmp_path / "result" / "val_dict_list.json").read_text())
    assert [r["steps"] for r in rows] == [1]
    assert 0.5 < rows[0]["accuracy"] <= 1.0  # 2000 images are enough to beat chance

    # The native path got the same test metrics and the train loss.
    reports = server.stored_reports()
    test_reports = [r for r in reports if r["group"] == "test"]
    assert [r["step"] for r in test_reports] == [1]
    assert test_reports[0]["metrics"] == {"loss": rows[0]["loss"],
                                          "accuracy": rows[0]["accuracy"]}
    assert any(r["group"] == "train" for r in reports)

    import torch
    model = torch.jit.load(str(tmp_path / "result" / "model" / "model.pt"))
    out = model(torch.rand(2, 1, 28, 28))
    assert tuple(out.shape) == (2, 10)
    assert torch.allclose(out.exp().sum(1), torch.ones(2), atol=1e-4)  # log-probs
    signature = json.loads((tmp_path / "result" / "model" / "signature.json").read_text())
    assert signature == {  # per sample, as kiln.save_model writes it
        "inputs": [{"name": "image", "dtype": "float32", "shape": [1, 28, 28]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [10]}]}


def test_hyperparameters_come_from_config_json_and_flags_override(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"learning_rate": "0.02", "hidden": 32, "batch_size": 100, "epochs": 1}))
    done = subprocess.run(
        [WORKLOAD_PYTHON, TRAIN_PY, "--train-limit", "500", "--test-limit", "100",
         "--hidden", "16"], cwd=tmp_path, env=workload_env(tmp_path),
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("hyperparameters ")
    hp = json.loads(first[len("hyperparameters "):])
    assert hp == {"model": "mlp", "hidden": 16, "lr": 0.02, "momentum": 0.9,
                  "batch_size": 100, "epochs": 1}


def test_malformed_config_json_fails_clearly(tmp_path):
    (tmp_path / "config.json").write_text("{lr: 0.1}")
    done = subprocess.run([WORKLOAD_PYTHON, TRAIN_PY], cwd=tmp_path,
                          env=workload_env(tmp_path), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0
    assert "config.json is not valid JSON" in done.stderr


def test_sigterm_checkpoints_exits_143_and_the_next_run_resumes(tmp_path):
    env = workload_env(tmp_path, CHECKPOINT_DIR=str(tmp_path / "ckpt"))
    argv = [WORKLOAD_PYTHON, TRAIN_PY, "--train-limit", "25600", "--test-limit", "200",
            "--epochs", "1"]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if " batch 100/400 " in line:
                proc.send_signal(signal.SIGTERM)
                break
        rest = proc.stdout.read()
        assert proc.wait(timeout=120) == 143, "".join(seen) + rest
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "SIGTERM: checkpoint saved at epoch 1 batch" in rest
    assert (tmp_path / "ckpt" / "checkpoint.pt").exists()

    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resumed from" in done.stdout and "at epoch 1 batch 1" in done.stdout
    assert "batch 100/400" not in done.stdout  # did not start the epoch over
    assert "epoch 1/1 batch 400/400" in done.stdout
    assert (tmp_path / "result" / "model" / "model.pt").exists()
