"""kiln.elastic's exactness and failure handling as real Kiln jobs on a real kilnd (issue 4).

The workers are real processes under the local agent, meeting at kilnd's rendezvous and
training over real gloo groups. The workload (``WORKER`` below) trains a tiny MLP on
fixed random data with a fixed global batch, so its final parameters do not depend on
how many workers trained or when they came and went: comparing them with the same
script run as one plain process only holds if no sample was skipped or repeated, the
source rank's state won everywhere and every rollback was exact.

What tests/integration/test_elastic_python.py, test_elastic_cli.py and
test_distributed.py already cover (a newcomer joining without restarting the running
worker, a worker asked to leave exiting 0, a killed example worker keeping the
undisturbed accuracy) is not repeated here.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from conftest import PYTHON, ROOT, wait_for
from elastic_util import TERMINAL, THREADS, log_text, run_outside_kiln

torch = pytest.importorskip("torch")

# The workload. Options come from the environment (the same for every worker of a job):
# MODEL_SEED (default: the task id, so two workers start from different weights),
# TOTAL_STEPS, OUT_DIR (where it writes <task id>.json: its step, the generations it
# saw and its final parameters), DIE_AT_STEP and DIE_MARKER (the first worker to reach
# that step in a world of 2 creates the marker and SIGKILLs itself before its
# all-reduce) and BROKEN_PEER_MARKER (the first worker to create it plays a peer whose
# store nobody serves: it joins every generation advertising a closed port and never
# forms a group).
WORKER = r"""
import json
import os
import signal
import socket
import sys

import torch
from kiln.elastic import ElasticRuntime, ElasticSampler, Leave, RendezvousClient, State

DATASET, GLOBAL_BATCH = 96, 16  # 6 steps an epoch
task = os.environ.get("KILN_TASK_ID", "local")


def claim(marker):
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


if os.environ.get("BROKEN_PEER_MARKER") and claim(os.environ["BROKEN_PEER_MARKER"]):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # closed again: nothing listens there
    print(f"broken peer: store port {dead_port}", flush=True)
    client = RendezvousClient.from_env()
    generation = 0
    while True:  # the highest step: rank 0, so its dead store is the generation's
        answer = client.join(generation=generation, step=1000, host="127.0.0.1",
                             store_port=dead_port)
        if isinstance(answer, Leave):
            sys.exit(0)
        if answer is not None:
            generation = answer.id

torch.set_num_threads(1)
g = torch.Generator().manual_seed(1234)
x = torch.randn(DATASET, 10, generator=g)
y = torch.randint(0, 3, (DATASET,), generator=g)
torch.manual_seed(int(os.environ.get("MODEL_SEED") or os.environ["KILN_TASK_ID"]))
model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
state = State(model, optimizer, ElasticSampler(DATASET, global_batch_size=GLOBAL_BATCH, seed=5))
total_steps = int(os.environ["TOTAL_STEPS"])
die_at = int(os.environ.get("DIE_AT_STEP", "0"))

with ElasticRuntime(state) as runtime:
    seen = 0
    while state.step < total_steps:
        with runtime.step():
            if runtime.generation != seen:
                seen = runtime.generation
                print(f"task {task} in generation {seen}: rank {runtime.rank} of "
                      f"{runtime.world_size} at step {state.step}", flush=True)
            if (state.step + 1 >= die_at > 0 and runtime.world_size == 2
                    and claim(os.environ["DIE_MARKER"])):
                os.kill(os.getpid(), signal.SIGKILL)
            batch = state.sampler.batch(runtime.rank, runtime.world_size)
            optimizer.zero_grad()
            share = 0.0
            if batch.indices:
                idx = torch.tensor(batch.indices)
                loss = torch.nn.functional.cross_entropy(
                    model(x[idx]), y[idx], reduction="sum") / batch.global_size
                loss.backward()
                share = float(loss.detach())
            runtime.allreduce_gradients(model.parameters(), [share])
            optimizer.step()
            state.sampler.advance(runtime.world_size)
    generations = runtime.generations_seen

with open(os.path.join(os.environ["OUT_DIR"], f"{task}.json"), "w") as f:
    json.dump({"step": state.step, "generations": generations,
               "params": [p.detach().tolist() for p in model.parameters()]}, f)
"""


@pytest.fixture
def code(tmp_path) -> Path:
    d = tmp_path / "code"
    d.mkdir()
    (d / "worker.py").write_text(WORKER)
    return d


def reference(code: Path, out: Path, model_seed: int, steps: int) -> dict:
    """The same training as one plain process (kiln.elastic's local mode), outside Kiln."""
    out.mkdir()
    run_outside_kiln([PYTHON, "worker.py"], code, 120, PYTHONPATH=str(ROOT / "python"),
                     OUT_DIR=str(out), MODEL_SEED=str(model_seed), TOTAL_STEPS=str(steps))
    return json.loads((out / "local.json").read_text())


def assert_same_parameters(got: dict, expected: dict) -> None:
    assert len(got["params"]) == len(expected["params"])
    for g, e in zip(got["params"], expected["params"]):
        # Only the order of the all-reduce's float sums may differ.
        torch.testing.assert_close(torch.tensor(g), torch.tensor(e), rtol=1e-5, atol=1e-6)


def submit(client, code: Path, out: Path, min_workers: int, max_workers: int,
           **env: str) -> int:
    out.mkdir(exist_ok=True)
    job = client.submit([PYTHON, "worker.py"], package=code, slots=1,
                        env={**THREADS, "OUT_DIR": str(out), **env},
                        min_workers=min_workers, max_workers=max_workers)
    return job["id"]


def test_two_workers_compute_exactly_what_one_process_computes(client, code, tmp_path):
    # Each worker seeds its model with its task id: the source rank's weights must win.
    job_id = submit(client, code, tmp_path / "out", 1, 2, TOTAL_STEPS="9")
    done = client.wait_state(job_id, TERMINAL, timeout=120)
    assert done["state"] == "FINISHED", log_text(client, job_id)
    # Both were launched together, so the first generation waited for both.
    [generation] = done["generations"]
    assert generation["world_size"] == 2, done["generations"]
    source = generation["members"][0]
    expected = reference(code, tmp_path / "ref", source, 9)
    for task in generation["members"]:
        got = json.loads((tmp_path / "out" / f"{task}.json").read_text())
        assert (got["step"], got["generations"]) == (9, 1)
        assert_same_parameters(got, expected)


def test_a_killed_worker_costs_one_step_and_the_survivor_finishes_the_same_training(
        client, code, tmp_path):
    marker = tmp_path / "died"
    job_id = submit(client, code, tmp_path / "out", 1, 2, MODEL_SEED="0", TOTAL_STEPS="12",
                    DIE_AT_STEP="5", DIE_MARKER=str(marker))
    done = client.wait_state(job_id, TERMINAL, timeout=120)
    assert done["state"] == "FINISHED", log_text(client, job_id)
    assert marker.exists(), "no worker killed itself"
    first = done["generations"][0]
    assert first["world_size"] == 2, done["generations"]
    written = {int(p.stem) for p in (tmp_path / "out").glob("*.json")}
    [victim] = set(first["members"]) - written  # the one that died wrote nothing
    [survivor] = set(first["members"]) - {victim}
    killed = next(t for t in done["tasks"] if t["id"] == victim)
    assert killed["state"] != "FINISHED" and killed["exit_code"] != 0, killed
    # The survivor kept its process: a new generation without the victim, and it
    # finished the training it would have done undisturbed (step 5 redone from the
    # commit after step 4, alone or with a replacement).
    later = done["generations"][1:]
    assert later and all(victim not in g["members"] for g in later), done["generations"]
    assert all(survivor in g["members"] for g in later)
    got = json.loads((tmp_path / "out" / f"{survivor}.json").read_text())
    assert got["step"] == 12 and got["generations"] >= 2
    expected = reference(code, tmp_path / "ref", 0, 12)
    for task in written:  # the survivor and any replacement that trained to the end
        assert_same_parameters(json.loads((tmp_path / "out" / f"{task}.json").read_text()),
                               expected)
    # One step lost: the victim died in step 5, and the survivor's next generation
    # resumed from the commit after step 4.
    text = log_text(client, job_id)
    assert re.search(rf"^\[w{survivor}\] task {survivor} in generation {later[0]['id']}: "
                     rf"rank 0 of \d at step 4$", text, re.MULTILINE), text


def test_a_generation_that_can_never_form_fails_the_worker_instead_of_looping(
        client, code, tmp_path):
    """kilnd keeps placing the worker in generations whose store nobody serves (its peer
    advertises a closed port): after MAX_FORMATION_FAILURES attempts the worker gives up
    with the last error instead of rejoining forever."""
    from kiln.elastic.runtime import MAX_FORMATION_FAILURES

    job_id = submit(client, code, tmp_path / "out", 2, 2, TOTAL_STEPS="9",
                    BROKEN_PEER_MARKER=str(tmp_path / "broken"))
    try:
        def worker_failed():
            record = client.job(job_id)
            assert record["state"] not in TERMINAL, log_text(client, job_id)
            return next((t for t in record["tasks"] if t["state"] == "FAILED"), None)
        failed = wait_for(worker_failed, timeout=90, interval=0.2, what="a worker to fail")
        text = log_text(client, job_id)
        port = re.search(r"broken peer: store port (\d+)", text).group(1)
        assert re.search(rf"^\[w{failed['id']}\] .*could not form a process group "
                         rf"{MAX_FORMATION_FAILURES} times in a row; last error: the store "
                         rf"at 127\.0\.0\.1:{port} is unreachable", text, re.MULTILINE), text
        assert failed["exit_code"] not in (0, None), failed
    finally:
        client.kill(job_id)
        client.wait_state(job_id, TERMINAL)


EXAMPLE_DIR = ROOT / "examples" / "fashion_mnist" / "elastic"
EXAMPLE_ARGS = ("--train-subset 3000 --test-subset 500 --batch-size 32 --max-workers 2 "
                "--log-every 5")


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist/"
                                       "train-images-idx3-ubyte.gz"),
                    reason="Fashion-MNIST is not installed")
def test_the_example_resumes_from_its_checkpoint_while_reporting_metrics(client):
    """One plain job runs the example for one epoch, then again for two: the second run
    resumes from the first one's checkpoint in the job's CHECKPOINT_DIR, and both report
    their metrics to kilnd."""
    run = f"{PYTHON} train_elastic.py {EXAMPLE_ARGS}"
    script = (f"{run} --epochs 1 && ls \"$CHECKPOINT_DIR\" && {run} --epochs 2 && "
              "cat \"$RESULT_DIR/val_dict_list.json\"; echo; "
              "cat \"$LOG_DIR/evaluation-metrics.txt\"")
    job_id = client.submit(["sh", "-c", script], package=EXAMPLE_DIR, env=THREADS)["id"]
    done = client.wait_state(job_id, TERMINAL, timeout=120)
    lines = [line["text"] for line in client.all_logs(job_id)]
    text = "\n".join(lines)
    assert done["state"] == "FINISHED", text
    assert "generation 1" not in text  # a plain job runs kiln.elastic locally: no group
    assert "elastic-checkpoint.pt" in lines, text
    assert "resumed from checkpoint" in text and "at step 47 (epoch 2, 0% done)" in text, text
    [history] = [json.loads(l) for l in lines if l.startswith("[{")]
    assert [row["steps"] for row in history] == [1, 2]
    evaluation = [json.loads(l) for l in lines if l.startswith('{"') and "grouplabel" in l]
    assert [e["etimes"]["iteration"]["value"] for e in evaluation
            if e["grouplabel"] == "test"] == ["1", "2"]
    test_series = {s["name"]: s["points"] for s in client.metrics(job_id)
                   if s["group"] == "test"}
    assert set(test_series) == {"loss", "accuracy"}
    assert sorted(p["step"] for p in test_series["accuracy"]) == [1, 2]
