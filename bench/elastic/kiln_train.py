#!/usr/bin/python3
"""The Kiln workload: the same training as ddp_train.py on Kiln's elastic runtime.

Submitted as an elastic job (``min_workers``/``max_workers``) to kilnd; each worker is a
task that meets the others at kilnd's rendezvous through `kiln.elastic.ElasticRuntime`
(the lower-level loop API: a `State` committed at every step boundary, or copied every
``--commit-every`` steps, and ``with runtime.step():`` rolling back and re-forming the
group when a peer dies). Same
model, same batches (workload.StepBatches keyed on the step), same global batch split
over the ranks, same progress lines as ddp_train.py; no disk checkpoint, since surviving
a peer's loss is the runtime's job.

    kiln run --workers 1:2 -- /usr/bin/python3 kiln_train.py --progress-dir P
"""

from __future__ import annotations

import time

STARTED = time.time()  # before the heavy imports: the process's start, give or take 20 ms

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
# The name the progress files carry: this worker's task id.
os.environ.setdefault("BENCH_NODE", f"task{os.environ.get('KILN_TASK_ID', 'local')}")
from workload import (ProgressLog, StepBatches, SteadyTimer, load_train,  # noqa: E402
                      make_model_and_optimizer, threads_line)

if importlib.util.find_spec("kiln") is None:  # Kiln puts it on PYTHONPATH; by hand:
    sys.path.insert(0, os.path.join(_HERE, "..", "..", "python"))
from kiln.elastic import ElasticRuntime, State  # noqa: E402

import torch.nn.functional as F  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--global-batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=0,
                   help="stop after this many steps in all (0: train until killed)")
    p.add_argument("--commit-every", type=int, default=0,
                   help="0: the runtime's default step-boundary commits (no copy); N: "
                        "copy the model and optimizer every N steps")
    p.add_argument("--progress-dir", default="",
                   help="write a timestamped line per completed step there")
    p.add_argument("--steady", default="",
                   help="WARMUP:COUNT: time COUNT steps after WARMUP, print ms/step, exit")
    p.add_argument("--train-limit", type=int, default=0)
    args = p.parse_args()
    if args.global_batch < 2 or args.commit_every < 0:
        p.error("--global-batch must be >= 2 and --commit-every >= 0")
    return args


def main() -> None:
    args = parse_args()
    log = ProgressLog(args.progress_dir, steps=not args.steady)
    log.event("started", at=STARTED)
    log.event(f"imported {threads_line()}")
    x, y = load_train(args.train_limit)
    batches = StepBatches(len(x), args.global_batch)
    model, opt = make_model_and_optimizer()
    log.event("loaded")  # data and model ready; joining the group comes next
    state = State(model, opt)
    runtime = ElasticRuntime(state, commit_every=args.commit_every or None)
    runtime.start()  # joins the first generation; a newcomer receives rank 0's state
    log.event(f"ready step={state.step} rank={runtime.rank} world={runtime.world_size}")

    timer = None
    if args.steady:
        warmup, count = (int(v) for v in args.steady.split(":"))
        timer = SteadyTimer(warmup, count)
        args.steps = state.step + warmup + count
    local = 0
    while args.steps == 0 or state.step < args.steps:
        if timer:
            timer.before_step(local)
        before = state.step
        with runtime.step():
            idx = batches.indices(state.step, runtime.rank, runtime.world_size)
            opt.zero_grad(set_to_none=True)
            # The runtime sums gradients over the ranks: a sum of per-sample losses over
            # the global batch size makes that sum the global-batch mean, as DDP's
            # average of per-rank means is on the anchor side.
            (F.nll_loss(model(x[idx]), y[idx], reduction="sum") /
             args.global_batch).backward()
            runtime.allreduce_gradients(model.parameters())
            opt.step()
        if state.step > before:  # else a peer failed: rolled back, regrouped, go again
            local += 1
            log.step(state.step, runtime.rank, runtime.world_size, runtime.generation)
    if timer:
        timer.before_step(local)
        report = f"rank {runtime.rank} world {runtime.world_size} {timer.report()}"
        print(report, flush=True)
        log.event(report)
    runtime.close()


if __name__ == "__main__":
    main()
