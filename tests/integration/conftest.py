"""Fixtures for Kiln's integration tests: real kilnd / kiln-agent / kiln-shim processes on
loopback, port 0 and temporary directories, real workloads.

The binaries come from ``$KILN_BUILD_DIR/bin`` (default: ``build/dev``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))

import kiln  # noqa: E402

BUILD_DIR = Path(os.environ.get("KILN_BUILD_DIR", ROOT / "build" / "dev")).resolve()
BIN = BUILD_DIR / "bin"
ADMIN_PASSWORD = "integration-pass"
PYTHON = "/usr/bin/python3"


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    """Polls `predicate` until it returns a truthy value; fails the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Master:
    """A kilnd process on a data dir; can be killed (-9) and restarted on the same port."""

    def __init__(self, data_dir: Path, local_agent: bool = True, slots: int = 2,
                 extra_args: Optional[list[str]] = None, env: Optional[dict] = None,
                 discover_gpus: bool = False):
        self.data_dir = data_dir
        self.local_agent = local_agent
        self.slots = slots
        self.extra_args = extra_args or []
        self.env = env or {}
        self.discover_gpus = discover_gpus
        self.port = 0
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = data_dir.parent / f"{data_dir.name}-kilnd.log"

    def start(self) -> "Master":
        args = [str(BIN / "kilnd"), "--data-dir", str(self.data_dir), "--port", str(self.port),
                "--log-level", "debug", *self.extra_args]
        if not self.discover_gpus:
            args.append("--no-gpus")
        if self.local_agent:
            args += ["--local-agent", "--slots", str(self.slots)]
        env = dict(os.environ, KILN_ADMIN_PASSWORD=ADMIN_PASSWORD, **self.env)
        url_file = self.data_dir / "kilnd.url"
        if url_file.exists():
            url_file.unlink()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        url = wait_for(lambda: url_file.exists() and url_file.read_text().strip(),
                       timeout=20, what=f"kilnd to listen (log: {self.log_path})")
        self.port = int(url.rsplit(":", 1)[1])
        self.url = url
        if self.local_agent:
            wait_for(lambda: any(a["connected"] for a in self.client().agents()),
                     timeout=20, what="the local agent to register")
        return self

    def client(self, user: str = "admin", password: str = ADMIN_PASSWORD) -> "TestClient":
        return TestClient(self.url, user, password)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def agent_token(self) -> str:
        return (self.data_dir / "agent-token").read_text().strip()


class Agent:
    """A separate kiln-agent process."""

    def __init__(self, master: Master, data_dir: Path, agent_id: str, slots: int = 2):
        self.master = master
        self.data_dir = data_dir
        self.agent_id = agent_id
        self.slots = slots
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Agent":
        token_file = self.data_dir.parent / f"{self.agent_id}.token"
        token_file.write_text(self.master.agent_token)
        log = open(self.data_dir.parent / f"{self.agent_id}-agent.log", "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "kiln-agent"), "--master", self.master.url, "--token-file", str(token_file),
             "--data-dir", str(self.data_dir), "--agent-id", self.agent_id,
             "--slots", str(self.slots), "--no-gpus", "--log-level", "debug"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: any(a["id"] == self.agent_id and a["connected"]
                             for a in self.master.client().agents()),
                 timeout=20, what=f"agent {self.agent_id} to register")
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class TestClient(kiln.Client):
    """kiln.Client plus the few calls only tests need."""

    def agents(self) -> list:
        return self._request("GET", "/api/v1/agents")["agents"]

    def raw(self, method: str, path: str, body: Optional[bytes] = None,
            headers: Optional[dict] = None, auth: bool = True):
        """One HTTP request; returns (status, parsed JSON or text)."""
        import http.client
        import json
        import urllib.parse
        u = urllib.parse.urlparse(self.url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        h = dict(headers or {})
        if auth:
            for k, v in self._headers.items():
                h.setdefault(k, v)
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        try:
            return resp.status, json.loads(data)
        except ValueError:
            return resp.status, data.decode(errors="replace")

    def wait_state(self, job_id: int, states, timeout: float = 60.0) -> dict:
        states = {states} if isinstance(states, str) else set(states)
        return wait_for(lambda: (lambda j: j if j["state"] in states else None)(self.job(job_id)),
                        timeout=timeout, what=f"job {job_id} to reach {sorted(states)}")

    def all_logs(self, job_id: int) -> list:
        return list(self.logs(job_id))


@pytest.fixture
def master(tmp_path):
    m = Master(tmp_path / "master").start()
    yield m
    m.stop()
    from serving_util import kill_replicas  # here: serving_util imports this module
    kill_replicas(m)  # deployments' replicas outlive kilnd by design: stop this test's


@pytest.fixture
def client(master):
    return master.client()


def pytest_sessionstart(session):
    for name in ("kilnd", "kiln-agent", "kiln-shim"):
        if not (BIN / name).exists():
            raise pytest.UsageError(f"{BIN / name} is missing: build first (make build) or set KILN_BUILD_DIR")
