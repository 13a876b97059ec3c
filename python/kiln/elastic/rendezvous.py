"""The worker side of Kiln's rendezvous protocol (ARCHITECTURE.md §5.2), over HTTP.

`RendezvousClient` joins generations (``POST /api/v1/jobs/{job}/rendezvous/join``, a long
poll) and watches for the next one (``GET /api/v1/jobs/{job}/rendezvous``);
`GenerationWatcher` runs that watch on a daemon thread and raises a flag the training
loop folds into its gradient all-reduce; `local_host_for` finds the address peers and
the master can reach this worker at. Standard library only.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from kiln.errors import KilnError, error_from_http

__all__ = ["Generation", "Leave", "WatchResult", "RendezvousClient", "RendezvousError",
           "GenerationWatcher", "local_host_for"]

DEFAULT_WAIT_MS = 20000


class RendezvousError(KilnError):
    """The master refused a rendezvous call, answered nonsense, or stayed unreachable."""


@dataclass(frozen=True)
class Generation:
    """A formed generation, as the master's join answer describes it.

    Attributes
    ----------
    id : int
        Generation number (increases with every membership change).
    rank, world_size : int
        This worker's rank and the number of workers.
    members : tuple of str
        Task ids by rank.
    store_host, store_port : str, int
        The c10d TCPStore of this generation (hosted by the source rank).
    source_rank : int
        The rank whose committed state every rank takes.
    reason : str
        Why the generation was formed (for logs).
    """

    id: int
    rank: int
    world_size: int
    members: tuple[str, ...]
    store_host: str
    store_port: int
    source_rank: int
    reason: str = ""


@dataclass(frozen=True)
class Leave:
    """The master asked this worker to exit 0 (scaled down, or the job is ending)."""

    reason: str = ""


@dataclass(frozen=True)
class WatchResult:
    """A watch answer: ``next`` when a generation after the watched one is pending."""

    next: bool
    leave: bool = False


JoinAnswer = Union[Generation, Leave, None]  # None: the long poll expired, join again


class RendezvousClient:
    """Calls the master's rendezvous endpoints for one worker of one elastic job.

    Transport failures, 5xx, 408 and 429 are retried with backoff for up to
    ``master_timeout_s`` seconds (the master may be restarting); other 4xx raise
    `RendezvousError` at once. Thread-safe (no shared mutable state).

    Parameters
    ----------
    master : str
        Base URL of the Kiln API (``KILN_MASTER``).
    job_id, task_id : str
        The parent job and this worker's task (``KILN_JOB_ID``, ``KILN_TASK_ID``).
    token : str, optional
        Bearer token (``KILN_TOKEN``).
    master_timeout_s : float, optional
        How long a call keeps retrying an unreachable master (600).
    """

    def __init__(self, master: str, job_id: str, task_id: str, token: Optional[str] = None,
                 *, master_timeout_s: float = 600.0) -> None:
        if not master:
            raise ValueError("master URL is empty (KILN_MASTER)")
        self.master = master.rstrip("/")
        self.job_id = str(job_id)
        self.task_id = str(task_id)
        self.token = token
        self.master_timeout_s = master_timeout_s
        self._base = f"{self.master}/api/v1/jobs/{urllib.parse.quote(self.job_id)}/rendezvous"

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "RendezvousClient":
        """Builds a client from ``KILN_MASTER``, ``KILN_JOB_ID``, ``KILN_TASK_ID`` and
        ``KILN_TOKEN``.

        Raises
        ------
        ValueError
            Naming every required variable that is unset.
        """
        env = os.environ if environ is None else environ
        missing = [n for n in ("KILN_MASTER", "KILN_JOB_ID", "KILN_TASK_ID") if not env.get(n)]
        if missing:
            raise ValueError(f"elastic training needs {', '.join(missing)} in the environment "
                             "(Kiln sets them for elastic workers; unset KILN_ELASTIC to "
                             "train as a single process)")
        return cls(env["KILN_MASTER"], env["KILN_JOB_ID"], env["KILN_TASK_ID"],
                   env.get("KILN_TOKEN") or None)

    def _task_json(self) -> Union[int, str]:
        return int(self.task_id) if self.task_id.isdigit() else self.task_id

    def join(self, *, generation: int, step: int, host: str, store_port: int,
             wait_ms: int = DEFAULT_WAIT_MS) -> JoinAnswer:
        """Asks to be in the next generation; blocks up to about ``wait_ms``.

        Parameters
        ----------
        generation : int
            The last generation this worker was in (0 if none).
        step : int
            Its last committed step (-1 if none).
        host, store_port : str, int
            Where this worker can be reached and the TCPStore it opened for this join.
        wait_ms : int
            How long the master may hold the request.

        Returns
        -------
        Generation, Leave or None
            None when the master's wait expired without a generation: join again.

        Raises
        ------
        RendezvousError
            On a 4xx, an answer without the protocol's fields, or a master unreachable
            for longer than ``master_timeout_s``.
        """
        body = {"task_id": self._task_json(), "host": host, "store_port": int(store_port),
                "generation": int(generation), "step": int(step), "wait_ms": int(wait_ms)}
        answer = self._call("POST", f"{self._base}/join", body, wait_ms)
        if answer.get("leave"):
            return Leave(str(answer.get("reason", "")))
        if answer.get("retry"):
            return None
        return self._parse_generation(answer)

    def watch(self, generation: int, wait_ms: int = DEFAULT_WAIT_MS) -> WatchResult:
        """Long-polls until a generation after ``generation`` is pending, or ``wait_ms``.

        Raises
        ------
        RendezvousError
            As `join`.
        """
        query = urllib.parse.urlencode({"task_id": self.task_id, "generation": generation,
                                        "wait_ms": wait_ms})
        answer = self._call("GET", f"{self._base}?{query}", None, wait_ms)
        return WatchResult(bool(answer.get("next")), bool(answer.get("leave")))

    def _parse_generation(self, answer: dict[str, Any]) -> Generation:
        def field(name: str, kind: type) -> Any:
            value = answer.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise RendezvousError(f"the master's join answer has no valid {name!r} "
                                      f"(got {value!r}): {answer}")
            return value

        store = answer.get("store")
        if not isinstance(store, dict):
            raise RendezvousError(f"the master's join answer has no 'store' object: {answer}")
        members = answer.get("members")
        if not isinstance(members, list):
            raise RendezvousError(f"the master's join answer has no 'members' list: {answer}")
        gen = Generation(id=field("generation", int), rank=field("rank", int),
                         world_size=field("world_size", int),
                         members=tuple(str(m) for m in members),
                         store_host=str(store.get("host", "")),
                         store_port=int(store.get("port", 0)),
                         source_rank=int(answer.get("source_rank", 0)),
                         reason=str(answer.get("reason", "")))
        if not (0 <= gen.rank < gen.world_size and len(gen.members) == gen.world_size
                and 0 <= gen.source_rank < gen.world_size):
            raise RendezvousError(f"inconsistent join answer (rank, world_size, members, "
                                  f"source_rank): {answer}")
        if gen.world_size > 1 and (not gen.store_host or gen.store_port <= 0):
            raise RendezvousError(f"the join answer's store has no host/port: {answer}")
        return gen

    def _call(self, method: str, url: str, body: Optional[dict[str, Any]],
              wait_ms: int) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        deadline = time.monotonic() + self.master_timeout_s
        backoff = 0.05
        last = ""
        while True:
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(request, timeout=wait_ms / 1000 + 15) as r:
                    raw = r.read()
                try:
                    parsed = json.loads(raw or b"{}")
                except ValueError:
                    raise RendezvousError(f"{method} {url}: the master answered "
                                          f"non-JSON: {raw[:200]!r}") from None
                if not isinstance(parsed, dict):
                    raise RendezvousError(f"{method} {url}: expected a JSON object, got "
                                          f"{raw[:200]!r}")
                return parsed
            except urllib.error.HTTPError as e:
                error = error_from_http(e.code, e.read() or b"", str(e.reason))
                if 400 <= e.code < 500 and e.code not in (408, 429):
                    raise RendezvousError(f"{method} {url}: {error}", e.code,
                                          error.code) from None
                last = str(error)
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)  # refused, reset, timed out: the master may be restarting
            if time.monotonic() + backoff > deadline:
                raise RendezvousError(f"{method} {url}: the master was unreachable for "
                                      f"{self.master_timeout_s:g} s (last error: {last})",
                                      None, "UNAVAILABLE")
            time.sleep(backoff)
            backoff = min(backoff * 2, 2.0)


class GenerationWatcher:
    """Watches, on a daemon thread, for a generation after the armed one.

    `arm` starts watching generation G; when the master says a later generation is
    pending, `pending` becomes True (and `leave` when this worker must leave) and the
    thread stops polling until armed again. `disarm` stops watching (while the worker
    is itself in a join). Errors are retried quietly: the watch is an optimisation, a
    failed collective or the next join still reaches the new generation.

    Thread-safe.
    """

    def __init__(self, client: RendezvousClient, wait_ms: int = DEFAULT_WAIT_MS) -> None:
        self._client = client
        self._wait_ms = wait_ms
        self._cond = threading.Condition()
        self._armed: Optional[int] = None
        self._arm_count = 0
        self._pending = False
        self._leave = False
        self._closed = False
        self._thread: Optional[threading.Thread] = None

    @property
    def pending(self) -> bool:
        """True once the master said a generation after the armed one is pending."""
        with self._cond:
            return self._pending

    @property
    def leave(self) -> bool:
        """True when the pending generation will not include this worker."""
        with self._cond:
            return self._leave

    def arm(self, generation: int) -> None:
        """Clears the flags and watches for a generation after ``generation``."""
        with self._cond:
            self._armed = generation
            self._arm_count += 1
            self._pending = self._leave = False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="kiln-elastic-watch")
                self._thread.start()
            self._cond.notify_all()

    def disarm(self) -> None:
        """Stops watching and clears the flags (an answer still in flight is ignored)."""
        with self._cond:
            self._armed = None
            self._arm_count += 1
            self._pending = self._leave = False

    def close(self) -> None:
        """Stops the thread (after its current long poll returns)."""
        with self._cond:
            self._closed = True
            self._armed = None
            self._cond.notify_all()

    def _run(self) -> None:
        backoff = 0.1
        warned = False
        while True:
            with self._cond:
                while not self._closed and (self._armed is None or self._pending):
                    self._cond.wait()
                if self._closed:
                    return
                generation, ticket = self._armed, self._arm_count
            try:
                result = self._client.watch(generation, self._wait_ms)
                backoff = 0.1
            except Exception as e:  # noqa: BLE001 - the watcher thread must not die
                if not warned:
                    warned = True
                    print(f"[kiln.elastic] watching the rendezvous failed ({e}); retrying",
                          file=sys.stderr, flush=True)
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            with self._cond:
                if ticket != self._arm_count or not result.next:
                    continue
                self._pending = True
                self._leave = result.leave


def local_host_for(master_url: str) -> str:
    """Returns this machine's address on the route to the master.

    A UDP socket "connected" to the master sends nothing but makes the kernel pick the
    outgoing interface; its local address is the one peers on the master's network can
    reach. ``KILN_ELASTIC_HOST`` overrides it. A loopback master gives ``127.0.0.1``.
    """
    override = os.environ.get("KILN_ELASTIC_HOST")
    if override:
        return override
    parsed = urllib.parse.urlparse(master_url)
    host = parsed.hostname or "127.0.0.1"
    port = parsed.port or 80
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)
    except OSError:
        return "127.0.0.1"
    for family, kind, proto, _, address in infos:
        try:
            with socket.socket(family, kind, proto) as s:
                s.connect(address)
                local = s.getsockname()[0]
                if local:
                    return local
        except OSError:
            continue
    return "127.0.0.1"
