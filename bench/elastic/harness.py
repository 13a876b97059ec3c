"""Plumbing for elastic_bench.py: progress logs, torchrun launchers, process clean-up.

The workloads (ddp_train.py, kiln_train.py) write one timestamped line per completed
step to ``PROGRESS_DIR/<node>-<pid>.log`` (workload.ProgressLog). `Progress` tails those
files; `recovery_figures` and friends turn the lines into the benchmark's figures. All
timestamps are ``time.time()`` on this one machine, so the benchmark's clock (the moment
of a kill, a launch, a scale request) and the workers' clocks are the same clock.
Standard library only.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import signal
import socket
import statistics
import subprocess
import time
from typing import Callable, Iterable, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"
TORCHRUN = "/usr/bin/torchrun"
# One thread per worker (two workers share 2 cores), passive OpenMP waits: the same
# pinning on every side of every comparison.
PINNING = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
# torch 1.13's torchrun fails on Python 3.11 unless told to redirect and tee (stack.md).
TORCHRUN_PY311 = ["--redirects", "1", "--tee", "1"]
# "Tuned" torchrun: the flags a user who read the source would set (stack.md). The
# 15 s keep-alive expiry of a dead node is fixed in torch's code and cannot be tuned.
TORCHRUN_TUNED_FLAGS = ["--monitor_interval", "0.5"]
TORCHRUN_TUNED_CONF = "last_call_timeout=1,join_timeout=60,close_timeout=5"

_STEP = re.compile(r"^step (\d+) t=([0-9.]+) rank=(\d+) world=(\d+) gen=(\d+)$")
_EVENT = re.compile(r"^(.*) t=([0-9.]+)$")


@dataclasses.dataclass(frozen=True)
class StepLine:
    node: str  # BENCH_NODE of the process: a torchrun launcher ("a", "b") or a Kiln task
    pid: int
    step: int  # optimizer steps done after this one (global)
    t: float
    rank: int
    world: int
    gen: int


@dataclasses.dataclass(frozen=True)
class EventLine:
    node: str
    pid: int
    text: str
    t: float


class Progress:
    """Tails every ``<node>-<pid>.log`` in a folder (new files included)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.steps: list[StepLine] = []
        self.events: list[EventLine] = []
        self._offsets: dict[str, int] = {}

    def poll(self) -> list[StepLine]:
        """Reads lines written since the last call; returns the new step lines."""
        new: list[StepLine] = []
        for path in glob.glob(os.path.join(self.directory, "*.log")):
            node, _, pid = os.path.basename(path)[:-4].rpartition("-")
            with open(path) as f:
                f.seek(self._offsets.get(path, 0))
                chunk = f.read()
            end = chunk.rfind("\n") + 1  # a half-written last line waits for next time
            self._offsets[path] = self._offsets.get(path, 0) + len(chunk[:end].encode())
            for line in chunk[:end].splitlines():
                m = _STEP.match(line)
                if m:
                    new.append(StepLine(node, int(pid), int(m[1]), float(m[2]), int(m[3]),
                                        int(m[4]), int(m[5])))
                    continue
                m = _EVENT.match(line)
                if m:
                    self.events.append(EventLine(node, int(pid), m[1], float(m[2])))
        new.sort(key=lambda s: s.t)
        self.steps.extend(new)
        return new

    def wait_for(self, what: str, predicate: Callable[[StepLine], bool], timeout_s: float,
                 alive: Sequence[subprocess.Popen] = (),
                 poll_s: float = 0.002) -> StepLine:
        """Polls until a step line satisfies `predicate`; returns the first one. Raises
        RuntimeError naming `what` on timeout, or when a process in `alive` has exited."""
        for s in self.steps:
            if predicate(s):
                return s
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for s in self.poll():
                if predicate(s):
                    return s
            for p in alive:
                if p.poll() is not None:
                    raise RuntimeError(f"waiting for {what}: process {p.pid} exited "
                                       f"with {p.returncode}")
            time.sleep(poll_s)
        raise RuntimeError(f"waiting for {what}: nothing after {timeout_s:.0f} s")

    def first_event(self, pid: int, prefix: str) -> Optional[EventLine]:
        self.poll()
        for e in self.events:
            if e.pid == pid and e.text.startswith(prefix):
                return e
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned_env(**extra: str) -> dict[str, str]:
    """This environment without KILN_* (the workloads must not think they run under
    Kiln) plus the thread pinning and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env.update(PINNING)
    env.update(extra)
    return env


class Launchers:
    """Processes started by one benchmark run, each in its own session (so that a
    torchrun launcher and its workers form one process group: killing the group is
    losing a node). Kills whatever is left on exit (a context manager)."""

    def __init__(self, work_dir: str) -> None:
        self.work_dir = work_dir
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, cmd: Sequence[str], env: dict[str, str]) -> subprocess.Popen:
        out = open(os.path.join(self.work_dir, f"{name}.out"), "wb")
        p = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, env=env,
                             cwd=self.work_dir, start_new_session=True)
        out.close()
        self.procs.append(p)
        return p

    def output(self, name: str) -> str:
        with open(os.path.join(self.work_dir, f"{name}.out"), errors="replace") as f:
            return f.read()

    def __enter__(self) -> "Launchers":
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            kill_group(p)


def kill_group(p: subprocess.Popen) -> None:
    """SIGKILL to the process group `p` leads (we started it with a new session)."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait()


def torchrun_node_cmd(port: int, run_id: str, is_host: bool, tuned: bool,
                      script_args: Sequence[str], nnodes: str = "1:2",
                      max_restarts: int = 3) -> list[str]:
    """One torchrun launcher ("node") of one worker on loopback, c10d rendezvous.

    `is_host` says explicitly which launcher hosts the c10d store (on loopback both
    would match the endpoint's host name; the first to bind would win).
    """
    conf = f"is_host={int(is_host)}"
    flags: list[str] = []
    if tuned:
        conf += "," + TORCHRUN_TUNED_CONF
        flags = list(TORCHRUN_TUNED_FLAGS)
    return [TORCHRUN, f"--nnodes={nnodes}", "--nproc_per_node=1", "--rdzv_backend=c10d",
            f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id={run_id}",
            f"--rdzv_conf={conf}", f"--max_restarts={max_restarts}", *flags,
            *TORCHRUN_PY311, os.path.join(HERE, "ddp_train.py"), *script_args]


@dataclasses.dataclass
class Recovery:
    seconds: float  # the kill -> the first step a survivor completed in a new generation
    steps_lost: int  # steps done before the kill minus the steps kept (redone if > 0)
    last_before: int  # the highest step completed in the old generation
    first_after: StepLine


def recovery_figures(steps: Iterable[StepLine], t_kill: float,
                     is_survivor: Callable[[StepLine], bool]) -> Recovery:
    """The survivors' next completed step after a kill at `t_kill`.

    A generation is identified by (pid, gen): torchrun starts new processes, Kiln keeps
    the process and counts generations. "Old" lines are those of a (pid, gen) that had
    logged a step by `t_kill`; any step it completed after the kill (an all-reduce the
    victim had already fed) still counts as done. The answer is the first step line of
    a new (pid, gen) from a survivor.
    """
    steps = sorted(steps, key=lambda s: s.t)
    old_keys = {(s.pid, s.gen) for s in steps if s.t <= t_kill}
    last_before = max(s.step for s in steps if (s.pid, s.gen) in old_keys)
    for s in steps:
        if s.t > t_kill and (s.pid, s.gen) not in old_keys and is_survivor(s):
            return Recovery(s.t - t_kill, last_before - (s.step - 1), last_before, s)
    raise RuntimeError("no survivor step after the kill")


def summary(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """``median (min-max, n=N)``."""
    if not values:
        return "n/a"
    med = statistics.median(values)
    return (f"{fmt.format(med)} (range {fmt.format(min(values))}–{fmt.format(max(values))}, "
            f"n={len(values)})")


def load_line() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])
