#!/usr/bin/python3
"""Serving benchmark: kiln-serve vs the model in-process vs Python REST servers vs the master.

Issue 5's figures, all measured in one run on the same machine with the same TorchScript
models (models.py: the 784-256-10 MLP, where HTTP and JSON dominate; a small CNN, where the
model dominates; and a wide 784-1024-1024-10 MLP whose forward is bound by reading its
weights, which a batch shares) and the same request: one Fashion-MNIST image per request in the
Watson ML v4 payload {"input_data":[{"values":[[784 floats]]}]}.

  inprocess   batched forward throughput with no HTTP or JSON (inprocess.py), batch 1, 32,
              128, on 1 core and on all cores (one 1-thread process per core): the limit.
  kiln-serve  the C++ replica over HTTP, batching on (--max-batch-size 64) and off (1).
  flask       Flask's threaded development server (anchor).
  gunicorn    gunicorn, 2 gthread workers each with its own torch (1 thread) (anchor).
  master      a real kilnd --local-agent, the model registered and deployed (1 replica on
              all slots), requests sent to the master's Watson ML route, routed to kiln-serve.

Every HTTP side is loaded by wrk (-t1 -c N -d D --latency, wml_post.lua) at concurrency 1,
8 and 64 after a warm-up, and its answer is checked once against the in-process output
first. Each row records req/s, p50, p99, errors, the server's CPU time per request (its
whole process tree: steadier than req/s on a shared machine) and the load average before
the row. Then the ratios against the anchors of the same run are printed. Asserts nothing
about speed.

    /usr/bin/python3 bench/serving/serving_bench.py all --build-dir build/sbench
    /usr/bin/python3 bench/serving/serving_bench.py kiln-serve gunicorn --models mlp
    /usr/bin/python3 bench/serving/serving_bench.py all --quick     # smoke: 2 s per point

With --master-core K, kilnd (its loop, forwarder and local agent) runs on core K and every
other process (the replica, the other servers, the in-process runs and wrk) on the other
cores: the master's cost as on a cluster, where it has a node of its own.

See bench/serving/README.md for what each side does and measured figures.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from kilnd_process import (ADMIN_PASSWORD, KilndProcess, default_build_dir,  # noqa: E402
                           load_average)

PYTHON = "/usr/bin/python3"  # the python3 with torch
WRK_SCRIPT = os.path.join(HERE, "wml_post.lua")
WML_ROUTE = "/ml/v4/deployments/{id}/predictions"
SIDES = ("inprocess", "kiln-serve", "flask", "gunicorn", "master")
MODELS = ("mlp", "cnn", "wide")
# Every process that runs torch gets these, so that N workers use N cores and no more.
PINNED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
          "OMP_WAIT_POLICY": "PASSIVE"}
def openblas_coretype() -> Optional[str]:
    """The OPENBLAS_CORETYPE every side gets, or None to leave OpenBLAS's own choice.

    On VMs that mask the CPU model OpenBLAS 0.3.21 falls back to its SSE3 "Prescott"
    kernels even on an AVX-512 CPU (GEMM about 4x slower). kiln-serve detects that and
    re-executes itself with a better core type; the Python sides get the same here, so the
    comparison is of servers, not of BLAS kernels. A value already in the environment wins.
    """
    if os.environ.get("OPENBLAS_CORETYPE"):
        return os.environ["OPENBLAS_CORETYPE"]
    try:
        library = ctypes.CDLL("libopenblas.so.0")
        library.openblas_get_corename.restype = ctypes.c_char_p
        core = library.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return None
    if core != "Prescott":
        return None
    with open("/proc/cpuinfo") as f:
        flags = f.read().split()
    return "SkylakeX" if "avx512f" in flags else "Haswell" if "avx2" in flags else None


CORETYPE = openblas_coretype()
if CORETYPE:
    PINNED["OPENBLAS_CORETYPE"] = CORETYPE
READY_TIMEOUT_S = 90.0
DEPLOY_TIMEOUT_S = 120.0
OUTPUT_TOLERANCE = 1e-4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_cpu_seconds(roots: Sequence[int]) -> list[float]:
    """User+system CPU seconds of each root's live process tree (their own threads;
    children that already exited are not counted). A process is counted once, for the
    nearest root above it: with roots [kilnd, replica], kilnd's figure leaves out the
    replica, which runs under kilnd's agent and shim."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is field 3 (state): ppid is field 4, utime and stime fields 14 and 15.
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    totals = [0.0] * len(roots)
    index = {root: i for i, root in enumerate(roots)}
    for pid, seconds in times.items():
        ancestor, hops = pid, 0
        while ancestor not in index and ancestor in parents and hops < 64:
            ancestor, hops = parents[ancestor], hops + 1
        if ancestor in index:
            totals[index[ancestor]] += seconds
    return totals


def post(url: str, body: bytes, headers: Optional[dict[str, str]] = None,
         timeout: float = 10.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def replica_pids(master_port: Optional[int]) -> list[int]:
    """The kiln-serve processes whose KILN_MASTER is the bench's kilnd on `master_port`."""
    pids: list[int] = []
    if not master_port:
        return pids
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv0 = f.read().split(b"\0", 1)[0]
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if argv0.endswith(b"kiln-serve") and any(
                v.startswith(b"KILN_MASTER=") and v.endswith(f":{master_port}".encode())
                for v in environ):
            pids.append(int(entry))
    return pids


def batch_counters(metrics_url: Optional[str]) -> Optional[tuple[float, float]]:
    """(sum, count) of kiln-serve's kiln_serve_batch_size histogram, or None."""
    if not metrics_url:
        return None
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        for key in ("kiln_serve_batch_size_sum", "kiln_serve_batch_size_count"):
            if line.startswith(key + " ") or line.startswith(key + "{"):
                values[key] = values.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    if len(values) != 2:
        return None
    return values["kiln_serve_batch_size_sum"], values["kiln_serve_batch_size_count"]


def stop_replicas_of(master_port: Optional[int]) -> None:
    """Replicas outlive kilnd by design (its next start re-adopts them): SIGKILLs the
    bench kilnd's."""
    for pid in replica_pids(master_port):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


class ServerProcess:
    """A server started in its own session (so that stopping it stops its workers too),
    output to a log file; stopped with SIGTERM, then SIGKILL of its process group."""

    def __init__(self, name: str, command: Sequence[str], env: dict[str, str],
                 log_dir: str, cwd: Optional[str] = None) -> None:
        self.name = name
        self.log_path = os.path.join(log_dir, f"{name}.log")
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(list(command), env=env, cwd=cwd, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        with open(self.log_path, "rb") as f:
            return b"".join(f.readlines()[-lines:]).decode(errors="replace")

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


class Bench:
    """One invocation: options, scratch space, the models, and the rows measured."""

    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.work = tempfile.mkdtemp(prefix="kiln-serving-bench-")
        self.payload = os.path.join(self.work, "payload.json")
        with_env = dict(os.environ, **PINNED)
        subprocess.run([PYTHON, os.path.join(HERE, "models.py"), self.work], check=True,
                       env=with_env)
        with open(self.payload, "rb") as f:
            self.body = f.read()
        self.reference: dict[str, list[float]] = {}
        for model in opts.models:
            out = subprocess.run([PYTHON, os.path.join(HERE, "inprocess.py"),
                                  self.model_dir(model), self.payload, "--print-output"],
                                 check=True, env=with_env, capture_output=True, text=True)
            self.reference[model] = json.loads(out.stdout)[0]
        self.rows: list[dict[str, Any]] = []        # one per (model, side, concurrency)
        self.inprocess: list[dict[str, Any]] = []   # one per (model, layout, batch)

    def model_dir(self, model: str) -> str:
        return os.path.join(self.work, model)

    def close(self) -> None:
        if self.opts.keep:
            print(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    # ---- in-process limit -------------------------------------------------------------

    def run_inprocess(self, model: str) -> None:
        cores = len(os.sched_getaffinity(0))
        layouts = [("1 core", 1, 1), (f"{cores} procs x 1 thread", cores, 1)]
        if cores > 1:
            layouts.append((f"1 proc x {cores} threads", 1, cores))
        batches = self.opts.batches
        for label, procs, threads in layouts:
            env = dict(os.environ, **PINNED)
            env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
            # Start together: torch import and model load take a second or two.
            start_at = time.time() + 4.0
            load = load_average()
            children = [subprocess.Popen(
                [PYTHON, os.path.join(HERE, "inprocess.py"), self.model_dir(model),
                 self.payload, "--batches", ",".join(map(str, batches)), "--seconds",
                 str(self.opts.inprocess_seconds), "--threads", str(threads),
                 "--start-at", str(start_at)], env=env, stdout=subprocess.PIPE, text=True)
                for _ in range(procs)]
            per_batch: dict[int, float] = {}
            samples: dict[int, int] = {}
            cpu: dict[int, float] = {}
            for child in children:
                out, _ = child.communicate()
                if child.returncode != 0:
                    raise SystemExit(f"inprocess.py failed for {model} ({label})")
                for line in out.splitlines():
                    record = json.loads(line)
                    batch = record["batch"]
                    per_batch[batch] = per_batch.get(batch, 0.0) + record["samples_per_s"]
                    samples[batch] = samples.get(batch, 0) + record["samples"]
                    cpu[batch] = cpu.get(batch, 0.0) + record["cpu_seconds"]
            for batch in batches:
                cpu_us = cpu[batch] / samples[batch] * 1e6
                row = {"model": model, "layout": label, "procs": procs, "threads": threads,
                       "batch": batch, "samples_per_s": per_batch[batch],
                       "cpu_us_per_sample": cpu_us, "load": load}
                self.inprocess.append(row)
                print(f"  inprocess {model:4} {label:22} batch {batch:4}: "
                      f"{per_batch[batch]:10,.0f} samples/s, {cpu_us:7.1f} cpu us/sample "
                      f"(load {load})", flush=True)

    def inprocess_limit(self, model: str) -> Optional[dict[str, Any]]:
        rows = [r for r in self.inprocess if r["model"] == model]
        return max(rows, key=lambda r: r["samples_per_s"]) if rows else None

    def inprocess_at(self, model: str, batch: int) -> Optional[float]:
        rows = [r["samples_per_s"] for r in self.inprocess
                if r["model"] == model and r["batch"] == batch]
        return max(rows) if rows else None

    def inprocess_cpu_us(self, model: str, batch: int) -> Optional[float]:
        """CPU us per sample on one core (the "1 core" layout) at `batch`."""
        rows = [r["cpu_us_per_sample"] for r in self.inprocess
                if r["model"] == model and r["batch"] == batch and r["procs"] == 1
                and r["threads"] == 1]
        return rows[0] if rows else None

    # ---- HTTP sides ---------------------------------------------------------------------

    def wait_answering(self, url: str, server: Optional[ServerProcess],
                       headers: Optional[dict[str, str]] = None) -> bytes:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            if server is not None and not server.alive():
                raise SystemExit(f"{server.name} exited:\n{server.log_tail()}")
            try:
                status, body = post(url, self.body, headers)
                if status == 200:
                    return body
                last = f"HTTP {status}: {body[:300]!r}"
            except OSError as e:
                last = str(e)
            time.sleep(0.2)
        tail = server.log_tail() if server else ""
        raise SystemExit(f"{url} did not answer 200 in {READY_TIMEOUT_S:.0f} s "
                         f"(last: {last})\n{tail}")

    def check_answer(self, side: str, model: str, body: bytes) -> None:
        """The server must compute what the model computes in-process: same model, same
        request."""
        reply = json.loads(body)
        values = reply["predictions"][0]["values"]
        if len(values) != 1 or len(values[0]) != len(self.reference[model]):
            raise SystemExit(f"{side} ({model}): unexpected answer {body[:300]!r}")
        worst = max(abs(a - b) for a, b in zip(values[0], self.reference[model]))
        if worst > OUTPUT_TOLERANCE:
            raise SystemExit(f"{side} ({model}): answer differs from the in-process output "
                             f"by {worst:g}: {body[:300]!r}")

    def wrk(self, url: str, concurrency: int, seconds: float,
            headers: Optional[dict[str, str]] = None) -> dict[str, Any]:
        command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--latency",
                   "--timeout", "10s", "-s", WRK_SCRIPT]
        for key, value in (headers or {}).items():
            command += ["-H", f"{key}: {value}"]
        command += [url, "--", self.payload]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        match = re.search(r"^WRK_JSON (\{.*\})$", out, re.MULTILINE)
        if not match:
            raise SystemExit(f"wrk printed no WRK_JSON line:\n{out}")
        return json.loads(match.group(1))

    def measure(self, side: str, model: str, url: str, cpu_roots: Sequence[int],
                headers: Optional[dict[str, str]] = None,
                metrics_url: Optional[str] = None) -> None:
        """Warm-up, then one wrk run per concurrency; appends the rows. The server's CPU
        is that of the process trees under `cpu_roots`, each process counted once (the first
        root's own share is also recorded, as "front_cpu_us_per_req": kilnd's when requests
        go through it, its replica not included)."""
        self.wrk(url, 8, self.opts.warmup, headers)
        for concurrency in self.opts.concurrency:
            load = load_average()
            before = tree_cpu_seconds(cpu_roots)
            batches_before = batch_counters(metrics_url)
            result = self.wrk(url, concurrency, self.opts.duration, headers)
            spent = [after - b for after, b in zip(tree_cpu_seconds(cpu_roots), before)]
            batches_after = batch_counters(metrics_url)
            cpu = sum(spent)
            mean_batch = float("nan")
            if batches_before and batches_after and batches_after[1] > batches_before[1]:
                mean_batch = ((batches_after[0] - batches_before[0]) /
                              (batches_after[1] - batches_before[1]))
            seconds = result["duration_us"] / 1e6
            requests = result["requests"]
            errors = (result["connect_errors"] + result["read_errors"] +
                      result["write_errors"] + result["timeouts"])
            row = {"model": model, "side": side, "concurrency": concurrency,
                   "requests": requests, "req_per_s": requests / seconds,
                   "p50_ms": result["p50_us"] / 1e3, "p99_ms": result["p99_us"] / 1e3,
                   "max_ms": result["max_us"] / 1e3, "errors": errors,
                   "non_2xx": result["non_2xx"],
                   "cpu_us_per_req": cpu / requests * 1e6 if requests else float("nan"),
                   "front_cpu_us_per_req": (spent[0] / requests * 1e6 if requests
                                            else float("nan")),
                   "mean_batch": mean_batch,
                   "load": load}
            self.rows.append(row)
            print("  " + format_row(row), flush=True)

    def start_kiln_serve(self, model: str, side: str,
                         max_batch: int) -> Optional[tuple[ServerProcess, int]]:
        """A standalone kiln-serve for `model` (no master, no secret) and its port, or
        None when it is not built (said why)."""
        binary = os.path.join(self.opts.build_dir, "bin", "kiln-serve")
        if not os.access(binary, os.X_OK):
            print(f"  skipped kiln-serve: {binary} is not built "
                  f"(cmake --build {self.opts.build_dir} --target kiln-serve)")
            return None
        port = free_port()
        command = [binary, "--model", os.path.join(self.model_dir(model), "model.pt"),
                   "--signature", os.path.join(self.model_dir(model), "signature.json"),
                   "--name", f"bench-{model}", "--port", str(port),
                   "--threads", str(self.opts.threads), "--max-batch-size", str(max_batch),
                   "--max-queue-delay-us", str(self.opts.max_queue_delay_us),
                   *self.opts.serve_args.split()]
        env = dict(os.environ, **PINNED)
        for key in ("KILN_MASTER", "KILN_TOKEN", "KILN_JOB_ID", "KILN_DEPLOYMENT_ID",
                    "KILN_SERVE_SECRET"):
            env.pop(key, None)  # standalone: no agent callbacks, no secret
        return ServerProcess(f"{side.replace(' ', '-')}-{model}", command, env, self.work), port

    def run_kiln_serve(self, model: str, batching: bool) -> None:
        side = "kiln-serve" if batching else "kiln-serve nobatch"
        started = self.start_kiln_serve(model, side,
                                        self.opts.max_batch_size if batching else 1)
        if started is None:
            return
        server, port = started
        try:
            url = f"http://127.0.0.1:{port}" + WML_ROUTE.format(id=f"bench-{model}")
            self.check_answer(side, model, self.wait_answering(url, server))
            self.measure(side, model, url, [server.proc.pid],
                         metrics_url=f"http://127.0.0.1:{port}/metrics")
        finally:
            server.stop()

    def run_flask(self, model: str) -> None:
        port = free_port()
        server = ServerProcess(f"flask-{model}", [
            PYTHON, os.path.join(HERE, "flask_server.py"), self.model_dir(model),
            "--port", str(port)], dict(os.environ, **PINNED), self.work)
        try:
            url = f"http://127.0.0.1:{port}" + WML_ROUTE.format(id="bench")
            self.check_answer("flask", model, self.wait_answering(url, server))
            self.measure("flask", model, url, [server.proc.pid])
        finally:
            server.stop()

    def run_gunicorn(self, model: str) -> None:
        gunicorn = shutil.which("gunicorn")
        if gunicorn is None:
            print("  skipped gunicorn: not installed (scripts/install-deps.sh)")
            return
        port = free_port()
        env = dict(os.environ, **PINNED, SERVING_MODEL_DIR=self.model_dir(model))
        server = ServerProcess(f"gunicorn-{model}", [
            PYTHON, gunicorn, "--chdir", HERE, "--workers", str(self.opts.gunicorn_workers),
            "--worker-class", self.opts.gunicorn_worker_class,
            "--threads", str(self.opts.gunicorn_threads),
            "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
            "gunicorn_app:application"], env, self.work)
        try:
            url = f"http://127.0.0.1:{port}" + WML_ROUTE.format(id="bench")
            self.check_answer("gunicorn", model, self.wait_answering(url, server))
            self.measure("gunicorn", model, url, [server.proc.pid])
        finally:
            server.stop()

    @contextlib.contextmanager
    def deployed(self, model: str):
        """A real kilnd with the model registered and deployed (1 replica on all slots);
        yields (kilnd URL, deployment, CPU roots [kilnd, replica...], auth headers,
        replica metrics URL), or None when it cannot be had (said why). Stops it all."""
        missing = [b for b in ("kilnd", "kiln-agent", "kiln-shim", "kiln-serve")
                   if not os.access(os.path.join(self.opts.build_dir, "bin", b), os.X_OK)]
        if missing:
            print(f"  skipped master: {', '.join(missing)} not built in {self.opts.build_dir}")
            yield None
            return
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "python"))
        import kiln  # noqa: E402 - the repository's client, standard library only

        slots = self.opts.threads
        name = f"bench-{model}"
        # The replica inherits kilnd's environment through the agent: pinned threads too.
        saved_env = {key: os.environ.get(key) for key in PINNED}
        os.environ.update(PINNED)
        bench_cores = os.sched_getaffinity(0)
        try:
            if self.opts.master_core is not None:  # kilnd and its agent inherit this
                os.sched_setaffinity(0, {self.opts.master_core})
            kilnd = KilndProcess(self.opts.build_dir, slots=slots, keep=self.opts.keep)
            kilnd.__enter__()
        finally:
            os.sched_setaffinity(0, bench_cores)
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        try:
            client = kiln.Client(kilnd.url, user="admin", password=ADMIN_PASSWORD)
            try:
                client.register_model(name, file=os.path.join(self.model_dir(model), "model.pt"),
                                      signature=os.path.join(self.model_dir(model),
                                                             "signature.json"))
                deployment = client.deploy(name, name, replicas=1, slots=slots,
                                           max_batch_size=self.opts.max_batch_size,
                                           max_queue_delay_us=self.opts.max_queue_delay_us)
                deployment = client.wait_deployment(deployment["id"], timeout=DEPLOY_TIMEOUT_S)
            except (kiln.KilnError, TimeoutError) as e:
                print(f"  skipped master: the deployment did not become READY ({e})")
                yield None
                return
            auth = "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
            # kilnd (with its local agent and the shims) first, then the replica: its CPU
            # counts for the replica, not for kilnd, although its shim runs under kilnd.
            port = urllib.parse.urlsplit(kilnd.url).port
            roots = [kilnd.proc.pid, *replica_pids(port)]  # type: ignore[union-attr]
            if self.opts.master_core is not None:
                # The replica was started by kilnd's agent, on kilnd's core: move every
                # thread of it to the cores the other sides ran on.
                for pid in roots[1:]:
                    for tid in os.listdir(f"/proc/{pid}/task"):
                        os.sched_setaffinity(int(tid), bench_cores)
            replica = (deployment.get("replicas") or [{}])[0].get("address", "")
            metrics_url = f"http://{replica}/metrics" if replica else None
            yield kilnd.url.rstrip("/"), deployment, roots, {"Authorization": auth}, metrics_url
            try:
                client.delete_deployment(deployment["id"])
            except kiln.KilnError as e:
                print(f"  note: deleting the deployment: {e}")
        finally:
            port = urllib.parse.urlsplit(kilnd.url).port
            kilnd.__exit__(None, None, None)
            stop_replicas_of(port)

    def run_master(self, model: str) -> None:
        with self.deployed(model) as master:
            if master is None:
                return
            base, deployment, roots, headers, metrics_url = master
            url = base + WML_ROUTE.format(id=deployment["id"])
            try:
                self.check_answer("master", model, self.wait_answering(url, None, headers))
            except SystemExit as e:
                print(f"  skipped master: its Watson ML route did not answer: {e}")
                return
            self.measure("master", model, url, roots, headers, metrics_url)

    # ---- report -------------------------------------------------------------------------

    def row(self, model: str, side: str, concurrency: int) -> Optional[dict[str, Any]]:
        for r in self.rows:
            if r["model"] == model and r["side"] == side and r["concurrency"] == concurrency:
                return r
        return None

    def ratios(self) -> list[str]:
        lines = []
        top = max(self.opts.concurrency)

        def pair(model: str, a: str, b: str) -> Optional[tuple[dict, dict]]:
            ra, rb = self.row(model, a, top), self.row(model, b, top)
            return (ra, rb) if ra and rb else None

        for model in self.opts.models:
            got = pair(model, "kiln-serve", "gunicorn")
            if got:
                k, g = got
                lines.append(
                    f"{model}: kiln-serve / gunicorn at c={top}: "
                    f"{k['req_per_s'] / g['req_per_s']:.2f}x req/s (goal >= 5x; "
                    f"{k['req_per_s']:,.0f} vs {g['req_per_s']:,.0f}), p99 "
                    f"{k['p99_ms']:.2f} vs {g['p99_ms']:.2f} ms (goal: lower), CPU per "
                    f"request {k['cpu_us_per_req']:.0f} vs {g['cpu_us_per_req']:.0f} us")
            got = pair(model, "kiln-serve", "flask")
            if got:
                k, f_ = got
                lines.append(f"{model}: kiln-serve / flask at c={top}: "
                             f"{k['req_per_s'] / f_['req_per_s']:.2f}x req/s, p99 "
                             f"{k['p99_ms']:.2f} vs {f_['p99_ms']:.2f} ms")
            limit = self.inprocess_limit(model)
            k = self.row(model, "kiln-serve", top)
            one_thread = [r["cpu_us_per_sample"] for r in self.inprocess
                          if r["model"] == model and r["threads"] == 1]
            best_cpu = min(one_thread) if one_thread else float("nan")
            if limit and k:
                lines.append(
                    f"{model}: kiln-serve at c={top} / in-process batched limit: "
                    f"{k['req_per_s'] / limit['samples_per_s'] * 100:.0f}% "
                    f"({k['req_per_s']:,.0f} req/s vs {limit['samples_per_s']:,.0f} samples/s, "
                    f"{limit['layout']}, batch {limit['batch']})" +
                    (" (goal >= 70%)" if model == "cnn" else "") +
                    f"; in CPU time: {best_cpu / k['cpu_us_per_req'] * 100:.0f}% "
                    f"({k['cpu_us_per_req']:.0f} us per request vs {best_cpu:.0f} us per "
                    f"sample in-process, the best 1-thread batch; robust to other load)")
            got = pair(model, "kiln-serve", "kiln-serve nobatch")
            if got:
                k, n = got
                context = ""
                b1 = self.inprocess_cpu_us(model, 1)
                batched = [(self.inprocess_cpu_us(model, b), b) for b in self.opts.batches
                           if b > 1 and self.inprocess_cpu_us(model, b)]
                if b1 and batched:
                    best, best_batch = min(batched)
                    # What batching can save in the model itself; the rest of a request's
                    # saving is per-forward overhead (wake-ups, dispatch) shared by a batch.
                    context = (f"; the forward alone (in-process) {b1:.1f} us per sample "
                               f"at batch 1, {best:.1f} at batch {best_batch}")
                lines.append(
                    f"{model}: batching / no batching at c={top}: "
                    f"{k['req_per_s'] / n['req_per_s']:.2f}x req/s (goal >= 3x), p99 "
                    f"{k['p99_ms']:.2f} vs {n['p99_ms']:.2f} ms; CPU per request "
                    f"{k['cpu_us_per_req']:.0f} vs {n['cpu_us_per_req']:.0f} us{context}")
            got = pair(model, "master", "kiln-serve")
            if got:
                m, k = got
                lines.append(
                    f"{model}: through the master / direct at c={top}: "
                    f"{(1 - m['req_per_s'] / k['req_per_s']) * 100:.1f}% fewer req/s "
                    f"(goal <= 15%; {m['req_per_s']:,.0f} vs {k['req_per_s']:,.0f}), p99 "
                    f"{m['p99_ms']:.2f} vs {k['p99_ms']:.2f} ms; CPU per request "
                    f"{m['cpu_us_per_req']:.0f} vs {k['cpu_us_per_req']:.0f} us, of which "
                    f"kilnd {m['front_cpu_us_per_req']:.0f} us")
        return lines

    def report(self) -> None:
        print()
        print(f"serving_bench results ({len(self.rows)} HTTP rows; load average now "
              f"{load_average()}, {os.cpu_count()} CPUs)")
        if self.inprocess:
            print(f"{'model':5} {'in-process layout':22} {'batch':>5} {'samples/s':>11} "
                  f"{'cpu us/sample':>13}  load")
            for r in self.inprocess:
                print(f"{r['model']:5} {r['layout']:22} {r['batch']:>5} "
                      f"{r['samples_per_s']:>11,.0f} {r['cpu_us_per_sample']:>13.1f}  "
                      f"{r['load']}")
        if self.rows:
            print(HEADER)
            for r in self.rows:
                print(format_row(r))
        ratios = self.ratios()
        if ratios:
            print("\nratios (same run):")
            for line in ratios:
                print("  " + line)
        if self.opts.json:
            with open(self.opts.json, "w") as f:
                json.dump({"opts": {k: v for k, v in vars(self.opts).items()},
                           "inprocess": self.inprocess, "http": self.rows,
                           "ratios": ratios}, f, indent=1)
            print(f"\nwrote {self.opts.json}")


HEADER = (f"{'model':5} {'side':18} {'c':>3} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'errors':>6} {'non2xx':>6} {'cpu us/req':>10} {'batch':>5}  load")


def format_row(r: dict[str, Any]) -> str:
    return (f"{r['model']:5} {r['side']:18} {r['concurrency']:>3} {r['req_per_s']:>9,.0f} "
            f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['errors']:>6} {r['non_2xx']:>6} "
            f"{r['cpu_us_per_req']:>10.0f} {fmt_batch(r.get('mean_batch'))}  {r['load']}")


def fmt_batch(value: Optional[float]) -> str:
    """kiln-serve's mean batch over the row ("-" for the anchors)."""
    return f"{value:>5.1f}" if value is not None and value == value else f"{'-':>5}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("sides", nargs="+", choices=("all",) + SIDES,
                        help="what to measure ('all': every side, in the order listed)")
    parser.add_argument("--build-dir", default=default_build_dir(),
                        help="holds bin/kiln-serve (and kilnd, kiln-agent, kiln-shim for "
                             "'master'); default $KILN_BUILD_DIR, else build/bench")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated subset of mlp,cnn,wide")
    parser.add_argument("--concurrency", default="1,8,64", help="wrk -c values")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk warm-up")
    parser.add_argument("--batches", default="1,32,128", help="in-process batch sizes")
    parser.add_argument("--inprocess-seconds", type=float, default=3.0)
    parser.add_argument("--master-core", type=int, default=None,
                        help="run kilnd alone on this core and everything else on the "
                             "others (a master with cores of its own, as on a cluster)")
    parser.add_argument("--threads", type=int, default=None,
                        help="kiln-serve --threads (and the deployment's slots)")
    parser.add_argument("--max-batch-size", type=int, default=64,
                        help="kiln-serve's batching on (off is 1)")
    parser.add_argument("--max-queue-delay-us", type=int, default=0,
                        help="kiln-serve's own default: a batch is what queued meanwhile")
    parser.add_argument("--serve-args", default="",
                        help="extra kiln-serve flags for the direct runs, e.g. '--io-threads 2'")
    parser.add_argument("--gunicorn-workers", type=int, default=2)
    parser.add_argument("--gunicorn-worker-class", default="gthread",
                        help="gthread keeps connections alive; sync closes each one")
    parser.add_argument("--gunicorn-threads", type=int, default=4)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 s per point, 1 s warm-up, 1 s in-process")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir and logs")
    opts = parser.parse_args()
    opts.models = [m for m in opts.models.split(",") if m]
    if any(m not in MODELS for m in opts.models):
        parser.error(f"--models: choose from {','.join(MODELS)}")
    opts.concurrency = [int(c) for c in opts.concurrency.split(",")]
    opts.batches = [int(b) for b in opts.batches.split(",")]
    if opts.quick:
        opts.duration, opts.warmup, opts.inprocess_seconds = 2.0, 1.0, 1.0
    opts.build_dir = os.path.abspath(opts.build_dir)
    cores = os.sched_getaffinity(0)
    if opts.master_core is not None:
        if opts.master_core not in cores or len(cores) < 2:
            parser.error(f"--master-core {opts.master_core}: this process may run on cores "
                         f"{sorted(cores)}; give one of them, with at least one left over")
        cores = cores - {opts.master_core}
        os.sched_setaffinity(0, cores)  # every side, wrk and (moved) the replica run here
    if opts.threads is None:
        opts.threads = len(cores)
    sides = SIDES if "all" in opts.sides else [s for s in SIDES if s in opts.sides]
    if any(s != "inprocess" for s in sides) and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (scripts/install-deps.sh installs it)")

    bench = Bench(opts)
    print(f"serving_bench: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}, {os.cpu_count()} CPUs, "
          f"load average {load_average()}; models {','.join(opts.models)}; wrk -t1 "
          f"-c{{{','.join(map(str, opts.concurrency))}}} -d{opts.duration:g}s; payload "
          f"{len(bench.body)} bytes; kiln-serve --threads {opts.threads} --max-batch-size "
          f"{opts.max_batch_size} (off: 1) --max-queue-delay-us {opts.max_queue_delay_us} "
          f"{opts.serve_args}; gunicorn -w {opts.gunicorn_workers} -k "
          f"{opts.gunicorn_worker_class} --threads {opts.gunicorn_threads}; "
          f"OPENBLAS_CORETYPE {CORETYPE or '(OpenBLAS default)'}"
          + (f"; kilnd on core {opts.master_core}, everything else on cores {sorted(cores)}"
             if opts.master_core is not None else ""))
    try:
        for model in opts.models:
            for side in sides:
                print(f"[{model}] {side}", flush=True)
                if side == "inprocess":
                    bench.run_inprocess(model)
                elif side == "kiln-serve":
                    bench.run_kiln_serve(model, batching=True)
                    bench.run_kiln_serve(model, batching=False)
                elif side == "flask":
                    bench.run_flask(model)
                elif side == "gunicorn":
                    bench.run_gunicorn(model)
                elif side == "master":
                    bench.run_master(model)
        bench.report()
    finally:
        bench.close()


if __name__ == "__main__":
    main()
