"""Elastic training with the C++ runtime through a real kilnd (issue 4, C++ runtime).

The workload is ``kiln-train --elastic`` (LibTorch, c10d ProcessGroupGloo) on a
Fashion-MNIST subset; workers are real processes under a real agent, meeting at kilnd's
rendezvous. A worker is killed with SIGKILL mid-epoch, or added by scaling 1 -> 2, and
each run must end FINISHED with the test accuracy of an undisturbed run (same seed, same
global batch) within one point, while the worker that was not touched keeps its process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Any, Callable, Optional

import pytest

from conftest import BIN, wait_for

KILN_TRAIN = BIN / "kiln-train"
DATA = "/usr/share/datasets/fashion-mnist"
pytestmark = [
    pytest.mark.skipif(not KILN_TRAIN.exists(), reason="built without LibTorch"),
    pytest.mark.skipif(not os.path.exists(os.path.join(DATA, "train-images-idx3-ubyte.gz")),
                       reason="Fashion-MNIST is not installed"),
]

# 6000 images in global batches of 64 whatever the number of workers: 94 steps an epoch.
TRAIN_ARGS = ["--train-limit", "6000", "--test-limit", "1000", "--epochs", "2",
              "--batch-size", "64", "--log-every", "5", "--threads", "1"]
STEPS_PER_EPOCH = 94
# Two workers share the machine's two cores: one thread each.
THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
ONE_POINT = 0.01


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory) -> list[dict[str, Any]]:
    """The reference: the same training in one process, outside Kiln (a world of one)."""
    out = tmp_path_factory.mktemp("undisturbed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env.update(THREADS, RESULT_DIR=str(out))
    done = subprocess.run([str(KILN_TRAIN), "--elastic", *TRAIN_ARGS], env=env, cwd=out,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "training as a world of one" in done.stdout
    return json.loads((out / "val_dict_list.json").read_text())


def submit(client, step_delay_ms: int) -> int:
    job = client.submit([str(KILN_TRAIN), "--elastic", *TRAIN_ARGS,
                         "--elastic-step-delay-ms", str(step_delay_ms)],
                        slots=1, env=THREADS, min_workers=1, max_workers=2)
    return job["id"]


def worker_pids(job_id: int) -> dict[int, int]:
    """Task id -> pid of the job's live kiln-train processes on this machine."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if not argv[0].endswith(b"kiln-train") or b"--elastic" not in argv:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
            with open(f"/proc/{entry}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue  # exited, not yet reaped
        except OSError:
            continue  # gone meanwhile
        if env.get(b"KILN_JOB_ID") == str(job_id).encode() and b"KILN_TASK_ID" in env:
            found[int(env[b"KILN_TASK_ID"])] = int(entry)
    return found


def last_train_step(client, job_id: int) -> int:
    for s in client.metrics(job_id):
        if (s["name"], s["group"]) == ("loss", "train") and s["points"]:
            return max(p["step"] for p in s["points"])
    return 0


def logs_tail(client, job_id: int, n: int = 40) -> str:
    return "\n".join(line["text"] for line in client.all_logs(job_id)[-n:])


def wait_record(client, job_id: int, predicate: Callable[[dict], bool], what: str,
                timeout: float = 120) -> dict:
    def check() -> Optional[dict]:
        record = client.job(job_id)
        if record["state"] in ("FINISHED", "FAILED", "KILLED") and not predicate(record):
            raise AssertionError(f"job {job_id} ended {record['state']} before {what}:\n"
                                 f"{logs_tail(client, job_id)}")
        return record if predicate(record) else None
    return wait_for(check, timeout=timeout, interval=0.1, what=what)


def training_in_world(client, job_id: int, world: int, past_step: int) -> Callable:
    """A predicate: the newest generation has ``world`` workers, all running here, and
    rank 0 reported a training step after ``past_step``."""
    def predicate(record: dict) -> bool:
        gens = record.get("generations") or []
        return (bool(gens) and gens[-1]["world_size"] == world
                and set(gens[-1]["members"]) <= set(worker_pids(job_id))
                and last_train_step(client, job_id) > past_step)
    return predicate


def finish(client, job_id: int, undisturbed: list, timeout: float = 300) -> dict:
    """Waits for the end; checks FINISHED and the accuracy of the undisturbed run."""
    done = client.wait_state(job_id, ("FINISHED", "FAILED", "KILLED"), timeout=timeout)
    assert done["state"] == "FINISHED", logs_tail(client, job_id)
    accuracy = {s["name"]: s["points"] for s in client.metrics(job_id)
                if s["group"] == "test"}["accuracy"]
    assert sorted({p["step"] for p in accuracy}) == [1, 2]
    final = [p for p in accuracy if p["step"] == 2][-1]["value"]
    assert abs(final - undisturbed[-1]["accuracy"]) <= ONE_POINT, \
        (final, undisturbed, logs_tail(client, job_id))
    return done


@pytest.mark.parametrize("victim_rank", [1, 0], ids=["rank1", "store-host-rank0"])
def test_a_worker_killed_mid_epoch_leaves_the_job_finished_with_the_same_accuracy(
        client, undisturbed, victim_rank):
    job_id = submit(client, step_delay_ms=25)
    record = wait_record(client, job_id, training_in_world(client, job_id, 2, 15),
                         "two workers training")
    members = record["generations"][-1]["members"]
    victim, survivor = members[victim_rank], members[1 - victim_rank]
    os.kill(worker_pids(job_id)[victim], signal.SIGKILL)
    assert last_train_step(client, job_id) < STEPS_PER_EPOCH  # mid-epoch 1

    done = finish(client, job_id, undisturbed)
    survivor_task = next(t for t in done["tasks"] if t["id"] == survivor)
    assert survivor_task["state"] == "FINISHED" and survivor_task["exit_code"] == 0
    killed = next(t for t in done["tasks"] if t["id"] == victim)
    assert killed["exit_code"] not in (0, None) or "signal" in killed["reason"], killed
    after = [g for g in done["generations"] if g["id"] > record["generations"][-1]["id"]]
    assert after and survivor in after[0]["members"] and victim not in after[0]["members"]
    # The survivor kept its process: it is in every later generation (a restarted worker
    # would be a new task), and its log shows it rolling back and re-joining, not starting.
    assert all(survivor in g["members"] for g in after)
    lines = [line["text"] for line in client.all_logs(job_id)]
    survivor_lines = [t for t in lines if t.startswith(f"[w{survivor}] ")]
    assert sum("elastic: model mlp" in t for t in survivor_lines) == 1, survivor_lines[:5]
    assert any(f"generation {after[0]['id']}: rank 0 of" in t for t in survivor_lines), \
        survivor_lines[-20:]


def test_scaling_1_to_2_adds_a_worker_without_restarting_the_first(client, undisturbed):
    job_id = submit(client, step_delay_ms=25)
    client.scale(job_id, 1)
    record = wait_record(client, job_id, lambda r: r["workers"]["live"] == 1 and
                         training_in_world(client, job_id, 1, 10)(r), "one worker training")
    [first] = record["generations"][-1]["members"]
    first_pid = worker_pids(job_id)[first]

    client.scale(job_id, 2)
    record = wait_record(client, job_id, lambda r: r["generations"][-1]["world_size"] == 2,
                         "a second worker to join")
    assert first in record["generations"][-1]["members"]
    assert record["generations"][-1]["members"][0] == first  # the source of the state
    assert worker_pids(job_id).get(first) == first_pid  # the same process trains on
    assert last_train_step(client, job_id) < 2 * STEPS_PER_EPOCH

    done = finish(client, job_id, undisturbed)
    assert all(t["exit_code"] == 0 for t in done["tasks"]), done["tasks"]
    [newcomer] = [m for m in done["generations"][-1]["members"] if m != first]
    lines = [line["text"] for line in client.all_logs(job_id)]
    assert any(t.startswith(f"[w{newcomer}] generation") and "rank 1 of 2, resumed at step" in t
               for t in lines), lines[-30:]
