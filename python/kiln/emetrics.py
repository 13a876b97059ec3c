"""Defines `EMetrics`, a drop-in replacement for WMLA's ``emetrics.py`` metric-sharing
library (wmla-api.md §4.2), so WMLA training scripts keep working under Kiln.

Each `EMetrics.record` appends one JSON line to ``$LOG_DIR/evaluation-metrics.txt``,
which the Kiln agent tails; `EMetrics.close` with a ``subId`` (an HPO sub-execution)
writes the TEST_GROUP history to ``$RESULT_DIR/val_dict_list.json``. The top-level
module ``emetrics`` re-exports this class for ``from emetrics import EMetrics``.

Differences from WMLA's file, all compatible with its readers:
- the file is always ``$LOG_DIR/evaluation-metrics.txt``: WMLA appends ``subId`` as a
  sub-folder, but each Kiln task has its own ``LOG_DIR`` and the agent tails that path;
- ``meta.rindex`` counts the records of this writer (WMLA's sample leaves it at 1);
- ``val_dict_list.json`` is replaced atomically, so a reader never sees half a file;
- numpy / torch scalars are encoded as numbers, ``bool`` as a string.
"""

from __future__ import annotations

import json
import numbers
import os
import tempfile
import time
from types import TracebackType
from typing import IO, Any, Mapping, Optional, Sequence

__all__ = ["EMetrics", "write_val_dict_list"]

_TYPE_INT = 2
_TYPE_FLOAT = 3


def _plain(value: Any) -> Any:
    """Turns numpy / torch scalars into Python numbers; leaves anything else alone."""
    if hasattr(value, "item") and not isinstance(value, (numbers.Number, str)):
        try:
            return value.item()
        except (ValueError, RuntimeError, TypeError):
            return value
    if isinstance(value, numbers.Integral) and not isinstance(value, (int, bool)):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, (int, float)):
        return float(value)
    return value


def _encode(value: Any) -> dict[str, Any]:
    """Encodes a value as an FfDL ``Any``: INT=2 and FLOAT=3 typed, otherwise untyped."""
    value = _plain(value)
    if isinstance(value, bool):
        return {"value": str(value)}
    if isinstance(value, numbers.Integral):
        return {"type": _TYPE_INT, "value": str(int(value))}
    if isinstance(value, numbers.Real):
        return {"type": _TYPE_FLOAT, "value": str(float(value))}
    return {"value": str(value)}


def _wmla_time_stamp(now: float) -> str:
    # WMLA formats time.strftime("%Y-%m-%dT%H:%M:%S.%s"): local time, then a dot and
    # glibc's %s (seconds since the epoch). Reproduced exactly, without relying on %s.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)) + f".{int(now)}"


def write_val_dict_list(rows: Sequence[Mapping[str, Any]],
                        result_dir: Optional[str] = None) -> str:
    """Writes WMLA's ``val_dict_list.json`` atomically.

    Parameters
    ----------
    rows : sequence of mappings
        ``[{"steps": 1, "loss": 0.4, "accuracy": 0.85}, ...]``, one per evaluation.
    result_dir : str, optional
        Where to write; defaults to ``$RESULT_DIR``, then ``/tmp`` (as WMLA).

    Returns
    -------
    str
        The path written.
    """
    folder = result_dir or os.environ.get("RESULT_DIR") or "/tmp"
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "val_dict_list.json")
    fd, tmp = tempfile.mkstemp(prefix=".val_dict_list.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump([dict(r) for r in rows], f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


class EMetrics:
    """Writes WMLA emetrics records; use as a context manager from `EMetrics.open`.

    Each record is one line::

        {"meta": {"training_id": "...", "time": 1590084048447, "rindex": 1, "subid": "3"},
         "grouplabel": "test",
         "etimes": {"iteration": {"type": 2, "value": "1"},
                    "time_stamp": {"value": "2020-05-21T18:00:48.1590084048"}},
         "values": {"loss": {"type": 3, "value": "0.033"}}}

    ``subid`` is present only with a ``subId``. Not thread-safe: one writer per object.

    Parameters
    ----------
    subId : str, optional
        Identifier of an HPO sub-execution (WMLA passes ``os.environ["SUBID"]``).
    f : file object, optional
        Where records go; ``None`` records only the history.
    write_val_dict_list : bool, optional
        Whether `close` writes ``val_dict_list.json`` when ``subId`` is set (default
        True, as WMLA). Scripts that write that file themselves pass False.
    """

    TEST_GROUP = "test"
    TRAIN_GROUP = "train"

    def __init__(self, subId: Optional[str], f: Optional[IO[str]], *,
                 write_val_dict_list: bool = True) -> None:
        self.trainingId = os.environ.get("TRAINING_ID", "")
        self.rIndex = 1
        self.subId = subId
        self.f = f
        self.test_history: list[dict[str, Any]] = []
        self._write_val_dict_list = write_val_dict_list
        self._closed = False

    @staticmethod
    def open(subId: Optional[str] = None, *, write_val_dict_list: bool = True) -> "EMetrics":
        """Opens ``evaluation-metrics.txt`` for appending and returns an `EMetrics`.

        The folder is ``$LOG_DIR``, else ``$JOB_STATE_DIR/logs``, else ``/tmp``; it is
        created if missing.

        Parameters
        ----------
        subId : str, optional
            Identifier of an HPO sub-execution; with it, `close` writes
            ``val_dict_list.json``.
        write_val_dict_list : bool, optional
            See `EMetrics`.
        """
        if os.environ.get("LOG_DIR"):
            folder = os.environ["LOG_DIR"]
        elif os.environ.get("JOB_STATE_DIR"):
            folder = os.path.join(os.environ["JOB_STATE_DIR"], "logs")
        else:
            folder = "/tmp"
        os.makedirs(folder, exist_ok=True)
        f = open(os.path.join(folder, "evaluation-metrics.txt"), "a", encoding="utf-8")
        return EMetrics(subId, f, write_val_dict_list=write_val_dict_list)

    def __enter__(self) -> "EMetrics":
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.close()

    def record(self, group: str, iteration: int, values: Mapping[str, Any]) -> None:
        """Appends one record and flushes it to the file.

        Parameters
        ----------
        group : str
            ``EMetrics.TEST_GROUP`` for validation metrics, ``EMetrics.TRAIN_GROUP`` for
            training metrics.
        iteration : int
            The iteration / step / epoch the values belong to.
        values : mapping
            ``{name: value}``; floats, ints or strings.
        """
        if group == EMetrics.TEST_GROUP and self.subId:
            row: dict[str, Any] = {"steps": _plain(iteration)}
            row.update((k, _plain(v)) for k, v in values.items())
            self.test_history.append(row)
        now = time.time()
        meta: dict[str, Any] = {"training_id": self.trainingId,
                                "time": int(now * 1000), "rindex": self.rIndex}
        if self.subId:
            meta["subid"] = str(self.subId)
        obj = {
            "meta": meta,
            "grouplabel": group,
            "etimes": {"iteration": _encode(iteration),
                       "time_stamp": _encode(_wmla_time_stamp(now))},
            "values": {k: _encode(v) for k, v in values.items()},
        }
        self.rIndex += 1
        if self.f:
            self.f.write(json.dumps(obj) + "\n")
            self.f.flush()

    def close(self) -> None:
        """Closes the file; with a ``subId`` writes ``$RESULT_DIR/val_dict_list.json``
        (``/tmp`` without ``RESULT_DIR``, as WMLA). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.f:
            self.f.close()
        if self.subId and self._write_val_dict_list:
            write_val_dict_list(self.test_history)
