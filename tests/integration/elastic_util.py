"""Helpers shared by the distributed / elastic integration tests (issue 4): finding a
job's worker processes through /proc, waiting for a job record or generation, reading a
job's logs and metrics, running the undisturbed reference outside Kiln and comparing a
finished job with it. Plain functions; the fixtures stay in conftest.py."""

from __future__ import annotations

import os
import subprocess
from typing import Any, Callable, Iterator, Optional

from conftest import wait_for

# Two or three workers share the machine's two cores: one thread each.
THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
TERMINAL = ("FINISHED", "FAILED", "KILLED")
# How far a disturbed run's final test accuracy may be from the undisturbed run's.
ONE_POINT = 0.01


def live_processes() -> Iterator[tuple[int, list[bytes], dict[bytes, bytes]]]:
    """Yields (pid, argv, environment) of each live process on this machine that can be
    read; exited but not yet reaped ones and ones gone meanwhile are skipped."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
            with open(f"/proc/{entry}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue  # exited, not yet reaped
        except OSError:
            continue  # gone meanwhile
        yield int(entry), argv, env


def worker_pids(job_id: int, is_worker: Callable[[list[bytes]], bool]) -> dict[int, int]:
    """Task id -> pid of the job's live worker processes on this machine: those whose
    argv ``is_worker`` accepts and whose environment names the job and a task."""
    found = {}
    for pid, argv, env in live_processes():
        if (is_worker(argv) and env.get(b"KILN_JOB_ID") == str(job_id).encode()
                and b"KILN_TASK_ID" in env):
            found[int(env[b"KILN_TASK_ID"])] = pid
    return found


def task_pids(task_id: int) -> list[int]:
    """Pids of the processes whose environment says they are worker ``task_id``."""
    needle = str(task_id).encode()
    return [pid for pid, _, env in live_processes() if env.get(b"KILN_TASK_ID") == needle]


def last_train_step(client, job_id: int) -> int:
    """The highest step of the job's train loss series (0 before any)."""
    for s in client.metrics(job_id):
        if (s["name"], s["group"]) == ("loss", "train") and s["points"]:
            return max(p["step"] for p in s["points"])
    return 0


def log_text(client, job_id: int) -> str:
    """All of the job's log lines, one text."""
    return "\n".join(line["text"] for line in client.all_logs(job_id))


def logs_tail(client, job_id: int, n: int = 40) -> str:
    """The job's last ``n`` log lines, for an assertion's message."""
    return "\n".join(line["text"] for line in client.all_logs(job_id)[-n:])


def wait_value(fetch: Callable[[], Any], predicate: Callable[[Any], bool], what: str,
               timeout: float, interval: float = 0.2) -> Any:
    """Calls ``fetch`` until ``predicate`` holds for what it returns; returns that."""
    def check() -> Any:
        value = fetch()
        return value if predicate(value) else None
    return wait_for(check, timeout=timeout, interval=interval, what=what)


def newest_world(record: dict) -> int:
    """The world size of the job's newest generation (0 before the first)."""
    generations = record.get("generations") or []
    return generations[-1]["world_size"] if generations else 0


def wait_record(client, job_id: int, predicate: Callable[[dict], bool], what: str,
                timeout: float = 120) -> dict:
    """Polls the job's record until ``predicate`` holds; fails at once, with the logs'
    tail, if the job ends first."""
    def check() -> Optional[dict]:
        record = client.job(job_id)
        if record["state"] in TERMINAL and not predicate(record):
            raise AssertionError(f"job {job_id} ended {record['state']} before {what}:\n"
                                 f"{logs_tail(client, job_id)}")
        return record if predicate(record) else None
    return wait_for(check, timeout=timeout, interval=0.1, what=what)


def training_in_world(client, job_id: int, world: int, past_step: int,
                      is_worker: Callable[[list[bytes]], bool]) -> Callable[[dict], bool]:
    """A predicate: the newest generation has ``world`` workers, all running on this
    machine (as ``worker_pids`` finds them), and rank 0 reported a training step after
    ``past_step``."""
    def predicate(record: dict) -> bool:
        gens = record.get("generations") or []
        return (bool(gens) and gens[-1]["world_size"] == world
                and set(gens[-1]["members"]) <= set(worker_pids(job_id, is_worker))
                and last_train_step(client, job_id) > past_step)
    return predicate


def run_outside_kiln(argv: list[str], cwd, timeout: float,
                     **env: str) -> subprocess.CompletedProcess:
    """Runs ``argv`` as one plain process outside Kiln (the environment without Kiln's job
    variables, KILN_* and CHECKPOINT_DIR, plus THREADS and ``env``); asserts it exits 0."""
    full = {k: v for k, v in os.environ.items()
            if not k.startswith("KILN_") and k != "CHECKPOINT_DIR"}
    full.update(THREADS, **env)
    done = subprocess.run(argv, env=full, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def finish(client, job_id: int, undisturbed: list, timeout: float = 300) -> dict:
    """Waits for the job's end; checks that it FINISHED with test accuracy for epochs 1
    and 2, the last within ONE_POINT of the undisturbed run's (its val_dict_list.json
    rows). Returns the final record."""
    done = client.wait_state(job_id, TERMINAL, timeout=timeout)
    assert done["state"] == "FINISHED", logs_tail(client, job_id)
    accuracy = {s["name"]: s["points"] for s in client.metrics(job_id)
                if s["group"] == "test"}["accuracy"]
    assert sorted({p["step"] for p in accuracy}) == [1, 2]
    final = [p for p in accuracy if p["step"] == 2][-1]["value"]
    assert abs(final - undisturbed[-1]["accuracy"]) <= ONE_POINT, \
        (final, undisturbed, logs_tail(client, job_id))
    return done


def assert_only_the_victim_was_lost(done: dict, before: dict, victim: int,
                                    survivor: int) -> list[dict]:
    """Checks a finished job after worker ``victim`` was killed in the newest generation of
    ``before`` (the record then): the survivor's task FINISHED with exit code 0, the
    victim's ended with another code or a signal, the next generation has the survivor
    without the victim, and the survivor is in every later one (it kept its process: a
    restarted worker would be a new task). Returns the later generations."""
    survivor_task = next(t for t in done["tasks"] if t["id"] == survivor)
    assert survivor_task["state"] == "FINISHED" and survivor_task["exit_code"] == 0
    killed = next(t for t in done["tasks"] if t["id"] == victim)
    assert killed["exit_code"] not in (0, None) or "signal" in killed["reason"], killed
    after = [g for g in done["generations"] if g["id"] > before["generations"][-1]["id"]]
    assert after and survivor in after[0]["members"] and victim not in after[0]["members"]
    assert all(survivor in g["members"] for g in after)
    return after


def scale_to_one(client, job_id: int, past_step: int,
                 is_worker: Callable[[list[bytes]], bool]) -> tuple[int, int]:
    """Scales the job to 1 worker and waits until that one alone is live and training past
    ``past_step``; returns its task id and pid."""
    client.scale(job_id, 1)
    one_training = training_in_world(client, job_id, 1, past_step, is_worker)
    record = wait_record(client, job_id, lambda r: r["workers"]["live"] == 1 and one_training(r),
                         "one worker training")
    [first] = record["generations"][-1]["members"]
    return first, worker_pids(job_id, is_worker)[first]
