#!/usr/bin/python3
"""Benchmark: what running through Kiln costs a real training job.

Runs examples/fashion_mnist/train.py (PyTorch MLP, Fashion-MNIST) bare and through a
fresh ``kilnd --local-agent --slots 2``, alternating bare/Kiln --repeats times so that
drift on a shared machine hits both sides alike. Both sides get the same thread pinning
(OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE) and the same script:

- bare: ``/usr/bin/python3 train.py ARGS`` in a temp dir holding a copy of the script;
  wall time of the subprocess.
- Kiln: the script uploaded once as a package; ``["/usr/bin/python3", "train.py", ARGS]``
  submitted with slots 2; wall time from the submit call until the client sees FINISHED
  (GET polled every --poll-ms on a kept-alive connection), and the master's
  started_at -> finished_at.

Both sides also print the script's own "done in X s" (its training time, read from its
output), which separates start-up cost from a slower training loop. Prints each pair and
the median ratios; the anchor is the bare run of the same pair. Goal: Kiln/bare <= 1.03.
Prints figures only; asserts nothing about speed. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kilnd_process import (REPO, FastClient, KilndProcess, default_build_dir,  # noqa: E402
                           machine_line, median, parse_time, wait_terminal)

PYTHON = "/usr/bin/python3"
SCRIPT = os.path.join(REPO, "examples", "fashion_mnist", "train.py")
PINNING = {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
DONE_RE = re.compile(r"done in ([0-9.]+) s")
CPU_RE = re.compile(r"kiln-bench-cpu ([0-9.]+) ([0-9.]+)")
# --cpu-time wraps both sides' command in this; it prints user and system CPU seconds.
TIME_PREFIX = ["/usr/bin/time", "-f", "kiln-bench-cpu %U %S"]


def done_seconds(text: str) -> Optional[float]:
    m = DONE_RE.search(text)
    return float(m.group(1)) if m else None


def cpu_seconds(text: str) -> Optional[float]:
    m = CPU_RE.search(text)
    return float(m.group(1)) + float(m.group(2)) if m else None


def run_bare(prefix: list[str],
             train_args: list[str]) -> tuple[float, Optional[float], Optional[float]]:
    """Returns (wall seconds, the script's own "done in" seconds, CPU seconds if timed)."""
    work = tempfile.mkdtemp(prefix="kiln-bench-bare-")
    try:
        shutil.copy(SCRIPT, work)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
        env.update(PINNING)
        # The script finds the kiln package beside itself in a checkout; a copy needs the
        # path, as tasks get it from kilnd (KILN_PYTHON_PATH).
        env["PYTHONPATH"] = os.path.join(REPO, "python")
        t0 = time.monotonic()
        out = subprocess.run([*prefix, PYTHON, "train.py", *train_args], cwd=work, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        wall = time.monotonic() - t0
        text = out.stdout.decode(errors="replace")
        if out.returncode != 0:
            raise SystemExit(f"bare run failed ({out.returncode}):\n{text[-2000:]}")
        return wall, done_seconds(text), cpu_seconds(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_kiln(c: FastClient, package_id: str, prefix: list[str], train_args: list[str],
             poll_s: float) -> tuple[float, float, Optional[float], Optional[float]]:
    """Returns (client submit -> seen FINISHED, master started_at -> finished_at, the
    script's own "done in" seconds, CPU seconds if timed)."""
    t0 = time.monotonic()
    job = c.submit([*prefix, PYTHON, "train.py", *train_args], slots=2,
                   package_id=package_id,
                   env=dict(PINNING))
    record, seen = wait_terminal(c, job["id"], poll_s)
    if record["state"] != "FINISHED":
        raise SystemExit(f"job {job['id']} ended {record['state']}: {record.get('reason')}")
    master = parse_time(record["finished_at"]) - parse_time(record["started_at"])
    text = "\n".join(line["text"] for line in
                     c.request("GET", f"/api/v1/jobs/{job['id']}/logs?limit=5000")["lines"])
    return seen - t0, master, done_seconds(text), cpu_seconds(text)


def fmt(x: Optional[float]) -> str:
    return f"{x:7.2f}" if x is not None else "    n/a"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build-dir", default=default_build_dir(),
                   help="build dir with bin/kilnd (default $KILN_BUILD_DIR or build/bench)")
    p.add_argument("--repeats", type=int, default=3, help="bare/Kiln pairs")
    p.add_argument("--train-args", default="--epochs 1",
                   help="arguments of train.py (default: %(default)s)")
    p.add_argument("--poll-ms", type=float, default=20.0)
    p.add_argument("--cpu-time", action="store_true",
                   help="run both sides under /usr/bin/time and also compare CPU seconds "
                        "(less sensitive than wall time to other load on the machine)")
    p.add_argument("--keep", action="store_true", help="keep kilnd's data dir")
    args = p.parse_args()
    train_args = shlex.split(args.train_args)
    prefix = TIME_PREFIX if args.cpu_time else []

    print(f"platform_overhead: train.py {args.train_args}, {args.repeats} pairs "
          f"({machine_line()})")
    with KilndProcess(args.build_dir, slots=2, keep=args.keep) as kilnd:
        c = FastClient(kilnd.url)
        with open(SCRIPT, "rb") as f:
            package = c.request("POST", "/api/v1/packages?name=train.py", raw=f.read(),
                                content_type="application/octet-stream")
        print(f"kilnd {kilnd.url}, package {package['id'][:20]}..., {package['size']} bytes")
        print(f"{'pair':>4} {'bare':>7} {'kiln':>7} {'ratio':>6} | {'master':>7} {'ratio':>6} | "
              f"{'bare-in':>7} {'kiln-in':>7} {'ratio':>6}" +
              (f" | {'bare-cpu':>8} {'kiln-cpu':>8} {'ratio':>6}" if prefix else "") + "   load")
        ratios, master_ratios, inner_ratios, fixed, cpu_ratios = [], [], [], [], []
        kilnd_cpu = []
        for i in range(args.repeats):
            bare, bare_in, bare_cpu = run_bare(prefix, train_args)
            cpu0 = kilnd.cpu_seconds()
            kiln, master, kiln_in, kiln_cpu = run_kiln(c, package["id"], prefix, train_args,
                                                       args.poll_ms / 1000)
            cpu_col = ""
            if prefix:
                cpu_ratio = kiln_cpu / bare_cpu if kiln_cpu and bare_cpu else float("nan")
                cpu_ratios.append(cpu_ratio)
                cpu_col = f" | {fmt(bare_cpu):>8} {fmt(kiln_cpu):>8} {cpu_ratio:6.3f}"
            kilnd_cpu.append(kilnd.cpu_seconds() - cpu0)
            ratios.append(kiln / bare)
            fixed.append(kiln - master)
            master_ratios.append(master / bare)
            inner = kiln_in / bare_in if kiln_in and bare_in else None
            if inner is not None:
                inner_ratios.append(inner)
            with open("/proc/loadavg") as f:
                load = f.read().split()[0]
            print(f"{i + 1:>4} {bare:7.2f} {kiln:7.2f} {kiln / bare:6.3f} | {master:7.2f} "
                  f"{master / bare:6.3f} | {fmt(bare_in)} {fmt(kiln_in)} "
                  f"{inner if inner is not None else float('nan'):6.3f}{cpu_col}   {load}",
                  flush=True)
        c.close()
    print("columns: wall seconds; bare = subprocess wall; kiln = client submit -> seen "
          "FINISHED; master = started_at -> finished_at; *-in = the script's own 'done in'"
          + ("; *-cpu = user+sys CPU seconds from /usr/bin/time" if prefix else ""))
    goal = median(ratios)
    print(f"median ratio kiln/bare (client submit -> FINISHED): {goal:.3f} "
          f"(goal <= 1.03: {'met' if goal <= 1.03 else 'NOT met'}; pairs range "
          f"{min(ratios):.3f} .. {max(ratios):.3f})")
    print(f"median Kiln time outside the process (client submit -> FINISHED minus "
          f"started_at -> finished_at): {median(fixed) * 1000:.0f} ms")
    print(f"median kilnd CPU (its own threads and the local agent's) per Kiln run: "
          f"{median(kilnd_cpu) * 1000:.0f} ms")
    print(f"median ratio master started->finished / bare:       {median(master_ratios):.3f}")
    if inner_ratios:
        print(f"median ratio of the script's own training time:      "
              f"{median(inner_ratios):.3f}")
    if cpu_ratios:
        print(f"median ratio of CPU seconds (user+sys) kiln/bare:     "
              f"{median(cpu_ratios):.3f} (pairs range {min(cpu_ratios):.3f} .. "
              f"{max(cpu_ratios):.3f})")
    print(f"({machine_line()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
