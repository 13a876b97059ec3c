"""Distributed jobs through the `kiln` CLI against a real kilnd and agent (issue 4):
`kiln run --workers N` (static: PyTorch's env and a real gloo all-reduce between the
workers), `kiln run --workers MIN:MAX` of a script on the `kiln.elastic` runtime,
`kiln job scale` down and up again, and what `kiln job show` / `kiln jobs` say about
workers, tasks and generations."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from conftest import ADMIN_PASSWORD, BIN, PYTHON, Master
from elastic_util import TERMINAL, THREADS, wait_value

# Two processes run torch at once on a 2-core machine: keep each to one thread.
THREAD_FLAGS = [arg for name, value in THREADS.items() for arg in ("--env", f"{name}={value}")]

# A static worker: PyTorch's own env:// rendezvous from the variables Kiln sets, then an
# all-reduce of rank + 1 over gloo (1 + 2 = 3 with two workers).
STATIC_WORKER = """\
import os
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
total = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(total)
print(f"rank={os.environ['RANK']} world={os.environ['WORLD_SIZE']} "
      f"local_rank={os.environ['LOCAL_RANK']} task={os.environ['KILN_TASK_ID']} "
      f"sum={total.item():g}", flush=True)
dist.destroy_process_group()
"""

# An elastic worker on kiln.elastic: steps of one all-reduce each, printing the
# generation it trains in, until the file named by STOP_FILE exists (every rank agrees
# on stopping through the all-reduce, so all exit 0 after the same step).
ELASTIC_WORKER = """\
import os
import time
import torch
from kiln.elastic import ElasticRuntime, State

stop_file = os.environ["STOP_FILE"]
state = State(model=torch.nn.Linear(2, 1))
stop = 0.0
with ElasticRuntime(state) as runtime:
    while stop == 0:
        with runtime.step():
            stop, = runtime.all_reduce([1.0 if os.path.exists(stop_file) else 0.0])
            if runtime.is_reporter and state.step % 10 == 0:
                print(f"step {state.step} generation {runtime.generation} "
                      f"world {runtime.world_size}", flush=True)
            time.sleep(0.05)
print(f"task {os.environ['KILN_TASK_ID']} done at step {state.step}", flush=True)
"""


def kiln(master, *args, cwd=None, timeout=120):
    env = dict(os.environ, KILN_URL=master.url, KILN_USER="admin",
               KILN_PASSWORD=ADMIN_PASSWORD, HOME=str(master.data_dir.parent))
    return subprocess.run([str(BIN / "kiln"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def show(master, job_id: int) -> dict:
    r = kiln(master, "job", "show", str(job_id), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_show(master, job_id: int, predicate, what: str, timeout: float = 90.0) -> dict:
    """Polls `kiln job show --json` until `predicate(record)` holds; returns the record."""
    return wait_value(lambda: show(master, job_id), predicate, what, timeout)


@pytest.fixture
def master4(tmp_path):
    """A master whose local agent has 4 slots: room for two 1-slot workers and a third."""
    m = Master(tmp_path / "master", slots=4).start()
    yield m
    m.stop()


def test_static_workers_get_ranks_and_all_reduce_over_gloo(master, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "ddp_check.py").write_text(STATIC_WORKER)
    r = kiln(master, "run", "--workers", "2", "--wait", *THREAD_FLAGS, "--", PYTHON, "ddp_check.py",
             cwd=code)
    assert r.returncode == 0, r.stderr
    job_id = int(r.stdout)

    record = show(master, job_id)
    assert record["state"] == "FINISHED"
    assert (record["workers"]["min"], record["workers"]["max"]) == (2, 2)
    tasks = record["tasks"]
    assert len(tasks) == 2 and all(t["state"] == "FINISHED" for t in tasks)

    # One line per worker, each prefixed with its task id, ranks 0 and 1 of 2.
    logs = kiln(master, "logs", str(job_id)).stdout
    seen = {}
    for task in tasks:
        m = re.search(rf"^\[w{task['id']}\] rank=(\d) world=2 local_rank=\d "
                      rf"task={task['id']} sum=3$", logs, re.MULTILINE)
        assert m, f"no line of task {task['id']} in:\n{logs}"
        seen[task["id"]] = int(m.group(1))
    assert sorted(seen.values()) == [0, 1]

    text = kiln(master, "job", "show", str(job_id)).stdout
    assert re.search(r"^workers: +0 live \(static, 2 workers\)$", text, re.MULTILINE), text
    assert "slots, 0 GPUs per worker" in text
    assert re.search(r"^tasks:\n  ID +STATE", text, re.MULTILINE), text
    table = kiln(master, "jobs").stdout
    assert re.search(rf"^{job_id} .* FINISHED +1 +0 +0/2 ", table, re.MULTILINE), table


def test_a_static_job_does_not_scale(master, tmp_path):
    r = kiln(master, "run", "--workers", "2", "--no-package", "--", "sleep", "300",
             cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    job_id = int(r.stdout)
    try:
        r = kiln(master, "job", "scale", str(job_id), "1")
        assert r.returncode != 0
        assert r.stderr.startswith("kiln: ") and "elastic" in r.stderr, r.stderr
    finally:
        kiln(master, "kill", str(job_id))
    master.client().wait_state(job_id, "KILLED")


def test_bad_workers_flag_is_refused_before_anything_is_sent(master, tmp_path):
    for bad in ("3:1", "0:2", "a:b", "0"):
        r = kiln(master, "run", "--workers", bad, "--", "true", cwd=tmp_path)
        assert r.returncode == 2, (bad, r.stderr)
        assert "--workers MIN:MAX" in r.stderr, r.stderr
    assert master.client().jobs() == []


def test_elastic_job_scales_down_and_up_and_finishes(master4, tmp_path):
    master = master4
    pytest.importorskip("torch")
    code = tmp_path / "code"
    code.mkdir()
    (code / "elastic_steps.py").write_text(ELASTIC_WORKER)
    stop_file = tmp_path / "stop"
    r = kiln(master, "run", "--workers", "1:2", *THREAD_FLAGS, "--env", f"STOP_FILE={stop_file}",
             "--", PYTHON, "elastic_steps.py", cwd=code)
    assert r.returncode == 0, r.stderr
    job_id = int(r.stdout)
    try:
        # Both workers start (2 fit) and train together in a generation of 2.
        record = wait_show(master, job_id,
                           lambda j: j["workers"]["live"] == 2 and any(
                               g["world_size"] == 2 for g in j.get("generations", [])),
                           "a generation of 2 workers")
        assert {k: record["workers"][k] for k in ("elastic", "min", "max", "target", "live")} \
            == {"elastic": True, "min": 1, "max": 2, "target": 2, "live": 2}
        first_pair = next(g for g in record["generations"] if g["world_size"] == 2)
        assert sorted(first_pair["members"]) == sorted(t["id"] for t in record["tasks"])

        text = kiln(master, "job", "show", str(job_id)).stdout
        assert "workers:    2 live (min 1, max 2, target 2)" in text, text
        assert re.search(r"^generations:\n  ID +WORLD SIZE +MEMBERS +STARTED +REASON$", text,
                         re.MULTILINE), text
        assert re.search(rf"^{job_id} .* RUNNING .* 2/2 ", kiln(master, "jobs").stdout,
                         re.MULTILINE)

        # Out of range: the master's message, exit code 2 (a rejected request).
        r = kiln(master, "job", "scale", str(job_id), "3")
        assert r.returncode == 2 and r.stderr.startswith("kiln: "), r.stderr

        # Down to 1: one worker is asked to leave, the other trains on alone.
        r = kiln(master, "job", "scale", str(job_id), "1")
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"job {job_id}: target 1 workers (min 1, max 2"), r.stdout
        record = wait_show(master, job_id,
                           lambda j: j["workers"]["live"] == 1
                           and j["generations"][-1]["world_size"] == 1,
                           "the job to shrink to 1 worker")
        assert record["state"] == "RUNNING"
        survivor = record["generations"][-1]["members"][0]
        assert survivor in first_pair["members"]

        # Up to 2 again: a new task joins the survivor, which was never restarted.
        r = kiln(master, "job", "scale", str(job_id), "2")
        assert r.returncode == 0, r.stderr
        record = wait_show(master, job_id,
                           lambda j: j["workers"]["live"] == 2
                           and j["generations"][-1]["world_size"] == 2
                           and len(j["tasks"]) == 3,
                           "a new worker to join")
        last = record["generations"][-1]
        assert survivor in last["members"]
        newcomer = next(t for t in last["members"] if t != survivor)
        assert newcomer not in first_pair["members"]
        assert [g["id"] for g in record["generations"]] == sorted(
            g["id"] for g in record["generations"])
    finally:
        stop_file.write_text("stop\n")
    record = master.client().wait_state(job_id, TERMINAL, timeout=90)
    assert record["state"] == "FINISHED", record
    final = show(master, job_id)
    assert all(t["state"] == "FINISHED" for t in final["tasks"]), final["tasks"]
    assert final["workers"]["live"] == 0
    logs = kiln(master, "logs", str(job_id)).stdout
    assert f"[w{survivor}] task {survivor} done at step" in logs, logs
