"""Tests of the deployment methods of `kiln.Client`: the requests they send and how
`wait_deployment` reads a deployment's progress. The master's side runs against a real
kilnd and real kiln-serve replicas in tests/integration/test_deployments.py."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from kiln import Client, KilnError


def record(state="READY", version=1, ready=1, want=1, replicas=None, reason=""):
    if replicas is None:
        replicas = [{"job_id": 10 + i, "version": version, "state": "READY",
                     "address": f"127.0.0.1:{9000 + i}"} for i in range(ready)]
    return {"id": 3, "name": "fm", "state": state, "version": version, "reason": reason,
            "ready_replicas": ready, "spec": {"replicas": want}, "replicas": replicas}


def test_deploy_posts_only_the_fields_given(server):
    server.canned["/api/v1/deployments"] = (201, record(state="PENDING", ready=0))
    created = Client(server.url, token="t").deploy("fm", "fmnist", replicas=2,
                                                   max_batch_size=16)
    assert created["state"] == "PENDING"
    (post,) = server.requests
    assert post.method == "POST"
    assert post.json() == {"name": "fm", "model": "fmnist", "replicas": 2,
                           "max_batch_size": 16}


def test_predict_posts_native_inputs_and_converts_tensors(server):
    torch = pytest.importorskip("torch")
    server.canned["/api/v1/deployments/my%20dep/predict"] = (
        200, {"model": "m", "version": "1", "outputs": {"y": [[1.0]]}})
    client = Client(server.url)
    answer = client.predict("my dep", torch.tensor([[0.5, 1.0]]))
    assert answer["outputs"] == {"y": [[1.0]]}
    client.predict("my dep", {"x": torch.zeros(1, 2)})
    first, second = server.requests
    assert urlparse(first.path).path == "/api/v1/deployments/my%20dep/predict"
    assert first.json() == {"inputs": [[0.5, 1.0]]}
    assert second.json() == {"inputs": {"x": [[0.0, 0.0]]}}


def test_deployment_reads_by_name(server):
    server.canned["/api/v1/deployments"] = (200, {"deployments": [record()]})
    server.canned["/api/v1/deployments/fm"] = (200, record())
    client = Client(server.url)
    assert [d["name"] for d in client.deployments()] == ["fm"]
    assert client.deployment("fm")["state"] == "READY"


def test_wait_deployment_returns_once_every_replica_serves(server):
    server.canned["/api/v1/deployments/fm"] = (200, record(ready=2, want=2))
    assert Client(server.url).wait_deployment("fm", timeout=5)["ready_replicas"] == 2


def test_wait_deployment_times_out_while_replicas_start(server):
    server.canned["/api/v1/deployments/fm"] = (200, record(state="PENDING", ready=0, want=2))
    with pytest.raises(TimeoutError, match="0/2 replicas ready"):
        Client(server.url).wait_deployment("fm", timeout=0.2, poll=0.05)


def test_wait_deployment_raises_with_the_reason_of_a_failure_or_rollback(server):
    server.canned["/api/v1/deployments/fm"] = (
        200, record(state="FAILED", ready=0, reason="cannot load model.pt"))
    with pytest.raises(KilnError, match="cannot load model.pt"):
        Client(server.url).wait_deployment("fm", timeout=5)
    server.canned["/api/v1/deployments/fm"] = (
        200, record(version=1, reason="rollout to version 2 failed, still serving version 1"))
    with pytest.raises(KilnError, match="rollout to version 2 failed"):
        Client(server.url).wait_deployment("fm", version=2, timeout=5)
