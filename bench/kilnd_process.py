"""Shared by the Python benchmarks: a throw-away kilnd and a fast keep-alive JSON client.

`KilndProcess` starts ``kilnd --local-agent`` on a temporary data dir with port 0 and
stops it (SIGTERM, then SIGKILL) on exit. `FastClient` keeps one HTTP/1.1 connection
open, so that polling every few milliseconds measures kilnd, not TCP setup (the
`kiln.Client` opens a new connection per call, which is right for users and wrong for a
2 ms poll loop). Standard library only.
"""

from __future__ import annotations

import base64
import datetime
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.parse
from typing import Any, Optional, Sequence

ADMIN_PASSWORD = "benchpass1"
TERMINAL_STATES = ("FINISHED", "FAILED", "KILLED")
SIGTERM_GRACE_S = 3.0  # then SIGKILL
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_build_dir() -> str:
    """$KILN_BUILD_DIR, else build/bench in the checkout."""
    return os.environ.get("KILN_BUILD_DIR") or os.path.join(REPO, "build", "bench")


class KilndProcess:
    """A kilnd with a local agent on a fresh temporary data dir (a context manager)."""

    def __init__(self, build_dir: str, slots: int, extra_args: Sequence[str] = (),
                 keep: bool = False) -> None:
        self.binary = os.path.join(build_dir, "bin", "kilnd")
        if not os.access(self.binary, os.X_OK):
            raise SystemExit(f"{self.binary} not found: build kilnd, kiln-shim and "
                             f"kiln-agent first (see bench/README.md)")
        self.slots = slots
        self.extra_args = list(extra_args)
        self.keep = keep
        self.data_dir = ""
        self.url = ""
        self.proc: Optional[subprocess.Popen[bytes]] = None

    def __enter__(self) -> "KilndProcess":
        self.data_dir = tempfile.mkdtemp(prefix="kiln-bench-")
        env = dict(os.environ, KILN_ADMIN_PASSWORD=ADMIN_PASSWORD)
        self._log = open(os.path.join(self.data_dir, "kilnd.log"), "wb")
        self.proc = subprocess.Popen(
            [self.binary, "--data-dir", self.data_dir, "--port", "0", "--local-agent",
             "--slots", str(self.slots), "--no-gpus", "--log-level", "warn",
             *self.extra_args],
            stdout=subprocess.PIPE, stderr=self._log, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if "http://" not in line:
            self.__exit__(None, None, None)
            raise SystemExit(f"kilnd did not start (printed {line!r}); see {self.data_dir}")
        self.url = line[line.index("http://"):].strip()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=SIGTERM_GRACE_S)
            except subprocess.TimeoutExpired:
                # Known issue (bench/README.md, "Blockers"): with --local-agent, kilnd
                # takes ~19 s to exit on SIGTERM. Say so instead of waiting it out.
                print(f"  note: kilnd still running {SIGTERM_GRACE_S:.0f} s after SIGTERM; "
                      f"sent SIGKILL")
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()
        if self.keep:
            print(f"kept {self.data_dir}")
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def rss_mb(self) -> float:
        """kilnd's VmRSS in MB (0 if unknown)."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:  # type: ignore[union-attr]
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def cpu_seconds(self) -> float:
        """kilnd's own user+system CPU seconds (its threads, the local agent included;
        not its children)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:  # type: ignore[union-attr]
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FastClient:
    """One kept-alive HTTP connection to kilnd, HTTP Basic as admin. Not thread-safe."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        self._host, self._port = parsed.hostname, parsed.port or 80
        self._timeout = timeout
        pair = f"admin:{ADMIN_PASSWORD}".encode()
        self._auth = "Basic " + base64.b64encode(pair).decode()
        self._conn: Optional[http.client.HTTPConnection] = None

    def request(self, method: str, path: str, body: Any = None,
                raw: Optional[bytes] = None,
                content_type: str = "application/json") -> Any:
        """Sends one request; returns the parsed JSON reply. Raises RuntimeError on 4xx/5xx."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        headers = {"Authorization": self._auth}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port,
                                                        timeout=self._timeout)
            try:
                self._conn.request(method, path, body=data, headers=headers)
                reply = self._conn.getresponse()
                payload = reply.read()
                break
            except (http.client.HTTPException, ConnectionError):
                # A kept-alive connection the server closed: reconnect once.
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        if reply.status >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {reply.status} {payload[:300]!r}")
        return json.loads(payload) if payload else None

    def submit(self, command: Sequence[str], slots: int = 1,
               package_id: Optional[str] = None,
               env: Optional[dict[str, str]] = None) -> dict[str, Any]:
        spec: dict[str, Any] = {"command": list(command), "resources": {"slots": slots}}
        if package_id:
            spec["package"] = {"id": package_id}
        if env:
            spec["env"] = env
        return self.request("POST", "/api/v1/jobs", spec)

    def job(self, job_id: int) -> dict[str, Any]:
        return self.request("GET", f"/api/v1/jobs/{job_id}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def parse_time(stamp: Optional[str]) -> Optional[float]:
    """ISO 8601 "2026-11-26T10:00:00.000000Z" -> Unix seconds (None stays None)."""
    if not stamp:
        return None
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in [0, 100])."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, int(-(-p * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def load_average() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def machine_line() -> str:
    return (f"{datetime.datetime.now().isoformat(timespec='seconds')}, {os.cpu_count()} CPUs, "
            f"load average {load_average()}")


def wait_terminal(client: FastClient, job_id: int, poll_s: float,
                  timeout_s: float = 3600) -> tuple[dict[str, Any], float]:
    """Polls until the job ends; returns (record, time.monotonic() when it was seen)."""
    deadline = time.monotonic() + timeout_s
    while True:
        record = client.job(job_id)
        now = time.monotonic()
        if record["state"] in TERMINAL_STATES:
            return record, now
        if now > deadline:
            raise TimeoutError(f"job {job_id} still {record['state']} after {timeout_s} s")
        time.sleep(poll_s)
