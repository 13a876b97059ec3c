#!/usr/bin/env python3
"""Elastic Fashion-MNIST: the same training on however many workers Kiln gives the job.

Written against `kiln.elastic.FabricModel` (WMLA's EDT API): no topology code. Submitted
with ``kiln run --workers 1:2``, each worker process runs this script; workers that die
or are added mid-run change the group without restarting the others, and the global
batch stays the same, so the result does not depend on the disturbances. Runs bare as a
single process too: ``/usr/bin/python3 train_elastic.py --train-subset 6000``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from typing import Any, Optional

# OpenBLAS reads its thread count once, at load: pin it before torch is imported (one
# worker per slot; see ../train.py for why passive OpenMP waits matter on shared cores).
_THREADS = os.environ.get("KILN_SLOTS") or "1"
os.environ.setdefault("OMP_NUM_THREADS", _THREADS)
os.environ.setdefault("OPENBLAS_NUM_THREADS", _THREADS)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import kiln
except ImportError:  # run from a source checkout without PYTHONPATH
    sys.path.insert(0, os.path.join(_HERE, "..", "..", "..", "python"))
    import kiln
from kiln.elastic import Callback, FabricModel

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530  # of the training pixels scaled to [0, 1]


class MLP(nn.Module):
    """784 -> hidden -> 10. Input [N, 1, 28, 28] in [0, 1]; output log-probabilities."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mean, self.std = MEAN, STD
        self.fc1 = nn.Linear(28 * 28, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.reshape(x.shape[0], 28 * 28) - self.mean) / self.std
        return F.log_softmax(self.fc2(F.relu(self.fc1(x))), dim=1)


class CNN(nn.Module):
    """Two conv layers and an MLP head; same contract as `MLP`."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mean, self.std = MEAN, STD
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.reshape(x.shape[0], 1, 28, 28) - self.mean) / self.std
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.log_softmax(self.fc2(F.relu(self.fc1(x.flatten(1)))), dim=1)


def read_idx(path: str, limit: int = 0) -> np.ndarray:
    """Reads a gzipped (or plain) unsigned-byte IDX file into an array of its shape; with
    ``limit`` > 0 only the first ``limit`` items (and only their bytes are decompressed:
    a small subset starts a worker faster)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:3] != b"\x00\x00\x08":
            raise ValueError(f"{path}: not an unsigned-byte IDX file")
        ndim = head[3]
        dims = f.read(4 * ndim)
        shape = [int.from_bytes(dims[4 * i:4 * i + 4], "big") for i in range(ndim)]
        if limit > 0:
            shape[0] = min(shape[0], limit)
        data = f.read(int(np.prod(shape)))
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def load_split(data_dir: str, split: str, limit: int) -> torch.utils.data.TensorDataset:
    """Fashion-MNIST ``split`` ("train" / "t10k") as a TensorDataset of
    (images [N, 1, 28, 28] float32 in [0, 1], labels [N] int64); the first ``limit``."""
    paths = []
    for stem in (f"{split}-images-idx3-ubyte", f"{split}-labels-idx1-ubyte"):
        found = [os.path.join(data_dir, stem + ext) for ext in (".gz", "")
                 if os.path.exists(os.path.join(data_dir, stem + ext))]
        if not found:
            sys.exit(f"{stem}[.gz] not found in {data_dir} (install dataset-fashion-mnist "
                     "or pass --data-dir)")
        paths.append(found[0])
    images, labels = read_idx(paths[0], limit), read_idx(paths[1], limit)
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return torch.utils.data.TensorDataset(x, y)


def choose_data_dir(flag: Optional[str]) -> str:
    """--data-dir, else $DATA_DIR when it holds the files, else the Debian package's."""
    if flag:
        return flag
    env = os.environ.get("DATA_DIR")
    if env and any(os.path.exists(os.path.join(env, "train-labels-idx1-ubyte" + ext))
                   for ext in (".gz", "")):
        return env
    return DEFAULT_DATA_DIR


class StepDelay(Callback):
    """Sleeps after every step (while ``while_exists`` exists, if given): a test knob that
    stretches a short run so workers can be killed or added mid-epoch, then lets it
    finish at full speed."""

    def __init__(self, delay_ms: float, while_exists: Optional[str] = None) -> None:
        self.delay_s = delay_ms / 1000.0
        self.while_exists = while_exists

    def on_batch_end(self, step: int, logs: Optional[dict[str, Any]] = None) -> None:
        if self.while_exists is None or os.path.exists(self.while_exists):
            time.sleep(self.delay_s)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    cfg = kiln.config()  # HPO values, if this runs as a trial; flags win
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=int(cfg.get("epochs", 3)))
    p.add_argument("--batch-size", type=int, default=int(cfg.get("batch_size", 64)),
                   help="samples per worker per step at the most workers (64)")
    p.add_argument("--max-workers", type=int, default=None,
                   help="the most workers (default: $KILN_MAX_WORKERS, else 1); the "
                        "global batch is batch-size x max-workers")
    p.add_argument("--global-batch-size", type=int, default=None,
                   help="samples per step over all workers (overrides the above)")
    p.add_argument("--scale-lr", action="store_true",
                   help="keep batch-size per worker and scale the learning rate with "
                        "the number of workers instead of keeping the global batch")
    p.add_argument("--lr", type=float, default=float(cfg.get("lr", 0.02)))
    p.add_argument("--momentum", type=float, default=float(cfg.get("momentum", 0.9)))
    p.add_argument("--hidden", type=int, default=int(cfg.get("hidden", 256)))
    p.add_argument("--model", choices=["mlp", "cnn"], default=cfg.get("model", "mlp"))
    p.add_argument("--train-subset", type=int, default=0,
                   help="use the first N training images (0: all 60000)")
    p.add_argument("--test-subset", type=int, default=0,
                   help="use the first N test images (0: all 10000)")
    p.add_argument("--log-every", type=int, default=100,
                   help="steps between training-loss reports (100)")
    p.add_argument("--checkpoint-freq", type=int, default=1,
                   help="epochs between checkpoints in $CHECKPOINT_DIR (0: none)")
    p.add_argument("--data-dir", default=None,
                   help=f"folder of the IDX files (default: $DATA_DIR if it has them, "
                        f"else {DEFAULT_DATA_DIR})")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the initial weights and the data order")
    p.add_argument("--step-delay-ms", type=float, default=0.0,
                   help="sleep after each step (a test knob)")
    p.add_argument("--delay-while-exists", default=None, metavar="PATH",
                   help="apply --step-delay-ms only while PATH exists (a test knob)")
    args = p.parse_args(argv)
    for name in ("epochs", "batch_size", "hidden", "log_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)  # same initial weights on every worker
    data_dir = choose_data_dir(args.data_dir)

    def datasets() -> tuple[Any, Any]:
        return (load_split(data_dir, "train", args.train_subset),
                load_split(data_dir, "t10k", args.test_subset))

    model = MLP(args.hidden) if args.model == "mlp" else CNN(args.hidden)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    callbacks = ([StepDelay(args.step_delay_ms, args.delay_while_exists)]
                 if args.step_delay_ms > 0 else [])
    fabric = FabricModel(model, datasets, F.nll_loss, optimizer, user_callback=callbacks,
                         seed=args.seed)
    history = fabric.train(args.epochs, args.batch_size, args.max_workers,
                           global_batch_size=args.global_batch_size, scale_lr=args.scale_lr,
                           checkpoint_freq=args.checkpoint_freq, log_every=args.log_every)
    if history and fabric.runtime is not None and fabric.runtime.is_reporter:
        print(f"final test_accuracy {history[-1].get('accuracy', float('nan')):.4f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
