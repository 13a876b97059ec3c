#!/usr/bin/python3
"""End to end: a search of N trials of a short objective on 2 slots, Kiln vs Optuna.

Issue 3's end-to-end figure: 200 trials of a 50 ms objective (Branin plus a 50 ms sleep)
on 2 slots, wall time from submission to the last result.

- Kiln: ``kilnd --local-agent --slots 2`` on a temporary data dir; one experiment posted to
  ``/api/v1/experiments`` (parallelism 2, one slot per trial). Every trial is a real job:
  a fresh process that reads ``config.json`` and writes ``val_dict_list.json``, as a user's
  script would.
- Optuna: two worker processes sharing one SQLite storage (``sqlite:///...``, Optuna's
  documented way to run a study in parallel on one machine), each calling
  ``study.optimize(objective, n_trials=N/2)`` with the objective as an in-process function.

Both use the same sampler family (TPE by default; ``--sampler random``). Run with
``/usr/bin/python3`` (Debian's python3-optuna):

    /usr/bin/python3 bench/hpo/e2e_bench.py --build-dir build/dev --trials 200 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from kilnd_process import FastClient, KilndProcess, machine_line, median  # noqa: E402

# The trial a Kiln job runs: standard library only, so it starts like a user's small
# script (no torch import), and does the same work as the Optuna objective below.
TRIAL_SCRIPT = r'''
import json, math, os, time
cfg = json.load(open("config.json"))
x, y = float(cfg["x"]), float(cfg["y"])
time.sleep(float(cfg["sleep_s"]))
b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
value = (y - b * x * x + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10
with open(os.path.join(os.environ["RESULT_DIR"], "val_dict_list.json"), "w") as f:
    json.dump([{"steps": 1, "value": value}], f)
'''

BRANIN_MIN = 0.397887


def branin(x: float, y: float) -> float:
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    return (y - b * x * x + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10


def run_kiln(build_dir: str, trials: int, sleep_s: float, sampler: str, seed: int) -> dict:
    code_dir = tempfile.mkdtemp(prefix="kiln-e2e-code-")
    with open(os.path.join(code_dir, "trial.py"), "w") as f:
        f.write(TRIAL_SCRIPT)
    with KilndProcess(build_dir, slots=2) as kilnd:
        client = FastClient(kilnd.url)
        spec = {
            "name": f"e2e-{sampler}-{seed}",
            "command": [sys.executable, "trial.py"],  # not a PATH lookup: see README
            "package": {"path": code_dir},
            "resources": {"slots": 1},
            "config": {"sleep_s": sleep_s},
            "search_space": {"x": {"type": "double", "low": -5, "high": 10},
                             "y": {"type": "double", "low": 0, "high": 15}},
            "algorithm": sampler,
            "objective": {"metric": "value", "goal": "minimize"},
            "max_trials": trials,
            "parallelism": 2,
            "seed": seed,
        }
        start = time.monotonic()
        created = client.request("POST", "/api/v1/experiments", spec)
        exp_id = created["id"]
        while True:
            exp = client.request("GET", f"/api/v1/experiments/{exp_id}")
            if exp["state"] not in ("SUBMITTED", "RUNNING"):
                break
            time.sleep(0.05)
        wall = time.monotonic() - start
        trials_out = client.request("GET", f"/api/v1/experiments/{exp_id}/trials")
        rows = trials_out["trials"] if isinstance(trials_out, dict) else trials_out
        values = [t["value"] for t in rows if t.get("value") is not None]
        cpu = kilnd.cpu_seconds()
        client.close()
    return {"impl": "kiln", "state": exp["state"], "wall_s": wall,
            "completed": len(values), "best": min(values) if values else None,
            "kilnd_cpu_s": cpu}


def _optuna_worker(storage: str, study_name: str, n: int, sleep_s: float) -> None:
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)

    def objective(trial):
        x = trial.suggest_float("x", -5, 10)
        y = trial.suggest_float("y", 0, 15)
        time.sleep(sleep_s)
        return branin(x, y)

    study.optimize(objective, n_trials=n)


def run_optuna(trials: int, sleep_s: float, sampler: str, seed: int) -> dict:
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    db_dir = tempfile.mkdtemp(prefix="optuna-e2e-")
    storage = f"sqlite:///{db_dir}/study.db"
    name = f"e2e-{sampler}-{seed}"
    made = (optuna.samplers.TPESampler(seed=seed, constant_liar=True) if sampler == "tpe"
            else optuna.samplers.RandomSampler(seed=seed))
    start = time.monotonic()
    optuna.create_study(study_name=name, storage=storage, sampler=made)
    workers = [multiprocessing.Process(target=_optuna_worker,
                                       args=(storage, name, trials // 2 + (i < trials % 2),
                                             sleep_s))
               for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.monotonic() - start
    study = optuna.load_study(study_name=name, storage=storage)
    values = [t.value for t in study.trials if t.value is not None]
    return {"impl": "optuna", "state": "FINISHED", "wall_s": wall, "completed": len(values),
            "best": min(values) if values else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-dir", default=os.environ.get("KILN_BUILD_DIR", "build/dev"))
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--sleep-ms", type=float, default=50)
    parser.add_argument("--sampler", choices=("tpe", "random"), default="tpe")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("kiln", "optuna"))
    args = parser.parse_args()
    sleep_s = args.sleep_ms / 1000
    print(f"# {machine_line()}; {args.trials} trials of a {args.sleep_ms:g} ms objective on "
          f"2 slots, sampler {args.sampler}", flush=True)
    ideal = args.trials * sleep_s / 2
    results: dict[str, list[float]] = {"kiln": [], "optuna": []}
    for rep in range(args.repeats):
        for impl in ("kiln", "optuna"):
            if args.only and impl != args.only:
                continue
            r = (run_kiln(args.build_dir, args.trials, sleep_s, args.sampler, rep + 1)
                 if impl == "kiln" else run_optuna(args.trials, sleep_s, args.sampler, rep + 1))
            r.update(repeat=rep, trials=args.trials, sleep_ms=args.sleep_ms,
                     sampler=args.sampler, ideal_s=ideal)
            print(json.dumps(r), flush=True)
            if r["completed"] == args.trials:
                results[impl].append(r["wall_s"])
    for impl, walls in results.items():
        if walls:
            per_trial = (median(walls) - ideal) / args.trials * 2 * 1000
            print(f"{impl:7s} median wall {median(walls):6.2f} s over {len(walls)} runs "
                  f"(ideal {ideal:.1f} s; {per_trial:.0f} ms overhead per trial per slot)")
    if results["kiln"] and results["optuna"]:
        print(f"ratio kiln/optuna wall: {median(results['kiln']) / median(results['optuna']):.2f}")


if __name__ == "__main__":
    main()
