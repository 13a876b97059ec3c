"""Kiln's Watson ML v4 dialect end to end (shared/reference/wmla-api.md §3.5): a real kilnd
with its local agent, called as IBM's CPD 3.5 notebooks call WML (Bearer token from
/v1/preauth/validateAuth, ``?version=``, ``?space_id=``), with real training code in ZIPs.

The small trainings are a few lines of Python writing emetrics lines, so each takes well
under a second; the whole notebook flow (train Fashion-MNIST, store, deploy, score) runs
the example script examples/fashion_mnist/wml/wml_flow.py when kiln-serve is built.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import tarfile
import zipfile

import pytest

from conftest import ADMIN_PASSWORD, BIN, PYTHON, ROOT, Master, wait_for

V = "version=2020-08-01"

TRAIN_SCRIPT = r'''
import json, os, sys, time
args = sys.argv[1:]
if "--sleep" in args:
    time.sleep(float(args[args.index("--sleep") + 1]))
if "--fail" in args:
    sys.exit("failing as asked")
with open(os.path.join(os.environ["LOG_DIR"], "evaluation-metrics.txt"), "a") as f:
    for it in (1, 2):
        f.write(json.dumps({
            "meta": {"training_id": "t", "time": 1590084048447, "rindex": it},
            "grouplabel": "test",
            "etimes": {"iteration": {"type": 2, "value": str(it)}},
            "values": {"accuracy": {"type": 3, "value": str(70 + it)},
                       "loss": {"type": 3, "value": str(1.0 / it)}}}) + "\n")
print("DATA_DIR", os.environ.get("DATA_DIR"), "cwd", os.path.basename(os.getcwd()))
'''


def tar_gz(name: str, data: bytes) -> bytes:
    """A .tar.gz holding one file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def code_zip(folder: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{folder}train_small.py", TRAIN_SCRIPT)
    return buf.getvalue()


class Wml:
    """Raw WML calls through the test client: Bearer token, ?version= on every call."""

    def __init__(self, client, token: str):
        self.client = client
        self.token = token

    def __call__(self, method: str, path: str, body=None, raw: bytes = None, token=True):
        sep = "&" if "?" in path else "?"
        headers = {"Authorization": f"Bearer {self.token}"} if token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif raw is not None:
            data = raw
            headers["Content-Type"] = "application/zip"
        return self.client.raw(method, f"{path}{sep}{V}", body=data, headers=headers, auth=False)


@pytest.fixture
def wml(client):
    basic = base64.b64encode(f"admin:{ADMIN_PASSWORD}".encode()).decode()
    code, body = client.raw("GET", "/v1/preauth/validateAuth",
                            headers={"Authorization": f"Basic {basic}"}, auth=False)
    assert code == 200, body
    assert body["accessToken"] == body["token"]
    return Wml(client, body["accessToken"])


def assert_wml_error(code: int, body, status: int, *needles: str):
    assert code == status, body
    assert body["status_code"] == status
    assert isinstance(body["trace"], str)
    message = body["errors"][0]["message"]
    for needle in needles:
        assert needle in message, message


def new_space(wml) -> str:
    code, space = wml("POST", "/v2/spaces", {"name": "test space"})
    assert code == 201, space
    return space["metadata"]["id"]


def new_definition(wml, space_id: str, command: str, folder: str = "") -> str:
    code, d = wml("POST", "/ml/v4/model_definitions",
                  {"name": "small", "space_id": space_id, "command": command,
                   "platform": {"name": "python", "versions": ["3.11"]}, "version": "v1"})
    assert code == 201, d
    code, attached = wml("PUT", f"/ml/v4/model_definitions/{d['metadata']['id']}/model"
                                f"?space_id={space_id}", raw=code_zip(folder))
    assert code == 201, attached
    assert attached["content_format"] == "native" and attached["persisted"] is True
    assert attached["attachment_id"].startswith("sha256-")
    return d["metadata"]["id"]


def training_body(space_id: str, definition_id: str, data_path: str, **definition) -> dict:
    return {"name": "small training", "space_id": space_id,
            "training_data_references": [{"name": "in", "type": "fs", "connection": {},
                                          "location": {"path": data_path}}],
            "results_reference": {"type": "fs", "connection": {},
                                  "location": {"path": f"spaces/{space_id}/assets/experiment"}},
            "model_definition": {"id": definition_id, "hardware_spec": {"name": "S", "nodes": 1},
                                 **definition}}


def wait_training(wml, training_id: str, states=("completed", "failed", "canceled")) -> dict:
    def poll():
        code, t = wml("GET", f"/ml/v4/trainings/{training_id}")
        assert code == 200, t
        return t if t["entity"]["status"]["state"] in states else None
    return wait_for(poll, timeout=60, what=f"training {training_id} to reach {states}")


def test_token_spaces_and_errors(client, wml):
    # The token works as a Bearer on Kiln's own routes too.
    code, _ = client.raw("GET", "/api/v1/jobs", headers={"Authorization": f"Bearer {wml.token}"},
                         auth=False)
    assert code == 200
    code, body = client.raw("POST", "/icp4d-api/v1/authorize", auth=False,
                            body=json.dumps({"username": "admin",
                                             "password": ADMIN_PASSWORD}).encode())
    assert code == 200 and body["token"]
    code, body = wml("GET", "/v1/preauth/validateAuth", token=False)
    assert_wml_error(code, body, 401, "Basic")
    code, body = wml("GET", "/v2/spaces", token=False)
    assert_wml_error(code, body, 401)

    # client.software_specifications.get_id_by_name(...) resolves the notebooks' names.
    code, specs = wml("GET", "/v2/software_specifications?name=pytorch-onnx_1.3-py3.7")
    assert code == 200, specs
    assert [s["metadata"]["id"] for s in specs["resources"]] == ["pytorch-onnx_1.3-py3.7"]
    code, sizes = wml("GET", "/v2/hardware_specifications")
    assert {s["metadata"]["name"] for s in sizes["resources"]} >= {"S", "M"}

    space_id = new_space(wml)
    code, space = wml("GET", f"/v2/spaces/{space_id}")
    assert code == 200
    assert space["entity"]["status"]["state"] == "active"
    assert space["entity"]["name"] == "test space"
    code, spaces = wml("GET", "/v2/spaces")
    assert [s["metadata"]["id"] for s in spaces["resources"]] == [space_id]

    code, body = wml("POST", "/v2/spaces", {"description": "no name"})
    assert_wml_error(code, body, 400, "name: is required")
    code, body = wml("GET", "/ml/v4/trainings?space_id=nope")
    assert_wml_error(code, body, 404, "space_id nope", "POST /v2/spaces")
    code, body = wml("POST", "/ml/v4/model_definitions", {"name": "d", "space_id": "nope"})
    assert_wml_error(code, body, 404, "space_id nope")
    code, body = wml("GET", "/ml/v4/model_definitions/nope")
    assert_wml_error(code, body, 404, "model_definition nope")

    code, _ = wml("DELETE", f"/v2/spaces/{space_id}")
    assert code == 204
    code, body = wml("GET", f"/v2/spaces/{space_id}")
    assert_wml_error(code, body, 404)


def test_code_upload_refuses_bad_zips_and_downloads_what_it_took(client, wml):
    space_id = new_space(wml)
    code, d = wml("POST", "/ml/v4/model_definitions",
                  {"name": "d", "space_id": space_id, "command": "train_small.py"})
    assert code == 201
    def_id = d["metadata"]["id"]
    # A training or a download before the code is uploaded says how to upload it.
    code, body = wml("POST", "/ml/v4/trainings", training_body(space_id, def_id, ""))
    assert_wml_error(code, body, 409, f"PUT /ml/v4/model_definitions/{def_id}/model")
    code, body = wml("GET", f"/ml/v4/model_definitions/{def_id}/model")
    assert_wml_error(code, body, 409, f"PUT /ml/v4/model_definitions/{def_id}/model")

    code, body = wml("PUT", f"/ml/v4/model_definitions/{def_id}/model", raw=b"just text")
    assert_wml_error(code, body, 400, "not a usable ZIP")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../escape.py", "print('x')")
    code, body = wml("PUT", f"/ml/v4/model_definitions/{def_id}/model", raw=buf.getvalue())
    assert_wml_error(code, body, 400, '".."')
    code, body = wml("PUT", f"/ml/v4/model_definitions/{def_id}/model", raw=b"")
    assert_wml_error(code, body, 400, "ZIP")

    # client.model_definitions.download: the ZIP back byte for byte (Kiln runs it as a
    # .tar.gz, converted once at upload), and a .tar.gz upload as it came.
    zipped = code_zip("src/")
    code, _ = wml("PUT", f"/ml/v4/model_definitions/{def_id}/model", raw=zipped)
    assert code == 201
    assert download(client, wml.token, f"/ml/v4/model_definitions/{def_id}/model") == \
        (200, zipped)
    code, d2 = wml("POST", "/ml/v4/model_definitions",
                   {"name": "d2", "space_id": space_id, "command": "train_small.py"})
    packed = tar_gz("train_small.py", TRAIN_SCRIPT.encode())
    code, _ = wml("PUT", f"/ml/v4/model_definitions/{d2['metadata']['id']}/model", raw=packed)
    assert code == 201
    assert download(client, wml.token,
                    f"/ml/v4/model_definitions/{d2['metadata']['id']}/model") == (200, packed)


def import_request_path(training_id: str, asset_id: str = None, space_id: str = None) -> str:
    """Where WMLA writes a training's model import request (wmla-api.md §3.5 step 7)."""
    path = (f"/v2/asset_files/experiment/{training_id}/assets/{asset_id or training_id}"
            "/resources/wml_model/request.json")
    return path + (f"?space_id={space_id}" if space_id else "")


def test_training_runs_and_reports_metrics(wml, tmp_path):
    data = tmp_path / "dataset"
    data.mkdir()
    space_id = new_space(wml)
    # The code inside a folder: the command runs in that folder, as WML runs it.
    def_id = new_definition(wml, space_id, "train_small.py", folder="code/")
    code, t = wml("POST", "/ml/v4/trainings", training_body(space_id, def_id, str(data)))
    assert code == 201, t
    training_id = t["metadata"]["id"]
    assert t["entity"]["status"]["state"] in ("pending", "running", "completed")
    assert t["metadata"]["space_id"] == space_id

    done = wait_training(wml, training_id)
    status = done["entity"]["status"]
    assert status["state"] == "completed", status
    assert status["running_at"] and status["completed_at"]
    assert [m["iteration"] for m in status["metrics"]] == [1, 2]
    assert status["metrics"][1]["ml_metrics"] == {"accuracy": 72.0, "loss": 0.5}
    location = done["entity"]["results_reference"]["location"]
    assert location["model"].endswith(f"/{training_id}/data/model")

    logs = wml.client.all_logs(int(training_id))
    assert any(f"DATA_DIR {data} cwd code" in line["text"] for line in logs), logs

    code, listed = wml("GET", f"/ml/v4/trainings?space_id={space_id}&limit=1")
    assert code == 200
    assert listed["total_count"] == 1 and len(listed["resources"]) == 1

    # Completed, but its code saved no model: no import request, and the 404 says why.
    code, err = wml("GET", import_request_path(training_id, space_id=space_id))
    assert_wml_error(code, err, 404, f"training {training_id} saved no model",
                     "$RESULT_DIR/model/model.pt")
    code, err = wml("GET", import_request_path(training_id, asset_id="7"))
    assert_wml_error(code, err, 404, "no asset file", "request.json")
    code, err = wml("GET", import_request_path("424242"))
    assert_wml_error(code, err, 404, "training 424242")


def test_training_states_cancel_and_bad_requests(wml, tmp_path):
    space_id = new_space(wml)
    def_id = new_definition(wml, space_id, "train_small.py --fail")
    code, t = wml("POST", "/ml/v4/trainings", training_body(space_id, def_id, ""))
    assert code == 201, t
    failed = wait_training(wml, t["metadata"]["id"])
    assert failed["entity"]["status"]["state"] == "failed"
    assert failed["entity"]["status"]["failure"]["errors"][0]["message"]
    code, err = wml("GET", import_request_path(failed["metadata"]["id"]))
    assert_wml_error(code, err, 404, "is failed: it has no model to import")

    # The training's command overrides the definition's.
    code, t = wml("POST", "/ml/v4/trainings",
                  training_body(space_id, def_id, "", command="train_small.py --sleep 60"))
    assert code == 201, t
    sleeping = t["metadata"]["id"]
    wait_training(wml, sleeping, states=("running",))
    code, err = wml("GET", import_request_path(sleeping))
    assert_wml_error(code, err, 404, f"training {sleeping} is running", "when it completes")
    code, _ = wml("DELETE", f"/ml/v4/trainings/{sleeping}")
    assert code == 204
    assert wait_training(wml, sleeping)["entity"]["status"]["state"] == "canceled"
    code, _ = wml("DELETE", f"/ml/v4/trainings/{sleeping}?hard_delete=true")
    assert code == 204
    code, body = wml("GET", f"/ml/v4/trainings/{sleeping}")
    assert_wml_error(code, body, 404, "training")

    code, body = wml("POST", "/ml/v4/trainings",
                     training_body(space_id, def_id, "no-such-dataset-folder"))
    assert_wml_error(code, body, 400, "training_data_references[0].location.path",
                     "no-such-dataset-folder")
    code, body = wml("POST", "/ml/v4/trainings", training_body(space_id, "nope", ""))
    assert_wml_error(code, body, 404, "model_definition.id nope")
    body = training_body(space_id, def_id, "")
    body["model_definition"]["hardware_spec"]["nodes"] = 2
    code, err = wml("POST", "/ml/v4/trainings", body)
    assert_wml_error(code, err, 400, "hardware_spec.nodes")
    # A model from a training that did not complete is refused, naming why.
    code, err = wml("POST", "/ml/v4/models", {"name": "m", "training_id": failed["metadata"]["id"]})
    assert code in (400, 409), err
    # Storage Kiln cannot read (a model without a training gets its file by PUT .../content).
    code, err = wml("POST", "/ml/v4/models",
                    {"name": "m", "content_location": {"type": "s3", "contents": []}})
    assert_wml_error(code, err, 400, "content_location", "/content")
    code, err = wml("POST", "/ml/v4/deployments", {"name": "d", "asset": {"id": "nope"},
                                                   "online": {}})
    assert_wml_error(code, err, 404, "asset.id nope")
    code, err = wml("POST", "/ml/v4/deployments", {"name": "d", "asset": {"id": "x"},
                                                   "batch": {}})
    assert_wml_error(code, err, 400, "online")


@pytest.mark.skipif(not (BIN / "kiln-serve").exists(), reason="kiln-serve is not built (torch)")
def test_notebook_flow_trains_deploys_and_scores(tmp_path):
    """The example script: Fashion-MNIST trained, stored, deployed and scored over WML."""
    # WML commands run `python3` from the agent's PATH: make it Debian's, which has torch,
    # wherever the shell running pytest puts another python3 first.
    master = Master(tmp_path / "master", env={"PATH": "/usr/bin:" + os.environ.get("PATH", "")})
    master.start()
    try:
        run_example(master)
    finally:
        master.stop()


def run_example(master):
    script = ROOT / "examples" / "fashion_mnist" / "wml" / "wml_flow.py"
    out = subprocess.run(
        [PYTHON, str(script), "--url", master.url, "--user", "admin",
         "--password", ADMIN_PASSWORD, "--train-limit", "1000", "--test-limit", "500",
         "--score", "4"],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "6. training completed" in out.stdout
    assert "   iteration 1:" in out.stdout
    assert "7. model import request: spaces/" in out.stdout
    assert "/resources/wml_model/model.pt" in out.stdout
    assert "content_import_state completed" in out.stdout
    assert "online_url:" in out.stdout
    assert out.stdout.count("10. predicted") == 4
    assert "11. deleted" in out.stdout
    # The deployment's replicas drain and end; tasks outlive a stopped kilnd by design, so
    # the test waits for them rather than leave a kiln-serve behind.
    client = master.client()
    wait_for(lambda: client.deployments() == [], timeout=60,
             what="the deleted deployment's replicas to end")


def test_objects_are_private_and_survive_a_restart(master, client, wml):
    space_id = new_space(wml)
    def_id = new_definition(wml, space_id, "train_small.py")
    code, t = wml("POST", "/ml/v4/trainings", training_body(space_id, def_id, ""))
    assert code == 201, t
    training_id = t["metadata"]["id"]
    wait_training(wml, training_id)

    # Another user sees none of it: others' ids read as missing.
    client._request("POST", "/api/v1/users", json_body={"username": "bob",
                                                         "password": "bob-password"})
    basic = base64.b64encode(b"bob:bob-password").decode()
    code, body = client.raw("GET", "/v1/preauth/validateAuth",
                            headers={"Authorization": f"Basic {basic}"}, auth=False)
    assert code == 200, body
    bob = Wml(client, body["accessToken"])
    code, body = bob("GET", f"/v2/spaces/{space_id}")
    assert_wml_error(code, body, 404, f"space {space_id}")
    code, body = bob("GET", f"/ml/v4/trainings/{training_id}")
    assert_wml_error(code, body, 404)
    code, body = bob("GET", "/ml/v4/model_definitions")
    assert code == 200 and body["resources"] == []
    code, body = bob("POST", "/ml/v4/trainings", training_body(space_id, def_id, ""))
    assert_wml_error(code, body, 404, f"space_id {space_id}")

    # kilnd keeps WML's objects in its store: after a restart they are all there.
    master.stop()
    master.start()
    code, token = master.client().raw(
        "GET", "/v1/preauth/validateAuth", auth=False,
        headers={"Authorization": "Basic " + base64.b64encode(
            f"admin:{ADMIN_PASSWORD}".encode()).decode()})
    again = Wml(master.client(), token["accessToken"])
    code, t = again("GET", f"/ml/v4/trainings/{training_id}?space_id={space_id}")
    assert code == 200, t
    assert t["entity"]["status"]["state"] == "completed"
    assert t["entity"]["status"]["metrics"][0]["ml_metrics"]["accuracy"] == 71.0
    code, d = again("GET", f"/ml/v4/model_definitions/{def_id}")
    assert code == 200 and d["entity"]["attachment_id"].startswith("sha256-")


def test_deleting_a_space_takes_its_assets(client, wml):
    space_id = new_space(wml)
    def_id = new_definition(wml, space_id, "train_small.py --sleep 60")
    code, t = wml("POST", "/ml/v4/trainings", training_body(space_id, def_id, ""))
    assert code == 201, t
    training_id = t["metadata"]["id"]
    wait_training(wml, training_id, states=("running",))
    code, _ = wml("DELETE", f"/v2/spaces/{space_id}")
    assert code == 204
    # The running training was canceled; the Kiln job keeps its record, as every job does.
    assert client.wait_state(int(training_id), "KILLED")["state"] == "KILLED"
    code, body = wml("GET", f"/ml/v4/model_definitions/{def_id}")
    assert_wml_error(code, body, 404)
    code, body = wml("GET", f"/ml/v4/trainings/{training_id}")
    assert_wml_error(code, body, 404)


def download(client, token: str, path: str) -> tuple[int, bytes]:
    """GET returning raw bytes (Wml's calls decode bodies as text)."""
    import http.client
    import urllib.parse
    u = urllib.parse.urlparse(client.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", f"{path}?{V}", headers={"Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def test_an_uploaded_model_is_stored_deployed_and_scored(client, wml, tmp_path):
    """client.repository.store_model("model.pt", meta_props) over REST: POST the model,
    PUT its file (here in a ZIP as WMLA trainings leave it), deploy and score."""
    import torch

    import kiln

    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1))
    kiln.save_model(net, torch.zeros(1, 4), path=str(tmp_path / "m"), input_names=["x"],
                    output_names=["probs"])
    model_pt = (tmp_path / "m" / "model.pt").read_bytes()
    wrapped = io.BytesIO()
    with zipfile.ZipFile(wrapped, "w") as z:  # no signature.json: the one inside is used
        z.writestr("model/trained_model.pt", model_pt)
        z.writestr("model/trained_model.onnx", b"onnx protobuf")
    space_id = new_space(wml)
    meta = {"name": "uploaded mlp", "type": "pytorch-onnx_1.3", "space_id": space_id,
            "software_spec": {"name": "pytorch-onnx_1.3-py3.7"}}

    code, model = wml("POST", "/ml/v4/models", meta)
    assert code == 201, model
    model_id = model["metadata"]["id"]
    assert "content_import_state" not in model["entity"]
    # Nothing to deploy or download before the file is there.
    code, body = wml("POST", "/ml/v4/deployments",
                     {"space_id": space_id, "name": "d", "online": {}, "asset": {"id": model_id}})
    assert_wml_error(code, body, 409, "has no content yet", f"/ml/v4/models/{model_id}/content")
    code, body = wml("GET", f"/ml/v4/models/{model_id}/download")
    assert_wml_error(code, body, 409, "has no content yet")

    # Bad files are refused, and leave the model as it was.
    code, body = wml("PUT", f"/ml/v4/models/{model_id}/content?content_format=native",
                     raw=b"\x80\x02}q.")
    assert_wml_error(code, body, 400, "neither a TorchScript file nor a .zip or .tar.gz")
    state = io.BytesIO()
    torch.save(net.state_dict(), state)
    code, body = wml("PUT", f"/ml/v4/models/{model_id}/content", raw=state.getvalue())
    assert_wml_error(code, body, 400, "torch.save")
    code, body = wml("PUT", f"/ml/v4/models/{model_id}/content?content_format=coreml",
                     raw=model_pt)
    assert_wml_error(code, body, 400, "content_format \"coreml\"")
    assert client.models() == []

    code, attached = wml("PUT", f"/ml/v4/models/{model_id}/content?content_format=native"
                                f"&space_id={space_id}", raw=wrapped.getvalue())
    assert code == 201, attached
    assert attached["content_format"] == "native" and attached["persisted"] is True
    code, model = wml("GET", f"/ml/v4/models/{model_id}")
    assert code == 200, model
    assert model["entity"]["content_import_state"] == "completed"
    assert model["entity"]["kiln"]["signature"]["inputs"] == [
        {"name": "x", "dtype": "float32", "shape": [4]}]
    assert model["entity"]["kiln"]["lineage"] == {"source": "upload"}
    assert model["entity"]["attachments"][0]["attachment_id"] == attached["attachment_id"]
    code, body = wml("PUT", f"/ml/v4/models/{model_id}/content", raw=wrapped.getvalue())
    assert_wml_error(code, body, 409, "already has its content")

    # The file comes back as it went in (the TorchScript file, not the ZIP around it).
    code, listed = wml("GET", f"/ml/v4/models/{model_id}/content")
    assert code == 200 and [a["attachment_id"] for a in listed["attachments"]] == [
        attached["attachment_id"]]
    assert download(client, wml.token, f"/ml/v4/models/{model_id}/download") == (200, model_pt)
    assert download(client, wml.token, f"/ml/v4/models/{model_id}/content/"
                                       f"{attached['attachment_id']}") == (200, model_pt)
    code, body = wml("GET", f"/ml/v4/models/{model_id}/content/sha256-other")
    assert_wml_error(code, body, 404, "no attachment")

    code, deployment = wml("POST", "/ml/v4/deployments",
                           {"space_id": space_id, "name": "uploaded", "online": {},
                            "hardware_spec": {"name": "S"}, "asset": {"id": model_id}})
    assert code == 202 or code == 201, deployment
    deployment_id = deployment["metadata"]["id"]

    def ready():
        code, d = wml("GET", f"/ml/v4/deployments/{deployment_id}")
        assert code == 200, d
        assert d["entity"]["status"]["state"] != "failed", d
        return d if d["entity"]["status"]["state"] == "ready" else None
    wait_for(ready, timeout=120, what="the uploaded model's deployment to be ready")
    rows = [[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0]]
    code, scored = wml("POST", f"/ml/v4/deployments/{deployment_id}/predictions",
                       {"input_data": [{"values": rows}]})
    assert code == 200, scored
    with torch.no_grad():
        expected = net(torch.tensor(rows)).tolist()
    got = scored["predictions"][0]["values"]
    assert len(got) == 2
    for g, e in zip(got, expected):
        assert g == pytest.approx(e, abs=1e-6)

    code, body = wml("DELETE", f"/ml/v4/deployments/{deployment_id}")
    assert code == 204, body
    wait_for(lambda: client.deployments() == [], timeout=60,
             what="the deleted deployment's replicas to end")
    code, body = wml("DELETE", f"/ml/v4/models/{model_id}")
    assert code == 204, body
    assert client.models() == []


def test_an_uploaded_model_takes_its_signature_from_the_request(client, wml, tmp_path):
    """A plain torch.jit.save file has no signature inside: custom.signature gives it."""
    import torch

    plain = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), plain)
    space_id = new_space(wml)
    code, model = wml("POST", "/ml/v4/models", {"name": "plain", "space_id": space_id,
                                                "type": "pytorch-onnx_1.3"})
    assert code == 201, model
    code, body = wml("PUT", f"/ml/v4/models/{model['metadata']['id']}/content",
                     raw=plain.getvalue())
    assert_wml_error(code, body, 400, "has no signature", "custom.signature")

    signature = {"inputs": [{"name": "x", "dtype": "float32", "shape": [4]}],
                 "outputs": [{"name": "y", "dtype": "float32", "shape": [2]}]}
    code, body = wml("POST", "/ml/v4/models",
                     {"name": "plain", "space_id": space_id,
                      "custom": {"signature": {**signature, "inputs": [{"name": "x"}]}}})
    assert_wml_error(code, body, 400, "custom.signature")
    code, model = wml("POST", "/ml/v4/models", {"name": "plain", "space_id": space_id,
                                                "custom": {"signature": signature}})
    assert code == 201, model
    # A .tar.gz with the file in a folder works as a ZIP does.
    code, attached = wml("PUT", f"/ml/v4/models/{model['metadata']['id']}/content",
                         raw=tar_gz("out/linear.pt", plain.getvalue()))
    assert code == 201, attached
    code, model = wml("GET", f"/ml/v4/models/{model['metadata']['id']}")
    assert model["entity"]["kiln"]["signature"] == signature
    assert model["entity"]["kiln"]["file"]["name"] == "linear.pt"
