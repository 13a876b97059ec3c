"""Distributed jobs as the master schedules them (issue 4): static jobs are placed all or
nothing and fail as a whole; elastic jobs survive losing a whole agent (node), stop when
killed, and fail once worker crashes pass max_worker_failures. Real kilnd, real agents,
real worker processes; the elastic workload is the Python runtime's example."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from conftest import PYTHON, ROOT, Agent, Master, wait_for
from elastic_util import TERMINAL, THREADS, log_text, newest_world, task_pids, wait_value

EXAMPLE_DIR = ROOT / "examples" / "fashion_mnist" / "elastic"

RANK_SCRIPT = """
import os, sys, time
print("rank", os.environ["RANK"], "of", os.environ["WORLD_SIZE"],
      "at", os.environ["MASTER_ADDR"] + ":" + os.environ["MASTER_PORT"],
      "local", os.environ["LOCAL_RANK"], os.environ["LOCAL_WORLD_SIZE"], flush=True)
if os.environ["RANK"] == sys.argv[1]:
    sys.exit(3)
time.sleep(float(sys.argv[2]))
"""


def write_script(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / "ranks.py").write_text(RANK_SCRIPT)
    return code


def test_a_static_job_is_placed_all_or_nothing_and_gets_torch_env(master, tmp_path):
    client = master.client()
    blocker = client.submit(["sleep", "600"], slots=1)
    client.wait_state(blocker["id"], "RUNNING")
    # Two workers on a 2-slot agent with one slot taken: neither may start alone.
    job = client.submit([PYTHON, "ranks.py", "none", "0"], package=write_script(tmp_path),
                        workers=2)
    time.sleep(2)
    waiting = client.job(job["id"])
    assert waiting["state"] == "QUEUED"
    assert waiting["tasks"] == []
    client.kill(blocker["id"])
    done = client.wait_state(job["id"], TERMINAL)
    assert done["state"] == "FINISHED", done
    assert [t["worker_index"] for t in done["tasks"]] == [0, 1]
    assert all(t["state"] == "FINISHED" for t in done["tasks"])
    text = log_text(client, job["id"])
    port = 29500 + job["id"] % 2000
    for rank in (0, 1):
        assert f"rank {rank} of 2 at 127.0.0.1:{port} local {rank} 2" in text, text


def test_a_failed_static_worker_fails_the_job_and_stops_the_others(client, tmp_path):
    job = client.submit([PYTHON, "ranks.py", "1", "600"], package=write_script(tmp_path),
                        workers=2)
    done = client.wait_state(job["id"], TERMINAL, timeout=60)
    assert done["state"] == "FAILED"
    assert "exited with code 3" in done["reason"] and "rank 1" in done["reason"], done
    # Rank 0 (sleeping) is stopped rather than left running.
    wait_for(lambda: all(t["state"] in TERMINAL for t in client.job(job["id"])["tasks"]),
             timeout=30, what="rank 0 to be stopped")


def test_a_static_job_larger_than_the_cluster_is_refused(client, tmp_path):
    with pytest.raises(Exception) as refused:
        client.submit([PYTHON, "ranks.py", "none", "0"], package=write_script(tmp_path),
                      workers=3)
    assert "can never run 3 workers" in str(refused.value)


def elastic_job(client, epochs: int = 3, **kwargs) -> dict:
    return client.submit(
        [PYTHON, "train_elastic.py", "--train-subset", "6000", "--test-subset", "1000",
         "--epochs", str(epochs), "--batch-size", "32", "--max-workers", "2",
         "--step-delay-ms", "20"],
        package=EXAMPLE_DIR, env=THREADS, **kwargs)


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist"),
                    reason="Fashion-MNIST is not installed")
def test_losing_an_agent_shrinks_an_elastic_job_instead_of_failing_it(tmp_path):
    master = Master(tmp_path / "master", slots=1, extra_args=["--agent-timeout", "2"]).start()
    node_b = Agent(master, tmp_path / "node-b", "node-b", slots=1).start()
    try:
        client = master.client()
        job = elastic_job(client, min_workers=1, max_workers=2)
        running = wait_value(lambda: client.job(job["id"]), lambda j: newest_world(j) == 2,
                             "a generation of two workers", timeout=60, interval=0.05)
        on_b = [t["id"] for t in running["tasks"] if t["agent"] == "node-b"]
        assert len(on_b) == 1
        time.sleep(1)
        # The node goes away: its agent and its worker die together.
        node_b.kill9()
        for pid in task_pids(on_b[0]):
            os.kill(pid, signal.SIGKILL)
        done = client.wait_state(job["id"], TERMINAL, timeout=180)
        assert done["state"] == "FINISHED", done
        lost = next(t for t in done["tasks"] if t["id"] == on_b[0])
        assert lost["state"] == "FAILED"
        last = done["generations"][-1]
        assert on_b[0] not in last["members"] and last["world_size"] == 1, done["generations"]
        assert "accuracy" in {m["name"] for m in client.metrics(job["id"])}
    finally:
        node_b.stop()
        master.stop()


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist"),
                    reason="Fashion-MNIST is not installed")
def test_killing_an_elastic_job_stops_every_worker(client):
    job = elastic_job(client, epochs=20, min_workers=1, max_workers=2)
    wait_for(lambda: client.job(job["id"])["generations"], timeout=60, what="a generation")
    client.kill(job["id"])
    done = client.wait_state(job["id"], TERMINAL)
    assert done["state"] == "KILLED"
    wait_for(lambda: all(t["state"] in TERMINAL for t in client.job(job["id"])["tasks"]),
             timeout=30, what="the workers to stop")
    assert all(t["state"] == "KILLED" for t in client.job(job["id"])["tasks"])


def test_worker_crashes_past_max_worker_failures_fail_the_job(client, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "crash.py").write_text("import sys\nprint('crashing', flush=True)\nsys.exit(7)\n")
    job = client.submit([PYTHON, "crash.py"], package=code, min_workers=1, max_workers=2,
                        max_worker_failures=3)
    done = client.wait_state(job["id"], TERMINAL, timeout=60)
    assert done["state"] == "FAILED"
    assert "4 worker failures (max_worker_failures is 3)" in done["reason"], done
    assert "exited with code 7" in done["reason"]
