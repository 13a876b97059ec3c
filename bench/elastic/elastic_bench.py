#!/usr/bin/python3
"""Elastic training benchmarks: Kiln's elastic runtime vs torchrun / plain DDP.

Issue 4's three figures, each measured side by side in the same run on the same model
(Fashion-MNIST 784-256-10 MLP, global batch 64, gloo on CPU, one thread per worker):

  recovery  kill -9 one of two workers: seconds from the kill to the survivors' next
            completed step, and steps of work lost. Anchor: torchrun --nnodes=1:2, two
            launchers on loopback, a DDP script that checkpoints every 50 steps and
            resumes, with default and with tuned flags. Goal: <= 2 s, <= 1 step.
  join      a second worker starts while one trains: seconds from its start to its first
            completed step in the group. Anchor: a second torchrun launcher. Goal: <= 3 s.
  steady    ms per step at world size 2 vs plain DDP (torchrun, 2 processes, same global
            batch). Goal: <= 5 % overhead.

Every figure is printed per run, then as median (range) over --repeats runs and as a
ratio against the anchor measured in the same invocation. Asserts nothing about speed.

    /usr/bin/python3 bench/elastic/elastic_bench.py all --build-dir build/bench
    /usr/bin/python3 bench/elastic/elastic_bench.py recovery --repeats 5
    /usr/bin/python3 bench/elastic/elastic_bench.py all --quick     # a smoke run

See bench/elastic/README.md for what each side does and the measured figures.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (HERE, PYTHON, TORCHRUN, TORCHRUN_PY311, Launchers,  # noqa: E402
                     Progress, Recovery, free_port, load_line, pinned_env,
                     recovery_figures, summary, torchrun_node_cmd)

# How long a side may take before the run is called broken (generous: torchrun's
# defaults alone wait 30 s for a last call and 15 s for a dead node's keep-alive).
START_TIMEOUT_S = 120.0
RECOVERY_TIMEOUT_S = 180.0
STEADY_RE = re.compile(r"steady: (\d+) steps in ([0-9.]+) s = ([0-9.]+) ms/step")


class Bench:
    """One invocation's options, scratch space and collected figures."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.scratch = tempfile.mkdtemp(prefix="kiln-elastic-bench-")
        self.runs = 0

    def run_dir(self, label: str) -> str:
        self.runs += 1
        path = os.path.join(self.scratch, f"{self.runs:02d}-{label}")
        os.makedirs(path)
        return path

    def close(self) -> None:
        if self.opts.keep:
            print(f"kept {self.scratch}")
        else:
            shutil.rmtree(self.scratch, ignore_errors=True)


def elastic_args(progress_dir: str, ckpt_dir: str, ckpt_every: int) -> list[str]:
    return ["--ckpt-dir", ckpt_dir, "--ckpt-every", str(ckpt_every),
            "--progress-dir", progress_dir]


# ---------------------------------------------------------------------------------------
# torchrun side


def torchrun_recovery(bench: Bench, tuned: bool, kill: str) -> Recovery:
    """Two launchers train; kill -9 launcher b with its worker ("node": a node's loss)
    or only b's worker ("worker": a crash its launcher sees); time the survivor."""
    o = bench.opts
    work = bench.run_dir(f"torchrun-{'tuned' if tuned else 'default'}-{kill}")
    progress = Progress(os.path.join(work, "progress"))
    port = free_port()
    args = elastic_args(progress.directory, os.path.join(work, "ckpt"), o.ckpt_every)
    with Launchers(work) as launchers:
        a = launchers.start("a", torchrun_node_cmd(port, f"r{port}", True, tuned, args),
                            pinned_env(BENCH_NODE="a"))
        b = launchers.start("b", torchrun_node_cmd(port, f"r{port}", False, tuned, args),
                            pinned_env(BENCH_NODE="b"))
        progress.wait_for(f"step {o.kill_at} at world size 2",
                          lambda s: s.world == 2 and s.step >= o.kill_at,
                          START_TIMEOUT_S, alive=[a, b])
        victim = [s for s in progress.steps if s.node == "b"][-1]
        t_kill = time.time()
        if kill == "node":
            os.killpg(b.pid, signal.SIGKILL)
        else:
            os.kill(victim.pid, signal.SIGKILL)
        time.sleep(0.05)
        progress.poll()
        old = {(s.pid, s.gen) for s in progress.steps if s.t <= t_kill}

        def survivor(s: Any) -> bool:
            return s.pid != victim.pid and (kill == "worker" or s.node == "a")

        progress.wait_for("a survivor's step after the kill",
                          lambda s: s.t > t_kill and (s.pid, s.gen) not in old
                          and survivor(s), RECOVERY_TIMEOUT_S, alive=[a])
        return recovery_figures(progress.steps, t_kill, survivor)


def torchrun_join(bench: Bench, tuned: bool) -> dict[str, float]:
    """Launcher a trains alone; launcher b starts; time b's first step in the group."""
    o = bench.opts
    work = bench.run_dir(f"torchrun-join-{'tuned' if tuned else 'default'}")
    progress = Progress(os.path.join(work, "progress"))
    port = free_port()
    args = elastic_args(progress.directory, os.path.join(work, "ckpt"), o.ckpt_every)
    with Launchers(work) as launchers:
        a = launchers.start("a", torchrun_node_cmd(port, f"r{port}", True, tuned, args),
                            pinned_env(BENCH_NODE="a"))
        # With one of 1:2 nodes, torchrun waits out last_call_timeout before training.
        progress.wait_for(f"step {o.join_after} at world size 1",
                          lambda s: s.world == 1 and s.step >= o.join_after,
                          START_TIMEOUT_S, alive=[a])
        t_start = time.time()
        b = launchers.start("b", torchrun_node_cmd(port, f"r{port}", False, tuned, args),
                            pinned_env(BENCH_NODE="b"))
        first_b = progress.wait_for("the new launcher's first step",
                                    lambda s: s.node == "b", START_TIMEOUT_S, alive=[a, b])
        started = progress.first_event(first_b.pid, "started")
        # torchrun restarts the running worker to let the newcomer in: its pause and
        # the steps it redoes from the checkpoint are part of a join's cost.
        running_pid = [s for s in progress.steps if s.node == "a" and s.t <= t_start][-1].pid
        new_a = progress.wait_for("the running launcher's first step with the newcomer",
                                  lambda s: s.node == "a" and s.world == 2,
                                  START_TIMEOUT_S, alive=[a, b])
        last_old = max((s for s in progress.steps if s.pid == running_pid),
                       key=lambda s: s.t)
        return {"start_to_step": first_b.t - t_start,
                "process_to_step": first_b.t - started.t if started else float("nan"),
                "running_paused": new_a.t - last_old.t if new_a.pid != running_pid
                else 0.0,
                "steps_redone": float(last_old.step - (new_a.step - 1))}


def ddp_steady(bench: Bench) -> float:
    """Plain DDP, 2 processes under torchrun on one node; returns ms per step."""
    o = bench.opts
    work = bench.run_dir("ddp-steady")
    port = free_port()
    cmd = [TORCHRUN, "--nnodes=1", "--nproc_per_node=2", "--rdzv_backend=c10d",
           f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id=s{port}", *TORCHRUN_PY311,
           os.path.join(HERE, "ddp_train.py"), "--global-batch", str(o.global_batch),
           "--steady", f"{o.steady_warmup}:{o.steady_steps}"]
    out = subprocess.run(cmd, cwd=work, env=pinned_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=600, check=False)
    text = out.stdout.decode(errors="replace")
    found = [float(m[3]) for m in STEADY_RE.finditer(text)]
    if out.returncode != 0 or len(found) != 2:
        raise RuntimeError(f"DDP run failed ({out.returncode}):\n{text[-3000:]}")
    return max(found)  # the ranks wait on each other; the slower one is the step time


# ---------------------------------------------------------------------------------------
# Reports


def print_recovery(label: str, r: Recovery) -> None:
    print(f"  {label}: {r.seconds:.2f} s to the next step, {r.steps_lost} steps lost "
          f"(done up to {r.last_before}, resumed at {r.first_after.step}, world "
          f"{r.first_after.world})", flush=True)


def run_recovery(bench: Bench) -> None:
    o = bench.opts
    print(f"\n## recovery: kill -9 one of two workers at step ~{o.kill_at} "
          f"(checkpoint every {o.ckpt_every} steps for torchrun); load {load_line()}")
    sides: dict[str, list[Recovery]] = {}
    plan: list[tuple[str, Callable[[], Recovery]]] = []
    for kill in o.torchrun_kill:
        for tuned in o.torchrun_flags:
            label = f"torchrun {'tuned' if tuned else 'default'}, kill {kill}"
            plan.append((label, lambda t=tuned, k=kill: torchrun_recovery(bench, t, k)))
    for i in range(o.repeats):
        for label, fn in plan:
            r = fn()
            sides.setdefault(label, []).append(r)
            print_recovery(f"run {i + 1} {label}", r)
    print(f"\n  {'side':<34} {'seconds to next step':<34} steps lost")
    for label, rs in sides.items():
        print(f"  {label:<34} {summary([r.seconds for r in rs]):<34} "
              f"{summary([float(r.steps_lost) for r in rs], '{:.0f}')}")
    print(f"  load after: {load_line()}")


def run_join(bench: Bench) -> None:
    o = bench.opts
    print(f"\n## join: a second worker starts while one trains; load {load_line()}")
    sides: dict[str, list[dict[str, float]]] = {}
    for i in range(o.repeats):
        for tuned in o.torchrun_flags:
            label = f"torchrun {'tuned' if tuned else 'default'}"
            f = torchrun_join(bench, tuned)
            sides.setdefault(label, []).append(f)
            print(f"  run {i + 1} {label}: launcher start -> first step "
                  f"{f['start_to_step']:.2f} s (its worker process: "
                  f"{f['process_to_step']:.2f} s); running worker paused "
                  f"{f['running_paused']:.2f} s, redid {f['steps_redone']:.0f} steps",
                  flush=True)
    print(f"\n  {'side':<20} {'start -> first step (s)':<32} "
          f"{'worker process -> first step (s)':<34} running worker paused (s)")
    for label, fs in sides.items():
        print(f"  {label:<20} {summary([f['start_to_step'] for f in fs]):<32} "
              f"{summary([f['process_to_step'] for f in fs]):<34} "
              f"{summary([f['running_paused'] for f in fs])}")
    print(f"  load after: {load_line()}")


def run_steady(bench: Bench) -> None:
    o = bench.opts
    print(f"\n## steady: ms/step at world size 2, global batch {o.global_batch}, "
          f"{o.steady_steps} steps after {o.steady_warmup}; load {load_line()}")
    ddp: list[float] = []
    for i in range(o.repeats):
        ms = ddp_steady(bench)
        ddp.append(ms)
        print(f"  run {i + 1} DDP: {ms:.3f} ms/step", flush=True)
    print(f"\n  DDP (torchrun, 2 processes)   {summary(ddp, '{:.3f}')} ms/step")
    print(f"  load after: {load_line()}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmark", choices=["recovery", "join", "steady", "all"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 repeat, tuned torchrun only, killing the node, "
                        "short steady phase")
    p.add_argument("--torchrun", choices=["default", "tuned", "both"], default="both",
                   help="which torchrun flag sets to measure")
    p.add_argument("--torchrun-kill", choices=["node", "worker", "both"], default="node",
                   help="node: kill -9 a launcher and its worker (a node's loss); "
                        "worker: kill -9 only the worker (its launcher restarts it)")
    p.add_argument("--kill-at", type=int, default=125,
                   help="kill once a worker has completed this step (midway between "
                        "two checkpoints by default)")
    p.add_argument("--ckpt-every", type=int, default=50)
    p.add_argument("--join-after", type=int, default=100)
    p.add_argument("--global-batch", type=int, default=64)
    p.add_argument("--steady-warmup", type=int, default=200)
    p.add_argument("--steady-steps", type=int, default=2000)
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    o = p.parse_args()
    if o.quick:
        o.repeats, o.torchrun, o.steady_steps = 1, "tuned", 500
        o.torchrun_kill = "node"
    o.torchrun_flags = {"default": [False], "tuned": [True], "both": [False, True]}[o.torchrun]
    o.torchrun_kill = ["node", "worker"] if o.torchrun_kill == "both" else [o.torchrun_kill]
    if o.repeats < 1 or o.kill_at < 1 or o.ckpt_every < 1:
        p.error("--repeats, --kill-at and --ckpt-every must be >= 1")
    return o


def main() -> None:
    opts = parse_args()
    print(f"elastic_bench {opts.benchmark}: {time.strftime('%Y-%m-%d %H:%M:%S')}, "
          f"{os.cpu_count()} CPUs, load {load_line()}; uptime: "
          f"{subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    bench = Bench(opts)
    try:
        if opts.benchmark in ("recovery", "all"):
            run_recovery(bench)
        if opts.benchmark in ("join", "all"):
            run_join(bench)
        if opts.benchmark in ("steady", "all"):
            run_steady(bench)
    finally:
        bench.close()


if __name__ == "__main__":
    main()
