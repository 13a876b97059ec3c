"""The `kiln` CLI against a real master: the command forms users and scripts rely on."""

import json
import os
import signal
import subprocess
import time

from conftest import ADMIN_PASSWORD, BIN, PYTHON, wait_for


def kiln(master, *args, cwd=None, timeout=120, env_extra=None):
    env = dict(os.environ, KILN_URL=master.url, KILN_USER="admin", KILN_PASSWORD=ADMIN_PASSWORD,
               HOME=str(master.data_dir.parent))
    env.update(env_extra or {})
    return subprocess.run([str(BIN / "kiln"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_run_prints_the_job_id_and_returns_at_once(master, tmp_path):
    (tmp_path / "hello.sh").write_text("sleep 0.2; echo hello\n")
    r = kiln(master, "run", "--", "sh", "hello.sh", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    job_id = int(r.stdout.strip())
    assert master.client().wait_state(job_id, "FINISHED")
    logs = kiln(master, "logs", str(job_id))
    assert logs.stdout == "hello\n"


def test_run_wait_exits_with_the_jobs_exit_code(master, tmp_path):
    r = kiln(master, "run", "--wait", "--no-package", "--", "sh", "-c", "exit 7", cwd=tmp_path)
    assert r.returncode == 7, r.stderr


def test_run_follow_streams_stdout_and_stderr(master, tmp_path):
    r = kiln(master, "run", "--follow", "--no-package", "--", "sh", "-c",
             "echo to-out; echo to-err >&2", cwd=tmp_path)
    assert r.returncode == 0
    assert r.stdout == "to-out\n"
    assert "to-err" in r.stderr
    assert "FINISHED" in r.stderr


def test_run_json_prints_the_record_with_resources_and_env(master, tmp_path):
    r = kiln(master, "run", "--json", "--slots", "2", "--env", "A=1", "--no-package", "--",
             "true", cwd=tmp_path)
    record = json.loads(r.stdout)
    assert record["resources"] == {"slots": 2, "gpus": 0}
    assert record["env"] == {"A": "1"}


def test_jobs_show_and_kill(master, tmp_path):
    job_id = int(kiln(master, "run", "--no-package", "--", "sleep", "300", cwd=tmp_path).stdout)
    master.client().wait_state(job_id, "RUNNING")
    table = kiln(master, "jobs").stdout
    assert "RUNNING" in table and str(job_id) in table
    show = json.loads(kiln(master, "job", "show", str(job_id), "--json").stdout)
    assert show["state"] == "RUNNING"
    r = kiln(master, "kill", str(job_id))
    assert r.returncode == 0
    master.client().wait_state(job_id, "KILLED")


def test_metrics_shows_every_series(master, tmp_path):
    (tmp_path / "m.py").write_text(
        "import kiln\nfor s in range(1, 4): kiln.report(s, {'loss': 1.0 / s})\nkiln.flush()\n")
    job_id = int(kiln(master, "run", "--wait", "--", PYTHON, "m.py", cwd=tmp_path).stdout)
    out = kiln(master, "metrics", str(job_id)).stdout
    assert "loss" in out
    series = json.loads(kiln(master, "metrics", str(job_id), "--json").stdout)["series"]
    assert [p["step"] for p in series[0]["points"]] == [1, 2, 3]


def test_errors_say_what_to_do(master, tmp_path):
    r = kiln(master, "job", "show", "999999")
    assert r.returncode != 0 and "no job with id 999999" in r.stderr
    r = kiln(master, "jobs", env_extra={"KILN_PASSWORD": "wrong"})
    assert r.returncode != 0 and "KILN_PASSWORD" in r.stderr
    r = kiln(master, "jobs", env_extra={"KILN_URL": "http://127.0.0.1:1"})
    assert r.returncode != 0 and "kiln up" in r.stderr
    r = kiln(master, "run", cwd=tmp_path)
    assert r.returncode == 2


def test_kiln_up_serves_until_interrupted(tmp_path):
    import socket
    data = tmp_path / "up"
    env = dict(os.environ, KILN_ADMIN_PASSWORD="up-password", HOME=str(tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(BIN / "kiln"), "up", "--data-dir", str(data), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = wait_for(lambda: (data / "kilnd.url").exists() and (data / "kilnd.url").read_text().strip(),
                       what="kiln up to listen")
        r = subprocess.run([str(BIN / "kiln"), "run", "--wait", "--no-package", "--", "true"],
                           env=dict(env, KILN_URL=url, KILN_USER="admin", KILN_PASSWORD="up-password"),
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
