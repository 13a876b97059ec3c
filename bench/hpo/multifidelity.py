#!/usr/bin/python3
"""Multi-fidelity: time to a target validation accuracy on a Fashion-MNIST subset, 2 slots.

Issue 3's multi-fidelity figure. Every method searches the same space for the MLP of
``examples/fashion_mnist/train.py`` on the same subset (first 20,000 training and 5,000
test images by default), two trials at a time, one CPU slot each:

- ``kiln-asha``: Kiln's ``asha`` algorithm (random sampler + ASHA, reduction factor 3,
  rungs at 1 and 3 epochs, every trial asked for R = 9 epochs and stopped at a rung when
  it is not in the best third there).
- ``kiln-asha-tpe`` (on request): the same with Kiln's TPE as ASHA's sampler, the
  closest Kiln counterpart of Optuna's TPE + pruner.
- ``kiln-hyperband``: Kiln's ``hyperband`` (resource ``epochs``, R = 9, eta = 3): each
  trial gets its budget in config.json; a promotion is a new trial at the larger budget.
- ``kiln-random``: Kiln's ``random`` at the full budget (every trial 9 epochs).
- ``optuna-tpe-hb``: Optuna 3.1 ``TPESampler`` + ``HyperbandPruner(min_resource=1,
  max_resource=9, reduction_factor=3)``, two worker processes sharing one SQLite storage
  (Optuna's documented way to run a study in parallel on one machine), training in-process
  with train.py's own model, data loader and evaluation (imported from it) and the same
  loop, reporting ``trial.report(accuracy, epoch)`` and asking ``trial.should_prune()``.

Kiln trials are real jobs of ``kilnd --local-agent --slots 2``: a fresh
``/usr/bin/python3 train.py`` process each (importing torch and loading the subset every
time), reporting ``accuracy`` per epoch in group ``test``. Optuna's workers import torch
and load the subset once each; that start-up is inside its measured time too.

Time to target: from the search's start (just before the experiment is posted, or before
the Optuna study is created) to the first moment any trial's validation accuracy is at or
above the target (Kiln: the time stamps of the metric points the trials reported; Optuna:
a time stamp taken at each report). A run stops as soon as the target is reached, or at
the cap, when it counts as "not reached". Trials (those that finished at least one epoch)
and epochs are counted up to that moment.

    /usr/bin/python3 bench/hpo/multifidelity.py --build-dir build/me --repeats 3
    /usr/bin/python3 bench/hpo/multifidelity.py --methods optuna-tpe-hb --repeats 3
    /usr/bin/python3 bench/hpo/multifidelity.py probe --configs 12   # the space's spread
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import queue
import random
import sys
import tempfile
import time
import warnings
from typing import Any, Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
from kilnd_process import (FastClient, KilndProcess, machine_line, median,  # noqa: E402
                           parse_time)

REPO = os.path.dirname(os.path.dirname(HERE))
EXAMPLE_DIR = os.path.join(REPO, "examples", "fashion_mnist")
PYTHON = "/usr/bin/python3"  # Debian's torch and optuna live there

MAX_EPOCHS = 9  # R
ETA = 3
METHODS = ("kiln-asha", "kiln-hyperband", "kiln-random", "optuna-tpe-hb", "kiln-asha-tpe")
DEFAULT_METHODS = METHODS[:4]  # the four; kiln-asha-tpe on request
TERMINAL_TRIAL_STATES = ("COMPLETE", "PRUNED", "FAILED", "STOPPED")  # store/records.h

# The search space, native form (src/kiln/hpo/search_space.h); `suggest` below is the
# same space in Optuna's words.
SPACE: dict[str, Any] = {
    "lr": {"type": "double", "low": 1e-4, "high": 1.0, "log": True},
    "momentum": {"type": "double", "low": 0.0, "high": 0.99},
    "hidden": {"type": "int", "low": 16, "high": 512, "log": True},
    "batch_size": {"type": "categorical", "choices": [16, 32, 64, 128, 256]},
}


def suggest(trial: Any) -> dict[str, Any]:
    return {"lr": trial.suggest_float("lr", 1e-4, 1.0, log=True),
            "momentum": trial.suggest_float("momentum", 0.0, 0.99),
            "hidden": trial.suggest_int("hidden", 16, 512, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64, 128, 256])}


def random_config(rng: random.Random) -> dict[str, Any]:
    return {"lr": math.exp(rng.uniform(math.log(1e-4), 0.0)),
            "momentum": rng.uniform(0.0, 0.99),
            "hidden": int(round(math.exp(rng.uniform(math.log(16), math.log(512))))),
            "batch_size": rng.choice([16, 32, 64, 128, 256])}


# ---------------------------------------------------------------- in-process training


def pin_one_thread() -> None:
    """What the Kiln agent does for a 1-slot task (agent.cc): before torch is imported."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "KILN_SLOTS"):
        os.environ[name] = "1"
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


class Trainer:
    """train.py's MLP, data and evaluation, imported from it, and its training loop.

    The loop below is train.py's ``main`` without checkpoints, logging and metric
    reporting: same seed (train.py's default 0), same shuffle per epoch, same SGD with
    momentum, same NLL loss, same per-batch ``loss.item()``, same evaluation after each
    epoch. Load once per process (the data stays in memory between trials).
    """

    def __init__(self, train_limit: int, test_limit: int) -> None:
        pin_one_thread()
        sys.path.insert(0, EXAMPLE_DIR)
        import train as fm  # noqa: PLC0415 (after the thread pinning on purpose)
        import torch  # noqa: PLC0415
        self.fm, self.torch = fm, torch
        torch.set_num_threads(1)
        data_dir = fm.choose_data_dir(None)
        self.train_x, self.train_y = fm.load_split(data_dir, "train", train_limit)
        self.test_x, self.test_y = fm.load_split(data_dir, "t10k", test_limit)

    def run(self, cfg: dict[str, Any], epochs: int,
            on_epoch: Callable[[int, float], bool]) -> float:
        """Trains `cfg` for up to `epochs`; after each epoch calls on_epoch(epoch,
        accuracy), which returns False to stop. Returns the last accuracy."""
        torch, fm = self.torch, self.fm
        import torch.nn.functional as F  # noqa: PLC0415
        torch.manual_seed(0)
        model = fm.MLP(int(cfg["hidden"]))
        optimizer = torch.optim.SGD(model.parameters(), lr=float(cfg["lr"]),
                                    momentum=float(cfg["momentum"]))
        batch_size = int(cfg["batch_size"])
        batches = (len(self.train_x) + batch_size - 1) // batch_size
        accuracy = 0.0
        model.train()
        for epoch in range(1, epochs + 1):
            order = torch.randperm(len(self.train_x))
            for b in range(batches):
                idx = order[b * batch_size:(b + 1) * batch_size]
                optimizer.zero_grad()
                loss = F.nll_loss(model(self.train_x[idx]), self.train_y[idx])
                loss.backward()
                optimizer.step()
                loss.item()
            _, accuracy = fm.evaluate(model, self.test_x, self.test_y)
            if not on_epoch(epoch, accuracy):
                break
        return accuracy


# ---------------------------------------------------------------- Optuna


def _optuna_worker(storage: str, study_name: str, train_limit: int, test_limit: int,
                   events: Any, stop: Any, deadline: float) -> None:
    trainer = Trainer(train_limit, test_limit)
    import optuna  # noqa: PLC0415
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)

    def objective(trial: Any) -> float:
        cfg = suggest(trial)
        events.put({"kind": "start", "trial": trial.number, "time": time.time()})

        def on_epoch(epoch: int, accuracy: float) -> bool:
            events.put({"kind": "report", "trial": trial.number, "epoch": epoch,
                        "accuracy": accuracy, "time": time.time()})
            if math.isnan(accuracy):
                raise optuna.TrialPruned()
            trial.report(accuracy, epoch)
            if stop.is_set() or time.time() > deadline or trial.should_prune():
                raise optuna.TrialPruned()
            return True

        return trainer.run(cfg, MAX_EPOCHS, on_epoch)

    def end_when_told(study_: Any, _trial: Any) -> None:
        if stop.is_set() or time.time() > deadline:
            study_.stop()

    study.optimize(objective, callbacks=[end_when_told])


def run_optuna(seed: int, target: float, cap_s: float, train_limit: int,
               test_limit: int) -> dict[str, Any]:
    import optuna  # noqa: PLC0415
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    db_dir = tempfile.mkdtemp(prefix="optuna-mf-")
    storage = f"sqlite:///{db_dir}/study.db"
    name = f"mf-{seed}"
    ctx = multiprocessing.get_context("spawn")  # torch imported in the worker, after pinning
    events, stop = ctx.Queue(), ctx.Event()
    start = time.time()
    optuna.create_study(
        study_name=name, storage=storage, direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=MAX_EPOCHS,
                                              reduction_factor=ETA))
    deadline = start + cap_s
    workers = [ctx.Process(target=_optuna_worker,
                           args=(storage, name, train_limit, test_limit, events, stop,
                                 deadline)) for _ in range(2)]
    for w in workers:
        w.start()
    reached_at: Optional[float] = None
    trials: set[int] = set()
    epochs = 0
    best = 0.0
    # Counts up to the moment the target is reached (or the cap); then tells the workers
    # to stop, which they do at their next epoch's end.
    while reached_at is None and time.time() < deadline and any(w.is_alive() for w in workers):
        try:
            ev = events.get(timeout=0.5)
        except queue.Empty:
            continue
        if ev["kind"] == "report":
            trials.add(ev["trial"])
            epochs += 1
            best = max(best, ev["accuracy"] if not math.isnan(ev["accuracy"]) else 0.0)
            if ev["accuracy"] >= target:
                reached_at = ev["time"]
    stop.set()
    for w in workers:
        w.join(timeout=120)
        if w.is_alive():
            w.terminate()
            w.join()
    return {"method": "optuna-tpe-hb", "seed": seed,
            "time_to_target_s": None if reached_at is None else round(reached_at - start, 2),
            "best_accuracy": round(best, 4), "trials": len(trials), "epochs": epochs}


# ---------------------------------------------------------------- Kiln


def kiln_spec(method: str, seed: int, cap_s: float, train_limit: int,
              test_limit: int) -> dict[str, Any]:
    config: dict[str, Any] = {"epochs": MAX_EPOCHS}
    if method in ("kiln-asha", "kiln-asha-tpe"):
        algorithm: Any = {"name": "asha",
                          "params": {"reduction_factor": ETA, "min_resource": 1,
                                     "max_resource": MAX_EPOCHS,
                                     "sampler": "tpe" if method == "kiln-asha-tpe"
                                     else "random"}}
    elif method == "kiln-hyperband":
        algorithm = {"name": "hyperband",
                     "params": {"eta": ETA, "resource_name": "epochs",
                                "max_resource": MAX_EPOCHS, "min_resource": 1}}
        config = {}  # the driver writes each trial's budget under "epochs"
    else:
        algorithm = "random"
    return {
        "name": f"mf-{method}-{seed}",
        "command": [PYTHON, "train.py", "--train-limit", str(train_limit),
                    "--test-limit", str(test_limit)],
        "package": {"path": EXAMPLE_DIR},
        "resources": {"slots": 1},
        "config": config,
        "search_space": SPACE,
        "algorithm": algorithm,
        "objective": {"metric": "accuracy", "goal": "maximize"},
        "max_trials": 1000,  # the cap ends the run, not the trial count
        "max_run_minutes": int(math.ceil(cap_s / 60)) + 1,
        "parallelism": 2,
        "seed": seed,
    }


def _rows(reply: Any, key: str) -> list[dict[str, Any]]:
    return reply.get(key, []) if isinstance(reply, dict) else list(reply or [])


def _point_time(stamp: Any) -> Optional[float]:
    if isinstance(stamp, (int, float)):
        return float(stamp)
    return parse_time(stamp)


def read_accuracy(client: FastClient, job_id: int,
                  seen: dict[int, tuple[float, float]]) -> None:
    """Merges the job's test-accuracy points into `seen` (step -> (value, Unix time)),
    keeping the earliest time of each step. train.py reports each epoch by several routes;
    the API shows the last to arrive, and val_dict_list.json's points, read when the job
    ends, carry the job's end time: polling while the job runs keeps the report's own."""
    reply = client.request("GET", f"/api/v1/jobs/{job_id}/metrics?name=accuracy")
    for series in reply.get("series", []):
        if series.get("name") != "accuracy" or series.get("group", "test") != "test":
            continue
        for p in series.get("points", []):
            t = _point_time(p.get("time"))
            if t is None or p.get("value") is None:
                continue
            step = int(p["step"])
            if step not in seen or t < seen[step][1]:
                seen[step] = (float(p["value"]), t)


def run_kiln(build_dir: str, method: str, seed: int, target: float, cap_s: float,
             train_limit: int, test_limit: int, poll_s: float = 1.0) -> dict[str, Any]:
    with KilndProcess(build_dir, slots=2) as kilnd:
        client = FastClient(kilnd.url)
        spec = kiln_spec(method, seed, cap_s, train_limit, test_limit)
        start = time.time()
        exp_id = client.request("POST", "/api/v1/experiments", spec)["id"]
        deadline = start + cap_s
        points: dict[int, dict[int, tuple[float, float]]] = {}  # job -> step -> (acc, time)
        done_jobs: set[int] = set()  # ended, points read after the end
        reached_at: Optional[float] = None
        state = ""
        while True:
            exp = client.request("GET", f"/api/v1/experiments/{exp_id}")
            state = exp["state"]
            trials = _rows(client.request("GET", f"/api/v1/experiments/{exp_id}/trials"),
                           "trials")
            for trial in trials:
                job_id = trial.get("job_id")
                if not job_id or job_id in done_jobs:
                    continue
                read_accuracy(client, job_id, points.setdefault(job_id, {}))
                if str(trial.get("state", "")).upper() in TERMINAL_TRIAL_STATES:
                    done_jobs.add(job_id)
            hits = [t for pts in points.values() for v, t in pts.values() if v >= target]
            if hits:
                reached_at = min(hits)
            if (reached_at is not None or time.time() >= deadline
                    or state not in ("SUBMITTED", "RUNNING")):
                break
            time.sleep(poll_s)
        if state in ("SUBMITTED", "RUNNING"):
            client.request("POST", f"/api/v1/experiments/{exp_id}/stop")
        end = reached_at if reached_at is not None else deadline
        # Count what was trained up to the end: trials that had started, epochs reported.
        started = [j for j, pts in points.items() if any(t <= end for _, t in pts.values())]
        epochs = sum(1 for pts in points.values() for _, t in pts.values() if t <= end)
        best = max((v for pts in points.values() for v, t in pts.values()
                    if t <= end and not math.isnan(v)), default=0.0)
        client.close()
    return {"method": method, "seed": seed, "experiment_state": state,
            "time_to_target_s": None if reached_at is None else round(reached_at - start, 2),
            "best_accuracy": round(best, 4), "trials": len(started),
            "trials_created": len(trials), "epochs": epochs}


# ---------------------------------------------------------------- probe and main


def _probe_worker(configs: list[dict[str, Any]], train_limit: int, test_limit: int,
                  out: Any) -> None:
    trainer = Trainer(train_limit, test_limit)
    for cfg in configs:
        t0 = time.time()
        accs: list[float] = []
        trainer.run(cfg, MAX_EPOCHS, lambda _e, a: accs.append(round(a, 4)) or True)
        out.put({**cfg, "accuracy": accs, "seconds": round(time.time() - t0, 1)})


def probe(args: argparse.Namespace) -> None:
    """Trains random configurations of the space for R epochs: how hard is the target?"""
    rng = random.Random(args.seed)
    configs = [random_config(rng) for _ in range(args.configs)]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    workers = [ctx.Process(target=_probe_worker,
                           args=(configs[i::2], args.train_limit, args.test_limit, out))
               for i in range(2)]
    for w in workers:
        w.start()
    rows = [out.get() for _ in configs]
    for w in workers:
        w.join()
    for row in rows:
        print(json.dumps(row), flush=True)
    reach = [next((e + 1 for e, a in enumerate(r["accuracy"]) if a >= args.target), None)
             for r in rows]
    hit = [e for e in reach if e is not None]
    print(f"# {len(hit)}/{len(rows)} configurations reach {args.target} within "
          f"{MAX_EPOCHS} epochs; epochs needed: {sorted(hit)}")


def summarize(results: list[dict[str, Any]], cap_s: float, target: float) -> None:
    print(f"\n| method | runs | reached {target:.0%} | median time to {target:.0%} (s) | "
          f"times (s) | median trials | median epochs |")
    print("|---|---|---|---|---|---|---|")
    for method in METHODS:
        rows = [r for r in results if r["method"] == method]
        if not rows:
            continue
        times = [r["time_to_target_s"] for r in rows]
        reached = [t for t in times if t is not None]
        # Not reached counts as above the cap, so the median says "not reached" when
        # fewer than half the runs got there.
        ordered = sorted(t if t is not None else math.inf for t in times)
        mid = median(ordered)
        shown = "not reached" if math.isinf(mid) else f"{mid:.0f}"
        each = ", ".join("—" if t is None else f"{t:.0f}" for t in times)
        print(f"| {method} | {len(rows)} | {len(reached)}/{len(rows)} | {shown} | {each} | "
              f"{median([r['trials'] for r in rows]):.0f} | "
              f"{median([r['epochs'] for r in rows]):.0f} |")
    print(f"(cap {cap_s:.0f} s per run; a run that did not reach the target counts as "
          f"above the cap)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", nargs="?", choices=("run", "probe", "table"), default="run",
                        help="run the benchmark; probe the space; table: summarize the "
                             "JSON lines of earlier runs (--from FILE)")
    parser.add_argument("--from", dest="from_file", help="table: a file of run JSON lines")
    parser.add_argument("--build-dir", default=os.environ.get("KILN_BUILD_DIR", "build/me"))
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated, from {', '.join(METHODS)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1, help="first seed; repeat i uses seed+i")
    parser.add_argument("--target", type=float, default=0.85)
    parser.add_argument("--cap-min", type=float, default=6.0, help="time cap per run")
    parser.add_argument("--train-limit", type=int, default=20000)
    parser.add_argument("--test-limit", type=int, default=5000)
    parser.add_argument("--configs", type=int, default=12, help="probe: configurations")
    args = parser.parse_args()
    if args.mode == "table":
        if not args.from_file:
            parser.error("table needs --from FILE")
        with open(args.from_file) as f:
            rows = [json.loads(line) for line in f if line.startswith("{")]
        summarize(rows, args.cap_min * 60, args.target)
        return
    if args.mode == "probe":
        print(f"# {machine_line()}; probe: {args.configs} random configurations, "
              f"{args.train_limit}/{args.test_limit} images, {MAX_EPOCHS} epochs, 2 at once",
              flush=True)
        probe(args)
        return
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        if m not in METHODS:
            parser.error(f"--methods: unknown {m!r}; choose from {', '.join(METHODS)}")
    cap_s = args.cap_min * 60
    print(f"# {machine_line()}; Fashion-MNIST MLP, {args.train_limit} train / "
          f"{args.test_limit} test images, target {args.target}, R = {MAX_EPOCHS} epochs, "
          f"eta = {ETA}, 2 slots, cap {cap_s:.0f} s, {args.repeats} repeats", flush=True)
    results: list[dict[str, Any]] = []
    # Repeats outermost, so a change in the machine's load spreads over every method.
    for rep in range(args.repeats):
        for method in methods:
            seed = args.seed + rep
            t0 = time.monotonic()
            if method == "optuna-tpe-hb":
                row = run_optuna(seed, args.target, cap_s, args.train_limit, args.test_limit)
            else:
                row = run_kiln(args.build_dir, method, seed, args.target, cap_s,
                               args.train_limit, args.test_limit)
            row["run_wall_s"] = round(time.monotonic() - t0, 1)
            row["load"] = machine_line().split("load average ")[1]
            results.append(row)
            print(json.dumps(row), flush=True)
    summarize(results, cap_s, args.target)
    print(f"# done {machine_line()}")


if __name__ == "__main__":
    main()
