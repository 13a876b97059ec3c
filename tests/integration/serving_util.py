"""Finding and stopping the kiln-serve replica processes of one test's kilnd.

Replicas outlive kilnd by design (they are re-attached at its next start), so a test must
both stop its own at the end and never mistake another test's leftover for its own: job
ids restart at 1 with every fresh data dir. A replica belongs to a master when its
working directory is inside that master's data dir (its local agent's task folders);
the port in KILN_MASTER would not do, as a restarted kilnd may listen on another one.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Iterator

from conftest import Master, wait_for
from elastic_util import live_processes


def replicas_of(master: Master) -> Iterator[tuple[int, dict[bytes, bytes]]]:
    """(pid, environment) of each live kiln-serve started by `master`'s agent."""
    root = Path(master.data_dir).resolve()
    for pid, argv, env in live_processes():
        if not (argv and argv[0].endswith(b"kiln-serve")):
            continue
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue  # gone meanwhile
        if cwd == root or root in cwd.parents:
            yield pid, env


def replica_pid(master: Master, job_id: int) -> int:
    """The pid of replica job `job_id`'s kiln-serve (waits for it to be running)."""
    def find():
        for pid, env in replicas_of(master):
            if env.get(b"KILN_JOB_ID") == str(job_id).encode():
                return pid
        return None
    return wait_for(find, timeout=30, what=f"replica job {job_id}'s kiln-serve process")


def kill_replicas(master: Master) -> None:
    """SIGKILLs every replica `master` started (after the master has stopped)."""
    for pid, _ in replicas_of(master):
        os.kill(pid, signal.SIGKILL)
