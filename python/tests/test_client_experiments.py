"""Tests of kiln.Client's experiment methods' own logic: the requests they send (code
upload, name in the path) and waiting. The master's side is exercised against a real
kilnd by tests/integration/test_experiments.py."""

from __future__ import annotations

import json
from urllib.parse import urlparse

import pytest

from kiln import Client
from kiln.client import _pack_folder


def test_create_experiment_uploads_code_then_posts_the_spec(server, tmp_path):
    (tmp_path / "obj.py").write_text("print(1)\n")
    server.canned["/api/v1/packages"] = (201, {"id": "sha256-ab", "kind": "tar.gz"})
    server.canned["/api/v1/experiments"] = (201, {"id": 3, "state": "RUNNING"})
    spec = {"command": ["python3", "obj.py"], "search_space": {"x": {"type": "double",
            "low": 0, "high": 1}}, "objective": "loss", "code": str(tmp_path)}
    assert Client(server.url, token="t").create_experiment(spec)["id"] == 3
    upload, post = server.requests
    assert urlparse(upload.path).path == "/api/v1/packages"
    assert upload.body == _pack_folder(str(tmp_path))
    body = post.json()
    assert body["package"] == {"id": "sha256-ab"}
    assert "code" not in body
    assert "code" in spec  # the caller's dict is left alone


def test_create_experiment_refuses_code_and_package_together(server, tmp_path):
    with pytest.raises(ValueError, match="either code"):
        Client(server.url).create_experiment({"package": {"id": "x"}}, code=tmp_path)
    assert server.requests == []


def test_experiment_names_are_quoted_into_the_path(server):
    server.canned["/api/v1/experiments/a%20b/trials"] = (200, {"trials": [{"number": 0}]})
    assert Client(server.url).trials("a b") == [{"number": 0}]


def test_stop_experiment_sends_force_only_when_asked(server):
    server.canned["/api/v1/experiments/3/stop"] = (200, {"id": 3, "state": "STOPPED"})
    client = Client(server.url)
    client.stop_experiment(3)
    client.stop_experiment(3, force=True)
    assert [r.path for r in server.requests] == ["/api/v1/experiments/3/stop",
                                                 "/api/v1/experiments/3/stop?force=true"]


def test_wait_experiment_polls_until_it_ends(server):
    states = iter(["SUBMITTED", "RUNNING", "FINISHED"])

    def handler(h):
        reply = json.dumps({"id": 3, "state": next(states)}).encode()
        h.send_response(200)
        h.send_header("Content-Length", str(len(reply)))
        h.end_headers()
        h.wfile.write(reply)

    server.handlers["/api/v1/experiments/3"] = handler
    assert Client(server.url).wait_experiment(3, poll=0.01)["state"] == "FINISHED"


def test_wait_experiment_times_out_with_its_progress(server):
    server.canned["/api/v1/experiments/3"] = (200, {"id": 3, "state": "RUNNING",
                                                    "progress": {"complete": 2, "running": 2}})
    with pytest.raises(TimeoutError, match="still RUNNING .*2 trials complete, 2 running"):
        Client(server.url).wait_experiment(3, poll=0.01, timeout=0.05)
