"""ElasticRuntime across real processes: real gloo groups over loopback, real TCPStores,
and `FakeMaster`, a small in-test implementation of kilnd's side of the rendezvous
protocol (ARCHITECTURE.md §5.2), so the runtime is tested without building kilnd
(tests/integration/test_elastic_python.py runs it against the real one).

Workers are spawned processes that train a tiny MLP on fixed random data; every test
compares their final parameters with a single process trained on the same global
batches, which only holds if no sample was skipped or repeated and every rollback was
exact.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from kiln.elastic import (ElasticRuntime, ElasticSampler, RendezvousClient,  # noqa: E402
                          State)
from kiln.elastic.runtime import MAX_FORMATION_FAILURES  # noqa: E402

JOB = "1"
GLOBAL_BATCH = 16
DATASET = 96  # 6 steps per epoch


# ---- the fake master ----------------------------------------------------------------------

class FakeMaster:
    """kilnd's rendezvous coordinator, reduced to what the protocol says.

    A generation forms when every live member of the current one and every waiting
    newcomer has joined, with at least ``min_workers`` (``first_size`` for the first);
    ranks go by highest committed step, then by first join. `drop` plays the agent
    reporting a dead task; `remove` asks a worker to leave. Metric batches are kept in
    ``reports``. Thread-safe.
    """

    def __init__(self, min_workers: int = 1, first_size: int = 1) -> None:
        self.min_workers = min_workers
        self.first_size = first_size  # the first generation waits for this many
        self.cond = threading.Condition()
        self.generation = 0
        self.members: list[str] = []
        self.waiting: dict[str, dict[str, Any]] = {}
        self.answers: dict[str, dict[str, Any]] = {}
        self.first_seen: dict[str, int] = {}
        self.dropped: set[str] = set()
        self.leaving: set[str] = set()
        self.history: list[dict[str, Any]] = []
        self.reports: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path.endswith("/rendezvous/join"):
                    owner._reply(self, owner._join(body))
                elif self.path.endswith("/metrics"):  # kiln.report from rank 0
                    with owner.cond:
                        owner.reports.extend(body["reports"])
                    owner._reply(self, {"accepted": len(body["reports"])})
                else:
                    owner._reply(self, {"error": {"message": f"no route {self.path}"}}, 404)

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                owner._reply(self, owner._watch(query["task_id"][0],
                                                int(query["generation"][0]),
                                                int(query["wait_ms"][0])))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, answer: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(answer).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a long poll of a worker that died or exited

    def drop(self, task: str) -> None:
        with self.cond:
            self.dropped.add(task)
            self.cond.notify_all()

    def remove(self, task: str) -> None:
        with self.cond:
            self.leaving.add(task)
            self.cond.notify_all()

    def _join(self, body: dict[str, Any]) -> dict[str, Any]:
        task = str(body["task_id"])
        deadline = time.monotonic() + body["wait_ms"] / 1000
        with self.cond:
            self.first_seen.setdefault(task, len(self.first_seen))
            if task in self.leaving:
                self.leaving.discard(task)
                self.dropped.add(task)
                self.cond.notify_all()
                return {"leave": True, "reason": "scaled down"}
            self.waiting[task] = body
            self.cond.notify_all()
            while task not in self.answers:
                self._maybe_form()
                if task in self.answers:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.waiting.pop(task, None)
                    return {"retry": True}
                self.cond.wait(min(remaining, 0.05))
            return self.answers.pop(task)

    def _maybe_form(self) -> None:
        live = [m for m in self.members if m not in self.dropped and m not in self.leaving]
        least = self.first_size if self.generation == 0 else self.min_workers
        if len(self.waiting) < least or any(m not in self.waiting for m in live):
            return
        order = sorted(self.waiting, key=lambda t: (-self.waiting[t]["step"],
                                                    self.first_seen[t]))
        self.generation += 1
        self.members = order
        source = self.waiting[order[0]]
        reason = "first generation" if self.generation == 1 else "membership changed"
        for rank, task in enumerate(order):
            self.answers[task] = {
                "generation": self.generation, "rank": rank, "world_size": len(order),
                "members": [int(t) for t in order],
                "store": {"host": source["host"], "port": source["store_port"]},
                "source_rank": 0, "reason": reason}
        self.history.append({"id": self.generation, "members": list(order)})
        self.waiting.clear()
        self.cond.notify_all()

    def _watch(self, task: str, generation: int, wait_ms: int) -> dict[str, Any]:
        deadline = time.monotonic() + wait_ms / 1000
        with self.cond:
            while True:
                pending = (self.generation > generation or bool(self.waiting)
                           or task in self.leaving
                           or any(m in self.dropped for m in self.members))
                if pending:
                    return {"generation": generation, "next": True,
                            "leave": task in self.leaving}
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return {"generation": generation, "next": False}
                self.cond.wait(remaining)


@pytest.fixture
def fake_master():
    masters: list[FakeMaster] = []

    def make(min_workers: int = 1, first_size: int = 1) -> FakeMaster:
        masters.append(FakeMaster(min_workers, first_size))
        return masters[-1]

    yield make
    for m in masters:
        m.close()


# ---- the workload --------------------------------------------------------------------------

def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(DATASET, 10, generator=g)
    y = torch.randint(0, 3, (DATASET,), generator=g)
    return x, y


def make_state(model_seed: int) -> State:
    torch.manual_seed(model_seed)
    model = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sampler = ElasticSampler(DATASET, global_batch_size=GLOBAL_BATCH, seed=5)
    return State(model, optimizer, sampler, steps_at_one=0, steps_at_two=0)


def train_step(runtime: ElasticRuntime, x: torch.Tensor, y: torch.Tensor) -> float:
    """One step of the global-batch loss normalisation the runtime documents."""
    state = runtime.state
    batch = state.sampler.batch(runtime.rank, runtime.world_size)
    state.optimizer.zero_grad()
    share = 0.0
    if batch.indices:
        idx = torch.tensor(batch.indices)
        loss = torch.nn.functional.cross_entropy(state.model(x[idx]), y[idx],
                                                 reduction="sum") / batch.global_size
        loss.backward()
        share = float(loss.detach())
    [total] = runtime.allreduce_gradients(state.model.parameters(), [share])
    state.optimizer.step()
    state.sampler.advance(runtime.world_size)
    if runtime.world_size == 1:
        state.steps_at_one += 1
    elif runtime.world_size == 2:
        state.steps_at_two += 1
    return total


def reference_parameters(model_seed: int, steps: int) -> list[torch.Tensor]:
    """The same training in one process (local mode) for ``steps`` steps."""
    x, y = data()
    runtime = ElasticRuntime(make_state(model_seed), environ={})
    while runtime.state.step < steps:
        with runtime.step():
            train_step(runtime, x, y)
    return [p.detach().clone() for p in runtime.state.model.parameters()]


def worker(task: str, url: str, options: dict[str, Any], events: Any) -> None:
    """A spawned elastic worker; reports ("pid", ...), ("generation", ...) and
    ("done", ...) on ``events``. Options: model_seed, total_steps, until_steps_at_one,
    until_steps_at_two (steps trained in a world of 1 / 2),
    die_at_step (SIGKILL itself before that step's all-reduce)."""
    torch.set_num_threads(1)
    x, y = data()
    state = make_state(options.get("model_seed", 0))
    runtime = ElasticRuntime(state, client=RendezvousClient(url, JOB, task),
                             collective_timeout_s=120, formation_timeout_s=30)
    events.put(("pid", task, os.getpid()))
    seen = 0

    def finished() -> bool:
        if "total_steps" in options:
            return state.step >= options["total_steps"]
        if "until_steps_at_one" in options:
            return state.steps_at_one >= options["until_steps_at_one"]
        return state.steps_at_two >= options["until_steps_at_two"]

    while runtime.state.step == 0 or not finished():
        with runtime.step():
            if runtime.generation != seen:
                seen = runtime.generation
                events.put(("generation", task, seen, runtime.world_size, state.step))
            if options.get("die_at_step") == state.step + 1:
                os.kill(os.getpid(), signal.SIGKILL)
            train_step(runtime, x, y)
    events.put(("done", task, state.step, runtime.generations_seen,
                [p.detach().tolist() for p in state.model.parameters()]))
    runtime.close()


class Workers:
    """Spawned worker processes and the events they send."""

    def __init__(self, master: FakeMaster) -> None:
        self.master = master
        self.ctx = multiprocessing.get_context("spawn")
        self.events = self.ctx.Queue()
        self.procs: dict[str, Any] = {}
        self.log: list[tuple] = []

    def start(self, task: str, **options: Any) -> None:
        p = self.ctx.Process(target=worker, args=(task, self.master.url, options, self.events),
                             daemon=True)
        p.start()
        self.procs[task] = p

    def next_event(self, timeout: float = 120) -> tuple:
        event = self.events.get(timeout=timeout)
        self.log.append(event)
        return event

    def wait_for(self, predicate, timeout: float = 120) -> tuple:
        for event in self.log:
            if predicate(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(max(deadline - time.monotonic(), 0.1))
            if predicate(event):
                return event

    def done(self, task: str) -> tuple:
        return self.wait_for(lambda e: e[0] == "done" and e[1] == task)

    def close(self) -> None:
        for p in self.procs.values():
            if p.is_alive():
                p.kill()
            p.join(10)


@pytest.fixture
def workers_of():
    made: list[Workers] = []

    def make(master: FakeMaster) -> Workers:
        made.append(Workers(master))
        return made[-1]

    yield make
    for w in made:
        w.close()


def assert_parameters_equal(got: list, expected: list[torch.Tensor]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(torch.tensor(g), e, rtol=1e-5, atol=1e-6)


# ---- tests ---------------------------------------------------------------------------------

def test_local_mode_trains_as_one_process_and_commits_every_step():
    x, y = data()
    state = make_state(0)
    runtime = ElasticRuntime(state, environ={})
    assert runtime.mode == "local"
    for _ in range(8):
        with runtime.step():
            train_step(runtime, x, y)
    assert (runtime.rank, runtime.world_size, runtime.generation) == (0, 1, 1)
    assert state.step == 8 and state.committed_step == 8
    assert (state.sampler.epoch, state.sampler.consumed) == (1, 32)


def test_commit_every_n_steps_rolls_back_to_the_last_multiple():
    x, y = data()
    state = make_state(0)
    runtime = ElasticRuntime(state, commit_every=3, environ={})
    for _ in range(7):
        with runtime.step():
            train_step(runtime, x, y)
    assert state.committed_step == 6
    state.restore()
    assert state.step == 6 and state.sampler.consumed == 0 and state.sampler.epoch == 1


def test_two_workers_compute_exactly_what_one_process_computes(fake_master, workers_of):
    master = fake_master(first_size=2)
    workers = workers_of(master)
    # Different initial weights: the source rank's state must win everywhere.
    workers.start("11", model_seed=0, total_steps=9)
    workers.start("12", model_seed=1, total_steps=9)
    done = [workers.done("11"), workers.done("12")]
    first_source = master.history[0]["members"][0]
    expected = reference_parameters(0 if first_source == "11" else 1, 9)
    for _, task, steps, generations, params in done:
        assert steps == 9 and generations == 1
        assert_parameters_equal(params, expected)
    assert master.history == [{"id": 1, "members": master.history[0]["members"]}]


def test_a_killed_worker_costs_one_step_and_the_survivor_finishes_the_same_training(
        fake_master, workers_of):
    master = fake_master(first_size=2)
    workers = workers_of(master)
    workers.start("21", model_seed=0, total_steps=12)
    workers.start("22", model_seed=0, die_at_step=5, total_steps=12)
    workers.procs["22"].join(120)  # it kills itself before step 5's all-reduce
    assert workers.procs["22"].exitcode == -signal.SIGKILL
    master.drop("22")  # what the agent's report does in kilnd

    _, _, steps, generations, params = workers.done("21")
    assert steps == 12 and generations == 2
    assert [g["members"] for g in master.history] == [master.history[0]["members"], ["21"]]
    # The survivor redid step 5 alone from the commit after step 4: same training.
    assert_parameters_equal(params, reference_parameters(0, 12))


def test_a_newcomer_joins_without_restarting_the_running_worker(fake_master, workers_of):
    master = fake_master(min_workers=1)
    workers = workers_of(master)
    workers.start("31", model_seed=0, until_steps_at_two=10)
    workers.wait_for(lambda e: e[0] == "generation" and e[1] == "31")
    workers.start("32", model_seed=7, until_steps_at_two=10)  # other weights: synced away

    joined = workers.wait_for(lambda e: e[0] == "generation" and e[1] == "32")
    assert joined[3] == 2 and joined[4] > 0  # world of 2, resumed at 31's step
    done_31, done_32 = workers.done("31"), workers.done("32")
    assert done_31[2] == done_32[2]
    assert done_31[3] == 2 and done_32[3] == 1  # 31 kept its process through both
    expected = reference_parameters(0, done_31[2])
    assert_parameters_equal(done_31[4], expected)
    assert_parameters_equal(done_32[4], expected)
    assert [len(g["members"]) for g in master.history] == [1, 2]


def test_a_worker_asked_to_leave_exits_0_and_the_other_continues(fake_master, workers_of):
    master = fake_master(first_size=2)
    workers = workers_of(master)
    workers.start("41", model_seed=0, until_steps_at_one=10)
    workers.start("42", model_seed=0, until_steps_at_one=10)
    workers.wait_for(lambda e: e[0] == "generation" and e[1] == "42")
    master.remove("42")
    workers.procs["42"].join(120)
    assert workers.procs["42"].exitcode == 0
    _, _, steps, generations, params = workers.done("41")
    assert generations == 2
    assert_parameters_equal(params, reference_parameters(0, steps))
    assert master.history[-1]["members"] == ["41"]


def _die_in_allreduce(ports: Any, results: Any, rank: int) -> None:
    """Forms a 2-rank gloo group through a real TCPStore; rank 1 dies at the second
    all-reduce, rank 0 reports what its all-reduce did."""
    import datetime

    import torch.distributed as dist

    if rank == 0:
        store = dist.TCPStore("127.0.0.1", 0, None, True, datetime.timedelta(seconds=30),
                              wait_for_workers=False)
        ports.put(store.port)
    else:
        store = dist.TCPStore("127.0.0.1", ports.get(timeout=60), None, False,
                              datetime.timedelta(seconds=30))
    opts = dist.ProcessGroupGloo._Options()
    opts._devices = [dist.ProcessGroupGloo.create_device(hostname="127.0.0.1")]
    opts._timeout = datetime.timedelta(seconds=300)  # far longer than the test waits
    group = dist.ProcessGroupGloo(dist.PrefixStore("t", store), rank, 2, opts)
    big = torch.ones(4_000_000)
    group.allreduce([big]).wait()  # both alive: works
    if rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    try:
        while True:
            group.allreduce([big]).wait()
    except RuntimeError as e:
        results.put(("raised", str(e)))


def test_a_rank_dying_mid_allreduce_makes_the_survivor_raise_not_hang():
    ctx = multiprocessing.get_context("spawn")
    ports, results = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_die_in_allreduce, args=(ports, results, r), daemon=True)
             for r in (0, 1)]
    for p in procs:
        p.start()
    try:
        # Far less than the group's 300 s timeout: the dead peer's closed connection
        # fails the collective at once.
        outcome = results.get(timeout=90)
        assert outcome[0] == "raised"
        procs[0].join(30)
        assert procs[0].exitcode == 0
        assert procs[1].exitcode == -signal.SIGKILL
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()


def test_a_generation_that_can_never_form_fails_the_worker_instead_of_looping(server):
    """The master keeps placing this worker in generations whose store nobody serves:
    after MAX_FORMATION_FAILURES attempts the worker gives up with the last error."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # closed again: nothing listens there
    answers = iter(range(1, 100))

    def join(h) -> None:
        FakeMaster._reply(h, {"generation": next(answers), "rank": 1, "world_size": 2,
                              "members": [1, 2], "source_rank": 0, "reason": "test",
                              "store": {"host": "127.0.0.1", "port": dead_port}})

    server.handlers[f"/api/v1/jobs/{JOB}/rendezvous/join"] = join
    server.handlers[f"/api/v1/jobs/{JOB}/rendezvous"] = lambda h: FakeMaster._reply(
        h, {"next": False})
    runtime = ElasticRuntime(make_state(0), client=RendezvousClient(server.url, JOB, "2"))
    with pytest.raises(RuntimeError, match=rf"could not form a process group "
                                           rf"{MAX_FORMATION_FAILURES} times in a row; "
                                           rf"last error: the store at 127.0.0.1:{dead_port}"):
        runtime.start()
    runtime.close()


def test_elastic_mode_without_the_kiln_environment_says_what_is_missing():
    with pytest.raises(ValueError, match="KILN_MASTER, KILN_JOB_ID, KILN_TASK_ID"):
        ElasticRuntime(make_state(0), environ={"KILN_ELASTIC": "1"})


def test_static_mode_needs_the_pytorch_variables():
    with pytest.raises(ValueError, match="RANK, MASTER_ADDR, MASTER_PORT"):
        ElasticRuntime(make_state(0), environ={"WORLD_SIZE": "2"})
