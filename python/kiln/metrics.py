"""Defines `Reporter`, the native batched metrics reporter, and the module-level
`report` / `flush` that use a lazily created default one.

Points are buffered in memory and a background thread POSTs them to
``/api/v1/jobs/{job}/metrics`` (docs/api.md, "Metrics"). Each batch carries the
reporter's ``writer`` id and a ``seq`` that is fixed for that batch until the master
acknowledges it, so a retried batch is deduplicated by the master and nothing is counted
twice; batches are retried through connection errors and 5xx for as long as the process
lives, so a master restart loses nothing.

Outside Kiln (``KILN_MASTER`` or ``KILN_JOB_ID`` unset) the default reporter is disabled:
`report` still validates its arguments but sends and writes nothing.
"""

from __future__ import annotations

import atexit
import collections
import http.client
import json
import math
import numbers
import os
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
import weakref
from typing import Any, Deque, Mapping, Optional

from kiln.errors import KilnError, error_from_http

__all__ = ["Reporter", "report", "flush", "default_reporter"]

# How long the atexit hook waits for unsent points; a master that stays down longer
# than this at exit loses them (and says so on stderr) rather than hanging the job.
_EXIT_FLUSH_TIMEOUT_S = float(os.environ.get("KILN_REPORT_EXIT_TIMEOUT", "60"))


class _Batch:
    """One POST body in flight: its seq is fixed until the master answers."""

    __slots__ = ("seq", "reports", "points")

    def __init__(self, seq: int, reports: list[dict[str, Any]], points: int) -> None:
        self.seq = seq
        self.reports = reports
        self.points = points


class Reporter:
    """Buffers metric points and sends them to the Kiln master in the background.

    A point is one metric value; a `report` call with three metrics adds three points.
    The background daemon thread sends a batch every ``flush_interval`` seconds, or at
    once when ``max_batch_points`` are buffered or `flush` is called.

    Delivery: connection errors, timeouts, 5xx and 429 are retried with exponential
    backoff (capped at ``max_backoff`` seconds) for as long as the process lives, always
    re-sending the same batch with the same ``seq``. After the master acknowledges a seq
    it is never sent again. A 4xx (other than 429) means the request itself is wrong:
    the batch is dropped and the error is printed to stderr (the first time for each
    status) and kept in `last_error`.

    The buffer holds at most ``max_buffer_points`` points; beyond that the oldest reports
    are dropped, with a one-time warning on stderr.

    Each reporter registers an atexit hook that flushes (waiting up to
    ``KILN_REPORT_EXIT_TIMEOUT`` seconds, default 60), so a script that only calls
    `report` loses nothing on a normal exit. In a forked child the reporter starts over
    with a new writer id and an empty buffer, so parent and child never share a seq.

    Thread-safe.

    Parameters
    ----------
    master : str, optional
        Base URL of the Kiln API; defaults to ``KILN_MASTER``.
    job_id : str or int, optional
        The job to report to; defaults to ``KILN_JOB_ID``.
    token : str, optional
        Bearer token; defaults to ``KILN_TOKEN``. Without one no Authorization is sent.
    writer : str, optional
        The writer id the master deduplicates by; by default unique per process
        (task id, pid and a random part).
    flush_interval : float, optional
        Seconds between sends (0.5).
    max_batch_points : int, optional
        Points per POST at most (1000); also the buffered count that triggers a send.
    max_buffer_points : int, optional
        Points kept unsent at most (1,000,000).
    max_backoff : float, optional
        Cap of the retry backoff in seconds (5).
    request_timeout : float, optional
        Socket timeout of one POST in seconds (10).

    Attributes
    ----------
    enabled : bool
        False when master or job is unknown; then `report` only validates.
    """

    def __init__(self, master: Optional[str] = None, job_id: Optional[str | int] = None,
                 token: Optional[str] = None, writer: Optional[str] = None, *,
                 flush_interval: float = 0.5, max_batch_points: int = 1000,
                 max_buffer_points: int = 1_000_000, max_backoff: float = 5.0,
                 request_timeout: float = 10.0) -> None:
        env = os.environ
        self._master = (master if master is not None else
                        env.get("KILN_MASTER", "")).rstrip("/")
        job = job_id if job_id is not None else env.get("KILN_JOB_ID", "")
        self._job_id = str(job)
        self._token = token if token is not None else env.get("KILN_TOKEN") or None
        self.enabled = bool(self._master and self._job_id)
        self._fixed_writer = writer
        self._task_id = env.get("KILN_TASK_ID") or None
        if max_batch_points < 1 or max_buffer_points < max_batch_points:
            raise ValueError("need 1 <= max_batch_points <= max_buffer_points")
        self._flush_interval = flush_interval
        self._max_batch_points = max_batch_points
        self._max_buffer_points = max_buffer_points
        self._max_backoff = max_backoff
        self._request_timeout = request_timeout
        self._url = f"{self._master}/api/v1/jobs/{self._job_id}/metrics"
        self._reset_state()
        if self.enabled:
            _live_reporters.add(self)
            atexit.register(self._at_exit)

    def _reset_state(self) -> None:
        # Called at construction and in a forked child, where the parent's thread does
        # not exist, its lock may be held by a thread that is gone, and its buffer and
        # seq belong to the parent.
        self._cond = threading.Condition()
        self._pid = os.getpid()
        self.writer = self._fixed_writer or self._new_writer_id()
        self._buffer: Deque[tuple[dict[str, Any], int]] = collections.deque()
        self._buffered_points = 0
        self._next_seq = 1
        self._enqueued = 0        # reports ever accepted by report()
        self._resolved = 0        # reports sent, rejected or dropped
        self._in_flight: Optional[_Batch] = None
        self._flush_waiters = 0
        self._closed = False
        self._thread: Optional[threading.Thread] = None
        self._warned_overflow = False
        self._warned_unexpected = False
        self._warned_statuses: set[int] = set()
        self.last_error: Optional[KilnError] = None
        self._stats = {"batches_sent": 0, "points_sent": 0, "retries": 0,
                       "points_rejected": 0, "points_dropped": 0}

    def _new_writer_id(self) -> str:
        prefix = f"py-{self._task_id}-" if self._task_id else "py-"
        return f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:12]}"

    # ---- public API -------------------------------------------------------------

    def report(self, step: int, metrics: Mapping[str, float], group: str = "test") -> None:
        """Queues one report: metric values measured at ``step``.

        Returns at once; the values are sent in the background.

        Parameters
        ----------
        step : int
            The step (iteration, epoch, ...) the values belong to.
        metrics : mapping of str to float
            At least one ``name: value``; values must be finite real numbers (Python or
            numpy numbers, or one-element tensors).
        group : str, optional
            ``"test"`` (default) or ``"train"``, or any other non-empty label.

        Raises
        ------
        TypeError
            If ``step`` is not an int, a name is not a string, or a value is not a number.
        ValueError
            If ``metrics`` is empty, a name or ``group`` is empty, or a value is NaN or
            infinite (the message names the metric).
        RuntimeError
            If the reporter was closed.
        """
        entry = _validated_report(step, metrics, group)
        if not self.enabled:
            return
        npoints = len(entry["metrics"])
        with self._cond:
            if self._closed:
                raise RuntimeError("report() on a closed kiln Reporter")
            self._buffer.append((entry, npoints))
            self._buffered_points += npoints
            self._enqueued += 1
            self._drop_overflow_locked()
            self._ensure_thread_locked()
            if self._buffered_points >= self._max_batch_points:
                self._cond.notify_all()

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Blocks until every report queued before this call was sent (or rejected).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most; ``None`` waits as long as it takes (the master may
            be restarting).

        Returns
        -------
        bool
            True when everything was delivered or resolved, False on timeout.
        """
        if not self.enabled:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._enqueued
            if self._resolved >= target:
                return True
            self._ensure_thread_locked()
            self._flush_waiters += 1
            self._cond.notify_all()
            try:
                while self._resolved < target:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flush_waiters -= 1

    def close(self, timeout: Optional[float] = None) -> bool:
        """Flushes, then stops the background thread; later `report` calls raise.

        Returns
        -------
        bool
            As `flush`.
        """
        delivered = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        return delivered

    def stats(self) -> dict[str, int]:
        """Returns counters: batches_sent, points_sent, retries, points_rejected (4xx),
        points_dropped (buffer overflow) and points_pending."""
        with self._cond:
            out = dict(self._stats)
            out["points_pending"] = self._buffered_points + (
                self._in_flight.points if self._in_flight else 0)
            return out

    # ---- background sending ---------------------------------------------------------

    def _drop_overflow_locked(self) -> None:
        while self._buffered_points > self._max_buffer_points and len(self._buffer) > 1:
            _, n = self._buffer.popleft()
            self._buffered_points -= n
            self._resolved += 1
            self._stats["points_dropped"] += n
            if not self._warned_overflow:
                self._warned_overflow = True
                print(f"kiln: metrics buffer full ({self._max_buffer_points} points "
                      f"unsent, master {self._master} unreachable?); dropping the oldest "
                      "points", file=sys.stderr, flush=True)

    def _ensure_thread_locked(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="kiln-reporter",
                                            daemon=True)
            self._thread.start()

    def _take_batch_locked(self) -> Optional[_Batch]:
        reports: list[dict[str, Any]] = []
        points = 0
        while self._buffer:
            entry, n = self._buffer[0]
            if reports and points + n > self._max_batch_points:
                break
            self._buffer.popleft()
            reports.append(entry)
            points += n
        if not reports:
            return None
        self._buffered_points -= points
        batch = _Batch(self._next_seq, reports, points)
        self._next_seq += 1
        return batch

    def _run(self) -> None:
        while True:
            with self._cond:
                deadline = time.monotonic() + self._flush_interval
                while not self._send_now_locked():
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch = self._take_batch_locked()
                if batch is None:
                    if self._closed:
                        return
                    continue
                self._in_flight = batch
            self._deliver(batch)
            with self._cond:
                self._in_flight = None
                self._resolved += len(batch.reports)
                self._cond.notify_all()

    def _send_now_locked(self) -> bool:
        if self._closed:
            return True  # sends what is left, then the thread ends
        if self._buffered_points >= self._max_batch_points:
            return True
        # A flush() waiter may still be waking up after its last batch was resolved;
        # only something to send should cut the interval short, or this would spin.
        return bool(self._flush_waiters and self._buffer)

    def _deliver(self, batch: _Batch) -> None:
        """Sends ``batch`` until the master answers 2xx or a non-retryable 4xx."""
        body = json.dumps({"writer": self.writer, "seq": batch.seq,
                           "reports": batch.reports}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        backoff = 0.1
        while True:
            request = urllib.request.Request(self._url, data=body, headers=headers,
                                             method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self._request_timeout) as r:
                    r.read()
                with self._cond:
                    self._stats["batches_sent"] += 1
                    self._stats["points_sent"] += batch.points
                return
            except urllib.error.HTTPError as e:
                status = e.code
                error = error_from_http(status, e.read() or b"", str(e.reason))
                if 400 <= status < 500 and status not in (408, 429):
                    self._reject(batch, error)
                    return
            except (OSError, ValueError, http.client.HTTPException):
                # URLError, connection refused/reset, timeouts, half-read responses:
                # the master may be restarting. Retry with the same seq.
                pass
            except Exception as e:  # noqa: BLE001 - the sender thread must not die
                if not self._warned_unexpected:
                    self._warned_unexpected = True
                    print(f"kiln: unexpected error sending metrics ({e!r}); retrying",
                          file=sys.stderr, flush=True)
            with self._cond:
                self._stats["retries"] += 1
            time.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    def _reject(self, batch: _Batch, error: KilnError) -> None:
        with self._cond:
            self.last_error = error
            self._stats["points_rejected"] += batch.points
            first = error.status not in self._warned_statuses
            if error.status is not None:
                self._warned_statuses.add(error.status)
        if first:
            print(f"kiln: the master rejected a metrics batch ({error}); dropping its "
                  f"{batch.points} points. This is a bug in the reporting code or a "
                  f"token problem, not a transient error; POST {self._url}",
                  file=sys.stderr, flush=True)

    def _at_exit(self) -> None:
        if os.getpid() != self._pid or self._closed:
            return
        if not self.flush(_EXIT_FLUSH_TIMEOUT_S):
            left = self.stats()["points_pending"]
            print(f"kiln: {left} metric points not delivered to {self._master} within "
                  f"{_EXIT_FLUSH_TIMEOUT_S:g} s at exit; they are lost",
                  file=sys.stderr, flush=True)


def _validated_report(step: Any, metrics: Any, group: Any) -> dict[str, Any]:
    """Checks the arguments of `Reporter.report` and builds the wire-format report."""
    if isinstance(step, bool) or not isinstance(step, numbers.Integral):
        raise TypeError(f"step must be an int, got {type(step).__name__}")
    if not isinstance(group, str) or not group:
        raise ValueError(f"group must be a non-empty string, got {group!r}")
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a dict of name -> number, got "
                        f"{type(metrics).__name__}")
    if not metrics:
        raise ValueError("metrics must hold at least one name -> number")
    values: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"metric names must be non-empty strings, got {name!r}")
        values[name] = _finite_number(name, value)
    return {"step": int(step), "group": group, "time": round(time.time(), 6),
            "metrics": values}


def _finite_number(name: str, value: Any) -> float:
    if hasattr(value, "item") and not isinstance(value, numbers.Number):
        try:
            value = value.item()  # numpy arrays and torch tensors of one element
        except (ValueError, RuntimeError, TypeError):
            pass
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"metric {name!r} is {result}; values must be finite")
    return result


_live_reporters: "weakref.WeakSet[Reporter]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _default_lock
    _default_lock = threading.Lock()
    for reporter in list(_live_reporters):
        reporter._reset_state()


os.register_at_fork(after_in_child=_after_fork_in_child)

_default: Optional[Reporter] = None
_default_lock = threading.Lock()


def default_reporter() -> Reporter:
    """Returns the process's default `Reporter`, creating it from the environment.

    It is disabled (validates, sends nothing) when ``KILN_MASTER`` or ``KILN_JOB_ID``
    is unset, i.e. when the script runs outside Kiln.
    """
    global _default
    with _default_lock:
        if _default is None:
            _default = Reporter()
        return _default


def report(step: int, metrics: Mapping[str, float], group: str = "test") -> None:
    """Reports metric values at ``step`` through the default reporter.

    Returns at once; points are sent in the background and flushed at exit. Outside
    Kiln (``KILN_MASTER``/``KILN_JOB_ID`` unset) this validates the arguments and does
    nothing else: nothing is sent and nothing is written.

    Parameters
    ----------
    step : int
        The step (iteration, epoch, ...) the values belong to.
    metrics : mapping of str to float
        ``{"loss": 0.51, "accuracy": 0.81}``; values must be finite numbers.
    group : str, optional
        ``"test"`` (default) or ``"train"``.

    Raises
    ------
    TypeError, ValueError
        On invalid arguments, see `Reporter.report`.

    Examples
    --------
    >>> import kiln
    >>> kiln.report(1, {"loss": 0.51, "accuracy": 0.81})
    """
    default_reporter().report(step, metrics, group)


def flush(timeout: Optional[float] = None) -> bool:
    """Blocks until the default reporter has sent everything reported so far.

    Returns
    -------
    bool
        False if ``timeout`` seconds passed first.
    """
    return default_reporter().flush(timeout)
