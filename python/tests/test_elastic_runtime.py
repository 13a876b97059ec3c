"""ElasticRuntime without a master: local mode, commits and rollback, the environment
checks of elastic and static mode, and a rank dying mid-all-reduce between real processes
over a real TCPStore and gloo group.

The runtime against kilnd's rendezvous (exact training across worker counts, kills,
generations that cannot form, the example's checkpoint) is tested through a real kilnd
in tests/integration/test_elastic_runtime.py and test_elastic_python.py.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from kiln.elastic import ElasticRuntime, ElasticSampler, State  # noqa: E402

GLOBAL_BATCH = 16
DATASET = 96  # 6 steps per epoch


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
    return State(model, optimizer, sampler)


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
    return total


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


def test_elastic_mode_without_the_kiln_environment_says_what_is_missing():
    with pytest.raises(ValueError, match="KILN_MASTER, KILN_JOB_ID, KILN_TASK_ID"):
        ElasticRuntime(make_state(0), environ={"KILN_ELASTIC": "1"})


def test_static_mode_needs_the_pytorch_variables():
    with pytest.raises(ValueError, match="RANK, MASTER_ADDR, MASTER_PORT"):
        ElasticRuntime(make_state(0), environ={"WORLD_SIZE": "2"})
