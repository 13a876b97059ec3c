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
from typing import Any

import pytest

from conftest import BIN
from elastic_util import (THREADS, assert_only_the_victim_was_lost, finish, last_train_step,
                          run_outside_kiln, scale_to_one, training_in_world, wait_record,
                          worker_pids)

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


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory) -> list[dict[str, Any]]:
    """The reference: the same training in one process, outside Kiln (a world of one)."""
    out = tmp_path_factory.mktemp("undisturbed")
    done = run_outside_kiln([str(KILN_TRAIN), "--elastic", *TRAIN_ARGS], out, 300,
                            RESULT_DIR=str(out))
    assert "training as a world of one" in done.stdout
    return json.loads((out / "val_dict_list.json").read_text())


def submit(client, step_delay_ms: int) -> int:
    job = client.submit([str(KILN_TRAIN), "--elastic", *TRAIN_ARGS,
                         "--elastic-step-delay-ms", str(step_delay_ms)],
                        slots=1, env=THREADS, min_workers=1, max_workers=2)
    return job["id"]


def is_worker(argv: list[bytes]) -> bool:
    """A process of the job's workload: kiln-train --elastic."""
    return argv[0].endswith(b"kiln-train") and b"--elastic" in argv


@pytest.mark.parametrize("victim_rank", [1, 0], ids=["rank1", "store-host-rank0"])
def test_a_worker_killed_mid_epoch_leaves_the_job_finished_with_the_same_accuracy(
        client, undisturbed, victim_rank):
    job_id = submit(client, step_delay_ms=25)
    record = wait_record(client, job_id, training_in_world(client, job_id, 2, 15, is_worker),
                         "two workers training")
    members = record["generations"][-1]["members"]
    victim, survivor = members[victim_rank], members[1 - victim_rank]
    os.kill(worker_pids(job_id, is_worker)[victim], signal.SIGKILL)
    assert last_train_step(client, job_id) < STEPS_PER_EPOCH  # mid-epoch 1

    done = finish(client, job_id, undisturbed)
    after = assert_only_the_victim_was_lost(done, record, victim, survivor)
    # The survivor kept its process, and its log shows it rolling back and re-joining,
    # not starting.
    lines = [line["text"] for line in client.all_logs(job_id)]
    survivor_lines = [t for t in lines if t.startswith(f"[w{survivor}] ")]
    assert sum("elastic: model mlp" in t for t in survivor_lines) == 1, survivor_lines[:5]
    assert any(f"generation {after[0]['id']}: rank 0 of" in t for t in survivor_lines), \
        survivor_lines[-20:]


def test_scaling_1_to_2_adds_a_worker_without_restarting_the_first(client, undisturbed):
    job_id = submit(client, step_delay_ms=25)
    first, first_pid = scale_to_one(client, job_id, 10, is_worker)

    client.scale(job_id, 2)
    record = wait_record(client, job_id, lambda r: r["generations"][-1]["world_size"] == 2,
                         "a second worker to join")
    assert first in record["generations"][-1]["members"]
    assert record["generations"][-1]["members"][0] == first  # the source of the state
    assert worker_pids(job_id, is_worker).get(first) == first_pid  # the same process trains on
    assert last_train_step(client, job_id) < 2 * STEPS_PER_EPOCH

    done = finish(client, job_id, undisturbed)
    assert all(t["exit_code"] == 0 for t in done["tasks"]), done["tasks"]
    [newcomer] = [m for m in done["generations"][-1]["members"] if m != first]
    lines = [line["text"] for line in client.all_logs(job_id)]
    assert any(t.startswith(f"[w{newcomer}] generation") and "rank 1 of 2, resumed at step" in t
               for t in lines), lines[-30:]
