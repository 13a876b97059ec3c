#!/usr/bin/env python3
"""Fashion-MNIST demo workload for Kiln: an MLP or a small CNN trained with SGD+momentum.

Speaks the whole workload contract (ARCHITECTURE.md §3): hyperparameters from
``config.json`` (overridden by flags), metrics through the emetrics file, the native API
and ``$RESULT_DIR/val_dict_list.json``, a TorchScript model in ``$RESULT_DIR/model/``,
and a checkpoint in ``$CHECKPOINT_DIR`` on SIGTERM (exit 143) that a rescheduled run
resumes from. Runs bare too: ``/usr/bin/python3 train.py``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import sys
import time
from typing import Any, Optional

# Debian's torch does its matrix maths in OpenBLAS, which reads its thread count from
# the environment once, at load: pin it before torch is imported. Passive OpenMP waits:
# with libgomp's default spinning, OpenMP and OpenBLAS threads fight for the cores, and
# a step took 10x longer on a 2-core machine with any other load on it (measured).
_THREADS = os.environ.get("KILN_SLOTS") or str(os.cpu_count() or 1)
os.environ.setdefault("OMP_NUM_THREADS", _THREADS)
os.environ.setdefault("OPENBLAS_NUM_THREADS", _THREADS)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

_HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import kiln
except ImportError:  # run from a source checkout without PYTHONPATH
    sys.path.insert(0, os.path.join(_HERE, "..", "..", "python"))
    import kiln
from kiln.emetrics import EMetrics, write_val_dict_list

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
DEFAULTS: dict[str, Any] = {"epochs": 3, "lr": 0.01, "momentum": 0.9, "batch_size": 64,
                            "hidden": 256, "model": "mlp"}
# Fashion-MNIST pixel mean and standard deviation (of x / 255 over the training set).
MEAN, STD = 0.2860, 0.3530
TRAIN_LOG_EVERY = 100  # batches between train-loss reports and progress lines
EXIT_SIGTERM = 143


class MLP(nn.Module):
    """784 -> hidden -> 10. Input: [N, 1, 28, 28] pixels in [0, 1]; output: log-probs."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.mean, self.std = MEAN, STD  # attributes: TorchScript cannot read globals
        self.fc1 = nn.Linear(28 * 28, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.reshape(x.shape[0], 28 * 28) - self.mean) / self.std
        return F.log_softmax(self.fc2(F.relu(self.fc1(x))), dim=1)


class CNN(nn.Module):
    """Two conv layers and an MLP head. Same input/output contract as `MLP`."""

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
        x = F.relu(self.fc1(x.flatten(1)))
        return F.log_softmax(self.fc2(x), dim=1)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Reads hyperparameters: defaults < config.json < command-line flags."""
    cfg = kiln.config()
    from_cfg = {
        "epochs": cfg.get("epochs"),
        "lr": cfg.get("lr", cfg.get("learning_rate")),
        "momentum": cfg.get("momentum"),
        "batch_size": cfg.get("batch_size"),
        "hidden": cfg.get("hidden"),
        "model": cfg.get("model"),
    }
    # HPO values may arrive as strings (WMLA delivers Hyperband's resource as str).
    types = {"epochs": int, "lr": float, "momentum": float, "batch_size": int,
             "hidden": int, "model": str}
    base = dict(DEFAULTS)
    for key, value in from_cfg.items():
        if value is not None:
            try:
                base[key] = types[key](float(value)) if types[key] is int else \
                    types[key](value)
            except (TypeError, ValueError):
                sys.exit(f"config.json: {key}={value!r} is not a valid "
                         f"{types[key].__name__}")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=base["epochs"])
    p.add_argument("--lr", type=float, default=base["lr"])
    p.add_argument("--momentum", type=float, default=base["momentum"])
    p.add_argument("--batch-size", type=int, default=base["batch_size"])
    p.add_argument("--hidden", type=int, default=base["hidden"])
    p.add_argument("--model", choices=["mlp", "cnn"], default=base["model"])
    p.add_argument("--train-limit", type=int, default=0,
                   help="use only the first N training images (0: all 60000)")
    p.add_argument("--test-limit", type=int, default=0,
                   help="use only the first N test images (0: all 10000)")
    p.add_argument("--data-dir", default=None,
                   help=f"folder with the IDX files (default: $DATA_DIR if it has them, "
                        f"else {DEFAULT_DATA_DIR})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where to train; auto: CUDA when a GPU is visible (a job submitted "
                        "with gpus >= 1), else the CPU")
    args = p.parse_args(argv)
    if args.model not in ("mlp", "cnn"):
        p.error(f"model must be mlp or cnn, got {args.model!r}")
    for name in ("epochs", "batch_size", "hidden"):
        if getattr(args, name) < 1:
            p.error(f"{name} must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU is visible to this process (submit the job "
                "with gpus >= 1, or use --device cpu)")
    return args


def pick_device(choice: str) -> torch.device:
    """The device for ``--device``: ``auto`` is CUDA when this process sees a GPU."""
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def _read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (gzipped or not) into a uint8 array of its declared shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(data_dir: str, stem: str) -> Optional[str]:
    for name in (stem + ".gz", stem):
        if os.path.exists(os.path.join(data_dir, name)):
            return os.path.join(data_dir, name)
    return None


def load_split(data_dir: str, split: str, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (images [N, 1, 28, 28] float32 in [0, 1], labels [N] int64)."""
    images_path = _find(data_dir, f"{split}-images-idx3-ubyte")
    labels_path = _find(data_dir, f"{split}-labels-idx1-ubyte")
    if not images_path or not labels_path:
        sys.exit(f"Fashion-MNIST {split} files not found in {data_dir}")
    images = _read_idx(images_path)
    labels = _read_idx(labels_path)
    if limit > 0:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def choose_data_dir(flag: Optional[str]) -> str:
    if flag:
        return flag
    data_dir = os.environ.get("DATA_DIR")
    if data_dir and _find(data_dir, "train-images-idx3-ubyte"):
        return data_dir
    return DEFAULT_DATA_DIR


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Returns (mean NLL loss, accuracy in [0, 1]) over the whole set."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(x), 1000):
        out = model(x[i:i + 1000])
        loss_sum += F.nll_loss(out, y[i:i + 1000], reduction="sum").item()
        correct += int((out.argmax(1) == y[i:i + 1000]).sum().item())
    model.train()
    return loss_sum / len(x), correct / len(x)


def save_atomically(obj: Any, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_model(model: nn.Module, example: torch.Tensor, result_dir: str) -> str:
    """Saves TorchScript and its signature under ``result_dir/model/`` for the registry:
    input "image" float32 [1, 28, 28] per sample, output "logits" [10] (log-probs)."""
    return kiln.save_model(model, example[:1], path=os.path.join(result_dir, "model"),
                           input_names=["image"], output_names=["logits"])


class StopRequested:
    """Turns SIGTERM into a flag the training loop checks between batches."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("KILN_SLOTS", os.cpu_count() or 1)))
    torch.manual_seed(args.seed)
    stop = StopRequested()
    ctx = kiln.context()
    hparams = {"model": args.model, "hidden": args.hidden, "lr": args.lr,
               "momentum": args.momentum, "batch_size": args.batch_size,
               "epochs": args.epochs}
    print("hyperparameters " + json.dumps(hparams), flush=True)

    t0 = time.monotonic()
    data_dir = choose_data_dir(args.data_dir)
    train_x, train_y = load_split(data_dir, "train", args.train_limit)
    test_x, test_y = load_split(data_dir, "t10k", args.test_limit)
    print(f"data {len(train_x)} train / {len(test_x)} test images from {data_dir} "
          f"({time.monotonic() - t0:.1f} s)", flush=True)
    # The whole set fits on any GPU (Fashion-MNIST is 220 MB as float32): moved once.
    device = pick_device(args.device)
    train_x, train_y = train_x.to(device), train_y.to(device)
    test_x, test_y = test_x.to(device), test_y.to(device)
    print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})"
                                if device.type == "cuda" else ""), flush=True)

    model: nn.Module = MLP(args.hidden) if args.model == "mlp" else CNN(args.hidden)
    model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    batches = (len(train_x) + args.batch_size - 1) // args.batch_size

    # Resume state: where in which epoch, with that epoch's shuffle order.
    epoch, next_batch, global_step = 1, 0, 0
    order: Optional[torch.Tensor] = None
    history: list[dict[str, Any]] = []
    ckpt_path = (os.path.join(ctx.checkpoint_dir, "checkpoint.pt")
                 if ctx.checkpoint_dir else None)
    if ckpt_path and os.path.exists(ckpt_path):
        # map_location: a checkpoint written on a GPU resumes on a CPU and the other way.
        ckpt = torch.load(ckpt_path, map_location=device)
        # epochs may change (a multi-fidelity HPO promotes a trial to more epochs).
        same = {k: v for k, v in hparams.items() if k != "epochs"}
        theirs = {k: v for k, v in (ckpt.get("hparams") or {}).items() if k != "epochs"}
        if theirs != same or ckpt.get("train_size") != len(train_x):
            print(f"checkpoint {ckpt_path} is for other hyperparameters "
                  f"{ckpt.get('hparams')}; starting over", flush=True)
        else:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            epoch, next_batch = ckpt["epoch"], ckpt["next_batch"]
            global_step, order = ckpt["global_step"], ckpt["order"]
            history = ckpt["history"]
            torch.set_rng_state(ckpt["rng"].cpu())
            print(f"resumed from {ckpt_path} at epoch {epoch} batch {next_batch}",
                  flush=True)

    def checkpoint(epoch_: int, next_batch_: int, order_: Optional[torch.Tensor]) -> None:
        if ckpt_path:
            save_atomically({"hparams": hparams, "train_size": len(train_x),
                             "model": model.state_dict(),
                             "optimizer": optimizer.state_dict(), "epoch": epoch_,
                             "next_batch": next_batch_, "global_step": global_step,
                             "order": order_, "history": history,
                             "rng": torch.get_rng_state()}, ckpt_path)

    em = EMetrics.open(ctx.subid, write_val_dict_list=False)
    try:
        model.train()
        while epoch <= args.epochs:
            if order is None:
                order = torch.randperm(len(train_x))
            running, running_n = 0.0, 0
            for b in range(next_batch, batches):
                if stop.requested:
                    checkpoint(epoch, b, order)
                    print(f"SIGTERM: checkpoint saved at epoch {epoch} batch {b}"
                          if ckpt_path else "SIGTERM: no CHECKPOINT_DIR, exiting",
                          flush=True)
                    return EXIT_SIGTERM
                idx = order[b * args.batch_size:(b + 1) * args.batch_size].to(device)
                optimizer.zero_grad()
                loss = F.nll_loss(model(train_x[idx]), train_y[idx])
                loss.backward()
                optimizer.step()
                global_step += 1
                running += loss.item()
                running_n += 1
                if (b + 1) % TRAIN_LOG_EVERY == 0 or b + 1 == batches:
                    train_loss = running / running_n
                    running, running_n = 0.0, 0
                    print(f"epoch {epoch}/{args.epochs} batch {b + 1}/{batches} "
                          f"loss {train_loss:.3f}", flush=True)
                    em.record(EMetrics.TRAIN_GROUP, global_step, {"loss": train_loss})
                    kiln.report(global_step, {"loss": train_loss}, group="train")
            test_loss, test_acc = evaluate(model, test_x, test_y)
            print(f"epoch {epoch} test_loss {test_loss:.4f} test_accuracy {test_acc:.4f} "
                  f"({time.monotonic() - t0:.1f} s)", flush=True)
            em.record(EMetrics.TEST_GROUP, epoch, {"loss": test_loss, "accuracy": test_acc})
            kiln.report(epoch, {"loss": test_loss, "accuracy": test_acc}, group="test")
            history.append({"steps": epoch, "loss": test_loss, "accuracy": test_acc})
            if ctx.result_dir:
                write_val_dict_list(history, ctx.result_dir)
            epoch, next_batch, order = epoch + 1, 0, None
            checkpoint(epoch, 0, None)  # also survives SIGKILL / agent loss
    finally:
        em.close()

    if ctx.result_dir:
        print(f"model saved to {save_model(model, test_x, ctx.result_dir)}", flush=True)
    if not kiln.flush(timeout=30):
        print("warning: some metrics were not delivered to the Kiln master", flush=True)
    print(f"done in {time.monotonic() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
