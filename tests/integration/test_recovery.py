"""Failure and recovery with real processes: the master killed with SIGKILL while jobs
run, an agent killed and restarted, an agent lost for good. Nothing reported may be
lost or duplicated."""

import json
import textwrap

import pytest

from conftest import PYTHON, Agent, Master, wait_for

# A workload that prints numbered lines and reports each step through all three metric
# paths (native API, emetrics file, val_dict_list.json), for about `steps * delay` s.
WORKLOAD = textwrap.dedent("""
    import json, os, sys, time
    import kiln
    from kiln.emetrics import EMetrics
    steps, delay = int(sys.argv[1]), float(sys.argv[2])
    rows = []
    with EMetrics.open() as em:
        for step in range(1, steps + 1):
            print(f"line {step}", flush=True)
            kiln.report(step, {"native_loss": 1.0 / step}, group="train")
            em.record(EMetrics.TEST_GROUP, step, {"accuracy": step / steps})
            rows.append({"steps": step, "final_acc": step / steps})
            time.sleep(delay)
    with open(os.path.join(os.environ["RESULT_DIR"], "val_dict_list.json"), "w") as f:
        json.dump(rows, f)
    assert kiln.flush(120), "native metrics were not delivered"
    print("done", flush=True)
""")


def submit_workload(client, tmp_path, steps, delay):
    code = tmp_path / "workload"
    code.mkdir(exist_ok=True)
    (code / "steps.py").write_text(WORKLOAD)
    return client.submit([PYTHON, "steps.py", str(steps), str(delay)], package=str(code))


def assert_complete(client, job_id, steps):
    lines = [l["text"] for l in client.all_logs(job_id)]
    assert lines == [f"line {i}" for i in range(1, steps + 1)] + ["done"], lines
    series = {(s["name"], s["group"]): s["points"] for s in client.metrics(job_id)}
    for key in (("native_loss", "train"), ("accuracy", "test"), ("final_acc", "test")):
        assert [p["step"] for p in series[key]] == list(range(1, steps + 1)), key


def test_all_three_metric_paths_arrive(client, tmp_path):
    job = submit_workload(client, tmp_path, steps=5, delay=0.01)
    client.wait_state(job["id"], "FINISHED")
    assert_complete(client, job["id"], 5)
    status, raw = client.raw("GET", f"/api/v1/jobs/{job['id']}/metrics?name=accuracy")
    assert status == 200 and len(raw["series"]) == 1
    assert raw["series"][0]["points"][-1]["value"] == pytest.approx(1.0)


def test_master_killed_with_sigkill_loses_no_job_line_or_metric(tmp_path):
    master = Master(tmp_path / "master").start()
    try:
        client = master.client()
        steps = 60
        running = submit_workload(client, tmp_path, steps=steps, delay=0.1)
        queued_later = client.submit(["sh", "-c", "echo second job"])
        client.wait_state(running["id"], "RUNNING")
        wait_for(lambda: len(client.all_logs(running["id"])) >= 10, what="10 lines")

        master.kill9()
        # The task is not ours to kill: it keeps running while the master is down.
        master.start()
        client = master.client()

        assert client.job(running["id"])["state"] in ("RUNNING", "FINISHED")
        client.wait_state(running["id"], "FINISHED", timeout=120)
        client.wait_state(queued_later["id"], "FINISHED", timeout=60)
        assert_complete(client, running["id"], steps)
        assert client.all_logs(queued_later["id"])[0]["text"] == "second job"
    finally:
        master.stop()


def test_a_restarted_agent_readopts_its_running_task(tmp_path):
    master = Master(tmp_path / "master", local_agent=False).start()
    agent = Agent(master, tmp_path / "agent", "node-a").start()
    try:
        client = master.client()
        steps = 40
        job = submit_workload(client, tmp_path, steps=steps, delay=0.1)
        client.wait_state(job["id"], "RUNNING")
        wait_for(lambda: len(client.all_logs(job["id"])) >= 5, what="5 lines")
        agent.kill9()
        agent.start()
        client.wait_state(job["id"], "FINISHED", timeout=120)
        assert_complete(client, job["id"], steps)
    finally:
        agent.stop()
        master.stop()


def test_a_lost_agent_fails_its_running_job_and_requeues_nothing_twice(tmp_path):
    master = Master(tmp_path / "master", local_agent=False,
                    extra_args=["--agent-timeout", "2"]).start()
    agent = Agent(master, tmp_path / "agent", "node-b").start()
    try:
        client = master.client()
        job = client.submit(["sh", "-c", "echo started; exec sleep 600"])
        client.wait_state(job["id"], "RUNNING")
        agent.kill9()
        done = client.wait_state(job["id"], "FAILED", timeout=30)
        assert "agent node-b lost" in done["reason"]
        # The orphaned task still runs on the node; a returning agent is told to kill it.
        agent.start()
        shim = json.loads((tmp_path / "agent" / "tasks" / str(job["id"]) / "shim.json").read_text())
        import os
        def gone():
            try:
                os.kill(shim["task_pid"], 0)
                return False
            except ProcessLookupError:
                return True
        wait_for(gone, timeout=30, what="the orphaned task to be killed")
    finally:
        agent.stop()
        master.stop()
