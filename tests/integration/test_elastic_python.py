"""Elastic training of a real PyTorch script through a real kilnd (issue 4, Python runtime).

The workload is examples/fashion_mnist/elastic/train_elastic.py (`kiln.elastic.FabricModel`)
on a Fashion-MNIST subset; workers are real processes under real agents, meeting at
kilnd's rendezvous and training over real gloo groups. Workers are killed with SIGKILL,
added by freeing a slot or scaling, removed by scaling, and each run must end FINISHED
with the test accuracy of an undisturbed run (same seed, same global batch) within one
point, while the workers that were not touched keep their process throughout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from conftest import PYTHON, ROOT, Master, wait_for

pytest.importorskip("torch")

EXAMPLE_DIR = ROOT / "examples" / "fashion_mnist" / "elastic"
DATA = "/usr/share/datasets/fashion-mnist"
pytestmark = pytest.mark.skipif(
    not os.path.exists(os.path.join(DATA, "train-images-idx3-ubyte.gz")),
    reason="Fashion-MNIST is not installed")

# 6000 images, global batch 32 x 2 = 64 whatever the number of workers: 94 steps an epoch.
TRAIN_ARGS = ["--train-subset", "6000", "--test-subset", "1000", "--epochs", "2",
              "--batch-size", "32", "--max-workers", "2", "--log-every", "5"]
# Two or three workers share the machine's two cores: one thread each.
THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
ONE_POINT = 0.01


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory) -> list[dict[str, Any]]:
    """The reference: the same training in one process, outside Kiln."""
    out = tmp_path_factory.mktemp("undisturbed")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env.update(THREADS, PYTHONPATH=str(ROOT / "python"), RESULT_DIR=str(out),
               LOG_DIR=str(out / "log"))
    env.pop("CHECKPOINT_DIR", None)
    done = subprocess.run([PYTHON, str(EXAMPLE_DIR / "train_elastic.py"), *TRAIN_ARGS],
                          env=env, cwd=out, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((out / "val_dict_list.json").read_text())


@pytest.fixture
def master3(tmp_path):
    m = Master(tmp_path / "master", slots=3).start()
    yield m
    m.stop()


def submit(client, hold: Optional[Path] = None, max_workers: int = 2) -> int:
    """Submits the example; while ``hold`` exists each step sleeps 30 ms, so the test can
    disturb the job mid-epoch, then removes ``hold`` to let it finish at full speed."""
    args = [PYTHON, "train_elastic.py", *TRAIN_ARGS]
    if hold is not None:
        hold.touch()
        args += ["--step-delay-ms", "30", "--delay-while-exists", str(hold)]
    job = client.submit(args, package=str(EXAMPLE_DIR), slots=1, env=THREADS,
                        min_workers=1, max_workers=max_workers)
    return job["id"]


def worker_pids(job_id: int) -> dict[int, int]:
    """Task id -> pid of the job's live train_elastic.py processes on this machine."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if not any(a.endswith(b"train_elastic.py") for a in argv):
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


def wait_record(client, job_id: int, predicate: Callable[[dict], bool], what: str,
                timeout: float = 120) -> dict:
    def check() -> Optional[dict]:
        record = client.job(job_id)
        if record["state"] in ("FINISHED", "FAILED", "KILLED") and not predicate(record):
            raise AssertionError(f"job {job_id} ended {record['state']} before {what}: "
                                 f"{logs_tail(client, job_id)}")
        return record if predicate(record) else None
    return wait_for(check, timeout=timeout, interval=0.1, what=what)


def training_in_world(client, job_id: int, world: int, past_step: int) -> Callable:
    """A predicate: the newest generation has ``world`` workers, all running on this
    machine, and rank 0 reported a training step after ``past_step``."""
    def predicate(record: dict) -> bool:
        gens = record.get("generations") or []
        return (bool(gens) and gens[-1]["world_size"] == world
                and set(gens[-1]["members"]) <= set(worker_pids(job_id))
                and last_train_step(client, job_id) > past_step)
    return predicate


def logs_tail(client, job_id: int, n: int = 40) -> str:
    return "\n".join(line["text"] for line in client.all_logs(job_id)[-n:])


def finish(client, job_id: int, undisturbed: list, timeout: float = 240) -> dict:
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


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def test_two_workers_train_to_finished_with_the_undisturbed_accuracy(client, undisturbed):
    job_id = submit(client)
    done = finish(client, job_id, undisturbed)
    assert any(g["world_size"] == 2 for g in done["generations"]), done["generations"]
    assert all(t["state"] == "FINISHED" and t["exit_code"] == 0 for t in done["tasks"])
    lines = [line["text"] for line in client.all_logs(job_id)]
    assert any("[kiln.elastic] generation" in text and "rank 1 of 2" in text
               for text in lines), lines[-30:]


@pytest.mark.parametrize("victim_rank", [1, 0], ids=["rank1", "store-host-rank0"])
def test_a_worker_killed_mid_epoch_costs_the_others_nothing(client, undisturbed, tmp_path,
                                                            victim_rank):
    hold = tmp_path / "hold"
    job_id = submit(client, hold)
    record = wait_record(client, job_id, training_in_world(client, job_id, 2, 15),
                         "two workers training")
    members = record["generations"][-1]["members"]
    victim, survivor = members[victim_rank], members[1 - victim_rank]
    pids = worker_pids(job_id)
    kill9(pids[victim])
    assert last_train_step(client, job_id) < 94  # mid-epoch 1 (94 steps an epoch)
    wait_record(client, job_id, lambda r: victim not in r["generations"][-1]["members"],
                "a generation without the killed worker")
    hold.unlink()

    done = finish(client, job_id, undisturbed)
    survivor_task = next(t for t in done["tasks"] if t["id"] == survivor)
    assert survivor_task["state"] == "FINISHED" and survivor_task["exit_code"] == 0
    killed = next(t for t in done["tasks"] if t["id"] == victim)
    assert killed["exit_code"] not in (0, None) or "signal" in killed["reason"], killed
    after = [g for g in done["generations"] if g["id"] > record["generations"][-1]["id"]]
    assert after and survivor in after[0]["members"] and victim not in after[0]["members"]
    # The survivor kept its process: it was in every generation since and never started
    # over (a restarted worker would be a new task).
    assert all(survivor in g["members"] for g in after)


def test_a_worker_added_mid_run_joins_without_restarting_the_running_one(client, undisturbed,
                                                                        tmp_path):
    blocker = client.submit(["sleep", "600"], slots=1)["id"]  # the agent's other slot
    client.wait_state(blocker, "RUNNING")
    hold = tmp_path / "hold"
    job_id = submit(client, hold)
    record = wait_record(client, job_id, training_in_world(client, job_id, 1, 10),
                         "one worker training")
    [first] = record["generations"][-1]["members"]
    first_pid = worker_pids(job_id)[first]

    client.kill(blocker)  # a slot frees up: the job grows toward max_workers
    record = wait_record(client, job_id, lambda r: r["generations"][-1]["world_size"] == 2,
                         "a second worker to join")
    assert first in record["generations"][-1]["members"]
    assert worker_pids(job_id).get(first) == first_pid  # the same process trains on
    assert last_train_step(client, job_id) < 188  # joined mid-run
    hold.unlink()

    done = finish(client, job_id, undisturbed)
    assert len(done["generations"]) >= 2
    assert next(t for t in done["tasks"] if t["id"] == first)["exit_code"] == 0


def test_scale_1_2_1_2_keeps_the_first_worker_and_the_accuracy(client, undisturbed, tmp_path):
    hold = tmp_path / "hold"
    job_id = submit(client, hold)
    client.scale(job_id, 1)
    record = wait_record(client, job_id, lambda r: r["workers"]["live"] == 1 and
                         training_in_world(client, job_id, 1, 0)(r), "one worker training")
    [first] = record["generations"][-1]["members"]
    first_pid = worker_pids(job_id)[first]
    seen = {first}
    for target in (2, 1, 2):
        client.scale(job_id, target)
        record = wait_record(client, job_id,
                             lambda r: r["generations"][-1]["world_size"] == target
                             and r["workers"]["live"] == target,
                             f"the job to run {target} workers")
        members = record["generations"][-1]["members"]
        assert first in members and worker_pids(job_id).get(first) == first_pid
        seen.update(members)
    assert last_train_step(client, job_id) < 188, "training ended before the last scale"
    hold.unlink()

    done = finish(client, job_id, undisturbed)
    assert len(seen) == 3  # a newcomer, which then left, and another newcomer
    left = [t for t in done["tasks"] if t["id"] in seen and t["id"] != first]
    assert all(t["exit_code"] == 0 for t in left), left


def test_a_worker_killed_during_a_rendezvous_does_not_stop_the_others(master3, undisturbed,
                                                                      tmp_path):
    client = master3.client()
    hold = tmp_path / "hold"
    job_id = submit(client, hold, max_workers=3)
    record = wait_record(client, job_id, training_in_world(client, job_id, 3, 10),
                         "three workers training")
    members = record["generations"][-1]["members"]
    pids = worker_pids(job_id)
    # The first kill sends the two others into a rendezvous; the second lands in it.
    kill9(pids[members[1]])
    kill9(pids[members[2]])
    wait_record(client, job_id, lambda r: not {members[1], members[2]} & set(
        r["generations"][-1]["members"]), "a generation without the killed workers")
    hold.unlink()
    done = finish(client, job_id, undisturbed)
    later = [g for g in done["generations"] if g["id"] > record["generations"][-1]["id"]]
    assert later and all(members[0] in g["members"] for g in later)
    assert not any(members[1] in g["members"] or members[2] in g["members"] for g in later)

