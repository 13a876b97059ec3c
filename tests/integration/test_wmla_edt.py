"""WMLA's distributed frameworks through Kiln's execs, end to end (issue 4): a real kilnd
with its local agent, execs posted as WMLA clients post them (multipart `file`, the
dlicmd `args` in the query).

- `--exec-start edtPyTorch --numWorker 2`: a Fashion-MNIST script written the WMLA EDT
  way (the FABRIC_HOME sys.path line, `from fabric_model import FabricModel`,
  `from callbacks import Callback`, `getDatasets()` returning (train, test),
  `FabricModel(...).train(epochs, batch, numWorker * gpuPerWorker)`) runs as an elastic
  job of two workers to FINISHED;
- `--exec-start distPyTorch --numWorker 2`: a script doing one gloo all-reduce through
  env:// (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set by Kiln) runs to FINISHED;
- a hypersearch whose experiments are the EDT exec.

Both are submitted first and run side by side, so the module stays short.
"""

from __future__ import annotations

import io
import os
import tarfile
import urllib.parse

import pytest

from conftest import Master
from elastic_util import wait_value
from test_wmla import DL, Wmla

pytest.importorskip("torch")

DATA = "/usr/share/datasets/fashion-mnist"
pytestmark = pytest.mark.skipif(
    not os.path.exists(os.path.join(DATA, "train-images-idx3-ubyte.gz")),
    reason="Fashion-MNIST is not installed")

EDT_SCRIPT = r'''
import argparse, gzip, os, sys
# Two workers share the machine's cores: one thread each, set before torch loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
path = os.path.join(os.getenv("FABRIC_HOME"), "libs", "fabric.zip")  # WMLA 1.2.x
sys.path.insert(0, path)

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn, optim
from fabric_model import FabricModel
from callbacks import Callback

DATA_DIR = os.environ["DATA_DIR"]
parser = argparse.ArgumentParser()
parser.add_argument("--numWorker", type=int, default=1)
parser.add_argument("--gpuPerWorker", type=int, default=1)
parser.add_argument("--batchsize", type=int, default=32)
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--train-subset", type=int, default=2000)
args, _ = parser.parse_known_args()


def read_idx(name, limit):
    with gzip.open(os.path.join(DATA_DIR, name), "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)[:limit]


def split(prefix, limit):
    x = read_idx(f"{prefix}-images-idx3-ubyte.gz", limit).astype(np.float32) / 255.0
    y = read_idx(f"{prefix}-labels-idx1-ubyte.gz", limit).astype(np.int64)
    return torch.utils.data.TensorDataset(torch.from_numpy(x).reshape(-1, 784),
                                          torch.from_numpy(y))


def getDatasets():
    return (split("train", args.train_subset), split("t10k", 1000))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        return F.log_softmax(self.fc2(F.relu(self.fc1((x - 0.286) / 0.353))), dim=1)


class EpochLog(Callback):
    def on_epoch_end(self, epoch, logs=None):
        print(f"wmla-edt epoch {epoch} done on rank {logs['rank']} of "
              f"{logs['world_size']}", flush=True)


torch.manual_seed(0)
model = Net()
optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
edt_m = FabricModel(model, getDatasets, F.nll_loss, optimizer, user_callback=[EpochLog()])
edt_m.train(args.epochs, args.batchsize, args.numWorker * args.gpuPerWorker)
'''

ALLREDUCE_SCRIPT = r'''
import os
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch
import torch.distributed as dist

dist.init_process_group("gloo", init_method="env://")
rank, world = dist.get_rank(), dist.get_world_size()
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
print(f"allreduce rank {rank} of {world} sum {t.item():.0f}", flush=True)
assert t.item() == world * (world + 1) / 2
dist.destroy_process_group()
'''

EDT_ARGS = (f"--exec-start edtPyTorch --cs-datastore-meta type=fs,data_path={DATA} "
            "--numWorker 2 --model-main fashion_edt.py --model-dir fashion_edt "
            "--epochs 2 --train-subset 2000")
DIST_ARGS = "--exec-start distPyTorch --numWorker 2 --model-main allreduce.py"


def edt_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = EDT_SCRIPT.encode()
        info = tarfile.TarInfo("fashion_edt/fashion_edt.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    # Execs run `python3` from the agent's PATH (WMLA's contract): make it Debian's, which
    # has torch, wherever the shell running pytest puts another python3 first.
    path = "/usr/bin:" + os.environ.get("PATH", "")
    m = Master(tmp_path_factory.mktemp("wmla-edt") / "master", slots=4,
               env={"PATH": path}).start()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def wmla(master):
    return Wmla(master)


@pytest.fixture(scope="module")
def submitted(wmla) -> dict:
    """Both execs, posted before any test waits, so that they run side by side."""
    status, edt = wmla.post_form(f"{DL}/execs?args={urllib.parse.quote(EDT_ARGS)}", {},
                                 {"file": ("fashion_edt.modelDir.tar", edt_tar())})
    assert status == 200, edt
    status, dist = wmla.post_form(f"{DL}/execs?args={urllib.parse.quote(DIST_ARGS)}", {},
                                  {"file": ("allreduce.py", ALLREDUCE_SCRIPT.encode())})
    assert status == 200, dist
    return {"edt": edt, "dist": dist}


def wait_end(wmla, exec_id: str) -> dict:
    return wait_value(lambda: wmla.call("GET", f"{DL}/execs/{exec_id}")[1],
                      lambda j: j["state"] not in ("SUBMITTED", "RUNNING"),
                      f"exec {exec_id} to end", timeout=180)


def test_an_edt_pytorch_exec_trains_on_two_workers_to_finished(master, wmla, submitted):
    edt = submitted["edt"]
    assert edt["framework"] == "edtPyTorch" and edt["appName"] == "ElasticPyTorchTrain"
    assert edt["elastic"] is True and edt["numWorker"] == 2 and edt["args"] == EDT_ARGS
    done = wait_end(wmla, edt["id"])
    status, log = wmla.call("GET", f"{DL}/execs/{edt['id']}/log")
    assert status == 200
    assert done["state"] == "FINISHED", log[-4000:]
    assert done["elastic"] is True and done["numWorker"] == 2

    # The native record: an elastic job of 1 to 2 workers that trained with both.
    client = master.client()
    job = client.job(int(edt["id"]))
    assert job["workers"]["min"] == 1 and job["workers"]["max"] == 2, job["workers"]
    assert any(g["world_size"] == 2 for g in job["generations"]), job["generations"]
    assert len(job["tasks"]) >= 2
    assert all(t["state"] == "FINISHED" and t["exit_code"] == 0 for t in job["tasks"])
    for rank in (0, 1):
        assert f"wmla-edt epoch 1 done on rank {rank} of 2" in log, log[-4000:]
    # Rank 0 reported the test accuracy of both epochs; the MLP learned something.
    accuracy = {s["name"]: s["points"] for s in client.metrics(job["id"])
                if s["group"] == "test"}["accuracy"]
    assert sorted({p["step"] for p in accuracy}) == [1, 2]
    assert [p for p in accuracy if p["step"] == 2][-1]["value"] > 0.6


def test_a_dist_pytorch_exec_all_reduces_over_two_workers(master, wmla, submitted):
    dist = submitted["dist"]
    assert dist["framework"] == "distPyTorch" and dist["appName"] == "DistPyTorchTrain"
    assert dist["elastic"] is False and dist["numWorker"] == 2
    done = wait_end(wmla, dist["id"])
    status, log = wmla.call("GET", f"{DL}/execs/{dist['id']}/log")
    assert status == 200
    assert done["state"] == "FINISHED", log[-4000:]
    for rank in (0, 1):
        assert f"allreduce rank {rank} of 2 sum 3" in log, log
    job = master.client().job(int(dist["id"]))
    assert job["workers"]["min"] == 2 and job["workers"]["max"] == 2, job["workers"]
    assert [t["state"] for t in job["tasks"]] == ["FINISHED", "FINISHED"]
    # WMLA lists the exec, not its workers.
    status, listed = wmla.call("GET", f"{DL}/execs")
    ids = [e["id"] for e in listed]
    assert dist["id"] in ids and submitted["edt"]["id"] in ids
    assert not {str(t["id"]) for t in job["tasks"]} & set(ids)


def test_a_hypersearch_runs_its_experiments_as_edt_jobs(master, wmla, submitted):
    # WMLA lets an HPO task's experiments be EDT jobs (maxWorkers=2 x maxParalleJobNum).
    args = EDT_ARGS.replace("--epochs 2", "--epochs 1")
    data = {"hpoName": "edt-hpo", "modelSpec": {"args": args},
            "algoDef": {"algorithm": "Random", "maxRunTime": 10, "maxJobNum": 1,
                        "maxParalleJobNum": 1, "objectiveMetric": "loss",
                        "objective": "minimize"},
            "hyperParams": [{"name": "x", "type": "Range", "dataType": "DOUBLE",
                             "minDbVal": 0.0, "maxDbVal": 1.0}]}
    status, body = wmla.create(data, ("fashion_edt.modelDir.tar", edt_tar()))
    assert status == 200, body
    task = wmla.wait("edt-hpo", timeout=180)
    assert task["state"] == "FINISHED" and task["complete"] == 1, task
    [experiment] = task["experiments"]
    assert experiment["state"] == "FINISHED" and 0 < experiment["metricVal"] < 9999
    job = master.client().job(int(experiment["appId"]))
    assert job["workers"]["max"] == 2
    assert any(g["world_size"] == 2 for g in job["generations"]), job["generations"]


def test_frameworks_list_the_pytorch_distributed_ones_as_supported(wmla):
    status, frameworks = wmla.call("GET", f"{DL}/execs/frameworks")
    assert status == 200
    by_name = {f["name"]: f for f in frameworks}
    for name in ("distPyTorch", "edtPyTorch"):
        assert by_name[name]["supported"] is True and by_name[name]["maxWorkers"] == 1024
        assert by_name[name]["execMode"] == "distributed"
    assert by_name["PyTorch"]["maxWorkers"] == 1
    assert by_name["disttensorflow"]["supported"] is False


def test_bad_worker_options_are_refused_with_the_fix(wmla):
    def refused(args: str, expect: str) -> None:
        status, body = wmla.post_form(f"{DL}/execs?args={urllib.parse.quote(args)}", {},
                                      {"file": ("t.py", b"print(1)")})
        assert status == 400 and expect in body["error"]["message"], body

    refused("--exec-start PyTorch --numWorker 2 --model-main t.py",
            "--numWorker 2 needs a distributed framework: --exec-start distPyTorch")
    refused("--exec-start edtPyTorch --edt-options maxWorkers=2,syncMode=ASYNC "
            "--model-main t.py", "unknown option \"syncMode\"; Kiln knows: maxWorkers")
    refused("--exec-start disttensorflow --numWorker 2 --model-main t.py",
            "Kiln runs distributed PyTorch")
