"""Hyperparameter search through the native API (/api/v1/experiments), the `kiln hpo`
CLI and the Python client, against a real kilnd with a local agent: real searches of a
small Python objective, stop/restart/delete, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import ADMIN_PASSWORD, BIN, PYTHON, Master, wait_for

# The objective: a quadratic bowl in x (minimum at x = 0.3) plus a penalty on the width,
# reported at three steps through kiln.report; the loss falls with the step, so "best"
# is the last step's value. Reads config.json as every Kiln (and WMLA) workload does.
OBJECTIVE = """\
import json, kiln
cfg = json.load(open("config.json"))
assert cfg["fixed"] == "yes", cfg
for step in (1, 2, 3):
    kiln.report(step, {"loss": (cfg["x"] - 0.3) ** 2 + cfg["width"] / 1000 + 1.0 / step})
kiln.flush()
"""

SPACE = {"x": {"type": "double", "low": -1.0, "high": 1.0},
         "width": {"type": "int", "low": 8, "high": 64, "step": 8}}


def objective_of(config: dict) -> float:
    return (config["x"] - 0.3) ** 2 + config["width"] / 1000 + 1.0 / 3


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    m = Master(tmp_path_factory.mktemp("exp") / "master").start()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def client(master):
    return master.client()


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("code")
    (d / "objective.py").write_text(OBJECTIVE)
    (d / "sleep.py").write_text("import time\ntime.sleep(300)\n")
    (d / "silent.py").write_text("print('reports nothing')\n")
    return d


def spec(name: str, **overrides) -> dict:
    s = {"name": name, "command": [PYTHON, "objective.py"], "search_space": SPACE,
         "config": {"fixed": "yes"}, "algorithm": "tpe",
         "objective": {"metric": "loss", "goal": "minimize"},
         "max_trials": 6, "parallelism": 2, "seed": 7}
    s.update(overrides)
    return s


def error(resp):
    status, body = resp
    assert isinstance(body, dict) and "error" in body, body
    return status, body["error"]["code"], body["error"]["message"]


def post(client, body) -> tuple:
    return client.raw("POST", "/api/v1/experiments", body=json.dumps(body).encode(),
                      headers={"Content-Type": "application/json"})


def kiln(master, *args, cwd=None, timeout=120, user="admin", password=ADMIN_PASSWORD):
    env = dict(os.environ, KILN_URL=master.url, KILN_USER=user, KILN_PASSWORD=password,
               HOME=str(master.data_dir.parent))
    return subprocess.run([str(BIN / "kiln"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_a_search_through_the_rest_api_finishes_with_the_best_trial(client, code_dir):
    created = client.create_experiment(spec("rest-search"), code=code_dir)
    assert created["name"] == "rest-search"
    assert created["state"] in ("SUBMITTED", "RUNNING")
    assert created["spec"]["search_space"] == SPACE
    assert created["spec"]["objective"] == {"metric": "loss", "goal": "minimize",
                                            "reduce": "best"}
    done = client.wait_experiment(created["id"], timeout=90, poll=0.2)
    assert done["state"] == "FINISHED", done
    assert done["progress"]["complete"] == 6 and done["progress"]["running"] == 0

    trials = client.trials(created["id"])
    assert [t["number"] for t in trials] == list(range(6))
    for t in trials:
        assert t["state"] == "COMPLETE", t
        assert -1.0 <= t["config"]["x"] <= 1.0 and t["config"]["width"] % 8 == 0
        assert t["config"]["fixed"] == "yes"
        assert set(t["params"]) == {"x", "width"}  # the searched values, not fixed ones
        assert t["value"] == pytest.approx(objective_of(t["config"]))
        assert [p["step"] for p in t["intermediate"]] == [1, 2, 3]
        assert t["attempts"] == 1 and t["job_id"] in t["job_ids"]
        job = client.job(t["job_id"])
        assert job["state"] == "FINISHED" and job["config"] == t["config"]

    best_value = min(t["value"] for t in trials)
    best = client.best(created["id"])
    assert best["value"] == pytest.approx(best_value)
    assert best["config"] == trials[best["number"]]["config"]
    assert done["best"]["number"] == best["number"]
    # Names work wherever ids do.
    assert client.experiment("rest-search")["id"] == created["id"]
    assert any(e["id"] == created["id"] for e in client.experiments())


def test_a_search_through_the_cli_with_a_yaml_file(master, client, code_dir, tmp_path):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "experiment.yaml").write_text(f"""\
# A search over x and width; code is relative to this file.
name: cli-search
code: {os.path.relpath(code_dir, tmp_path / "exp")}
command: [{PYTHON}, objective.py]
config: {{fixed: "yes"}}
search_space:
  x: {{type: double, low: -1, high: 1}}
  width: {{type: int, low: 8, high: 64, step: 8}}
algorithm: {{name: tpe, params: {{warm_up: 3}}}}
objective: {{metric: loss, goal: minimize, reduce: last}}
max_trials: 6
parallelism: 2
""")
    r = kiln(master, "hpo", "create", "-f", "exp/experiment.yaml", "--wait", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    exp_id = int(r.stdout.strip())
    assert "FINISHED: 6/6 trials done (6 complete)" in r.stderr
    assert client.experiment(exp_id)["spec"]["algorithm"] == {"name": "tpe",
                                                              "params": {"warm_up": 3}}

    show = kiln(master, "hpo", "show", "cli-search")
    assert show.returncode == 0, show.stderr
    assert "state:        FINISHED" in show.stdout
    assert "minimize loss (value at the last step)" in show.stdout

    table = kiln(master, "hpo", "trials", str(exp_id))
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == ["#", "STATE", "VALUE", "STEPS", "width",
                                                    "x", "JOB", "REASON"]
    assert len(table.stdout.splitlines()) == 7

    trials = json.loads(kiln(master, "hpo", "trials", str(exp_id), "--json").stdout)["trials"]
    best = kiln(master, "hpo", "best", str(exp_id))
    assert best.returncode == 0, best.stderr
    config = json.loads(best.stdout)  # only the configuration: pipeable
    assert objective_of(config) == pytest.approx(min(t["value"] for t in trials))

    listed = kiln(master, "hpo", "list")
    assert "cli-search" in listed.stdout and "FINISHED" in listed.stdout
    algorithms = kiln(master, "hpo", "algorithms")
    assert algorithms.returncode == 0 and "tpe" in algorithms.stdout


def test_stop_restart_and_delete(master, client, code_dir):
    created = client.create_experiment(
        spec("stoppable", command=[PYTHON, "sleep.py"], max_trials=4, algorithm="random"),
        code=code_dir)
    exp_id = created["id"]
    wait_for(lambda: sum(1 for t in client.trials(exp_id) if t["job_id"] and
                         client.job(t["job_id"])["state"] == "RUNNING") == 2,
             timeout=30, what="two trials running")
    # Deleting a running experiment is refused; it must be stopped first.
    status, code, message = error(client.raw("DELETE", f"/api/v1/experiments/{exp_id}"))
    assert status == 409 and "stop" in message

    r = kiln(master, "hpo", "stop", str(exp_id))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"experiment {exp_id} STOPPED\n"
    stopped = client.experiment(exp_id)
    assert stopped["state"] == "STOPPED" and "stopped by admin" in stopped["reason"]
    trials = client.trials(exp_id)
    assert [t["state"] for t in trials] == ["STOPPED", "STOPPED"]
    for t in trials:
        client.wait_state(t["job_id"], "KILLED", timeout=30)
    status, code, message = error(client.raw("POST", f"/api/v1/experiments/{exp_id}/stop"))
    assert status == 409 and "STOPPED" in message

    restarted = client.restart_experiment(exp_id)
    assert restarted["state"] == "RUNNING"
    wait_for(lambda: any(t["state"] == "RUNNING" for t in client.trials(exp_id)),
             timeout=30, what="a trial running again")
    assert client.stop_experiment(exp_id)["state"] == "STOPPED"

    assert client.delete_experiment("stoppable")["deleted"] is True
    assert error(client.raw("GET", f"/api/v1/experiments/{exp_id}"))[:2] == (404, "NOT_FOUND")


def test_a_metric_never_reported_fails_the_trial_with_the_reason(client, code_dir):
    created = client.create_experiment(
        spec("silent", command=[PYTHON, "silent.py"], max_trials=2, algorithm="random"),
        code=code_dir)
    done = client.wait_experiment(created["id"], timeout=60, poll=0.2)
    assert done["state"] == "FAILED"
    assert "loss" in done["reason"]
    for t in client.trials(created["id"]):
        assert t["state"] == "FAILED"
        assert 'never reported metric "loss"' in t["reason"]
    status, code, message = error(client.raw("GET", f"/api/v1/experiments/{created['id']}/best"))
    assert status == 404 and "no finished trial" in message


@pytest.mark.parametrize("body, needle", [
    (spec("bad-algo", algorithm="simulated-annealing"), "simulated-annealing"),
    (spec("bad-range", search_space={"x": {"type": "double", "low": 2, "high": 1}}),
     "min 2 is greater than max 1"),
    ({k: v for k, v in spec("no-objective").items() if k != "objective"}, "objective"),
    (spec("bad-field", max_trails=3), "max_trails"),
    (spec("bad-parallelism", parallelism=0), "parallelism"),
    (spec("bad-param", algorithm={"name": "tpe", "params": {"warmup": 3}}), "warmup"),
])
def test_bad_requests_get_a_400_naming_the_field(client, body, needle):
    status, code, message = error(post(client, body))
    assert (status, code) == (400, "INVALID_ARGUMENT"), message
    assert needle in message
    assert all(e["name"] != body["name"] for e in client.experiments())  # nothing stored


def test_yaml_bodies_are_pointed_to_the_cli(client):
    status, code, message = error(client.raw(
        "POST", "/api/v1/experiments", body=b"name: x\n",
        headers={"Content-Type": "application/yaml"}))
    assert status == 400 and "kiln hpo create -f" in message


def test_a_gpu_search_on_a_cpu_only_cluster_is_refused_with_the_reason(client):
    status, code, message = error(post(client, spec("gpu-search",
                                                    resources={"slots": 1, "gpus": 1})))
    assert (status, code) == (409, "FAILED_PRECONDITION")
    assert "0 GPUs" in message
    assert error(client.raw("GET", "/api/v1/experiments/gpu-search"))[0] == 404


def test_a_taken_name_is_a_409(client):
    assert post(client, spec("taken", max_trials=1))[0] == 201
    status, code, message = error(post(client, spec("taken", max_trials=1)))
    assert (status, code) == (409, "ALREADY_EXISTS") and "taken" in message


def test_users_see_only_their_own_experiments(master, client):
    status, _ = client.raw("POST", "/api/v1/users",
                           body=json.dumps({"username": "bob", "password": "bob-password"}).encode())
    assert status == 201
    bob = master.client("bob", "bob-password")
    admins = client.experiments()
    assert admins and bob.experiments() == []
    theirs = admins[0]
    for method, path in [("GET", ""), ("GET", "/trials"), ("GET", "/best"), ("POST", "/stop"),
                         ("POST", "/restart"), ("DELETE", "")]:
        for ref in (theirs["id"], theirs["name"]):
            status, code, _ = error(bob.raw(method, f"/api/v1/experiments/{ref}{path}"))
            assert (status, code) == (404, "NOT_FOUND"), (method, path, ref)
    mine = bob.create_experiment(spec("bobs", command=["true"], max_trials=1))
    assert mine["user"] == "bob"
    assert any(e["id"] == mine["id"] for e in client.experiments())  # admins see all
    r = kiln(master, "hpo", "show", str(theirs["id"]), user="bob", password="bob-password")
    assert r.returncode == 4 and "no experiment" in r.stderr


def test_requests_without_credentials_are_401(client):
    assert error(client.raw("GET", "/api/v1/experiments", auth=False))[0] == 401
