"""Defines `ElasticRuntime`, the per-process driver of elastic training.

The runtime owns this worker's membership: it joins generations at the master
(`kiln.elastic.rendezvous`), builds each generation's process group directly
(``ProcessGroupGloo`` on CPU, ``ProcessGroupNCCL`` on GPU, on a ``PrefixStore`` of the
source rank's TCPStore; never ``init_process_group``, whose global state cannot be
re-initialised), has the source rank broadcast the committed `State`, and runs the
collectives of a step. A step is a ``with runtime.step():`` block: on success the state
is committed; when a collective fails because a peer died the state is rolled back to the
last commit and the worker joins the next generation; when the master announces a new
generation (a worker joined or must leave) every rank finishes the same step, commits and
joins together.

Commits, two ways (`State.commit`):
- by default (``commit_every=None``) the commit is the step boundary itself, with no copy
  of the model or optimizer: a step runs ONE gradient all-reduce
  (`ElasticRuntime.allreduce_gradients`) and applies the optimizer's update only after it
  succeeded, so when a peer dies mid all-reduce the survivors' model and optimizer are
  still those of the last step boundary: only the small parts (step, sampler position,
  user fields...) are rolled back. A survivor whose all-reduce completed before the death
  applied the step and joins with a higher committed step, so it becomes the source every
  rank syncs from (ARCHITECTURE.md §5.2). Any other collective of the loop (validation)
  goes into its own ``with runtime.step(counts_as_step=False):`` block. Costs about
  nothing per step;
- ``commit_every=N`` copies the model and optimizer every N steps, for custom loops that
  change the model before a collective (several all-reduces per step, an update before a
  metric all-reduce, side effects): a failure rolls back to the last copy (at most N
  steps). Costs a copy of every model and optimizer tensor per commit.

Three modes, picked from the environment:
- elastic (``KILN_ELASTIC=1``): the protocol of ARCHITECTURE.md §5.2;
- static (``WORLD_SIZE`` > 1 with ``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): one fixed
  group, as a ``"workers": N`` job gets; a failed collective is fatal;
- local (anything else, e.g. a laptop): a world of one, so a script debugs as is.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import time
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

import torch
import torch.distributed as dist

from kiln.elastic.rendezvous import (Generation, GenerationWatcher, Leave, RendezvousClient,
                                     local_host_for)
from kiln.elastic.state import State

__all__ = ["ElasticRuntime", "PeerFailure", "default_device", "MAX_FORMATION_FAILURES"]

# Consecutive generations this worker may fail to form before it gives up (exits with an
# error). Each failure is a peer dying or never arriving, or a backend that cannot start.
MAX_FORMATION_FAILURES = 8


class PeerFailure(RuntimeError):
    """A collective of the current generation failed: a peer died, hung or left.

    Raised by the runtime's collectives; ``with runtime.step():`` catches it, rolls the
    state back and joins the next generation, so a training loop rarely sees it.
    """


class _FormationAborted(RuntimeError):
    """A generation could not be formed (a member died or never came)."""


def default_device(environ: Optional[Mapping[str, str]] = None) -> torch.device:
    """``cuda`` when torch sees a GPU and Kiln gave this task GPUs
    (``CUDA_VISIBLE_DEVICES``), else ``cpu``."""
    env = os.environ if environ is None else environ
    if env.get("CUDA_VISIBLE_DEVICES") and torch.cuda.is_available():
        return torch.device("cuda", 0)
    return torch.device("cpu")


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {text!r}")
    return value


def log(message: str) -> None:
    """Prints one runtime log line (stdout, which Kiln stores with the job's logs)."""
    print(f"[kiln.elastic] {message}", flush=True)


class ElasticRuntime:
    """Membership, process groups and collectives of one elastic worker.

    Not thread-safe: the training loop's thread uses it (the watch runs on its own
    daemon thread behind `GenerationWatcher`).

    Parameters
    ----------
    state : State
        What is committed, rolled back and synced.
    commit_every : int, optional
        None (default): step-boundary commits, no copy (see the module docstring); the
        loop must run each step's one gradient all-reduce before its optimizer step.
        N: copy the model and optimizer after every N-th step (a failure loses at most N
        steps), for loops that change the model before a collective. A new generation
        is always formed from a fresh commit.
    device : torch.device, optional
        Where collectives run; `default_device` when not given. CUDA means NCCL.
    collective_timeout_s : float, optional
        How long a collective waits for a peer that is alive but silent (300; env
        ``KILN_ELASTIC_COLLECTIVE_TIMEOUT_S``). A dead peer fails collectives at once.
    formation_timeout_s : float, optional
        How long the members of a new generation wait for each other (30; env
        ``KILN_ELASTIC_FORMATION_TIMEOUT_S``).
    client : RendezvousClient, optional
        Forces elastic mode with this client (tests); by default elastic mode is chosen
        by ``KILN_ELASTIC=1`` and the client built from the environment.
    environ : mapping, optional
        Environment to read instead of ``os.environ``.

    Attributes
    ----------
    state : State
    commit_every : int
    device : torch.device
    mode : str
        ``"elastic"``, ``"static"`` or ``"local"``.
    generations_seen : int
        Generations this process was in.
    """

    def __init__(self, state: State, *, commit_every: Optional[int] = None,
                 device: Optional[torch.device] = None,
                 collective_timeout_s: Optional[float] = None,
                 formation_timeout_s: Optional[float] = None,
                 client: Optional[RendezvousClient] = None,
                 environ: Optional[Mapping[str, str]] = None) -> None:
        if commit_every is not None and (isinstance(commit_every, bool) or
                                         not isinstance(commit_every, int) or
                                         commit_every < 1):
            raise ValueError(f"commit_every must be None (step-boundary commits, no copy) "
                             f"or a positive int (copy every N steps), got {commit_every!r}")
        env = dict(os.environ if environ is None else environ)
        self.state = state
        self.commit_every = commit_every
        self.device = device if device is not None else default_device(env)
        self._collective_timeout = datetime.timedelta(seconds=(
            collective_timeout_s if collective_timeout_s is not None else
            _env_float(env, "KILN_ELASTIC_COLLECTIVE_TIMEOUT_S", 300.0)))
        self._formation_timeout_s = (formation_timeout_s if formation_timeout_s is not None
                                     else _env_float(env, "KILN_ELASTIC_FORMATION_TIMEOUT_S",
                                                     30.0))
        self._client: Optional[RendezvousClient] = None
        self._watcher: Optional[GenerationWatcher] = None
        self._static: Optional[Generation] = None
        if client is not None or env.get("KILN_ELASTIC") == "1":
            self.mode = "elastic"
            self._client = client or RendezvousClient.from_env(env)
            self._host = local_host_for(self._client.master)
            self._watcher = GenerationWatcher(self._client)
        elif int(env.get("WORLD_SIZE") or "1") > 1:
            self.mode = "static"
            self._static = _static_generation(env)
            self._host = local_host_for(f"http://{self._static.store_host}:"
                                        f"{self._static.store_port}")
        else:
            self.mode = "local"
            self._host = "127.0.0.1"
        self._generation: Optional[Generation] = None
        self._group: Any = None
        self._store: Any = None
        self._started = False
        self._closed = False
        self._agreed_pending = False
        self._flat_buffers: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}
        self.generations_seen = 0
        self.last_rendezvous_s = 0.0

    # ---- what the loop reads ----------------------------------------------------------

    @property
    def rank(self) -> int:
        """This worker's rank in the current generation (0 before `start`)."""
        return self._generation.rank if self._generation else 0

    @property
    def world_size(self) -> int:
        """Workers in the current generation (1 before `start`)."""
        return self._generation.world_size if self._generation else 1

    @property
    def generation(self) -> int:
        """The current generation's id (0 before `start`; local mode: 1)."""
        return self._generation.id if self._generation else 0

    @property
    def members(self) -> tuple[str, ...]:
        """Task ids of the current generation by rank."""
        return self._generation.members if self._generation else ()

    @property
    def is_reporter(self) -> bool:
        """True on rank 0: the one rank that reports metrics and writes files."""
        return self.rank == 0

    @property
    def group(self) -> Any:
        """The current generation's ProcessGroup, None in a world of one. Collectives
        called on it directly are not protected: use `all_reduce` and
        `allreduce_gradients`."""
        return self._group

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Joins the first generation and takes the source rank's state.

        Commits the state first (a fresh worker joins with step -1, one that loaded a
        checkpoint with its step). Called by the first `step` when not called before.
        Blocks until a generation including this worker forms. Raises SystemExit(0) when
        the master says to leave.
        """
        if self._started:
            return
        self._started = True
        self._commit()
        if self.mode == "local":
            self._generation = Generation(1, 0, 1, ("local",), "", 0, 0, "single process")
            self.generations_seen = 1
            return
        self._rendezvous("first join")

    def close(self) -> None:
        """Stops the watch and drops the process group. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._watcher is not None:
            self._watcher.close()
        self._group = None
        self._store = None

    def __enter__(self) -> "ElasticRuntime":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def copies_commits(self) -> bool:
        """Whether commits copy the model and optimizer (``commit_every`` given)."""
        return self.commit_every is not None

    def _commit(self) -> None:
        self.state.commit(copy=self.copies_commits)

    @contextlib.contextmanager
    def step(self, counts_as_step: bool = True) -> Iterator["ElasticRuntime"]:
        """One step of training, as a ``with`` block.

        On a normal exit ``state.step`` grows by one and the state is committed (a
        step-boundary commit; with ``commit_every=N`` a copy every N steps); if the
        step's collectives agreed that a new generation is pending, the state is
        committed and the worker joins it before the block returns. On `PeerFailure` the
        state is rolled back to the last commit and the worker joins the next
        generation; the exception is swallowed, so the loop simply goes on from the
        restored state. Other exceptions propagate.

        Without ``commit_every`` a block may change the model and optimizer only after
        its last collective (the gradient all-reduce, then ``optimizer.step()``).

        Parameters
        ----------
        counts_as_step : bool, optional
            False for a block of collectives that is not a training step (validation):
            ``state.step`` stays, the rest is as above. The loop must be able to tell
            from the state that the block is still to do (a user field set by the step
            before it, cleared inside it), since a failure rolls it back.
        """
        self.start()
        self._agreed_pending = False
        try:
            yield self
        except PeerFailure as failure:
            if self.mode != "elastic":
                raise
            committed = self.state.committed_step
            log(f"step {self.state.step + 1} failed in generation {self.generation} "
                f"({failure}); rolling back to step {committed}")
            self.state.restore()
            self._rendezvous(f"peer failure: {failure}")
            return
        if counts_as_step:
            self.state.step += 1
        pending = self._agreed_pending
        if self.world_size == 1 and self._watcher is not None:
            pending = pending or self._watcher.pending  # no peer to agree with
        if (pending or self.commit_every is None
                or self.state.step % self.commit_every == 0):
            self._commit()
        if pending:
            self._rendezvous("new generation announced")

    # ---- collectives --------------------------------------------------------------------

    def allreduce_gradients(self, parameters: Iterable[torch.nn.Parameter],
                            extras: Sequence[float] = ()) -> list[float]:
        """Sums the gradients of ``parameters`` over all ranks, in one all-reduce.

        The buffer also carries this rank's "new generation pending" flag and
        ``extras`` (e.g. a loss to average). Ranks must pass the same parameters in the
        same order. A parameter with ``grad`` None counts as zeros and gets the sum.
        Gradients are SUMMED, not averaged: scale each rank's loss by its share of the
        global batch (sum of its per-sample losses / global batch size) so the sum is
        the global-batch gradient whatever the split.

        Returns
        -------
        list of float
            ``extras`` summed over the ranks.

        Raises
        ------
        PeerFailure
            If a peer failed during the all-reduce.
        """
        params = [p for p in parameters if p.requires_grad]
        if self._group is None:
            return [float(x) for x in extras]
        buckets: dict[tuple[torch.dtype, torch.device], list[torch.nn.Parameter]] = {}
        for p in params:
            buckets.setdefault((p.dtype, p.device), []).append(p)
        tail_key = next((k for k in buckets if k[0] == torch.float32), None)
        tail = [1.0 if self._local_pending() else 0.0, *[float(x) for x in extras]]
        reduced_tail: Optional[list[float]] = None
        for key, group in buckets.items():
            pieces = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in group]
            if key == tail_key:
                pieces.append(torch.tensor(tail, dtype=key[0], device=key[1]))
            flat = self._flat_buffer(key, sum(t.numel() for t in pieces))
            torch.cat(pieces, out=flat)
            self._allreduce(flat)
            offset = 0
            for p in group:
                n = p.numel()
                view = flat[offset:offset + n].view_as(p)
                if p.grad is None:
                    p.grad = view.clone()
                else:
                    p.grad.copy_(view)
                offset += n
            if key == tail_key:
                reduced_tail = flat[offset:].tolist()
        if reduced_tail is None:
            reduced_tail = self._allreduce_values(tail)
        if reduced_tail[0] > 0:
            self._agreed_pending = True
        return reduced_tail[1:]

    def _flat_buffer(self, key: tuple[torch.dtype, torch.device], n: int) -> torch.Tensor:
        """The all-reduce buffer of one dtype and device, kept from step to step (a fresh
        one each step cost an allocation of the whole model's size)."""
        buffer = self._flat_buffers.get(key)
        if buffer is None or buffer.numel() != n:
            buffer = torch.empty(n, dtype=key[0], device=key[1])
            self._flat_buffers[key] = buffer
        return buffer

    def all_reduce(self, values: Sequence[float]) -> list[float]:
        """Sums ``values`` over all ranks (float64), folding in the pending flag.

        Raises
        ------
        PeerFailure
            If a peer failed.
        """
        if self._group is None:
            return [float(x) for x in values]
        reduced = self._allreduce_values([1.0 if self._local_pending() else 0.0,
                                          *[float(x) for x in values]])
        if reduced[0] > 0:
            self._agreed_pending = True
        return reduced[1:]

    def _allreduce_values(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64 if self.device.type == "cpu"
                         else torch.float32, device=self.device)
        self._allreduce(t)
        return t.tolist()

    def _allreduce(self, tensor: torch.Tensor) -> None:
        opts = dist.AllreduceOptions()
        opts.reduceOp = dist.ReduceOp.SUM
        opts.timeout = self._collective_timeout
        try:
            self._group.allreduce([tensor], opts).wait()
        except RuntimeError as e:
            raise PeerFailure(_short(e)) from e

    def _local_pending(self) -> bool:
        return self._watcher is not None and self._watcher.pending

    # ---- rendezvous ---------------------------------------------------------------------

    def _rendezvous(self, why: str) -> None:
        """Joins generations until one forms with this worker in it and its state is
        synced. Raises SystemExit(0) when told to leave."""
        started = time.monotonic()
        if self._watcher is not None:
            self._watcher.disarm()
        self._group = None
        self._store = None
        if self._static is not None:
            self._form(self._static, None)
            self._generation = self._static
            self._announce(self._static, started, why)
            return
        assert self._client is not None and self._watcher is not None
        own_store = None
        failures = 0
        while True:
            if own_store is None:
                own_store = dist.TCPStore(self._host, 0, None, True,
                                          datetime.timedelta(seconds=self._formation_timeout_s),
                                          wait_for_workers=False)
            answer = self._client.join(generation=self.generation,
                                       step=self._join_step(), host=self._host,
                                       store_port=own_store.port)
            if answer is None:
                continue  # the master's long poll expired; join again
            if isinstance(answer, Leave):
                self._leave(answer.reason)
            self._generation = answer
            self._watcher.arm(answer.id)
            try:
                self._form(answer, own_store)
            except (RuntimeError, _FormationAborted) as e:
                self._group = None
                self._store = None
                own_store = None
                failures += 1
                if failures >= MAX_FORMATION_FAILURES:
                    # Not a peer coming and going but something broken here (a backend
                    # that cannot start): fail this worker so the job's failure count
                    # and logs say so, instead of rejoining forever.
                    raise RuntimeError(
                        f"generation {answer.id}: could not form a process group "
                        f"{failures} times in a row; last error: {_short(e)}") from e
                log(f"generation {answer.id} did not form ({_short(e)}); rolling back to "
                    f"step {self.state.committed_step} and joining again")
                self.state.restore()
                self._watcher.disarm()
                time.sleep(min(0.05 * 2 ** failures, 1.0))
                continue
            self._announce(answer, started, answer.reason or why)
            return

    def _join_step(self) -> int:
        # A worker that has done nothing yet (no step, no checkpoint) says -1 so any
        # worker with progress becomes the source.
        step = self.state.committed_step
        return step if step > 0 else -1

    def _form(self, gen: Generation, own_store: Any) -> None:
        """Builds ``gen``'s process group and syncs the state from its source rank."""
        if gen.world_size == 1:
            return  # the state is already committed; nothing to share
        if self._static is not None:
            store = dist.TCPStore(gen.store_host, gen.store_port, gen.world_size,
                                  gen.rank == 0, self._collective_timeout)
        elif (own_store is not None and gen.store_host == self._host
              and gen.store_port == own_store.port):
            store = own_store
        else:
            _probe(gen.store_host, gen.store_port)
            store = dist.TCPStore(gen.store_host, gen.store_port, None, False,
                                  datetime.timedelta(seconds=self._formation_timeout_s))
        prefix = dist.PrefixStore(f"kiln/gen{gen.id}", store)
        if self._static is None:
            self._await_members(prefix, gen)
        self._group = self._new_group(prefix, gen)
        self._store = store
        opts_timeout = self._collective_timeout
        try:
            self.state.sync(_TimedGroup(self._group, opts_timeout), gen.rank,
                            gen.source_rank, self.device, copy=self.copies_commits)
        except RuntimeError as e:
            raise PeerFailure(_short(e)) from e

    def _await_members(self, prefix: Any, gen: Generation) -> None:
        """Waits until every member reached the store, or decides with them to give up.

        The decision is one compare-and-set on the store ("go" or "abort"), so either
        every member goes on to build the group or none does: a member must never wait
        in the group's own connection phase for one that already gave up.
        """
        prefix.add("arrived", 1)
        deadline = time.monotonic() + self._formation_timeout_s
        delay = 0.001
        while True:
            arrived = prefix.add("arrived", 0)
            if arrived >= gen.world_size:
                verdict = prefix.compare_set("verdict", "", "go")
            elif (self._watcher is not None and self._watcher.pending) or \
                    time.monotonic() > deadline:
                verdict = prefix.compare_set("verdict", "", "abort")
            else:
                verdict = prefix.compare_set("verdict", "open", "open")
            if verdict == b"go":
                return
            if verdict == b"abort":
                raise _FormationAborted(
                    f"{arrived} of {gen.world_size} members reached the store")
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def _new_group(self, store: Any, gen: Generation) -> Any:
        # The group's own timeout bounds its connection phase (everyone has just reached
        # the store); each collective passes the longer collective timeout itself.
        timeout = datetime.timedelta(seconds=self._formation_timeout_s)
        if self.device.type == "cuda":
            if not hasattr(dist, "ProcessGroupNCCL"):
                raise RuntimeError("this torch has no NCCL; run on CPU (unset "
                                   "CUDA_VISIBLE_DEVICES) or install a CUDA build of torch")
            # Make a collective on a dead peer raise after its timeout instead of hanging
            # the process (torch 1.13 reads the first name, torch 2 the second).
            os.environ.setdefault("NCCL_BLOCKING_WAIT", "1")
            os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
            return dist.ProcessGroupNCCL(store, gen.rank, gen.world_size,
                                         self._collective_timeout)
        opts = dist.ProcessGroupGloo._Options()
        opts._devices = [dist.ProcessGroupGloo.create_device(hostname=self._host)]
        opts._timeout = timeout
        return dist.ProcessGroupGloo(store, gen.rank, gen.world_size, opts)

    def _announce(self, gen: Generation, started: float, why: str) -> None:
        self.generations_seen += 1
        self.last_rendezvous_s = time.monotonic() - started
        members = ", ".join(gen.members)
        log(f"generation {gen.id}: rank {gen.rank} of {gen.world_size} (members {members}), "
            f"resumed at {self.state.describe()} from rank {gen.source_rank}; "
            f"reason: {why} ({self.last_rendezvous_s:.2f} s)")

    def _leave(self, reason: str) -> None:
        log(f"leaving at {self.state.describe()}: {reason or 'asked by the master'}")
        self.close()
        raise SystemExit(0)


class _TimedGroup:
    """A process group whose broadcasts use the collective timeout (State.sync)."""

    def __init__(self, group: Any, timeout: datetime.timedelta) -> None:
        self._group = group
        self._timeout = timeout

    def broadcast(self, tensor: torch.Tensor, root: int) -> Any:
        opts = dist.BroadcastOptions()
        opts.rootRank = root
        opts.rootTensor = 0
        opts.timeout = self._timeout
        return self._group.broadcast([tensor], opts)


def _static_generation(env: Mapping[str, str]) -> Generation:
    missing = [n for n in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if not env.get(n)]
    if missing:
        raise ValueError(f"a static distributed run needs {', '.join(missing)} in the "
                         "environment (Kiln sets them for \"workers\": N jobs)")
    try:
        rank, world, port = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env["MASTER_PORT"])
    except ValueError:
        raise ValueError(f"RANK, WORLD_SIZE and MASTER_PORT must be integers, got "
                         f"{env['RANK']!r}, {env['WORLD_SIZE']!r}, "
                         f"{env['MASTER_PORT']!r}") from None
    if not 0 <= rank < world:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE={world}), got {rank}")
    return Generation(1, rank, world, tuple(str(r) for r in range(world)),
                      env["MASTER_ADDR"], port, 0, "static job")


def _probe(host: str, port: int) -> None:
    """Fails fast when nothing listens at the store (its host died): TCPStore's client
    would retry until its timeout."""
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError as e:
        raise _FormationAborted(f"the store at {host}:{port} is unreachable ({e})") from None


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
