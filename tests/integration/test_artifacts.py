"""Job artifacts (issue 5): when a task exits, its agent uploads the files it left under
$RESULT_DIR/model/ as packages and reports them with the exit; the master lists them at
GET /api/v1/jobs/{id}/artifacts. Real kilnd, real agents, real task processes."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from conftest import BIN, PYTHON, Agent, Master, wait_for
from elastic_util import TERMINAL, log_text

# Bytes that are not text (every byte value, a NUL included), so a download that
# re-encoded anything would differ.
MODEL_BYTES = bytes(range(256)) * 257 + b"\x00end"
SIGNATURE = b'{"inputs": [{"name": "x", "dtype": "float32", "shape": [4]}], ' \
            b'"outputs": [{"name": "y", "dtype": "float32", "shape": [2]}]}'

# Writes model/model.pt (this rank's content) and model/signature.json, a file outside
# model/ and a link inside it (neither kept); then exits with argv[1] after argv[2] s.
WRITER = textwrap.dedent("""
    import os, sys, time
    result = os.environ["RESULT_DIR"]
    model = os.path.join(result, "model")
    os.makedirs(model, exist_ok=True)
    rank = os.environ.get("RANK", "")
    payload = open("model.bin", "rb").read() + rank.encode()
    with open(os.path.join(model, "model.pt"), "wb") as f:
        f.write(payload)
    with open(os.path.join(model, "signature.json"), "wb") as f:
        f.write(open("signature.json", "rb").read())
    with open(os.path.join(result, "notes.txt"), "w") as f:
        f.write("not under model/")
    os.symlink("/etc/hostname", os.path.join(model, "link"))
    print("PATH", os.environ["PATH"].split(":")[0], flush=True)
    time.sleep(float(sys.argv[2]))
    sys.exit(int(sys.argv[1]))
""")


def code_dir(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "writer.py").write_text(WRITER)
    (code / "model.bin").write_bytes(MODEL_BYTES)
    (code / "signature.json").write_bytes(SIGNATURE)
    return code


def artifacts(client, job_id: int) -> list:
    return client._request("GET", f"/api/v1/jobs/{job_id}/artifacts")["artifacts"]


def content(client, package_id: str) -> bytes:
    with client._open("GET", f"/api/v1/packages/{package_id}/content") as response:
        return response.read()


def assert_model_files(client, job_id: int, model: bytes = MODEL_BYTES) -> None:
    listed = artifacts(client, job_id)
    assert [a["path"] for a in listed] == ["model/model.pt", "model/signature.json"], listed
    assert [a["size"] for a in listed] == [len(model), len(SIGNATURE)]
    assert content(client, listed[0]["package_id"]) == model
    assert content(client, listed[1]["package_id"]) == SIGNATURE


def test_a_finished_job_keeps_the_files_under_result_model(client, tmp_path):
    job = client.submit([PYTHON, "writer.py", "0", "0"], package=str(code_dir(tmp_path)))
    done = client.wait_state(job["id"], TERMINAL)
    assert done["state"] == "FINISHED", log_text(client, job["id"])
    assert_model_files(client, job["id"])
    text = log_text(client, job["id"])
    # The link is skipped with a word in the task's log; notes.txt is not an artifact.
    assert "kiln-agent: model/link is a symbolic link; not kept" in text, text
    # Kiln's own tools come first on the task's PATH: the build folder kilnd runs from.
    assert f"PATH {BIN}" in text, text


def test_a_failed_job_keeps_its_artifacts_too(client, tmp_path):
    job = client.submit([PYTHON, "writer.py", "3", "0"], package=str(code_dir(tmp_path)))
    done = client.wait_state(job["id"], TERMINAL)
    assert done["state"] == "FAILED", done
    assert_model_files(client, job["id"])


def test_a_job_without_a_model_folder_has_no_artifacts(client):
    job = client.submit(["sh", "-c", "echo hi > $RESULT_DIR/out.txt"])
    assert client.wait_state(job["id"], TERMINAL)["state"] == "FINISHED"
    assert artifacts(client, job["id"]) == []


def test_artifacts_of_unknown_or_others_jobs_are_not_found(master, client):
    status, body = client.raw("GET", "/api/v1/jobs/99999/artifacts")
    assert status == 404, body
    job = client.submit(["true"])
    client.wait_state(job["id"], TERMINAL)
    client._request("POST", "/api/v1/users", json_body={"username": "eve", "password": "pw-eve-1"})
    eve = master.client("eve", "pw-eve-1")
    status, body = eve.raw("GET", f"/api/v1/jobs/{job['id']}/artifacts")
    assert status == 404, body


def test_a_static_distributed_job_keeps_worker_0s_files(client, tmp_path):
    job = client.submit([PYTHON, "writer.py", "0", "0"], package=str(code_dir(tmp_path)),
                        workers=2)
    done = client.wait_state(job["id"], TERMINAL)
    assert done["state"] == "FINISHED", log_text(client, job["id"])
    assert_model_files(client, job["id"], MODEL_BYTES + b"0")
    # Each worker's own files stay listed under the worker.
    by_index = {t["worker_index"]: t["id"] for t in done["tasks"]}
    assert_model_files(client, by_index[1], MODEL_BYTES + b"1")


def test_artifacts_reach_a_master_that_was_down_when_the_task_exited(tmp_path):
    master = Master(tmp_path / "master", local_agent=False).start()
    agent = Agent(master, tmp_path / "agent", "node-a").start()
    try:
        client = master.client()
        job = client.submit([PYTHON, "writer.py", "0", "2"], package=str(code_dir(tmp_path)))
        wait_for(lambda: "PATH" in log_text(client, job["id"]), what="the task to start")
        master.kill9()
        task_dir = tmp_path / "agent" / "tasks" / str(job["id"])
        # The task exits while the master is away; the agent keeps retrying.
        wait_for(lambda: (task_dir / "exit.json").exists(), timeout=30, what="the task to exit")
        master.start()
        client = master.client()
        assert client.wait_state(job["id"], TERMINAL, timeout=60)["state"] == "FINISHED"
        assert_model_files(client, job["id"])
        assert os.path.exists(task_dir / "artifacts.json")
    finally:
        agent.stop()
        master.stop()
