"""Finding and stopping the kiln-serve replica processes of one test's kilnd.

Replicas outlive kilnd by design (they are re-attached at its next start), so a test must
both stop its own at the end and never mistake another test's leftover for its own: job
ids restart at 1 with every fresh data dir. A replica belongs to a master when its
working directory is inside that master's data dir (its local agent's task folders);
the port in KILN_MASTER would not do, as a restarted kilnd may listen on another one.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Iterator

import pytest

from conftest import Master, wait_for
from elastic_util import live_processes

# The small model both serving test files deploy: 4 features in, 3 out.
SIGNATURE = {"inputs": [{"name": "x", "dtype": "float32", "shape": [4]}],
             "outputs": [{"name": "y", "dtype": "float32", "shape": [3]}]}
READY_TIMEOUT = 120


def affine(seed: int = 7, width: int = 4):
    """tanh(Linear(width, 3)) with weights from `seed`; width 5 cannot take SIGNATURE."""
    import torch

    class Affine(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(seed)
            self.fc = torch.nn.Linear(width, 3)

        def forward(self, x):
            return torch.tanh(self.fc(x))

    return Affine().eval()


def save(tmp_path: Path, name: str, module) -> Path:
    """Saves `module` as TorchScript under tmp_path; returns the file."""
    import torch
    path = tmp_path / f"{name}.pt"
    torch.jit.save(torch.jit.script(module), str(path))
    return path


def close(a: list, b: list) -> bool:
    import torch
    return torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)


@pytest.fixture
def serving_master(tmp_path):
    """A kilnd with room for two replicas plus the one a rolling update starts first."""
    m = Master(tmp_path / "master", slots=4,
               env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}).start()
    yield m
    m.stop()
    kill_replicas(m)


def replicas_of(master: Master) -> Iterator[tuple[int, dict[bytes, bytes]]]:
    """(pid, environment) of each live kiln-serve started by `master`'s agent."""
    root = Path(master.data_dir).resolve()
    for pid, argv, env in live_processes():
        if not (argv and argv[0].endswith(b"kiln-serve")):
            continue
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue  # gone meanwhile
        if cwd == root or root in cwd.parents:
            yield pid, env


def replica_pid(master: Master, job_id: int) -> int:
    """The pid of replica job `job_id`'s kiln-serve (waits for it to be running)."""
    def find():
        for pid, env in replicas_of(master):
            if env.get(b"KILN_JOB_ID") == str(job_id).encode():
                return pid
        return None
    return wait_for(find, timeout=30, what=f"replica job {job_id}'s kiln-serve process")


def kill_replicas(master: Master) -> None:
    """SIGKILLs every replica `master` started (after the master has stopped)."""
    for pid, _ in replicas_of(master):
        os.kill(pid, signal.SIGKILL)
