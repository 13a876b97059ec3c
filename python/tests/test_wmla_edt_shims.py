"""Tests of the WMLA EDT shims: ``fabric_model``, ``pyedt.fabric_model`` and ``callbacks``
are Kiln's `kiln.elastic` classes, and a script written the WMLA way imports them from
``python/`` alone (as the agent's PYTHONPATH gives it) and trains."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest

from conftest import PYTHON_DIR, WORKLOAD_PYTHON

pytest.importorskip("torch")

import kiln.elastic  # noqa: E402


def test_fabric_model_is_kilns():
    import fabric_model
    assert fabric_model.FabricModel is kiln.elastic.FabricModel
    assert fabric_model.Callback is kiln.elastic.Callback
    assert fabric_model.LoggerCallback is kiln.elastic.LoggerCallback


def test_pyedt_fabric_model_is_kilns():
    from pyedt.fabric_model import FabricModel
    import pyedt
    assert FabricModel is kiln.elastic.FabricModel
    assert os.path.dirname(pyedt.__file__) == os.path.join(PYTHON_DIR, "pyedt")


def test_callbacks_are_kilns():
    from callbacks import Callback, LoggerCallback
    assert Callback is kiln.elastic.Callback
    assert LoggerCallback is kiln.elastic.LoggerCallback
    import callbacks
    assert sorted(callbacks.__all__) == ["Callback", "LoggerCallback"]


# A WMLA 1.2.x-style EDT script (wmla-api.md §2.2): the FABRIC_HOME sys.path line, the
# top-level imports, getDatasets() returning (train, test), a user Callback and a
# LoggerCallback subclass as the driver logger, train(epochs, batch, numWorker).
WMLA_SCRIPT = textwrap.dedent('''
    import argparse, json, os, sys
    path = os.path.join(os.getenv("FABRIC_HOME"), "libs", "fabric.zip")
    sys.path.insert(0, path)
    import torch
    import torch.nn.functional as F
    from torch import nn, optim
    from fabric_model import FabricModel
    from callbacks import Callback, LoggerCallback
    from pyedt.fabric_model import FabricModel as FabricModel4x
    assert FabricModel4x is FabricModel

    parser = argparse.ArgumentParser()
    parser.add_argument("--numWorker", type=int, default=1)
    parser.add_argument("--gpuPerWorker", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batchsize", type=int, default=16)
    args, _ = parser.parse_known_args()

    def getDatasets():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(256, 4, generator=g)
        y = (x[:, 0] > 0).long()
        return (torch.utils.data.TensorDataset(x, y),
                torch.utils.data.TensorDataset(x[:64], y[:64]))

    seen = []

    class EpochCallback(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(("epoch", epoch, self.params["epochs"]))

    class DriverLogger(LoggerCallback):
        def log_test_metrics(self, metrics, iteration, epoch):
            seen.append(("test", epoch, round(metrics["accuracy"], 3)))

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 2), nn.LogSoftmax(dim=1))
    optimizer = optim.SGD(model.parameters(), lr=0.5)
    edt_m = FabricModel(model, getDatasets, F.nll_loss, optimizer,
                        user_callback=[EpochCallback()], driver_logger=DriverLogger())
    history = edt_m.train(args.epochs, args.batchsize, args.numWorker * args.gpuPerWorker)
    print(json.dumps({"seen": seen, "history": history}))
''')


def test_a_wmla_style_script_imports_the_shims_and_trains(tmp_path):
    (tmp_path / "pytorch_mnist_EDT.py").write_text(WMLA_SCRIPT)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KILN_") and k not in ("RESULT_DIR", "LOG_DIR",
                                                       "CHECKPOINT_DIR", "WORLD_SIZE")}
    # What an edtPyTorch exec's worker gets: python/ on PYTHONPATH and FABRIC_HOME="".
    env.update(PYTHONPATH=PYTHON_DIR, FABRIC_HOME="", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([WORKLOAD_PYTHON, "pytorch_mnist_EDT.py", "--numWorker", "1",
                           "--epochs", "2"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert [s for s in out["seen"] if s[0] == "epoch"] == [["epoch", 0, 2], ["epoch", 1, 2]]
    tests = [s for s in out["seen"] if s[0] == "test"]
    assert [s[1] for s in tests] == [1, 2]
    assert tests[-1][2] > 0.9  # y = x0 > 0 is linearly separable
    assert [row["steps"] for row in out["history"]] == [1, 2]
