"""Real training on real data through Kiln: the PyTorch example and Kiln's LibTorch
trainer, each on a Fashion-MNIST subset so the test stays short."""

import os

import pytest

from conftest import BIN, PYTHON, ROOT


def series(client, job_id):
    return {(s["name"], s["group"]): s["points"] for s in client.metrics(job_id)}


def test_the_pytorch_example_trains_and_reports_through_both_paths(client):
    job = client.submit([PYTHON, "train.py", "--epochs", "1", "--train-limit", "3000",
                         "--test-limit", "1000"], package=str(ROOT / "examples" / "fashion_mnist"),
                        slots=2)
    done = client.wait_state(job["id"], ("FINISHED", "FAILED"), timeout=300)
    assert done["state"] == "FINISHED", [l["text"] for l in client.all_logs(job["id"])][-20:]
    s = series(client, job["id"])
    accuracy = s[("accuracy", "test")]
    assert accuracy[-1]["value"] > 0.6
    assert ("loss", "train") in s


@pytest.mark.skipif(not (BIN / "kiln-train").exists(), reason="built without LibTorch")
def test_kiln_train_runs_as_a_workload(client):
    job = client.submit([str(BIN / "kiln-train"), "--epochs", "1", "--train-limit", "3000",
                         "--test-limit", "1000"], slots=2)
    done = client.wait_state(job["id"], ("FINISHED", "FAILED"), timeout=300)
    assert done["state"] == "FINISHED", [l["text"] for l in client.all_logs(job["id"])][-20:]
    s = series(client, job["id"])
    assert s[("accuracy", "test")][-1]["value"] > 0.6
    assert any("epoch 1" in l["text"] for l in client.all_logs(job["id"]))
