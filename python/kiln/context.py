"""Reads the workload contract: the environment and ``config.json`` Kiln gives a task.

See ARCHITECTURE.md §3. `WorkloadContext` is a snapshot of the environment variables;
`config` reads the trial's hyperparameters from ``config.json`` in the working directory
(WMLA's contract, so WMLA scripts that read it by hand keep working too).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

__all__ = ["WorkloadContext", "context", "config"]


@dataclass(frozen=True)
class WorkloadContext:
    """The workload contract environment of one task.

    Every field is ``None`` when its variable is unset or empty (e.g. outside Kiln).

    Attributes
    ----------
    master : str or None
        ``KILN_MASTER``: base URL of the Kiln API, e.g. ``"http://10.0.0.5:8470"``.
    token : str or None
        ``KILN_TOKEN``: a bearer token scoped to this task.
    job_id, task_id, trial_id : str or None
        ``KILN_JOB_ID``, ``KILN_TASK_ID``, ``KILN_TRIAL_ID`` (trial only inside an HPO).
    slots : int or None
        ``KILN_SLOTS``: CPU slots given to the task.
    result_dir, log_dir, data_dir, checkpoint_dir : str or None
        WMLA's ``RESULT_DIR``, ``LOG_DIR``, ``DATA_DIR``, ``CHECKPOINT_DIR``.
    training_id, subid : str or None
        WMLA's ``TRAINING_ID`` and ``SUBID``.
    """

    master: Optional[str] = None
    token: Optional[str] = None
    job_id: Optional[str] = None
    task_id: Optional[str] = None
    trial_id: Optional[str] = None
    slots: Optional[int] = None
    result_dir: Optional[str] = None
    log_dir: Optional[str] = None
    data_dir: Optional[str] = None
    checkpoint_dir: Optional[str] = None
    training_id: Optional[str] = None
    subid: Optional[str] = None

    @property
    def in_kiln(self) -> bool:
        """True when the native metrics API is reachable (master and job are known)."""
        return bool(self.master and self.job_id)


def context(environ: Optional[Mapping[str, str]] = None) -> WorkloadContext:
    """Reads the workload contract from the environment.

    Parameters
    ----------
    environ : mapping, optional
        Where to read from; defaults to ``os.environ``.

    Returns
    -------
    WorkloadContext

    Raises
    ------
    ValueError
        If ``KILN_SLOTS`` is set but is not a positive integer.
    """
    env = os.environ if environ is None else environ

    def get(name: str) -> Optional[str]:
        value = env.get(name)
        return value if value else None

    slots_text = get("KILN_SLOTS")
    slots: Optional[int] = None
    if slots_text is not None:
        try:
            slots = int(slots_text)
        except ValueError:
            slots = 0
        if slots <= 0:
            raise ValueError(f"KILN_SLOTS must be a positive integer, got {slots_text!r}")
    return WorkloadContext(
        master=get("KILN_MASTER"),
        token=get("KILN_TOKEN"),
        job_id=get("KILN_JOB_ID"),
        task_id=get("KILN_TASK_ID"),
        trial_id=get("KILN_TRIAL_ID"),
        slots=slots,
        result_dir=get("RESULT_DIR"),
        log_dir=get("LOG_DIR"),
        data_dir=get("DATA_DIR"),
        checkpoint_dir=get("CHECKPOINT_DIR"),
        training_id=get("TRAINING_ID"),
        subid=get("SUBID"),
    )


def config(default: Optional[Mapping[str, Any]] = None,
           path: str = "config.json") -> dict[str, Any]:
    """Returns the trial's hyperparameters from ``config.json``.

    Kiln (like WMLA) writes ``config.json`` into the task's working directory as a JSON
    object ``{"name": value}``.

    Parameters
    ----------
    default : mapping, optional
        Returned (as a new dict) when the file does not exist; ``{}`` if not given.
        Not merged with the file's content.
    path : str, optional
        The file to read; ``"config.json"`` (relative to the working directory) by default.

    Returns
    -------
    dict
        The parsed object.

    Raises
    ------
    ValueError
        If the file exists but is not valid JSON or not a JSON object; the message names
        the file and the position of the error.
    OSError
        If the file exists but cannot be read.
    """
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return dict(default) if default is not None else {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{os.path.abspath(path)} is not valid JSON: {e.msg} at line "
                         f"{e.lineno} column {e.colno}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{os.path.abspath(path)} must hold a JSON object "
                         f"{{\"name\": value}}, got {type(value).__name__}")
    return value
