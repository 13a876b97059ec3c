"""The master's prediction path (issue 5) with real kiln-serve replicas of a real
TorchScript model: load spread over replicas, a replica killed with -9 under concurrent
load losing no request (the master retries on another replica), 503 saying why when no
replica is ready, and the Watson ML and KServe v2 dialects routed by the master."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import struct
import threading
import urllib.parse

import pytest

from conftest import ADMIN_PASSWORD, BIN, Master, wait_for
from elastic_util import TERMINAL
from serving_util import (READY_TIMEOUT, SIGNATURE, affine, close, replica_pid, save,
                          serving_master)  # noqa: F401 - serving_master is a fixture

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(not (BIN / "kiln-serve").exists(),
                                reason=f"{BIN / 'kiln-serve'} is missing (built only with LibTorch)")

SAMPLES = [[0.1 * i, -0.2 * i, 0.3, 1.0 - 0.1 * i] for i in range(3)]


@pytest.fixture
def master(serving_master):
    return serving_master


@pytest.fixture
def expected(tmp_path, client):
    """Registers model "affine" (version 1) and returns torch's answers for SAMPLES."""
    module = affine()
    client.register_model("affine", file=save(tmp_path, "affine", module), signature=SIGNATURE)
    with torch.no_grad():
        return module(torch.tensor(SAMPLES)).tolist()


class Connection:
    """One kept-alive HTTP connection to kilnd, as a load-generating client holds it."""

    def __init__(self, url: str, user: str = "admin", password: str = ADMIN_PASSWORD):
        u = urllib.parse.urlparse(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        pair = f"{user}:{password}".encode()
        self.headers = {"Authorization": "Basic " + base64.b64encode(pair).decode(),
                        "Content-Type": "application/json"}

    def request(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        try:
            self.conn.request(method, path, body=data, headers=self.headers)
            resp = self.conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()  # reconnects on the next request
            raise
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode(errors="replace")


class Load:
    """`threads` clients predicting in a loop, each on its own kept-alive connection;
    keeps every non-200 answer and every transport error."""

    def __init__(self, master: Master, deployment: str, threads: int = 4):
        self.url = master.url
        self.path = f"/api/v1/deployments/{deployment}/predict"
        self.failures: list = []
        self.answers = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        conn = Connection(self.url)
        while not self.stopping.is_set():
            try:
                status, body = conn.request("POST", self.path, {"inputs": SAMPLES})
            except Exception as e:  # noqa: BLE001 - every failure counts
                with self.lock:
                    self.failures.append(repr(e))
                continue
            with self.lock:
                if status == 200:
                    self.answers += 1
                else:
                    self.failures.append((status, body))

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        wait_for(lambda: self.answers or self.failures, timeout=30, what="a first answer")
        return self

    def wait_more(self, n: int) -> None:
        start = self.answers
        wait_for(lambda: self.answers >= start + n, timeout=60, what=f"{n} more answers")

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=60)


def replica_requests(address: str) -> int:
    """Predictions a replica answered, from its own /metrics (no secret needed there)."""
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return sum(int(float(v)) for v in
               re.findall(r'^kiln_serve_requests_total\{[^}]*code="200"[^}]*\}\s+(\S+)', text,
                          re.M))


def test_load_is_spread_over_both_replicas(master, client, expected):
    client.deploy("svc", "affine", replicas=2)
    d = client.wait_deployment("svc", timeout=READY_TIMEOUT)
    assert d["ready_replicas"] == 2
    with Load(master, "svc") as load:
        load.wait_more(200)
    assert load.failures == []
    counts = [replica_requests(r["address"]) for r in d["replicas"]]
    assert all(c > 0 for c in counts), counts
    assert sum(counts) >= 200
    answer = client.predict("svc", SAMPLES)
    assert close(answer["outputs"]["y"], expected)


def test_a_replica_killed_under_load_loses_no_request(master, client, expected):
    client.deploy("svc", "affine", replicas=2)
    d = client.wait_deployment("svc", timeout=READY_TIMEOUT)
    victim = d["replicas"][0]["job_id"]
    with Load(master, "svc", threads=6) as load:
        load.wait_more(100)
        os.kill(replica_pid(master, victim), signal.SIGKILL)
        # Requests keep being answered by the survivor while the victim is replaced.
        load.wait_more(300)
        client.wait_state(victim, TERMINAL, timeout=60)
        load.wait_more(100)
    assert load.failures == []
    assert load.answers >= 500


def test_no_ready_replica_is_a_503_that_says_why(tmp_path, client, expected):
    # A model whose forward cannot take its signature: every replica fails its warm-up.
    client.register_model("wrong", file=save(tmp_path, "wrong", affine(width=5)),
                          signature=SIGNATURE)
    client.deploy("broken", "wrong", replicas=1)
    status, body = client.raw("POST", "/api/v1/deployments/broken/predict",
                              json.dumps({"inputs": SAMPLES}).encode(),
                              {"Content-Type": "application/json"})
    assert status == 503, body  # PENDING (still starting) or already FAILED
    wait_for(lambda: client.deployment("broken")["state"] == "FAILED", timeout=READY_TIMEOUT,
             what="FAILED")
    status, body = client.raw("POST", "/api/v1/deployments/broken/predict",
                              json.dumps({"inputs": SAMPLES}).encode(),
                              {"Content-Type": "application/json"})
    assert status == 503
    assert "FAILED" in body["error"]["message"]
    status, body = client.raw("POST", "/api/v1/deployments/nope/predict",
                              json.dumps({"inputs": SAMPLES}).encode(),
                              {"Content-Type": "application/json"})
    assert status == 404


def test_watson_ml_and_kserve_through_the_master(client, expected):
    d = client.deploy("svc", "affine", replicas=1)
    client.wait_deployment("svc", timeout=READY_TIMEOUT)
    headers = {"Content-Type": "application/json"}

    status, body = client.raw(
        "POST", f"/ml/v4/deployments/{d['id']}/predictions?version=2020-09-01",
        json.dumps({"input_data": [{"fields": ["x"], "values": SAMPLES}]}).encode(), headers)
    assert status == 200, body
    assert body["predictions"][0]["fields"] == ["y"]
    assert close(body["predictions"][0]["values"], expected)

    infer = {"id": "r1", "inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP32",
                                     "data": [v for row in SAMPLES for v in row]}]}
    for path in ("/v2/models/svc/infer", "/v2/models/svc/versions/1/infer"):
        status, body = client.raw("POST", path, json.dumps(infer).encode(), headers)
        assert status == 200, body
        assert body["id"] == "r1"
        out = body["outputs"][0]
        assert out["name"] == "y" and out["shape"] == [3, 3]
        assert close(out["data"], [v for row in expected for v in row])
    status, body = client.raw("POST", "/v2/models/svc/versions/9/infer",
                              json.dumps(infer).encode(), headers)
    assert status == 404 and "version" in body["error"]

    status, meta = client.raw("GET", "/v2/models/svc")
    assert status == 200
    assert meta["name"] == "svc" and meta["versions"] == ["1"]
    assert meta["inputs"][0]["name"] == "x" and meta["inputs"][0]["datatype"] == "FP32"
    assert client.raw("GET", "/v2/models/svc/ready")[0] == 200
    assert client.raw("GET", "/v2/models/nope/ready")[0] == 404
    assert client.raw("GET", "/v2/health/live", auth=False)[0] == 200
    assert client.raw("GET", "/v2/health/ready", auth=False)[0] == 200
    # A payload that does not fit the signature: the replica's 400 comes through.
    bad = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    status, body = client.raw("POST", "/v2/models/svc/infer", json.dumps(bad).encode(), headers)
    assert status == 400 and "x: float32[4]" in body["error"]

    check_kserve_binary_tensor_data(client, expected)


def binary_infer(client, path: str, head: dict, data: bytes):
    """A KServe request with binary tensor data, as tritonclient sends it: the JSON, its
    length in Inference-Header-Content-Length, then the raw bytes. Returns (status,
    response JSON, bytes after it)."""
    u = urllib.parse.urlparse(client.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    head_bytes = json.dumps(head).encode()
    headers = dict(client._headers)
    headers["Inference-Header-Content-Length"] = str(len(head_bytes))
    headers["Content-Type"] = "application/octet-stream"
    conn.request("POST", path, body=head_bytes + data, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    length = resp.getheader("Inference-Header-Content-Length")
    if length is None:
        return resp.status, json.loads(body), b""
    assert resp.getheader("Content-Type") == "application/octet-stream"
    return resp.status, json.loads(body[:int(length)]), body[int(length):]


def check_kserve_binary_tensor_data(client, expected):
    flat = [v for row in SAMPLES for v in row]
    want = [v for row in expected for v in row]
    x = {"name": "x", "shape": [3, 4], "datatype": "FP32",
         "parameters": {"binary_data_size": 4 * len(flat)}}
    raw = struct.pack(f"<{len(flat)}f", *flat)
    # tritonclient's default: binary inputs, and binary outputs when it names none.
    status, body, tail = binary_infer(client, "/v2/models/svc/infer",
                                      {"inputs": [x], "parameters": {"binary_data_output": True}},
                                      raw)
    assert status == 200, body
    out = body["outputs"][0]
    assert out["shape"] == [3, 3] and out["parameters"]["binary_data_size"] == 36
    assert close(list(struct.unpack("<9f", tail)), want)
    # Binary in, JSON out.
    status, body, tail = binary_infer(client, "/v2/models/svc/versions/1/infer",
                                      {"inputs": [x], "outputs": [{"name": "y"}]}, raw)
    assert status == 200 and tail == b"", body
    assert close(body["outputs"][0]["data"], want)
    # Bytes that do not match the size: a 400 that says so.
    status, body, _ = binary_infer(client, "/v2/models/svc/infer", {"inputs": [x]}, raw[:-4])
    assert status == 400 and "only 44 bytes of binary data are left" in body["error"], body

    # Under concurrent load the master bundles requests for the replica; each keeps its
    # own header and gets its own answer (different samples per thread).
    failures = []
    module = affine()  # built here: its seeding is not thread-safe
    inputs = {k: [[v + k for v in row] for row in SAMPLES] for k in range(8)}
    with torch.no_grad():
        answers = {k: [v for row in module(torch.tensor(rows)).tolist() for v in row]
                   for k, rows in inputs.items()}

    def worker(k: int):
        mine = answers[k]
        data = struct.pack("<12f", *[v for row in inputs[k] for v in row])
        for _ in range(25):
            status, body, tail = binary_infer(
                client, "/v2/models/svc/infer",
                {"id": str(k), "inputs": [x], "parameters": {"binary_data_output": True}}, data)
            if status != 200 or body.get("id") != str(k) or not close(
                    list(struct.unpack("<9f", tail)), mine):
                failures.append((k, status, body))
                return

    threads = [threading.Thread(target=worker, args=(k,)) for k in inputs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
