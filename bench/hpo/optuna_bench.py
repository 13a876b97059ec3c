#!/usr/bin/python3
"""Optuna 3.1 on the same functions, domains and budgets as ``bench_hpo`` (functions.h).

Prints the same JSON lines as the C++ harness (``"impl": "optuna"``), for
``compare.py``. Needs Debian's python3-optuna and python3-cmaes, so run it with
``/usr/bin/python3`` (the pyenv python first on PATH has neither).

    /usr/bin/python3 bench/hpo/optuna_bench.py quality --seeds 20 --jobs 2 > optuna.jsonl
    /usr/bin/python3 bench/hpo/optuna_bench.py overhead --sizes 100,1000,5000 >> optuna.jsonl
"""

import argparse
import json
import math
import multiprocessing
import sys
import time
import warnings

import numpy as np
import optuna

REGRET_FLOOR = 1e-12
CHECKPOINTS = (50, 100, 200)


def branin(x):
    a, b, c, r, s, t = 1, 5.1 / (4 * math.pi**2), 5 / math.pi, 6, 10, 1 / (8 * math.pi)
    return a * (x[1] - b * x[0] ** 2 + c * x[0] - r) ** 2 + s * (1 - t) * math.cos(x[0]) + s


_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                 [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H_P = np.array([[0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
                 [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
                 [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
                 [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381]])


def hartmann6(x):
    x = np.asarray(x)
    return float(-np.sum(_H_ALPHA * np.exp(-np.sum(_H_A * (x - _H_P) ** 2, axis=1))))


def rosenbrock(x):
    x = np.asarray(x)
    return float(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))


def levy(x):
    w = 1 + (np.asarray(x) - 1) / 4
    s = math.sin(math.pi * w[0]) ** 2
    s += float(np.sum((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(math.pi * w[:-1] + 1) ** 2)))
    s += (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)
    return float(s)


def ackley(x):
    x = np.asarray(x)
    d = len(x)
    return float(-20 * math.exp(-0.2 * math.sqrt(np.sum(x**2) / d))
                 - math.exp(np.sum(np.cos(2 * math.pi * x)) / d) + 20 + math.e)


# name -> (low, high, optimum, f); must match functions.h.
FUNCTIONS = {
    "branin": ([-5, 0], [10, 15], 0.397887357729738, branin),
    "hartmann6": ([0.0] * 6, [1.0] * 6, -3.32236801141551, hartmann6),
    "rosenbrock10": ([-5.0] * 10, [10.0] * 10, 0.0, rosenbrock),
    "levy10": ([-10.0] * 10, [10.0] * 10, 0.0, levy),
    "ackley5": ([-32.768] * 5, [32.768] * 5, 0.0, ackley),
}
SAMPLERS = ("random", "tpe", "tpe-mv", "cmaes")


def make_sampler(name, seed):
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if name == "tpe-mv":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    raise ValueError(f"unknown sampler {name}")


def objective_for(fn_name):
    low, high, _, f = FUNCTIONS[fn_name]

    def objective(trial):
        return f([trial.suggest_float(f"x{i}", low[i], high[i]) for i in range(len(low))])

    return objective


def quality_run(args):
    sampler_name, fn_name, seed, trials = args
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optimum = FUNCTIONS[fn_name][2]
    study = optuna.create_study(sampler=make_sampler(sampler_name, seed))
    study.optimize(objective_for(fn_name), n_trials=trials)
    values = [t.value for t in study.trials]
    lines = []
    for cp in sorted(set(CHECKPOINTS + (trials,))):
        if cp > trials:
            continue
        best = min(values[:cp])
        lines.append(json.dumps({
            "kind": "quality", "impl": "optuna", "sampler": sampler_name,
            "function": fn_name, "seed": seed, "trial": cp,
            "best_regret_log10": math.log10(max(best - optimum, REGRET_FLOOR))}))
    return lines


def overhead(sampler_name, fn_name, n, reps):
    """ms per ask+tell with n finished trials (uniform random points, as bench_hpo)."""
    warnings.simplefilter("ignore")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    low, high, _, f = FUNCTIONS[fn_name]
    dists = {f"x{i}": optuna.distributions.FloatDistribution(low[i], high[i])
             for i in range(len(low))}
    rng = np.random.default_rng(12345)
    study = optuna.create_study(sampler=make_sampler(sampler_name, 0))
    frozen = []
    for _ in range(n):
        x = [float(rng.uniform(low[i], high[i])) for i in range(len(low))]
        frozen.append(optuna.trial.create_trial(
            params={f"x{i}": x[i] for i in range(len(low))}, distributions=dists, value=f(x)))
    study.add_trials(frozen)
    objective = objective_for(fn_name)
    trial = study.ask()  # warm-up, untimed: first-call imports and caches
    study.tell(trial, objective(trial))
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(reps):
        trial = study.ask()
        study.tell(trial, objective(trial))
    ms = (time.perf_counter() - start) * 1000 / reps
    cpu_ms = (time.process_time() - cpu_start) * 1000 / reps
    return json.dumps({"kind": "overhead", "impl": "optuna", "sampler": sampler_name,
                       "function": fn_name, "n_trials": n, "reps": reps,
                       "ms_per_ask_tell": ms, "cpu_ms_per_ask_tell": cpu_ms})


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("mode", choices=["quality", "overhead"])
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--functions", default=None, help="comma list; default all (quality) "
                    "or branin (overhead)")
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=1, help="worker processes (quality)")
    args = ap.parse_args()
    samplers = args.samplers.split(",")
    if args.mode == "quality":
        functions = (args.functions or ",".join(FUNCTIONS)).split(",")
        # Seeds outermost, so a run cut short still covers every function and sampler.
        work = [(s, fn, seed, args.trials) for seed in range(args.seeds) for fn in functions
                for s in samplers]
        with multiprocessing.Pool(args.jobs) as pool:
            for lines in pool.imap(quality_run, work):
                print("\n".join(lines), flush=True)
    else:
        functions = (args.functions or "branin").split(",")
        for fn in functions:
            for s in samplers:
                if s == "random":
                    continue
                for n in (int(v) for v in args.sizes.split(",")):
                    print(overhead(s, fn, n, args.reps), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
