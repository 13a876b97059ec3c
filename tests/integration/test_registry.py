"""The model registry end to end (issue 5): a real kilnd with its local agent trains the
real Fashion-MNIST example (a small subset), the agent uploads the model it saved with
kiln.save_model, and the test registers it from the job, checks signature, final metrics
and lineage, downloads the file and compares its predictions with the job's own saved
model in torch. Also: registering an uploaded file, bad input (400/409 naming the
problem), and the `kiln model` CLI."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

import kiln
from conftest import ADMIN_PASSWORD, BIN, PYTHON, ROOT

torch = pytest.importorskip("torch")

FASHION_SIGNATURE = {
    "inputs": [{"name": "image", "dtype": "float32", "shape": [1, 28, 28]}],
    "outputs": [{"name": "logits", "dtype": "float32", "shape": [10]}]}
TINY_SIGNATURE = {"inputs": [{"name": "x", "dtype": "float32", "shape": [4]}],
                  "outputs": [{"name": "y", "dtype": "float32", "shape": [2]}]}


def kiln_cli(master, *args, cwd=None):
    env = dict(os.environ, KILN_URL=master.url, KILN_USER="admin", KILN_PASSWORD=ADMIN_PASSWORD,
               HOME=str(master.data_dir.parent))
    return subprocess.run([str(BIN / "kiln"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def final(client, job_id: int, name: str, group: str) -> float:
    for s in client.metrics(job_id):
        if s["name"] == name and s["group"] == group:
            return s["points"][-1]["value"]
    raise AssertionError(f"job {job_id} has no {group} {name}")


def load(data: bytes):
    model = torch.jit.load(io.BytesIO(data))
    model.eval()
    return model


def save_tiny(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    kiln.save_model(torch.nn.Linear(4, 2), torch.zeros(1, 4), path=str(folder),
                    input_names=["x"], output_names=["y"])
    return folder / "model.pt"


def error(status_body) -> tuple:
    status, body = status_body
    message = body["error"]["message"] if isinstance(body, dict) and "error" in body else body
    return status, message


def test_a_trained_example_is_registered_from_its_job_and_predicts_like_it(master, client,
                                                                            tmp_path):
    config = {"epochs": 1, "hidden": 32, "lr": 0.05}
    job = client.submit([PYTHON, "train.py", "--train-limit", "2000", "--test-limit", "500"],
                        package=str(ROOT / "examples" / "fashion_mnist"), slots=2,
                        env={"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"},
                        config=config)
    done = client.wait_state(job["id"], ("FINISHED", "FAILED"), timeout=300)
    assert done["state"] == "FINISHED", [l["text"] for l in client.all_logs(job["id"])][-20:]

    version = client.register_model("fashion-mlp", job_id=job["id"], description="example")
    assert version["model"] == "fashion-mlp" and version["version"] == 1
    assert version["signature"] == FASHION_SIGNATURE
    # Final values, the test group's where there is one.
    assert version["metrics"]["accuracy"] == final(client, job["id"], "accuracy", "test")
    assert version["metrics"]["loss"] == final(client, job["id"], "loss", "test")
    assert version["metrics"]["accuracy"] > 0.5
    lineage = version["lineage"]
    assert lineage["source"] == "job" and lineage["job_id"] == job["id"]
    assert lineage["hyperparameters"] == config
    assert "trial" not in lineage and "experiment_id" not in lineage
    assert version["file"]["name"] == "model.pt" and version["file"]["size"] > 0

    # The registered file is the one the job saved: same bytes, same predictions.
    data = client.model_content("fashion-mlp", 1)
    assert len(data) == version["file"]["size"]
    artifacts = client._request("GET", f"/api/v1/jobs/{job['id']}/artifacts")["artifacts"]
    [saved] = [a for a in artifacts if a["path"] == "model/model.pt"]
    with client._open("GET", f"/api/v1/packages/{saved['package_id']}/content") as response:
        job_model_bytes = response.read()
    assert data == job_model_bytes
    images = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        ours, theirs = load(data)(images), load(job_model_bytes)(images)
    assert ours.shape == (8, 10)
    assert torch.equal(ours, theirs)

    # Show, list, a second version, and deleting one.
    model = client.model("fashion-mlp")
    assert model["user"] == "admin" and model["description"] == "example"
    assert [v["version"] for v in model["versions"]] == [1]
    assert client.model(model["id"], version=1)["signature"] == FASHION_SIGNATURE

    r = kiln_cli(master, "model", "register", "fashion-mlp", "--job", str(job["id"]))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"model fashion-mlp version 2 registered from job {job['id']}\n"
    r = kiln_cli(master, "model", "list")
    assert r.returncode == 0, r.stderr
    assert "fashion-mlp" in r.stdout and "image: float32[1,28,28]" in r.stdout
    r = kiln_cli(master, "model", "show", "fashion-mlp", "--version", "2", "--json")
    assert json.loads(r.stdout)["lineage"]["job_id"] == job["id"]
    r = kiln_cli(master, "model", "show", "fashion-mlp")
    assert "versions:" in r.stdout and "accuracy=" in r.stdout, r.stdout
    r = kiln_cli(master, "model", "delete", "fashion-mlp", "--version", "1")
    assert r.returncode == 0 and r.stdout == "model fashion-mlp version 1 deleted\n", r.stderr
    assert [v["version"] for v in client.model("fashion-mlp")["versions"]] == [2]
    assert client.models()[0]["latest_version"] == 2


def test_only_a_finished_job_that_saved_a_model_can_be_registered(client, tmp_path):
    (tmp_path / "fail.sh").write_text("exit 3\n")
    failed = client.submit(["sh", "fail.sh"], package=str(tmp_path / "fail.sh"))
    client.wait_state(failed["id"], "FAILED")
    status, message = error(client.raw("POST", "/api/v1/models", json.dumps(
        {"name": "m", "job_id": failed["id"]}).encode(), {"Content-Type": "application/json"}))
    assert status == 409 and "only a FINISHED job" in message, message

    (tmp_path / "ok.sh").write_text("true\n")
    nothing = client.submit(["sh", "ok.sh"], package=str(tmp_path / "ok.sh"))
    client.wait_state(nothing["id"], "FINISHED")
    with pytest.raises(kiln.KilnError, match="saved no \"model/model.pt\".*kiln.save_model"):
        client.register_model("m", job_id=nothing["id"])
    with pytest.raises(kiln.KilnError, match="no job"):
        client.register_model("m", job_id=999)
    assert client.models() == []


def test_an_uploaded_file_is_registered_and_downloaded_unchanged(master, client, tmp_path):
    path = save_tiny(tmp_path / "tiny")
    version = client.register_model("tiny", file=path, signature=tmp_path / "tiny" /
                                    "signature.json", metrics={"r2": 0.5})
    assert version["version"] == 1
    assert version["signature"] == TINY_SIGNATURE
    assert version["lineage"] == {"source": "upload"}
    assert version["metrics"] == {"r2": 0.5}
    assert client.model_content("tiny", 1) == path.read_bytes()

    # The CLI uploads the file as a package and registers it by id.
    r = kiln_cli(master, "model", "register", "tiny", "--file", str(path), "--signature",
                 str(tmp_path / "tiny" / "signature.json"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "model tiny version 2 registered from upload\n"
    # kiln.save_model keeps the signature inside model.pt too: the file alone is enough.
    r = kiln_cli(master, "model", "register", "tiny", "--file", str(path))
    assert r.returncode == 0, r.stderr
    assert client.model("tiny")["versions"][-1]["signature"] == TINY_SIGNATURE
    r = kiln_cli(master, "model", "delete", "tiny")
    assert r.returncode == 0, r.stderr
    assert client.models() == []

    # A .zip or .tar.gz holding the file, as Watson ML's model upload takes it: a file
    # saved by torch.jit.save alone gets its signature from the signature.json beside it.
    plain = tmp_path / "plain.pt"
    torch.jit.save(load(path.read_bytes()), str(plain))
    zipped = tmp_path / "tiny.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.write(plain, "out/model/trained_model.pt")
        z.writestr("out/model/signature.json", json.dumps(TINY_SIGNATURE))
        z.writestr("out/model/trained_model.onnx", b"not a TorchScript file")
    version = client.register_model("tiny-zip", file=zipped)
    assert version["signature"] == TINY_SIGNATURE
    assert client.model_content("tiny-zip", 1) == plain.read_bytes()
    packed = tmp_path / "tiny.tar.gz"
    with tarfile.open(packed, "w:gz") as t:
        t.add(path, "model.pt")  # kiln.save_model's file: its signature is inside
    version = client.register_model("tiny-zip", file=packed)
    assert version["version"] == 2 and version["signature"] == TINY_SIGNATURE
    assert client.model_content("tiny-zip", 2) == path.read_bytes()
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as z:
        z.write(plain, "a.pt")
        z.write(path, "b.pt")
    with pytest.raises(kiln.KilnError, match=r"holds 2 TorchScript files \(a.pt, b.pt\)"):
        client.register_model("tiny-zip", file=tmp_path / "two.zip")
    # The CLI (an uploaded package registered by id) takes the same archives.
    r = kiln_cli(master, "model", "register", "tiny-zip", "--file", str(zipped))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "model tiny-zip version 3 registered from upload\n"
    assert client.model_content("tiny-zip", 3) == plain.read_bytes()
    r = kiln_cli(master, "model", "register", "tiny-zip", "--file", str(tmp_path / "two.zip"))
    assert r.returncode != 0 and "holds 2 TorchScript files" in r.stderr, r.stderr


def test_bad_registrations_are_refused_naming_the_problem(master, client, tmp_path):
    path = save_tiny(tmp_path / "tiny")
    plain = tmp_path / "plain.pt"  # torch.jit.save alone keeps no signature in the file
    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), str(plain))

    with pytest.raises(kiln.KilnError, match="has no signature.*kiln.save_model"):
        client.register_model("tiny", file=plain)
    bad = {"inputs": [{"name": "x", "dtype": "float16", "shape": [4]}],
           "outputs": TINY_SIGNATURE["outputs"]}
    with pytest.raises(kiln.KilnError, match=r"inputs\[0\]"):
        client.register_model("tiny", file=path, signature=bad)
    ragged = {"inputs": [{"name": "x", "dtype": "float32", "shape": [0]}],
              "outputs": TINY_SIGNATURE["outputs"]}
    with pytest.raises(kiln.KilnError, match=r"shape"):
        client.register_model("tiny", file=path, signature=ragged)
    (tmp_path / "weights.pt").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(kiln.KilnError,
                       match=r"\(weights.pt\): the upload is neither a TorchScript file"):
        client.register_model("tiny", file=tmp_path / "weights.pt", signature=TINY_SIGNATURE)
    torch.save(torch.nn.Linear(4, 2).state_dict(), str(tmp_path / "state.pt"))
    with pytest.raises(kiln.KilnError, match="written by torch.save"):
        client.register_model("tiny", file=tmp_path / "state.pt", signature=TINY_SIGNATURE)
    with pytest.raises(kiln.KilnError, match="name \"a b\""):
        client.register_model("a b", file=path, signature=TINY_SIGNATURE)
    # Nothing half-written.
    assert client.models() == []

    status, message = error(client.raw("POST", "/api/v1/models", b"--x--\r\n",
                                       {"Content-Type": "multipart/form-data; boundary=x"}))
    assert status == 400 and "data" in message, message
    status, message = error(client.raw("GET", "/api/v1/models/nope"))
    assert status == 404 and "no model \"nope\"" in message
    status, message = error(client.raw("GET", "/api/v1/models/nope/versions/x"))
    assert status == 400 and "version" in message

    # The name belongs to its owner: another user gets a 409, and does not see it.
    client.register_model("tiny", file=path, signature=TINY_SIGNATURE)
    client._request("POST", "/api/v1/users", json_body={"username": "bob", "password": "bob-password"})
    bob = master.client("bob", "bob-password")
    with pytest.raises(kiln.KilnError, match="model \"tiny\" already exists") as refused:
        bob.register_model("tiny", file=path, signature=TINY_SIGNATURE)
    assert refused.value.status == 409
    assert bob.models() == []
    with pytest.raises(kiln.KilnError) as hidden:
        bob.model("tiny")
    assert hidden.value.status == 404


def test_a_deployed_version_cannot_be_deleted(master, client, tmp_path):
    path = save_tiny(tmp_path / "tiny")
    client.register_model("tiny", file=path, signature=TINY_SIGNATURE)
    client.register_model("tiny", file=path, signature=TINY_SIGNATURE)
    status, _ = client.raw("POST", "/api/v1/deployments", json.dumps(
        {"name": "tiny-svc", "model": "tiny", "version": 1}).encode(),
        {"Content-Type": "application/json"})
    if status == 404:
        pytest.skip("this kilnd has no deployments API")
    assert status == 201
    with pytest.raises(kiln.KilnError, match="deployment \"tiny-svc\"") as refused:
        client.delete_model("tiny", version=1)
    assert refused.value.status == 409
    with pytest.raises(kiln.KilnError, match="deployment \"tiny-svc\""):
        client.delete_model("tiny")
    client.delete_model("tiny", version=2)  # not deployed
    assert [v["version"] for v in client.model("tiny")["versions"]] == [1]


# A trial that saves a tiny model scaled by its hyperparameter and reports its loss.
TRIAL = """\
import json, kiln, torch
cfg = kiln.config()
torch.manual_seed(0)
model = torch.nn.Linear(4, 2)
with torch.no_grad():
    model.weight.mul_(cfg["scale"])
kiln.report(1, {"loss": abs(cfg["scale"] - 0.5)}, group="test")
kiln.flush(timeout=30)
kiln.save_model(model, torch.zeros(1, 4), input_names=["x"], output_names=["y"])
"""


def test_a_trials_model_carries_its_experiment_trial_and_hyperparameters(client, tmp_path):
    code = tmp_path / "trial"
    code.mkdir()
    (code / "trial.py").write_text(TRIAL)
    created = client.create_experiment(
        {"name": "scales", "command": [PYTHON, "trial.py"], "algorithm": "random",
         "search_space": {"scale": {"type": "double", "low": 0.1, "high": 1.0}},
         "env": {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
         "objective": {"metric": "loss", "goal": "minimize"}, "max_trials": 1,
         "parallelism": 1, "seed": 3}, code=code)
    done = client.wait_experiment(created["id"], timeout=120, poll=0.2)
    assert done["state"] == "FINISHED", done
    [trial] = client.trials(created["id"])

    version = client.register_model("scaled", job_id=trial["job_id"])
    lineage = version["lineage"]
    assert lineage["experiment_id"] == created["id"]
    assert lineage["trial"] == trial["number"]
    assert lineage["hyperparameters"]["scale"] == trial["config"]["scale"]
    assert version["metrics"] == {"loss": trial["value"]}
    assert version["signature"] == TINY_SIGNATURE
    model = load(client.model_content("scaled", 1))
    torch.manual_seed(0)
    expected = torch.nn.Linear(4, 2)
    x = torch.rand(3, 4)
    with torch.no_grad():
        expected.weight.mul_(trial["config"]["scale"])
        assert torch.allclose(model(x), expected(x))
