"""What every elastic-benchmark workload shares: the model, the data, the step log.

The three workloads (``ddp_train.py`` under torchrun or as plain DDP, ``kiln_train.py``
under Kiln's elastic runtime) import this so that they train the same 784-256-10 MLP on
the same Fashion-MNIST batches and write the same per-step progress lines; only the
distributed machinery differs. Imports torch; stdlib + numpy + torch only.
"""

from __future__ import annotations

import gzip
import os
import time
from typing import Optional, TextIO

# OpenBLAS reads its thread count once, when torch loads it: pin before importing torch
# (stack.md: Debian's torch does its matrix maths in OpenBLAS, which ignores
# torch.set_num_threads). One thread per worker: two workers share the 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

DATA_DIR = "/usr/share/datasets/fashion-mnist"
# Fashion-MNIST pixel mean and standard deviation (of x / 255 over the training set).
MEAN, STD = 0.2860, 0.3530
HIDDEN = 256


class MLP(nn.Module):
    """784 -> 256 -> 10 on pixels in [0, 1]; returns log-probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.reshape(x.shape[0], 28 * 28) - MEAN) / STD
        return F.log_softmax(self.fc2(F.relu(self.fc1(x))), dim=1)


def make_model_and_optimizer(seed: int = 0, lr: float = 0.01,
                             momentum: float = 0.9) -> tuple[nn.Module, torch.optim.Optimizer]:
    """The same initial weights on every worker (seeded), SGD with momentum."""
    torch.manual_seed(seed)
    model = MLP()
    return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


def _read_idx(path: str) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:3] != b"\x00\x00\x08":
        raise SystemExit(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_train(limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST training split: (images [N, 784] float32 in [0, 1], labels [N])."""
    images = _read_idx(os.path.join(DATA_DIR, "train-images-idx3-ubyte.gz"))
    labels = _read_idx(os.path.join(DATA_DIR, "train-labels-idx1-ubyte.gz"))
    if limit > 0:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    return x, torch.from_numpy(labels.astype(np.int64))


class StepBatches:
    """The global batch of every step, as a pure function of the step number.

    Step s of epoch e = s // steps_per_epoch takes positions [k*G, (k+1)*G) of a
    permutation seeded by e; rank r of W takes its 1/W share of that global batch. A
    worker that resumes at any step (from a disk checkpoint or an in-memory commit)
    therefore sees exactly the batches an undisturbed run would, at any world size.
    """

    def __init__(self, n: int, global_batch: int, seed: int = 0) -> None:
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.steps_per_epoch = n // global_batch
        self._epoch = -1
        self._perm: Optional[torch.Tensor] = None

    def indices(self, step: int, rank: int, world: int) -> torch.Tensor:
        epoch, k = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            self._perm, self._epoch = torch.randperm(self.n, generator=g), epoch
        assert self._perm is not None
        batch = self._perm[k * self.global_batch:(k + 1) * self.global_batch]
        return batch.chunk(world)[rank] if world > 1 else batch


class ProgressLog:
    """One line per completed step, ``step N t=UNIX rank=R world=W gen=G``, flushed at once.

    Written to ``DIR/<node>-<pid>.log`` (the benchmark chooses DIR and names each
    launcher's workers by ``BENCH_NODE``), so the benchmark reads every process's steps
    with timestamps on one clock, and a killed process's last line is on disk. With no
    DIR it writes nothing; with ``steps=False`` only events (steady-state runs: no
    per-step I/O on either side).
    """

    def __init__(self, directory: Optional[str], steps: bool = True) -> None:
        self._file: Optional[TextIO] = None
        self._steps = steps
        if directory:
            os.makedirs(directory, exist_ok=True)
            node = os.environ.get("BENCH_NODE", "w")
            self._file = open(os.path.join(directory, f"{node}-{os.getpid()}.log"), "a")

    def event(self, text: str, at: Optional[float] = None) -> None:
        """Writes ``TEXT t=UNIX`` (now, or `at`)."""
        if self._file:
            self._file.write(f"{text} t={time.time() if at is None else at:.6f}\n")
            self._file.flush()

    def step(self, step: int, rank: int, world: int, generation: int) -> None:
        """`step` is the number of optimizer steps done (the global step, all ranks);
        `generation` counts membership changes (torchrun: its restart count)."""
        if self._file and self._steps:
            self._file.write(f"step {step} t={time.time():.6f} rank={rank} world={world} "
                             f"gen={generation}\n")
            self._file.flush()


def threads_line() -> str:
    """The thread settings this process runs with (logged: both sides must match)."""
    return (f"torch_threads={torch.get_num_threads()} "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} "
            f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")


class SteadyTimer:
    """Times steps [warmup, warmup + count) of this process; reports wall and CPU ms per
    step. CPU time (all threads of the process: gloo's included) is what a step costs
    whatever else runs on the machine; wall time on shared cores also counts waiting."""

    def __init__(self, warmup: int, count: int) -> None:
        self.warmup, self.count = warmup, count
        self.t0: Optional[tuple[float, float]] = None
        self.t1: Optional[tuple[float, float]] = None

    def before_step(self, local_step: int) -> None:
        if local_step == self.warmup:
            self.t0 = (time.perf_counter(), time.process_time())
        if local_step == self.warmup + self.count:
            self.t1 = (time.perf_counter(), time.process_time())

    def report(self) -> str:
        if self.t0 is None or self.t1 is None:
            return "steady: not enough steps timed"
        wall = self.t1[0] - self.t0[0]
        cpu = self.t1[1] - self.t0[1]
        return (f"steady: {self.count} steps in {wall:.3f} s = "
                f"{wall * 1000 / self.count:.4f} ms/step, cpu {cpu * 1000 / self.count:.4f} "
                f"ms/step")
