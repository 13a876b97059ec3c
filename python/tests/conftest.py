"""Shared test fixtures: ``python/`` on sys.path and `RecordingServer`, a real HTTP
server on a loopback port that records metric batches and can be scripted to fail."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator, Optional

import pytest

PYTHON_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_ROOT = os.path.dirname(PYTHON_DIR)
if PYTHON_DIR not in sys.path:
    sys.path.insert(0, PYTHON_DIR)

# Workloads run under Debian's python with torch; tests start children with it too.
WORKLOAD_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

KILN_ENV = ("KILN_MASTER", "KILN_TOKEN", "KILN_JOB_ID", "KILN_TASK_ID", "KILN_TRIAL_ID",
            "KILN_SLOTS", "RESULT_DIR", "LOG_DIR", "DATA_DIR", "CHECKPOINT_DIR",
            "TRAINING_ID", "SUBID", "JOB_STATE_DIR", "KILN_URL", "KILN_USER",
            "KILN_PASSWORD")


@pytest.fixture(autouse=True)
def clean_kiln_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts outside Kiln, whatever the shell running pytest has set."""
    for name in KILN_ENV:
        monkeypatch.delenv(name, raising=False)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Waits until ``condition()`` holds, polling; fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met within %.0f s" % timeout)
        time.sleep(0.01)


class Request:
    """One request the server received, and what it answered."""

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes,
                 status: Optional[int]) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.status = status  # None: the connection was dropped without an answer

    def json(self) -> Any:
        return json.loads(self.body)


class RecordingServer:
    """A loopback HTTP server that records every request.

    Metric batches (POST .../metrics) are stored the way the master stores them: a
    batch whose seq is not above the last stored seq of its writer is acknowledged
    and ignored. ``script`` holds what to do with the next requests: an int status to
    answer (with a Kiln error body) without storing, or ``"drop"`` to store the batch
    and then close the connection without answering (``"truncate"``: after half an
    answer). ``canned`` maps a GET path to the
    JSON to answer (for client tests).
    """

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.stored: dict[str, list[tuple[int, dict[str, Any]]]] = {}  # writer -> seq, report
        self.script: list[Any] = []
        self.canned: dict[str, tuple[int, Any]] = {}
        self.handlers: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        self.lock = threading.Lock()
        self.port = 0
        self._httpd: Optional[ThreadingHTTPServer] = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                owner._handle(self, "GET")

            def do_POST(self) -> None:
                owner._handle(self, "POST")

        ThreadingHTTPServer.allow_reuse_address = True
        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        httpd.daemon_threads = True
        self.port = httpd.server_address[1]
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def stop(self) -> None:
        """Stops listening; connections are refused until `start` (same port)."""
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        route = h.path.split("?")[0]
        if route in self.handlers:
            with self.lock:
                self.requests.append(Request(method, h.path, dict(h.headers), body, 200))
            self.handlers[route](h)
            return
        with self.lock:
            action = self.script.pop(0) if self.script else None
            status: Optional[int] = 200
            reply: Any = {}
            if isinstance(action, int):
                status = action
                reply = {"error": {"code": "INVALID_ARGUMENT" if action < 500
                                   else "UNAVAILABLE", "message": f"scripted {action}"}}
            elif route in self.canned:
                status, reply = self.canned[route]
            elif method == "POST" and route.endswith("/metrics"):
                batch = json.loads(body)
                mine = self.stored.setdefault(batch["writer"], [])
                if not mine or batch["seq"] > mine[-1][0]:
                    mine.extend((batch["seq"], r) for r in batch["reports"])
                reply = {"accepted": sum(len(r["metrics"]) for r in batch["reports"])}
                if action in ("drop", "truncate"):
                    status = None
            else:
                status, reply = 404, {"error": {"code": "NOT_FOUND",
                                                "message": f"no route {route}"}}
            self.requests.append(Request(method, h.path, dict(h.headers), body, status))
        if status is None and action == "truncate":
            h.send_response(200)
            h.send_header("Content-Length", "100")
            h.end_headers()
            h.wfile.write(b'{"acc')
            h.wfile.flush()
        if status is None:
            h.close_connection = True
            h.connection.shutdown(2)
            return
        data = json.dumps(reply).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    # ---- views for assertions ---------------------------------------------------

    def metric_posts(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == "POST"
                    and r.path.endswith("/metrics")]

    def stored_reports(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for rows in self.stored.values() for _, r in rows]


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    s = RecordingServer()
    yield s
    s.stop()
