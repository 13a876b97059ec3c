"""Kiln's WMLA dialect end to end (shared/reference/wmla-api.md §1): a real kilnd with its
local agent, hyperparameter searches posted as WMLA notebooks post them (multipart
`file` + `data`), polled to the end, and single jobs through /execs.

The training script is a few lines of Python that reads config.json and writes
$RESULT_DIR/val_dict_list.json, so each experiment takes well under a second.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
import urllib.parse
import uuid

import pytest

from conftest import ADMIN_PASSWORD, Master, wait_for

DL = "/platform/rest/deeplearning/v1"

TRAIN_SCRIPT = r'''
import json, os, sys, time
cfg = json.load(open("config.json"))
args = sys.argv[1:]
if "--sleep" in args:
    time.sleep(float(args[args.index("--sleep") + 1]))
if "--fail" in args:
    sys.exit("failing as asked")
x = float(cfg.get("x", 0.5))
width = int(float(cfg.get("width", 1)))
opt = cfg.get("opt", "sgd")
epochs = int(float(cfg.get("epochs", 3)))
loss = (x - 0.3) ** 2 + (0.0 if opt == "adam" else 0.05) + 0.001 * width
rows = [{"steps": e, "loss": loss + 0.1 / e, "acc": 1.0 - loss - 0.1 / e}
        for e in range(1, epochs + 1)]
with open(os.path.join(os.environ["RESULT_DIR"], "val_dict_list.json"), "w") as f:
    json.dump(rows, f)
print("trained", json.dumps(cfg, sort_keys=True), "args", " ".join(args), "loss", loss)
'''

SPACE = [
    {"name": "x", "type": "Range", "dataType": "DOUBLE", "minDbVal": 0.0, "maxDbVal": 1.0},
    {"name": "width", "type": "Discrete", "dataType": "INT", "discreteIntVal": [1, 4, 16]},
    {"name": "opt", "type": "Discrete", "dataType": "STR", "discreateStrVal": ["sgd", "adam"]},
]


def model_tar(folder: str = "hpo_code") -> bytes:
    """The code folder as WMLA clients upload it: a gzip tar with one top-level folder."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = TRAIN_SCRIPT.encode()
        info = tarfile.TarInfo(f"{folder}/train_hpo.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    """A multipart/form-data body laid out as Python requests writes one."""
    boundary = uuid.uuid4().hex
    body = b""
    for name, value in fields.items():
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                 f"{value}\r\n").encode()
    for name, (filename, data) in files.items():
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                 f'filename="{filename}"\r\n\r\n').encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def hpo_input(algorithm: str = "Random", max_jobs: int = 4, parallel: int = 2, name=None,
              args: str = "--exec-start PyTorch --model-main train_hpo.py --model-dir hpo_code",
              **extra) -> dict:
    data = {"modelSpec": {"args": args},
            "algoDef": {"algorithm": algorithm, "maxRunTime": 10, "maxJobNum": max_jobs,
                        "maxParalleJobNum": parallel, "objectiveMetric": "loss",
                        "objective": "minimize", "additionalMetrics": {"acc": "maximize"},
                        "algoParams": [{"name": "RandomSeed", "value": "7"}]},
            "hyperParams": SPACE}
    if name:
        data["hpoName"] = name
    data.update(extra)
    return data


class Wmla:
    """Calls the WMLA dialect the way the notebooks do."""

    def __init__(self, master: Master, headers: dict | None = None):
        self.client = master.client()
        self.headers = headers

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict | None = None):
        h = {"Accept": "application/json", **(headers or {})}
        if self.headers is not None:
            h.update(self.headers)
        return self.client.raw(method, path, body=body, headers=h,
                               auth=self.headers is None)

    def post_form(self, path: str, fields: dict, files: dict):
        body, content_type = multipart(fields, files)
        return self.call("POST", path, body, {"Content-Type": content_type})

    def create(self, data, model=None, field: str = "file"):
        model = model or ("hpo_code.modelDir.tar", model_tar())
        fields = {"data": data if isinstance(data, str) else json.dumps(data)}
        return self.post_form(f"{DL}/hypersearch", fields, {field: model})

    def task(self, name: str) -> dict:
        status, body = self.call("GET", f"{DL}/hypersearch/{name}")
        assert status == 200, body
        return body

    def wait(self, name: str, timeout: float = 60.0) -> dict:
        return wait_for(lambda: (lambda t: t if t["state"] not in ("SUBMITTED", "RUNNING")
                                 else None)(self.task(name)),
                        timeout=timeout, interval=0.2, what=f"hpo task {name} to end")


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    m = Master(tmp_path_factory.mktemp("wmla") / "master", slots=4).start()
    yield m
    m.stop()


@pytest.fixture
def wmla(master):
    return Wmla(master)


def check_finished(task: dict, n: int) -> None:
    assert task["state"] == "FINISHED", task
    assert task["progress"] == f"{n}/{n}"
    assert task["complete"] == n and task["failed"] == 0 and task["running"] == 0
    assert len(task["experiments"]) == n
    values = [e["metricVal"] for e in task["experiments"]]
    assert all(e["state"] == "FINISHED" for e in task["experiments"]), task["experiments"]
    assert all(v != 9999.99 for v in values)
    assert task["best"]["metricVal"] == min(values)
    assert task["best"]["id"] in [e["id"] for e in task["experiments"]]


def test_logon_returns_a_token_that_works_as_x_auth_token(master):
    anonymous = master.client()
    basic = "Basic " + base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
    for path in ("/auth/v1/logon", "/platform/rest/conductor/v1/auth/logon"):
        status, body = anonymous.raw("GET", path, headers={"Authorization": basic}, auth=False)
        assert status == 200, body
        token = body["accessToken"]
        status, tasks = Wmla(master, {"X-Auth-Token": token}).call("GET", f"{DL}/hypersearch")
        assert status == 200 and isinstance(tasks, list)
    wrong = "Basic " + base64.b64encode(b"admin:wrong").decode()
    status, body = anonymous.raw("GET", "/auth/v1/logon", headers={"Authorization": wrong},
                                 auth=False)
    assert status == 401
    status, body = anonymous.raw("GET", "/auth/v1/logon", auth=False)
    assert status == 401 and "HTTP Basic" in body["error"]["message"]
    status, body = Wmla(master, {"X-Auth-Token": "nonsense"}).call("GET", f"{DL}/hypersearch")
    assert status == 401


def test_random_search_runs_to_the_end_and_reports_like_wmla(wmla):
    status, created = wmla.create(hpo_input(name="random-e2e"))
    assert status == 200, created
    assert created == {"uid": "random-e2e", "href": f"{DL}/hypersearch/random-e2e"}
    task = wmla.wait("random-e2e")
    check_finished(task, 4)
    assert task["hpoName"] == "random-e2e" and task["creator"] == "admin"
    assert len(task["createtime"]) == 19 and len(task["duration"].split(":")) == 3
    assert task["algoDef"]["maxParalleJobNum"] == 2
    assert [h["type"] for h in task["hyperParams"]] == ["range", "discrete", "discrete"]
    assert all(h["userDefined"] is False for h in task["hyperParams"])
    for e in task["experiments"]:
        params = {h["name"]: h for h in e["hyperParams"]}
        assert {p["dataType"] for p in params.values()} == {"double", "int", "str"}
        assert all(isinstance(p["fixedVal"], str) for p in params.values())
        x, width = float(params["x"]["fixedVal"]), int(params["width"]["fixedVal"])
        loss = (x - 0.3) ** 2 + (0.0 if params["opt"]["fixedVal"] == "adam" else 0.05) \
            + 0.001 * width
        # metricVal is the best row of val_dict_list.json: the last epoch's.
        assert e["metricVal"] == pytest.approx(loss + 0.1 / 3)
        assert e["metrics"] == [{"name": "acc", "min": pytest.approx(1 - loss - 0.1),
                                 "max": pytest.approx(1 - loss - 0.1 / 3),
                                 "latest": pytest.approx(1 - loss - 0.1 / 3)}]
        assert e["startTime"] and e["endTime"]
    # Notebooks follow an experiment's appId to /execs.
    app_id = task["best"]["appId"]
    status, exec_ = wmla.call("GET", f"{DL}/execs/{app_id}")
    assert status == 200 and exec_["state"] == "FINISHED" and exec_["id"] == app_id
    status, log = wmla.call("GET", f"{DL}/execs/{app_id}/log")
    assert status == 200 and "trained" in log
    status, tasks = wmla.call("GET", f"{DL}/hypersearch")
    assert "random-e2e" in [t["hpoName"] for t in tasks]


def test_tpe_hyperband_and_experiment_grid_run_in_parallel(wmla):
    hyperband = hpo_input("Hyperband", max_jobs=-1, parallel=2, name="hb-e2e")
    hyperband["algoDef"]["algoParams"] = [{"name": "ResourceName", "value": "epochs"},
                                          {"name": "ResourceValue", "value": "3"},
                                          {"name": "eta", "value": "3"}]
    tpe = hpo_input("TPE", max_jobs=4, name="tpe-e2e")
    tpe["algoDef"]["algoParams"] = [{"name": "WarmUp", "value": "3"},
                                    {"name": "RandomSeed", "value": "1"}]
    grid = hpo_input("ExperimentGridSearch", max_jobs=-1, name="grid-e2e")
    del grid["hyperParams"]
    grid["experiments"] = [
        {"id": 11, "hyperParams": [{"name": "x", "dataType": "DOUBLE", "fixedVal": "0.3"},
                                   {"name": "opt", "dataType": "STR", "fixedVal": "adam"}]},
        {"id": 12, "hyperParams": [{"name": "x", "dataType": "DOUBLE", "fixedVal": "0.9"},
                                   {"name": "opt", "dataType": "STR", "fixedVal": "sgd"}]},
        {"id": 13, "hyperParams": [{"name": "x", "dataType": "DOUBLE", "fixedVal": "0.5"},
                                   {"name": "opt", "dataType": "STR", "fixedVal": "adam"}]}]
    for data in (hyperband, tpe, grid):
        status, body = wmla.create(data)
        assert status == 200, body

    tpe_task = wmla.wait("tpe-e2e")
    check_finished(tpe_task, 4)

    grid_task = wmla.wait("grid-e2e")
    check_finished(grid_task, 3)
    assert sorted(e["id"] for e in grid_task["experiments"]) == [11, 12, 13]
    assert grid_task["best"]["id"] == 11
    assert {h["name"]: h["fixedVal"] for h in grid_task["best"]["hyperParams"]} == \
        {"x": "0.3", "opt": "adam"}
    assert {h["type"] for h in grid_task["hyperParams"]} == {"fix"}

    hb_task = wmla.wait("hb-e2e")
    assert hb_task["state"] == "FINISHED", hb_task
    n = len(hb_task["experiments"])
    assert n >= 4 and hb_task["complete"] == n
    budgets = set()
    for e in hb_task["experiments"]:
        epochs = [h for h in e["hyperParams"] if h["name"] == "epochs"]
        assert epochs and epochs[0]["dataType"] == "str", e
        budgets.add(epochs[0]["fixedVal"])
    assert {"1", "3"} <= budgets
    assert hb_task["best"]["metricVal"] == min(e["metricVal"] for e in hb_task["experiments"])


def test_a_notebook_using_requests_is_understood(master):
    requests = pytest.importorskip("requests")
    url = master.url + DL
    token = requests.get(master.url + "/auth/v1/logon",
                         auth=("admin", ADMIN_PASSWORD)).json()["accessToken"]
    headers = {"Accept": "application/json", "X-Auth-Token": token}
    # CPD 3.5's form: a single script, the field named after the file, no --model-dir.
    data = hpo_input(max_jobs=2, args="--exec-start PyTorch --model-main WMLA_HPO.py")
    r = requests.post(url + "/hypersearch", headers=headers,
                      files={"WMLA_HPO.py": io.BytesIO(TRAIN_SCRIPT.encode())},
                      data={"data": json.dumps(data)})
    assert r.status_code == 200, r.text
    name = r.json()["uid"]
    assert name.startswith("admin-hpo-")
    task = wait_for(lambda: (lambda t: t if t["state"] not in ("SUBMITTED", "RUNNING")
                             else None)(requests.get(f"{url}/hypersearch/{name}",
                                                     headers=headers).json()),
                    timeout=60, interval=0.2, what="the requests task to end")
    check_finished(task, 2)


def test_bad_requests_are_refused_naming_the_field(wmla):
    status, body = wmla.create(hpo_input(name="dup-e2e", max_jobs=1))
    assert status == 200, body
    status, body = wmla.create(hpo_input(name="dup-e2e", max_jobs=1))
    assert status == 409 and "dup-e2e" in body["error"]["message"]

    def refused(expect: str, data=None, model=None, field="file", status_code=400):
        status, body = wmla.create(data if data is not None else hpo_input(), model, field)
        assert status == status_code, (expect, body)
        assert expect in body["error"]["message"], body

    refused("not valid JSON", data="{'hpoName': 'x'}")
    refused("\"modelSpec.args\": --model-main is missing",
            data=hpo_input(args="--exec-start PyTorch --epochs 3"))
    refused("edtTensorflow (elastic distributed TensorFlow) is not supported",
            data=hpo_input(args="--exec-start edtTensorflow --model-main train_hpo.py"))
    bad = hpo_input("Simulated-Annealing")
    refused("Simulated-Annealing", data=bad)
    bad = hpo_input("Tpe")
    bad["algoDef"]["algoParams"] = [{"name": "Temperature", "value": "3"}]
    refused("Temperature", data=bad)
    bad = hpo_input()
    bad["hyperParams"] = [{"name": "x", "type": "Range", "dataType": "DOUBLE",
                           "minDbVal": 2.0, "maxDbVal": 1.0}]
    refused("x", data=bad)
    bad = hpo_input()
    bad["hyperParams"] = [{"name": "o", "type": "Discrete", "dataType": "STR",
                           "discreateStrVal": []}]
    refused("o", data=bad)
    bad = hpo_input()
    bad["experiments"] = [{"id": 1, "hyperParams": []}]
    refused("exclude each other", data=bad)
    bad = hpo_input()
    del bad["algoDef"]["objectiveMetric"]
    refused("algoDef.objectiveMetric", data=bad)
    bad = hpo_input()
    bad["algoDef"]["maxParalleJobNum"] = 0
    refused("maxParalleJobNum", data=bad)
    status, body = wmla.post_form(f"{DL}/hypersearch", {"data": json.dumps(hpo_input())}, {})
    assert status == 400 and "no model file" in body["error"]["message"], body
    refused("not a gzip-compressed tar", model=("plain.modelDir.tar", b"x" * 600))
    refused("is not the uploaded file \"other.py\"", model=("other.py", TRAIN_SCRIPT.encode()))
    refused("no agent", data=hpo_input(args="--model-main train_hpo.py --model-dir hpo_code "
                                            "--gpuPerWorker 1"))
    status, body = wmla.post_form(f"{DL}/hypersearch", {}, {"file": ("m.py", b"print(1)")})
    assert status == 400 and "no field \"data\"" in body["error"]["message"]
    status, body = wmla.call("POST", f"{DL}/hypersearch", b"{}",
                             {"Content-Type": "application/json"})
    assert status == 400 and "multipart/form-data" in body["error"]["message"]
    status, body = wmla.call("GET", f"{DL}/hypersearch/no-such-task")
    assert status == 404


def test_stop_restart_force_and_delete(wmla):
    slow = hpo_input(max_jobs=2, parallel=1, name="slow-e2e",
                     args="--model-main train_hpo.py --model-dir hpo_code --sleep 60")
    status, body = wmla.create(slow)
    assert status == 200, body
    wait_for(lambda: any(e["state"] == "RUNNING" for e in wmla.task("slow-e2e")["experiments"]),
             timeout=30, interval=0.1, what="an experiment to run")
    status, body = wmla.call("DELETE", f"{DL}/hypersearch/slow-e2e")
    assert status == 409, body

    status, body = wmla.call("PUT", f"{DL}/hypersearch/slow-e2e")
    assert status == 204, body
    task = wmla.task("slow-e2e")
    assert task["state"] == "STOPPED"
    assert all(e["state"] in ("KILLED", "FINISHED") for e in task["experiments"]), task
    status, body = wmla.call("PUT", f"{DL}/hypersearch/slow-e2e")
    assert status == 400
    assert body["error"]["message"] == "Error 400: Model tuning slow-e2e is already stopped."

    status, body = wmla.call("PUT", f"{DL}/hypersearch/slow-e2e/restart")
    assert status == 200 and body["state"] in ("SUBMITTED", "RUNNING"), body
    status, body = wmla.call("PUT", f"{DL}/hypersearch/slow-e2e/force")
    assert status == 204, body
    assert wmla.task("slow-e2e")["state"] == "STOPPED"

    status, body = wmla.call("DELETE", f"{DL}/hypersearch/slow-e2e")
    assert status == 204, body
    status, body = wmla.call("GET", f"{DL}/hypersearch/slow-e2e")
    assert status == 404

    # DELETE /hypersearch removes every ended task of the caller.
    status, body = wmla.create(hpo_input(name="to-clear-e2e", max_jobs=1))
    assert status == 200, body
    wmla.wait("to-clear-e2e")
    status, body = wmla.call("DELETE", f"{DL}/hypersearch")
    assert status == 204, body
    status, tasks = wmla.call("GET", f"{DL}/hypersearch")
    assert all(t["state"] in ("SUBMITTED", "RUNNING") for t in tasks), tasks


def test_algorithms_are_listed_and_plugins_refused(wmla):
    status, algorithms = wmla.call("GET", f"{DL}/hypersearch/algorithm")
    assert status == 200
    names = [a["name"] for a in algorithms]
    for name in ("Random", "Tpe", "Bayesian", "Hyperband", "ExperimentGridSearch"):
        assert name in names
    assert all(a["type"] == "BUILD_IN" and a["remoteExec"] is False for a in algorithms)
    status, plugins = wmla.call("GET", f"{DL}/hypersearch/algorithm?type=USER_PLUGIN")
    assert status == 200 and plugins == []
    status, tpe = wmla.call("GET", f"{DL}/hypersearch/algorithm/TPE")
    assert status == 200 and tpe["name"] == "Tpe" and "WarmUp" in tpe["params"]
    status, body = wmla.post_form(f"{DL}/hypersearch/algorithm/install",
                                  {"data": json.dumps({"name": "mine", "path": "/x"})}, {})
    assert status == 501 and "built-in" in body["error"]["message"]


def test_execs_run_single_jobs_with_the_script_args(wmla):
    args = "--exec-start PyTorch --model-main train_hpo.py --model-dir hpo_code --lr 0.1 " \
           "--python-version 3.6"
    status, job = wmla.post_form(f"{DL}/execs?args={urllib.parse.quote(args)}",
                                 {}, {"file": ("hpo_code.modelDir.tar", model_tar())})
    assert status == 200, job
    assert job["state"] in ("SUBMITTED", "RUNNING") and job["args"] == args
    assert job["framework"] == "PyTorch" and job["creator"] == "admin"
    assert any("--python-version" in w for w in job["warnings"])
    done = wait_for(lambda: (lambda j: j if j["state"] not in ("SUBMITTED", "RUNNING")
                             else None)(wmla.call("GET", f"{DL}/execs/{job['id']}")[1]),
                    timeout=30, interval=0.1, what="the exec to end")
    assert done["state"] == "FINISHED", done
    status, log = wmla.call("GET", f"{DL}/execs/{job['id']}/log")
    assert status == 200 and "args --lr 0.1" in log
    status, text = wmla.call("GET", f"{DL}/execs/{job['id']}/log",
                             headers={"Accept": "text/plain"})
    assert status == 200 and text.startswith("trained")
    status, listed = wmla.call("GET", f"{DL}/execs")
    assert status == 200 and job["id"] in [j["id"] for j in listed]
    status, frameworks = wmla.call("GET", f"{DL}/execs/frameworks")
    assert status == 200 and frameworks[0]["name"] == "PyTorch"

    # A long one is stopped, then deleted.
    slow = urllib.parse.quote("--model-main s.py --sleep 60")
    status, job = wmla.post_form(f"{DL}/execs?args={slow}", {},
                                 {"file": ("s.py", TRAIN_SCRIPT.encode())})
    assert status == 200, job
    status, body = wmla.call("POST", f"{DL}/execs/{job['id']}/stop")
    assert status == 204, body
    killed = wait_for(lambda: (lambda j: j if j["state"] == "KILLED" else None)(
        wmla.call("GET", f"{DL}/execs/{job['id']}")[1]), timeout=30, interval=0.1,
        what="the exec to be killed")
    assert killed["state"] == "KILLED"
    status, body = wmla.call("DELETE", f"{DL}/execs/{job['id']}")
    assert status == 204

    status, body = wmla.post_form(f"{DL}/execs?args=--exec-start%20disttensorflow%20--model-main"
                                  f"%20s.py", {}, {"file": ("s.py", b"print(1)")})
    assert status == 400 and "disttensorflow" in body["error"]["message"]
    status, body = wmla.post_form(f"{DL}/execs", {}, {"file": ("s.py", b"print(1)")})
    assert status == 400 and "\"args\" is required" in body["error"]["message"]
