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
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from harness import (HERE, PINNING, PYTHON, TORCHRUN, TORCHRUN_PY311,  # noqa: E402
                     Launchers, Progress, Recovery, StepLine, free_port, load_line,
                     pinned_env, recovery_figures, summary, torchrun_node_cmd)
from kilnd_process import (TERMINAL_STATES, FastClient, KilndProcess,  # noqa: E402
                           default_build_dir)

# How long a side may take before the run is called broken (generous: torchrun's
# defaults alone wait 30 s for a last call and 15 s for a dead node's keep-alive).
START_TIMEOUT_S = 120.0
RECOVERY_TIMEOUT_S = 180.0
STEADY_RE = re.compile(r"steady: (\d+) steps in ([0-9.]+) s = ([0-9.]+) ms/step, "
                       r"cpu ([0-9.]+) ms/step")


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


def commit_label(commit_every: int) -> str:
    """How a Kiln run commits: at step boundaries (no copy) or a copy every N steps."""
    return "boundary commits" if commit_every == 0 else f"copy every {commit_every}"


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


def newcomer_phases(progress: Progress, first: StepLine) -> dict[str, float]:
    """Where a newcomer's time went, from its own events: Python + torch import;
    loading the data and building the model (the same code on both sides); joining the
    group (torchrun: init_process_group, the checkpoint, DDP's weight broadcast; Kiln:
    the rendezvous and the state broadcast); its first step."""
    ev = {name: progress.first_event(first.pid, name) for name in
          ("started", "imported", "loaded", "ready")}
    t = {name: e.t for name, e in ev.items() if e is not None}
    if len(t) != len(ev):
        return {}
    return {"import": t["imported"] - t["started"], "data": t["loaded"] - t["imported"],
            "join": t["ready"] - t["loaded"], "step": first.t - t["ready"]}


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
                "steps_redone": float(last_old.step - (new_a.step - 1)),
                **newcomer_phases(progress, first_b)}


def ddp_steady(bench: Bench) -> tuple[float, float]:
    """Plain DDP, 2 processes under torchrun on one node; returns (wall ms per step of
    the slower rank, CPU ms per step summed over the ranks)."""
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
    found = [(float(m[3]), float(m[4])) for m in STEADY_RE.finditer(text)]
    if out.returncode != 0 or len(found) != 2:
        raise RuntimeError(f"DDP run failed ({out.returncode}):\n{text[-3000:]}")
    return steady_figures(found)


def steady_figures(found: list[tuple[float, float]]) -> tuple[float, float]:
    # The ranks wait on each other: the slower one's wall time is the step time. CPU
    # time is what the whole step costs the machine, both ranks together.
    return max(w for w, _ in found), sum(c for _, c in found)


# ---------------------------------------------------------------------------------------
# Kiln side


class KilnSide:
    """A real ``kilnd --local-agent --slots 2`` for one benchmark, and its elastic jobs
    running kiln_train.py (a context manager; every job is killed at the end)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.kilnd = KilndProcess(bench.opts.build_dir, slots=2, keep=bench.opts.keep)
        self.client: Optional[FastClient] = None
        self.jobs: list[int] = []

    def __enter__(self) -> "KilnSide":
        self.kilnd.__enter__()
        self.client = FastClient(self.kilnd.url)
        return self

    def __exit__(self, *exc: Any) -> None:
        for job in self.jobs:
            self.end(job)
        if self.client:
            self.client.close()
        self.kilnd.__exit__(*exc)

    def submit(self, workload_args: list[str], min_workers: int, max_workers: int) -> int:
        """An elastic job of one slot per worker; returns its id."""
        assert self.client
        spec = {"command": [PYTHON, os.path.join(HERE, "kiln_train.py"), *workload_args],
                "resources": {"slots": 1}, "min_workers": min_workers,
                "max_workers": max_workers, "env": dict(PINNING)}
        job = self.client.request("POST", "/api/v1/jobs", spec)["id"]
        self.jobs.append(job)
        return job

    def record(self, job: int) -> dict[str, Any]:
        assert self.client
        return self.client.request("GET", f"/api/v1/jobs/{job}")

    def scale(self, job: int, workers: int) -> None:
        assert self.client
        self.client.request("POST", f"/api/v1/jobs/{job}/scale", {"workers": workers})

    def end(self, job: int) -> None:
        """Kills the job if it still runs and waits until its workers are gone, so
        the next run has both slots and the cores to itself."""
        assert self.client
        if self.record(job)["state"] not in TERMINAL_STATES:
            self.client.request("POST", f"/api/v1/jobs/{job}/kill")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rec = self.record(job)
            if rec["state"] in TERMINAL_STATES and not rec.get("workers", {}).get("live"):
                return
            time.sleep(0.05)
        raise RuntimeError(f"job {job} did not end within 60 s of its kill")

    def check_running(self, job: int) -> None:
        rec = self.record(job)
        if rec["state"] in TERMINAL_STATES:
            raise RuntimeError(f"Kiln job {job} ended ({rec['state']}): "
                               f"{rec.get('reason') or rec.get('tasks')}; data dir "
                               f"{self.kilnd.data_dir} (--keep keeps it)")


def wait_kiln(kiln: KilnSide, job: int, progress: Progress, what: str,
              predicate: Callable[[StepLine], bool], timeout_s: float) -> StepLine:
    """Progress.wait_for, checking the job every second so that a failed job fails the
    run at once instead of at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return progress.wait_for(what, predicate, 1.0)
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            kiln.check_running(job)


def kiln_recovery(bench: Bench, kiln: KilnSide) -> tuple[Recovery, float]:
    """An elastic job of 1..2 workers trains at world size 2; kill -9 the worker at
    --kiln-kill-rank. Returns the survivor's figures and the seconds until the job is
    back at 2 workers (Kiln starts a replacement on the freed slot)."""
    o = bench.opts
    work = bench.run_dir("kiln-recovery")
    progress = Progress(os.path.join(work, "progress"))
    job = kiln.submit(["--progress-dir", progress.directory,
                       "--commit-every", str(o.kiln_commit_every)], 1, 2)
    wait_kiln(kiln, job, progress, f"step {o.kill_at} at world size 2",
              lambda s: s.world == 2 and s.step >= o.kill_at, START_TIMEOUT_S)
    progress.poll()
    victim = [s for s in progress.steps if s.world == 2 and s.rank == o.kiln_kill_rank][-1]
    t_kill = time.time()
    os.kill(victim.pid, signal.SIGKILL)
    time.sleep(0.05)
    progress.poll()
    old = {(s.pid, s.gen) for s in progress.steps if s.t <= t_kill}

    def survivor(s: StepLine) -> bool:
        return s.pid != victim.pid

    wait_kiln(kiln, job, progress, "a survivor's step after the kill",
              lambda s: s.t > t_kill and (s.pid, s.gen) not in old and survivor(s),
              RECOVERY_TIMEOUT_S)
    figures = recovery_figures(progress.steps, t_kill, survivor)
    back = wait_kiln(kiln, job, progress, "the job back at 2 workers",
                     lambda s: s.t > t_kill and s.world == 2 and (s.pid, s.gen) not in old,
                     RECOVERY_TIMEOUT_S)
    kiln.end(job)
    return figures, back.t - t_kill


def kiln_join(bench: Bench, kiln: KilnSide) -> dict[str, float]:
    """An elastic job of 1..2 workers, scaled to 1, trains; scale to 2; time the new
    worker from the scale request to its first step in the group."""
    o = bench.opts
    work = bench.run_dir("kiln-join")
    progress = Progress(os.path.join(work, "progress"))
    job = kiln.submit(["--progress-dir", progress.directory,
                       "--commit-every", str(o.kiln_commit_every)], 1, 2)
    kiln.scale(job, 1)  # the job's target starts at max_workers
    running = wait_kiln(kiln, job, progress, f"step {o.join_after} at world size 1",
                        lambda s: s.world == 1 and s.step >= o.join_after,
                        START_TIMEOUT_S)
    # If both workers had started before the scale took effect, one was asked to leave;
    # wait until only `running` is live, so the newcomer is really new.
    deadline = time.monotonic() + START_TIMEOUT_S
    while kiln.record(job)["workers"]["live"] != 1:
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job} did not settle at 1 live worker")
        time.sleep(0.05)
    t_scale = time.time()
    kiln.scale(job, 2)
    first_new = wait_kiln(kiln, job, progress, "the new worker's first step",
                          lambda s: s.t > t_scale and s.pid != running.pid,
                          START_TIMEOUT_S)
    started = progress.first_event(first_new.pid, "started")
    # The running worker keeps its process: its pause is the gap between its last step
    # in the old generation and its first in the new one.
    old_gen = max(s.gen for s in progress.steps if s.pid == running.pid and s.t <= t_scale)
    new_running = wait_kiln(kiln, job, progress, "the running worker's step with 2",
                            lambda s: s.pid == running.pid and s.gen > old_gen,
                            START_TIMEOUT_S)
    last_old = max((s for s in progress.steps if s.pid == running.pid and s.gen == old_gen),
                   key=lambda s: s.t)
    kiln.end(job)
    return {"start_to_step": first_new.t - t_scale,
            "process_to_step": first_new.t - started.t if started else float("nan"),
            "running_paused": new_running.t - last_old.t,
            "steps_redone": float(last_old.step - (new_running.step - 1)),
            **newcomer_phases(progress, first_new)}


def kiln_steady(bench: Bench, kiln: KilnSide, commit_every: int) -> tuple[float, float]:
    """An elastic job of exactly 2 workers runs the steady phase; returns what
    ddp_steady does."""
    o = bench.opts
    work = bench.run_dir(f"kiln-steady-commit{commit_every}")
    progress = Progress(os.path.join(work, "progress"))
    job = kiln.submit(["--progress-dir", progress.directory, "--global-batch",
                       str(o.global_batch), "--commit-every", str(commit_every),
                       "--steady", f"{o.steady_warmup}:{o.steady_steps}"], 2, 2)
    deadline = time.monotonic() + 600
    while kiln.record(job)["state"] not in TERMINAL_STATES:
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kiln steady job {job} still running after 600 s")
        time.sleep(0.2)
    rec = kiln.record(job)
    progress.poll()
    found = [(float(m[3]), float(m[4])) for e in progress.events
             for m in [STEADY_RE.search(e.text)] if m]
    if rec["state"] != "FINISHED" or len(found) != 2:
        raise RuntimeError(f"Kiln steady job {job} ended {rec['state']} with "
                           f"{len(found)} of 2 reports; tasks {rec.get('tasks')}")
    return steady_figures(found)


# ---------------------------------------------------------------------------------------
# Reports


def print_recovery(label: str, r: Recovery, extra: str = "") -> None:
    print(f"  {label}: {r.seconds:.2f} s to the next step, {r.steps_lost} steps lost "
          f"(done up to {r.last_before}, resumed at {r.first_after.step}, world "
          f"{r.first_after.world}){extra}", flush=True)


def print_ratios(what: str, kiln: list[float], anchors: dict[str, list[float]]) -> None:
    """Kiln's median over each anchor's median, measured in this same invocation."""
    if not kiln:
        return
    for label, values in anchors.items():
        if values:
            ratio = statistics.median(kiln) / statistics.median(values)
            print(f"  Kiln / {label}: {ratio:.3f} ({what})")


def with_kiln(bench: Bench) -> Any:
    """A KilnSide when Kiln is measured, else a context manager giving None."""
    return KilnSide(bench) if bench.opts.kiln else _NoKiln()


class _NoKiln:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        pass


def run_recovery(bench: Bench) -> None:
    o = bench.opts
    print(f"\n## recovery: kill -9 one of two workers at step ~{o.kill_at} (torchrun: "
          f"checkpoint every {o.ckpt_every} steps; Kiln: "
          f"{commit_label(o.kiln_commit_every)}); load {load_line()}")
    sides: dict[str, list[Recovery]] = {}
    back: list[float] = []
    with with_kiln(bench) as kiln:
        for i in range(o.repeats):
            for kill in o.torchrun_kill:
                for tuned in o.torchrun_flags:
                    label = f"torchrun {'tuned' if tuned else 'default'}, kill {kill}"
                    r = torchrun_recovery(bench, tuned, kill)
                    sides.setdefault(label, []).append(r)
                    print_recovery(f"run {i + 1} {label}", r)
            if kiln:
                label = f"Kiln, kill rank {o.kiln_kill_rank}"
                r, to_two = kiln_recovery(bench, kiln)
                sides.setdefault(label, []).append(r)
                back.append(to_two)
                print_recovery(f"run {i + 1} {label}", r,
                               f"; back at 2 workers after {to_two:.2f} s")
    print(f"\n  {'side':<34} {'seconds to next step':<34} steps lost")
    for label, rs in sides.items():
        print(f"  {label:<34} {summary([r.seconds for r in rs]):<34} "
              f"{summary([float(r.steps_lost) for r in rs], '{:.0f}')}")
    if back:
        print(f"  Kiln: kill -> a replacement worker training with the survivor: "
              f"{summary(back)} s")
    kiln_s = [r.seconds for label, rs in sides.items() if label.startswith("Kiln")
              for r in rs]
    print_ratios("seconds to the next step", kiln_s,
                 {label: [r.seconds for r in rs] for label, rs in sides.items()
                  if label.startswith("torchrun")})
    print(f"  load after: {load_line()}")


def run_join(bench: Bench) -> None:
    o = bench.opts
    print(f"\n## join: a second worker starts while one trains; load {load_line()}")
    sides: dict[str, list[dict[str, float]]] = {}
    with with_kiln(bench) as kiln:
        for i in range(o.repeats):
            runs: list[tuple[str, Callable[[], dict[str, float]]]] = [
                (f"torchrun {'tuned' if t else 'default'}",
                 lambda t=t: torchrun_join(bench, t)) for t in o.torchrun_flags]
            if kiln:
                runs.append(("Kiln", lambda: kiln_join(bench, kiln)))
            for label, fn in runs:
                f = fn()
                sides.setdefault(label, []).append(f)
                start = "scale request" if label == "Kiln" else "launcher start"
                print(f"  run {i + 1} {label}: {start} -> first step "
                      f"{f['start_to_step']:.2f} s (its worker process: "
                      f"{f['process_to_step']:.2f} s = import {f.get('import', 0):.2f} + "
                      f"data {f.get('data', 0):.2f} + joining {f.get('join', 0):.2f} + "
                      f"first step {f.get('step', 0):.2f}); running worker paused "
                      f"{f['running_paused']:.2f} s, redid {f['steps_redone']:.0f} steps",
                      flush=True)
    print(f"\n  {'side':<18} {'start -> first step (s)':<32} "
          f"{'worker process -> first step (s)':<34} {'running worker paused (s)':<32} "
          f"steps redone")
    for label, fs in sides.items():
        print(f"  {label:<18} {summary([f['start_to_step'] for f in fs]):<32} "
              f"{summary([f['process_to_step'] for f in fs]):<34} "
              f"{summary([f['running_paused'] for f in fs]):<32} "
              f"{summary([f['steps_redone'] for f in fs], '{:.0f}')}")
    print("  (start: Kiln's scale request, torchrun's launcher start)")
    print(f"\n  newcomer's phases  {'Python + torch import (s)':<32} "
          f"{'data + model (s)':<32} {'joining the group (s)':<32} first step (s)")
    for label, fs in sides.items():
        print(f"  {label:<18} {summary([f.get('import', 0.0) for f in fs]):<32} "
              f"{summary([f.get('data', 0.0) for f in fs]):<32} "
              f"{summary([f.get('join', 0.0) for f in fs]):<32} "
              f"{summary([f.get('step', 0.0) for f in fs])}")
    anchors = {label: fs for label, fs in sides.items() if label != "Kiln"}
    for key, what in (("start_to_step", "start -> first step"),
                      ("process_to_step", "worker process -> first step")):
        print_ratios(what, [f[key] for f in sides.get("Kiln", [])],
                     {label: [f[key] for f in fs] for label, fs in anchors.items()})
    print(f"  load after: {load_line()}")


def run_steady(bench: Bench) -> None:
    o = bench.opts
    print(f"\n## steady: ms/step at world size 2, global batch {o.global_batch}, "
          f"{o.steady_steps} steps after {o.steady_warmup}; Kiln with "
          f"{' / '.join(map(commit_label, o.steady_commit_every))}; load {load_line()}")
    print("  (wall: the slower rank; CPU: both ranks' processes together)")
    sides = ["DDP"] + [f"Kiln, {commit_label(n)}" for n in o.steady_commit_every]
    wall: dict[str, list[float]] = {s: [] for s in sides}
    cpu: dict[str, list[float]] = {s: [] for s in sides}
    wall_ratio: dict[str, list[float]] = {s: [] for s in sides[1:]}
    cpu_ratio: dict[str, list[float]] = {s: [] for s in sides[1:]}
    with with_kiln(bench) as kiln:
        for i in range(o.repeats):
            # Alternate the sides so that drift in the machine's load hits both.
            runs = [("DDP", lambda: ddp_steady(bench))]
            if kiln:
                runs += [(f"Kiln, {commit_label(n)}",
                          lambda n=n: kiln_steady(bench, kiln, n))
                         for n in o.steady_commit_every]
            line = f"  run {i + 1}"
            for side, fn in runs:
                w, c = fn()
                wall[side].append(w)
                cpu[side].append(c)
                line += f"; {side}: {w:.3f} ms wall, {c:.3f} ms CPU"
                if side != "DDP":
                    wall_ratio[side].append(w / wall["DDP"][-1])
                    cpu_ratio[side].append(c / cpu["DDP"][-1])
                    line += f" (x{w / wall['DDP'][-1]:.3f}, CPU x{c / cpu['DDP'][-1]:.3f})"
            print(line, flush=True)
    print(f"\n  {'side':<26} {'wall ms/step':<34} {'CPU ms/step':<34} "
          f"{'Kiln/DDP wall, per pair':<34} Kiln/DDP CPU, per pair")
    for side in sides:
        if not wall[side]:
            continue
        print(f"  {side:<26} {summary(wall[side], '{:.3f}'):<34} "
              f"{summary(cpu[side], '{:.3f}'):<34} "
              f"{summary(wall_ratio.get(side, []), '{:.3f}'):<34} "
              f"{summary(cpu_ratio.get(side, []), '{:.3f}')}")
    print(f"  load after: {load_line()}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmark", choices=["recovery", "join", "steady", "all"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 repeat, tuned torchrun only (killing the node), "
                        "Kiln, a short steady phase")
    p.add_argument("--build-dir", default=default_build_dir(),
                   help="where bin/kilnd, bin/kiln-agent, bin/kiln-shim are "
                        "($KILN_BUILD_DIR, else build/bench)")
    p.add_argument("--torchrun", choices=["default", "tuned", "both", "none"],
                   default="both", help="which torchrun flag sets to measure")
    p.add_argument("--kiln", action=argparse.BooleanOptionalAction, default=True,
                   help="measure Kiln (--no-kiln: the anchors only)")
    p.add_argument("--kiln-commit-every", type=int, default=0,
                   help="Kiln's commits: 0 at every step boundary without a copy (the "
                        "runtime's default), N a copy of model and optimizer every N steps")
    p.add_argument("--steady-commit-every", default="0,1",
                   help="Kiln commit settings to measure in the steady benchmark "
                        "(comma-separated, as --kiln-commit-every)")
    p.add_argument("--kiln-kill-rank", type=int, choices=[0, 1], default=1,
                   help="which rank of Kiln's 2 workers to kill (0 hosts the store)")
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
        o.steady_commit_every = "0"
        o.torchrun_kill = "node"
    o.torchrun_flags = {"default": [False], "tuned": [True], "both": [False, True],
                        "none": []}[o.torchrun]
    o.torchrun_kill = ["node", "worker"] if o.torchrun_kill == "both" else [o.torchrun_kill]
    try:
        o.steady_commit_every = [int(v) for v in o.steady_commit_every.split(",")]
    except ValueError:
        p.error(f"--steady-commit-every must be integers separated by commas, got "
                f"{o.steady_commit_every!r}")
    if min(o.repeats, o.kill_at, o.ckpt_every) < 1 or \
            min(o.kiln_commit_every, *o.steady_commit_every) < 0:
        p.error("--repeats, --kill-at and --ckpt-every must be >= 1, the commit "
                "settings >= 0")
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
