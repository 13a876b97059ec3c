"""Job lifecycle through the real master and agent: states, exit codes, logs, kills,
packages, and the workload contract."""

import io
import json
import tarfile

import pytest

from conftest import PYTHON, wait_for


def test_a_job_finishes_with_its_output_in_order(client):
    job = client.submit(["sh", "-c", "for i in 1 2 3; do echo out$i; echo err$i >&2; done"])
    assert job["state"] in ("QUEUED", "SCHEDULED", "RUNNING")
    done = client.wait_state(job["id"], "FINISHED")
    assert done["exit_code"] == 0
    assert done["started_at"] and done["finished_at"]
    lines = client.all_logs(job["id"])
    assert [l["text"] for l in lines if l["stream"] == "stdout"] == ["out1", "out2", "out3"]
    assert [l["text"] for l in lines if l["stream"] == "stderr"] == ["err1", "err2", "err3"]
    assert [l["seq"] for l in lines] == list(range(1, 7))
    events = [e["message"] for e in client.events(job["id"])]
    assert events[0].startswith("QUEUED")
    assert any("RUNNING" in e for e in events)
    assert "FINISHED" in events[-1]


def test_a_nonzero_exit_fails_the_job_with_the_code(client):
    job = client.submit(["sh", "-c", "echo about to fail; exit 3"])
    done = client.wait_state(job["id"], "FAILED")
    assert done["exit_code"] == 3
    assert done["reason"] == "exited with code 3"


def test_a_missing_command_fails_with_a_clear_reason(client):
    job = client.submit(["pyhton3", "train.py"])
    done = client.wait_state(job["id"], "FAILED")
    assert "command not found: pyhton3" in done["reason"]
    assert any("command not found" in l["text"] for l in client.all_logs(job["id"]))


def test_a_crashing_workload_fails_with_its_signal(client):
    job = client.submit(["sh", "-c", "kill -SEGV $$"])
    done = client.wait_state(job["id"], "FAILED")
    assert done["signal"] == 11
    assert "signal 11" in done["reason"]


def test_killing_a_running_job_stops_its_whole_process_group(client):
    job = client.submit(["sh", "-c", "sleep 1000 & echo started; wait"])
    client.wait_state(job["id"], "RUNNING")
    wait_for(lambda: client.all_logs(job["id"]), what="the job's first line")
    killed = client.kill(job["id"])
    assert killed["kill_requested"] or killed["state"] == "KILLED"
    done = client.wait_state(job["id"], "KILLED", timeout=30)
    assert "killed by admin" in done["reason"]


def test_killing_a_queued_job_ends_it_at_once(master, client):
    blockers = [client.submit(["sleep", "30"]) for _ in range(2)]  # fill both slots
    queued = client.submit(["true"])
    wait_for(lambda: client.job(queued["id"])["state"] == "QUEUED" and
             all(client.job(b["id"])["state"] == "RUNNING" for b in blockers),
             what="both slots busy")
    assert client.kill(queued["id"])["state"] == "KILLED"
    for b in blockers:
        client.kill(b["id"])
    for b in blockers:
        client.wait_state(b["id"], "KILLED")


def test_jobs_wait_for_free_slots(client):
    jobs = [client.submit(["sh", "-c", "sleep 0.3"]) for _ in range(4)]
    for j in jobs:
        client.wait_state(j["id"], "FINISHED")
    # Two slots: never more than two ran at once.
    spans = sorted((client.job(j["id"])["started_at"], client.job(j["id"])["finished_at"]) for j in jobs)
    for i, (start, _) in enumerate(spans):
        overlapping = sum(1 for s, f in spans if s <= start < f)
        assert overlapping <= 2, spans


def test_the_workload_contract_is_in_place(client, tmp_path):
    script = tmp_path / "code" / "probe.py"
    script.parent.mkdir()
    script.write_text(
        "import json, os, kiln\n"
        "keys = ['KILN_MASTER','KILN_TOKEN','KILN_JOB_ID','KILN_TASK_ID','KILN_SLOTS','RESULT_DIR',"
        "'LOG_DIR','DATA_DIR','CHECKPOINT_DIR','TRAINING_ID','OMP_NUM_THREADS']\n"
        "print(json.dumps({k: os.environ.get(k) for k in keys}))\n"
        "print(json.dumps(kiln.config()))\n"
        "print(os.getcwd())\n")
    job = client.submit([PYTHON, "probe.py"], package=str(script.parent), slots=2,
                        config={"lr": 0.1, "layers": 3}, env={"MY_FLAG": "1"})
    client.wait_state(job["id"], "FINISHED")
    lines = [l["text"] for l in client.all_logs(job["id"])]
    env = json.loads(lines[0])
    assert env["KILN_JOB_ID"] == str(job["id"])
    assert env["KILN_SLOTS"] == "2" and env["OMP_NUM_THREADS"] == "2"
    assert env["KILN_TOKEN"] and env["KILN_MASTER"].startswith("http://127.0.0.1:")
    for k in ("RESULT_DIR", "LOG_DIR", "DATA_DIR", "CHECKPOINT_DIR"):
        assert env[k].startswith("/")
    assert json.loads(lines[1]) == {"lr": 0.1, "layers": 3}
    assert lines[2].endswith("/work")


def test_a_single_file_package_lands_in_the_working_dir(client, tmp_path):
    script = tmp_path / "hello.sh"
    script.write_text("echo hello from a file\n")
    job = client.submit(["sh", "hello.sh"], package=str(script))
    client.wait_state(job["id"], "FINISHED")
    assert client.all_logs(job["id"])[0]["text"] == "hello from a file"


def test_a_package_that_escapes_its_folder_fails_the_job(client):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"pwned\n"
        info = tarfile.TarInfo("../../evil.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    status, pkg = client.raw("POST", "/api/v1/packages?name=evil.tar.gz", body=buf.getvalue(),
                             headers={"Content-Type": "application/gzip"})
    assert status == 201
    job = client._request("POST", "/api/v1/jobs",
                          json_body={"command": ["true"], "package": {"id": pkg["id"]}})
    done = client.wait_state(job["id"], "FAILED")
    assert "could not unpack the code package" in done["reason"]
    assert ".." in done["reason"]


def test_jobs_list_filters_by_state_and_paginates(client):
    ids = [client.submit(["true"])["id"] for _ in range(3)]
    for i in ids:
        client.wait_state(i, "FINISHED")
    status, page = client.raw("GET", "/api/v1/jobs?limit=2&state=FINISHED")
    assert status == 200
    assert [j["id"] for j in page["jobs"]] == [ids[2], ids[1]]
    status, rest = client.raw("GET", f"/api/v1/jobs?limit=2&state=FINISHED&page_token={page['next_page_token']}")
    assert [j["id"] for j in rest["jobs"]] == [ids[0]]
    assert "next_page_token" not in rest


def test_following_logs_streams_until_the_job_ends(client):
    job = client.submit(["sh", "-c", "for i in $(seq 1 20); do echo line$i; sleep 0.05; done"])
    texts = [l["text"] for l in client.logs(job["id"], follow=True)]
    assert texts == [f"line{i}" for i in range(1, 21)]
    assert client.job(job["id"])["state"] == "FINISHED"


def test_a_flood_of_output_neither_stalls_the_job_nor_loses_lines(client):
    # ~30 MB of output as fast as Python can print it.
    job = client.submit([PYTHON, "-c",
                         "import sys\nfor i in range(300000): sys.stdout.write('%07d %s\\n' % (i, 'x'*90))"])
    client.wait_state(job["id"], "FINISHED", timeout=240)
    status, last = client.raw("GET", f"/api/v1/jobs/{job['id']}/logs?after=299999&limit=5")
    assert status == 200
    assert [l["text"][:7] for l in last["lines"]] == ["0299999"]
    assert last["done"] is True


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    from conftest import Master
    master = Master(tmp_path / "m", extra_args=["--kill-grace-ms", "500"]).start()
    try:
        client = master.client()
        job = client.submit(["sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.1; done"])
        wait_for(lambda: client.all_logs(job["id"]), what="the job to start")
        client.kill(job["id"])
        done = client.wait_state(job["id"], "KILLED", timeout=30)
        assert done["signal"] == 9
    finally:
        master.stop()
