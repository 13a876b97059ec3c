#!/usr/bin/python3
"""The anchor workload: plain PyTorch DDP over gloo, as a torchrun user writes it.

Reads its rank and world from torchrun's environment (``init_process_group("gloo")`` on
``env://``), wraps the MLP of ``workload.py`` in ``DistributedDataParallel`` and trains
with a constant global batch (each of W ranks takes 1/W of it). For elastic runs it does
what torchrun's documentation asks of users: rank 0 saves a checkpoint (model, optimizer,
step) every ``--ckpt-every`` steps, and every (re)started worker resumes from it, since
torchrun restarts all workers on any membership change.

    torchrun ... ddp_train.py --ckpt-dir D --ckpt-every 50 --progress-dir P   # elastic
    torchrun --standalone --nproc_per_node=2 ... ddp_train.py --steady 200:1000  # DDP
"""

from __future__ import annotations

import time

STARTED = time.time()  # before the heavy imports: the process's start, give or take 20 ms

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from workload import (ProgressLog, StepBatches, SteadyTimer, load_train,  # noqa: E402
                      make_model_and_optimizer, threads_line)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--global-batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=0,
                   help="stop after this many steps in all (0: train until killed)")
    p.add_argument("--ckpt-dir", default="", help="checkpoint folder (empty: none)")
    p.add_argument("--ckpt-every", type=int, default=50)
    p.add_argument("--progress-dir", default="",
                   help="write a timestamped line per completed step there")
    p.add_argument("--steady", default="",
                   help="WARMUP:COUNT: time COUNT steps after WARMUP, print ms/step, exit")
    p.add_argument("--train-limit", type=int, default=0)
    args = p.parse_args()
    if args.global_batch < 2 or args.ckpt_every < 1:
        p.error("--global-batch must be >= 2 and --ckpt-every >= 1")
    return args


def save_checkpoint(path: str, model: torch.nn.Module, opt: torch.optim.Optimizer,
                    step: int) -> None:
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step},
               tmp)
    os.replace(tmp, path)  # a kill mid-save leaves the previous checkpoint whole


def main() -> None:
    args = parse_args()
    log = ProgressLog(args.progress_dir, steps=not args.steady)
    log.event("started", at=STARTED)
    log.event(f"imported {threads_line()}")
    x, y = load_train(args.train_limit)
    batches = StepBatches(len(x), args.global_batch)
    model, opt = make_model_and_optimizer()
    log.event("loaded")  # data and model ready; joining the group comes next
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    # torchrun restarts every worker on a membership change and counts the restarts.
    generation = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    step = 0
    ckpt = os.path.join(args.ckpt_dir, "checkpoint.pt") if args.ckpt_dir else ""
    if ckpt:
        os.makedirs(args.ckpt_dir, exist_ok=True)
    if ckpt and os.path.exists(ckpt):
        state = torch.load(ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
    ddp = DistributedDataParallel(model)  # broadcasts rank 0's weights to all ranks
    log.event(f"ready step={step} rank={rank} world={world}")

    timer = None
    if args.steady:
        warmup, count = (int(v) for v in args.steady.split(":"))
        timer = SteadyTimer(warmup, count)
        args.steps = step + warmup + count
    local = 0
    while args.steps == 0 or step < args.steps:
        if timer:
            timer.before_step(local)
        idx = batches.indices(step, rank, world)
        opt.zero_grad(set_to_none=True)
        F.nll_loss(ddp(x[idx]), y[idx]).backward()
        opt.step()
        step += 1
        local += 1
        log.step(step, rank, world, generation)
        if ckpt and rank == 0 and step % args.ckpt_every == 0:
            save_checkpoint(ckpt, model, opt, step)
    if timer:
        timer.before_step(local)
        print(f"rank {rank} world {world} {timer.report()}", flush=True)
        log.event(f"rank {rank} world {world} {timer.report()}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
