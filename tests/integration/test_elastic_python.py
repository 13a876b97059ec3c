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
from pathlib import Path
from typing import Any, Optional

import pytest

from conftest import PYTHON, ROOT, Master
from elastic_util import (THREADS, assert_only_the_victim_was_lost, finish, last_train_step,
                          run_outside_kiln, scale_to_one, training_in_world, wait_record,
                          worker_pids)

pytest.importorskip("torch")

EXAMPLE_DIR = ROOT / "examples" / "fashion_mnist" / "elastic"
DATA = "/usr/share/datasets/fashion-mnist"
pytestmark = pytest.mark.skipif(
    not os.path.exists(os.path.join(DATA, "train-images-idx3-ubyte.gz")),
    reason="Fashion-MNIST is not installed")

# 6000 images, global batch 32 x 2 = 64 whatever the number of workers: 94 steps an epoch.
TRAIN_ARGS = ["--train-subset", "6000", "--test-subset", "1000", "--epochs", "2",
              "--batch-size", "32", "--max-workers", "2", "--log-every", "5"]


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory) -> list[dict[str, Any]]:
    """The reference: the same training in one process, outside Kiln."""
    out = tmp_path_factory.mktemp("undisturbed")
    run_outside_kiln([PYTHON, str(EXAMPLE_DIR / "train_elastic.py"), *TRAIN_ARGS], out, 300,
                     PYTHONPATH=str(ROOT / "python"), RESULT_DIR=str(out),
                     LOG_DIR=str(out / "log"))
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


def is_worker(argv: list[bytes]) -> bool:
    """A process of the job's workload: python3 ... train_elastic.py."""
    return any(a.endswith(b"train_elastic.py") for a in argv)


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def test_two_workers_train_to_finished_with_the_undisturbed_accuracy(client, undisturbed):
    job_id = submit(client)
    done = finish(client, job_id, undisturbed, timeout=240)
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
    record = wait_record(client, job_id, training_in_world(client, job_id, 2, 15, is_worker),
                         "two workers training")
    members = record["generations"][-1]["members"]
    victim, survivor = members[victim_rank], members[1 - victim_rank]
    pids = worker_pids(job_id, is_worker)
    kill9(pids[victim])
    assert last_train_step(client, job_id) < 94  # mid-epoch 1 (94 steps an epoch)
    wait_record(client, job_id, lambda r: victim not in r["generations"][-1]["members"],
                "a generation without the killed worker")
    hold.unlink()

    done = finish(client, job_id, undisturbed, timeout=240)
    # The survivor kept its process: it was in every generation since and never started
    # over.
    assert_only_the_victim_was_lost(done, record, victim, survivor)


def test_a_worker_added_mid_run_joins_without_restarting_the_running_one(client, undisturbed,
                                                                        tmp_path):
    blocker = client.submit(["sleep", "600"], slots=1)["id"]  # the agent's other slot
    client.wait_state(blocker, "RUNNING")
    hold = tmp_path / "hold"
    job_id = submit(client, hold)
    record = wait_record(client, job_id, training_in_world(client, job_id, 1, 10, is_worker),
                         "one worker training")
    [first] = record["generations"][-1]["members"]
    first_pid = worker_pids(job_id, is_worker)[first]

    client.kill(blocker)  # a slot frees up: the job grows toward max_workers
    record = wait_record(client, job_id, lambda r: r["generations"][-1]["world_size"] == 2,
                         "a second worker to join")
    assert first in record["generations"][-1]["members"]
    assert worker_pids(job_id, is_worker).get(first) == first_pid  # the same process trains on
    assert last_train_step(client, job_id) < 188  # joined mid-run
    hold.unlink()

    done = finish(client, job_id, undisturbed, timeout=240)
    assert len(done["generations"]) >= 2
    assert next(t for t in done["tasks"] if t["id"] == first)["exit_code"] == 0


def test_scale_1_2_1_2_keeps_the_first_worker_and_the_accuracy(client, undisturbed, tmp_path):
    hold = tmp_path / "hold"
    job_id = submit(client, hold)
    first, first_pid = scale_to_one(client, job_id, 0, is_worker)
    seen = {first}
    for target in (2, 1, 2):
        client.scale(job_id, target)
        record = wait_record(client, job_id,
                             lambda r: r["generations"][-1]["world_size"] == target
                             and r["workers"]["live"] == target,
                             f"the job to run {target} workers")
        members = record["generations"][-1]["members"]
        assert first in members and worker_pids(job_id, is_worker).get(first) == first_pid
        seen.update(members)
    assert last_train_step(client, job_id) < 188, "training ended before the last scale"
    hold.unlink()

    done = finish(client, job_id, undisturbed, timeout=240)
    assert len(seen) == 3  # a newcomer, which then left, and another newcomer
    left = [t for t in done["tasks"] if t["id"] in seen and t["id"] != first]
    assert all(t["exit_code"] == 0 for t in left), left


def test_a_worker_killed_during_a_rendezvous_does_not_stop_the_others(master3, undisturbed,
                                                                      tmp_path):
    client = master3.client()
    hold = tmp_path / "hold"
    job_id = submit(client, hold, max_workers=3)
    record = wait_record(client, job_id, training_in_world(client, job_id, 3, 10, is_worker),
                         "three workers training")
    members = record["generations"][-1]["members"]
    pids = worker_pids(job_id, is_worker)
    # The first kill sends the two others into a rendezvous; the second lands in it.
    kill9(pids[members[1]])
    kill9(pids[members[2]])
    wait_record(client, job_id, lambda r: not {members[1], members[2]} & set(
        r["generations"][-1]["members"]), "a generation without the killed workers")
    hold.unlink()
    done = finish(client, job_id, undisturbed, timeout=240)
    later = [g for g in done["generations"] if g["id"] > record["generations"][-1]["id"]]
    assert later and all(members[0] in g["members"] for g in later)
    assert not any(members[1] in g["members"] or members[2] in g["members"] for g in later)

