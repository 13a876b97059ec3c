"""Deployments end to end (issue 5): a real kilnd with its local agent runs real kiln-serve
replicas of real TorchScript models that the test saves with torch and registers; the
test predicts through the master and compares with torch in this process. Covers two
replicas, a replica killed with -9 under a steady client loop, a rolling update under a
steady client loop, a model that fails to load, a bad version rolled back, delete, a
kilnd restart, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading

import pytest

import kiln
from conftest import BIN, Master, wait_for
from elastic_util import TERMINAL
from serving_util import (READY_TIMEOUT, SIGNATURE, affine, close, replica_pid, save,
                          serving_master)  # noqa: F401 - serving_master is a fixture

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.skipif(not (BIN / "kiln-serve").exists(),
                                reason=f"{BIN / 'kiln-serve'} is missing (built only with LibTorch)")

# Five samples every request sends; answers identify the version that computed them.
SAMPLES = [[0.1 * i, -0.2 * i, 0.3, 1.0 - 0.1 * i] for i in range(5)]


def expected(module: torch.nn.Module) -> list:
    with torch.no_grad():
        return module(torch.tensor(SAMPLES)).tolist()


@pytest.fixture
def master(serving_master):
    return serving_master


@pytest.fixture
def models(tmp_path, client):
    """Registers model "affine" version 1 and 2 (different weights); returns
    {version: expected answers}."""
    v1, v2 = affine(seed=1), affine(seed=2)
    for module, name in ((v1, "v1"), (v2, "v2")):
        client.register_model("affine", file=save(tmp_path, name, module), signature=SIGNATURE)
    return {1: expected(v1), 2: expected(v2)}


def outputs(answer: dict) -> list:
    return answer["outputs"]["y"]


class SteadyClient:
    """Predicts in a loop on its own thread; keeps every failure and every answer."""

    def __init__(self, master: Master, deployment: str):
        self.client = master.client()
        self.deployment = deployment
        self.failures: list = []
        self.answers: list = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.answers.append(outputs(self.client.predict(self.deployment, SAMPLES)))
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.failures.append(repr(e))

    def __enter__(self) -> "SteadyClient":
        self.thread.start()
        wait_for(lambda: self.answers or self.failures, timeout=30, what="a first answer")
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)


def test_predictions_through_the_master_match_torch(client, models):
    created = client.deploy("affine-svc", "affine", version=1, replicas=2)
    assert created["state"] == "PENDING"
    d = client.wait_deployment("affine-svc", timeout=READY_TIMEOUT)
    assert d["state"] == "READY" and d["ready_replicas"] == 2
    assert d["signature"] == SIGNATURE
    assert {r["state"] for r in d["replicas"]} == {"READY"}
    for replica in d["replicas"]:
        job = client.job(replica["job_id"])
        assert job["state"] == "RUNNING"
        assert job["command"][0] == "kiln-serve"
    answer = client.predict("affine-svc", SAMPLES)
    assert answer["version"] == "1"
    assert close(outputs(answer), models[1])
    # By id too, and one input by name.
    answer = client.predict(d["id"], {"x": SAMPLES[:1]})
    assert close(outputs(answer), models[1][:1])
    # Replica jobs stay out of the top-level job list.
    assert all(j["id"] not in {r["job_id"] for r in d["replicas"]} for j in client.jobs())


def test_bad_input_is_a_400_naming_the_signature(client, models):
    client.deploy("affine-svc", "affine", replicas=1)
    client.wait_deployment("affine-svc", timeout=READY_TIMEOUT)
    status, body = client.raw("POST", "/api/v1/deployments/affine-svc/predict",
                              json.dumps({"inputs": [[1, 2, 3]]}).encode(),
                              {"Content-Type": "application/json"})
    assert status == 400
    assert "x: float32[4]" in json.dumps(body)
    status, body = client.raw("POST", "/api/v1/deployments",
                              json.dumps({"name": "x y", "model": "affine"}).encode(),
                              {"Content-Type": "application/json"})
    assert status == 400 and "\"name\"" in body["error"]["message"]
    status, body = client.raw("POST", "/api/v1/deployments",
                              json.dumps({"name": "z", "model": "nope"}).encode(),
                              {"Content-Type": "application/json"})
    assert status == 404 and "nope" in body["error"]["message"]


def test_a_killed_replica_is_replaced_without_a_failed_request(master, client, models):
    client.deploy("affine-svc", "affine", version=1, replicas=2)
    before = client.wait_deployment("affine-svc", timeout=READY_TIMEOUT)
    victim = before["replicas"][0]["job_id"]
    with SteadyClient(master, "affine-svc") as steady:
        os.kill(replica_pid(master, victim), signal.SIGKILL)
        client.wait_state(victim, TERMINAL, timeout=60)

        def replaced():
            d = client.deployment("affine-svc")
            jobs = {r["job_id"] for r in d["replicas"]}
            return d if (d["ready_replicas"] == 2 and victim not in jobs
                         and all(r["state"] == "READY" for r in d["replicas"])) else None
        after = wait_for(replaced, timeout=READY_TIMEOUT, what="a replacement replica")
        answered = len(steady.answers)
        wait_for(lambda: len(steady.answers) > answered + 20, timeout=30,
                 what="answers from the replaced set")
    assert steady.failures == []
    assert after["state"] == "READY"
    assert all(close(a, models[1]) for a in steady.answers)


def test_rolling_update_drops_no_request_and_switches_the_answers(master, client, models):
    client.deploy("affine-svc", "affine", version=1, replicas=2)
    client.wait_deployment("affine-svc", timeout=READY_TIMEOUT)
    with SteadyClient(master, "affine-svc") as steady:
        updated = client.update_deployment("affine-svc", version=2)
        assert updated["state"] == "UPDATING"
        done = client.wait_deployment("affine-svc", version=2, timeout=READY_TIMEOUT)
        answered = len(steady.answers)
        wait_for(lambda: len(steady.answers) > answered + 20, timeout=30,
                 what="answers after the rollout")
    assert steady.failures == []
    assert done["version"] == 2 and done["ready_replicas"] == 2
    assert {r["version"] for r in done["replicas"]} == {2}
    # Every answer came from one version or the other; the last ones from version 2.
    assert all(close(a, models[1]) or close(a, models[2]) for a in steady.answers)
    assert all(close(a, models[2]) for a in steady.answers[-10:])
    assert close(outputs(client.predict("affine-svc", SAMPLES)), models[2])


def test_a_model_that_fails_to_load_fails_the_deployment_with_the_reason(tmp_path, client):
    # Its forward takes 5 features; the signature promises 4: the warm-up fails.
    client.register_model("wrong", file=save(tmp_path, "wrong", affine(seed=1, width=5)),
                          signature=SIGNATURE)
    client.deploy("wrong-svc", "wrong", replicas=2)
    d = wait_for(lambda: (lambda d: d if d["state"] == "FAILED" else None)(
        client.deployment("wrong-svc")), timeout=READY_TIMEOUT, what="FAILED")
    assert d["reason"], d
    assert "version 1" in d["reason"]
    wait_for(lambda: client.deployment("wrong-svc")["replicas"] == [], timeout=60,
             what="the replicas to stop")


def test_a_bad_version_rolls_back_with_the_reason(tmp_path, master, client, models):
    client.register_model("affine", file=save(tmp_path, "v3", affine(seed=3, width=5)),
                          signature=SIGNATURE)  # version 3: cannot take its signature
    client.deploy("affine-svc", "affine", version=1, replicas=2)
    client.wait_deployment("affine-svc", timeout=READY_TIMEOUT)
    with SteadyClient(master, "affine-svc") as steady:
        client.update_deployment("affine-svc", version=3)
        with pytest.raises(kiln.KilnError) as failed:
            client.wait_deployment("affine-svc", version=3, timeout=READY_TIMEOUT)
    assert "rollout to version 3 failed" in str(failed.value)
    assert steady.failures == []
    d = client.deployment("affine-svc")
    assert d["state"] == "READY" and d["version"] == 1
    assert "rollout to version 3 failed" in d["reason"]
    assert close(outputs(client.predict("affine-svc", SAMPLES)), models[1])


def test_delete_stops_the_replica_jobs(client, models):
    client.deploy("affine-svc", "affine", replicas=2)
    d = client.wait_deployment("affine-svc", timeout=READY_TIMEOUT)
    deleted = client.delete_deployment("affine-svc")
    assert deleted["state"] == "STOPPED"
    for r in d["replicas"]:
        client.wait_state(r["job_id"], TERMINAL, timeout=60)
    wait_for(lambda: client.raw("GET", "/api/v1/deployments/affine-svc")[0] == 404,
             timeout=30, what="the record to go")
    status, _ = client.raw("POST", "/api/v1/deployments/affine-svc/predict",
                           json.dumps({"inputs": SAMPLES}).encode(),
                           {"Content-Type": "application/json"})
    assert status == 404
    # The name is free again.
    client.deploy("affine-svc", "affine", replicas=1)


def test_a_restarted_kilnd_keeps_serving(master, client, models):
    client.deploy("affine-svc", "affine", version=1, replicas=2)
    before = client.wait_deployment("affine-svc", timeout=READY_TIMEOUT)
    master.kill9()
    master.start()
    client = master.client()

    def serving():
        try:
            return outputs(client.predict("affine-svc", SAMPLES))
        except Exception:  # noqa: BLE001 - not back yet
            return None
    assert close(wait_for(serving, timeout=60, what="predictions after the restart"), models[1])
    d = client.deployment("affine-svc")
    assert d["state"] == "READY"
    assert {r["job_id"] for r in d["replicas"]} == {r["job_id"] for r in before["replicas"]}


def test_the_cli_deploys_and_predicts(tmp_path, master, models):
    env = dict(os.environ, KILN_URL=master.url, KILN_USER="admin",
               KILN_PASSWORD="integration-pass")
    def run(*args, input=None):
        return subprocess.run([str(BIN / "kiln"), *args], env=env, capture_output=True, text=True,
                              input=input, timeout=READY_TIMEOUT + 30)
    created = run("deploy", "create", "cli-svc", "--model", "affine", "--version", "1",
                  "--wait")
    assert created.returncode == 0, created.stderr
    shown = run("deploy", "show", "cli-svc")
    assert "READY" in shown.stdout and "affine version 1" in shown.stdout
    listed = run("deploy", "list")
    assert "cli-svc" in listed.stdout
    (tmp_path / "p.json").write_text(json.dumps({"inputs": SAMPLES}))
    answer = run("predict", "cli-svc", "--file", str(tmp_path / "p.json"))
    assert answer.returncode == 0, answer.stderr
    assert close(json.loads(answer.stdout)["outputs"]["y"], models[1])
    piped = run("predict", "cli-svc", "-", input=json.dumps({"inputs": SAMPLES[:2]}))
    assert close(json.loads(piped.stdout)["outputs"]["y"], models[1][:2])
    updated = run("deploy", "update", "cli-svc", "--version", "2", "--wait")
    assert updated.returncode == 0, updated.stderr
    answer = run("predict", "cli-svc", "--data", json.dumps({"inputs": SAMPLES}))
    assert close(json.loads(answer.stdout)["outputs"]["y"], models[2])
    deleted = run("deploy", "delete", "cli-svc")
    assert deleted.returncode == 0, deleted.stderr
