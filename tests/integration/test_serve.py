"""kiln-serve on its own: a real kiln-serve process serving a real TorchScript model that
the test saves with torch, over loopback. Checks the three prediction dialects against
torch in this process, bad input, batching, /metrics, the SIGTERM drain and startup
failures. (Replicas under a master: test_deployments.py.)"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Optional

import pytest

from conftest import BIN, wait_for

torch = pytest.importorskip("torch")

SERVE = BIN / "kiln-serve"
pytestmark = pytest.mark.skipif(not SERVE.exists(),
                                reason=f"{SERVE} is missing (built only with LibTorch)")

SIGNATURE = {"inputs": [{"name": "image", "dtype": "float32", "shape": [1, 28, 28]}],
             "outputs": [{"name": "logits", "dtype": "float32", "shape": [10]}]}
EXPECTED_SIG = "expected image: float32[1,28,28]"


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(784, 64)
        self.fc2 = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(module, directory with model.pt and signature.json)."""
    torch.manual_seed(0)
    m = Mlp().eval()
    d = tmp_path_factory.mktemp("serve-model")
    torch.jit.save(torch.jit.script(m), str(d / "model.pt"))
    (d / "signature.json").write_text(json.dumps(SIGNATURE))
    return m, d


_serve_numbers = itertools.count()


class Serve:
    """One kiln-serve process; `port` once it has written its port file."""

    def __init__(self, model_dir: Path, *args: str, env: Optional[dict] = None,
                 model_file: str = "model.pt", signature_file: str = "signature.json"):
        # A name no earlier server used: a stale port file (an id() reused after an
        # earlier test's Serve was freed) would point at a server that is gone.
        self.port_file = model_dir / f"port-{os.getpid()}-{next(_serve_numbers)}"
        self.port_file.unlink(missing_ok=True)
        cmd = [str(SERVE), "--model", str(model_dir / model_file),
               "--signature", str(model_dir / signature_file), "--name", "mnist",
               "--version", "2", "--port-file", str(self.port_file), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(os.environ, OMP_NUM_THREADS="1",
                                              OPENBLAS_NUM_THREADS="1", **(env or {})))
        self.port: Optional[int] = None

    def wait_ready(self) -> "Serve":
        wait_for(lambda: self.port_file.exists() or self.proc.poll() is not None,
                 timeout=60, what="kiln-serve to listen")
        if self.proc.poll() is not None:
            raise AssertionError(f"kiln-serve exited {self.proc.returncode}: "
                                 f"{self.proc.stderr.read().decode()}")
        self.port = int(self.port_file.read_text())
        return self

    def request(self, method: str, path: str, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        data = json.dumps(body) if isinstance(body, (dict, list)) else body
        conn.request(method, path, body=data,
                     headers={"Content-Type": "application/json", **(headers or {})})
        r = conn.getresponse()
        text = r.read().decode()
        conn.close()
        return r.status, text

    def json(self, method: str, path: str, body=None, headers=None):
        status, text = self.request(method, path, body, headers)
        return status, json.loads(text)

    def metrics(self) -> str:
        status, text = self.request("GET", "/metrics")
        assert status == 200
        return text

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def serve(model):
    servers = []

    def start(*args, **kwargs) -> Serve:
        s = Serve(model[1], *args, **kwargs)
        servers.append(s)
        return s.wait_ready()

    yield start
    for s in servers:
        s.stop()


def metric(text: str, line_prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_prefix} not in /metrics:\n{text}")


def test_three_dialects_give_torchs_predictions(model, serve):
    m, _ = model
    s = serve()
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        want = m(x)

    status, native = s.json("POST", "/api/v1/predict", {"inputs": {"image": x.tolist()}})
    assert status == 200, native
    assert native["model"] == "mnist" and native["version"] == "2"
    assert torch.allclose(torch.tensor(native["outputs"]["logits"]), want, atol=1e-5)

    # Watson ML: flat samples, any deployment id, the query string CPD clients send.
    status, wml = s.json("POST", "/ml/v4/deployments/some-id/predictions?version=2020-08-01",
                         {"input_data": [{"values": x.reshape(3, -1).tolist()}]})
    assert status == 200, wml
    assert wml["predictions"][0]["fields"] == ["logits"]
    assert torch.allclose(torch.tensor(wml["predictions"][0]["values"]), want, atol=1e-5)

    status, kserve = s.json("POST", "/v2/models/mnist/infer", {
        "id": "req-7", "inputs": [{"name": "image", "shape": [3, 1, 28, 28], "datatype": "FP32",
                                   "data": x.flatten().tolist()}]})
    assert status == 200, kserve
    assert kserve["id"] == "req-7" and kserve["model_name"] == "mnist"
    out = kserve["outputs"][0]
    assert out["name"] == "logits" and out["shape"] == [3, 10] and out["datatype"] == "FP32"
    assert torch.allclose(torch.tensor(out["data"]).reshape(3, 10), want, atol=1e-5)

    status, meta = s.json("GET", "/v2/models/mnist")
    assert status == 200
    assert meta["inputs"][0]["name"] == "image" and meta["inputs"][0]["datatype"] == "FP32"
    assert s.request("GET", "/v2/health/ready")[0] == 200
    assert s.request("GET", "/v2/health/live")[0] == 200


def test_bad_payloads_are_400_with_the_signature(serve):
    s = serve()
    status, body = s.json("POST", "/api/v1/predict", {"inputs": [[0.5] * 783]})
    assert status == 400
    assert EXPECTED_SIG in body["error"]["message"]
    status, body = s.json("POST", "/ml/v4/deployments/1/predictions",
                          {"input_data": [{"values": [["x"] * 784]}]})
    assert status == 400
    assert EXPECTED_SIG in body["errors"][0]["message"]
    status, body = s.json("POST", "/v2/models/mnist/infer", "{\"inputs\": [")
    assert status == 400
    assert EXPECTED_SIG in body["error"]
    status, body = s.json("POST", "/api/v1/predict", '{"inputs": [[NaN]]}')
    assert status == 400
    # Nothing bad reached the model, and the server still answers.
    assert s.json("POST", "/api/v1/predict", {"inputs": [[0.0] * 784]})[0] == 200
    metrics = s.metrics()
    assert metric(metrics, 'kiln_serve_requests_total{dialect="native",code="400"}') == 2
    assert metric(metrics, "kiln_serve_batch_size_count") == 1


def test_the_process_is_named_kiln_serve(serve):
    # kiln-serve may re-execute itself (for OPENBLAS_CORETYPE); ps, top and pgrep must
    # still show its name, not "exe".
    s = serve()
    assert Path(f"/proc/{s.proc.pid}/comm").read_text().strip() == "kiln-serve"


def test_signature_from_a_job_config_and_the_secret_header(model, serve):
    _, d = model
    (d / "config.json").write_text(json.dumps({"signature": SIGNATURE, "other": 1}))
    s = serve(env={"KILN_SERVE_SECRET": "abc123"}, signature_file="config.json")
    body = {"inputs": [[0.0] * 784]}
    assert s.request("POST", "/api/v1/predict", body)[0] == 401
    assert s.request("POST", "/api/v1/predict", body, {"X-Kiln-Serve-Secret": "abd123"})[0] == 401
    assert s.request("POST", "/api/v1/predict", body, {"X-Kiln-Serve-Secret": "abc123"})[0] == 200
    assert s.request("GET", "/v2/health/ready")[0] == 200  # health needs no secret
    assert s.request("GET", "/metrics")[0] == 200


def post_concurrently(s: Serve, n: int, results: list) -> list[threading.Thread]:
    def one(i):
        results[i] = s.json("POST", "/api/v1/predict", {"inputs": [[float(i)] * 784]})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads


def test_concurrent_requests_share_forwards(serve):
    # A long delay: a forward runs when 8 samples are queued (or after 2 s).
    s = serve("--max-batch-size", "8", "--max-queue-delay-us", "2000000")
    results = [None] * 8
    for t in post_concurrently(s, 8, results):
        t.join()
    assert all(r[0] == 200 for r in results), results
    metrics = s.metrics()
    forwards = metric(metrics, "kiln_serve_batch_size_count")
    assert forwards < 8
    assert metric(metrics, 'kiln_serve_batch_size_bucket{le="1"}') < forwards or forwards == 1
    assert metric(metrics, "kiln_serve_batch_size_sum") == 8
    assert metric(metrics, 'kiln_serve_requests_total{dialect="native",code="200"}') == 8


def test_metrics_exposition(serve):
    s = serve("--max-queue-delay-us", "0")
    for _ in range(3):
        assert s.request("POST", "/api/v1/predict", {"inputs": [[0.1] * 784]})[0] == 200
    status, text = s.request("GET", "/metrics")
    assert status == 200
    for name, kind in [("kiln_serve_requests_total", "counter"),
                       ("kiln_serve_request_duration_seconds", "histogram"),
                       ("kiln_serve_batch_size", "histogram"),
                       ("kiln_serve_queue_depth", "gauge"),
                       ("kiln_serve_inference_duration_seconds", "histogram")]:
        assert f"# TYPE {name} {kind}\n" in text
    assert metric(text, 'kiln_serve_requests_total{dialect="native",code="200"}') == 3
    assert metric(text, "kiln_serve_request_duration_seconds_count") == 3
    assert metric(text, 'kiln_serve_request_duration_seconds_bucket{le="+Inf"}') == 3
    assert metric(text, "kiln_serve_inference_duration_seconds_count") == 3
    assert metric(text, "kiln_serve_queue_depth") == 0


def test_sigterm_answers_every_queued_request_then_exits_0(model, serve):
    m, _ = model
    # Requests wait up to 60 s for a batch of 64 that never fills: all ten are queued
    # when SIGTERM comes, and the drain must run them.
    s = serve("--max-batch-size", "64", "--max-queue-delay-us", "60000000")
    results = [None] * 10
    threads = post_concurrently(s, 10, results)
    wait_for(lambda: metric(s.metrics(), "kiln_serve_queue_depth") == 10, timeout=30,
             what="ten queued requests")
    s.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join()
    assert s.proc.wait(timeout=30) == 0
    for i, (status, body) in enumerate(results):
        assert status == 200, body
        with torch.no_grad():
            want = m(torch.full((1, 1, 28, 28), float(i)))
        assert torch.allclose(torch.tensor(body["outputs"]["logits"]), want, atol=1e-4)
    stderr = s.proc.stderr.read().decode()
    assert "draining" in stderr


def start_failing(model_dir: Path, *args, **kwargs) -> tuple[int, str]:
    s = Serve(model_dir, *args, **kwargs)
    code = s.proc.wait(timeout=60)
    return code, s.proc.stderr.read().decode()


def test_startup_failures_exit_2_with_the_reason(model, tmp_path):
    _, d = model
    (tmp_path / "model.pt").write_bytes(b"this is not a model")
    (tmp_path / "signature.json").write_text(json.dumps(SIGNATURE))
    code, err = start_failing(tmp_path)
    assert code == 2 and "cannot load" in err and "torch.jit.save" in err, err

    code, err = start_failing(d, model_file="missing.pt")
    assert code == 2 and "does not exist" in err, err

    (tmp_path / "bad-sig.json").write_text(json.dumps({"inputs": [{"name": "image"}]}))
    code, err = start_failing(d, signature_file=str(tmp_path / "bad-sig.json"))
    assert code == 2 and "--signature" in err, err

    # A signature the model does not accept fails the warm-up batch.
    wrong = {"inputs": [{"name": "image", "dtype": "float32", "shape": [5]}],
             "outputs": SIGNATURE["outputs"]}
    (tmp_path / "wrong-sig.json").write_text(json.dumps(wrong))
    code, err = start_failing(d, signature_file=str(tmp_path / "wrong-sig.json"))
    assert code == 2 and "does not accept its signature" in err, err


def test_help_explains_the_flags():
    out = subprocess.run([str(SERVE), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    for flag in ("--model", "--signature", "--max-batch-size", "--max-queue-delay-us",
                 "--threads", "--port-file", "--host"):
        assert flag in out.stdout
