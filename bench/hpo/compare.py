#!/usr/bin/env python3
"""Tables from the JSON lines of ``bench_hpo`` and ``optuna_bench.py``.

    python3 bench/hpo/compare.py kiln.jsonl optuna.jsonl

Quality: median [IQR] of log10 simple regret per function, sampler and budget, lower is
better, with the best Kiln and best Optuna sampler at each budget. Overhead: ms per
ask+tell per sampler and history size, with Optuna TPE / Kiln ratios (only figures from
the files given, i.e. measured in the same run). Standard library only.
"""

import json
import statistics
import sys
from collections import defaultdict


def quantiles(values):
    v = sorted(values)
    if len(v) == 1:
        return v[0], v[0], v[0]
    q = statistics.quantiles(v, n=4, method="inclusive")
    return q[1], q[0], q[2]


def load(paths):
    rows = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    rows.append(json.loads(line))
    return rows


def quality_table(rows):
    cells = defaultdict(list)  # (function, label, trial) -> regrets
    for r in rows:
        if r["kind"] == "quality":
            cells[(r["function"], f'{r["impl"]}:{r["sampler"]}', r["trial"])].append(
                r["best_regret_log10"])
    if not cells:
        return
    functions = sorted({k[0] for k in cells}, key=lambda f: [
        "branin", "hartmann6", "rosenbrock10", "levy10", "ackley5", f].index(f))
    budgets = sorted({k[2] for k in cells})
    labels = sorted({k[1] for k in cells})
    print("## Quality: log10 simple regret, median [IQR] (n seeds)\n")
    print("| function | sampler | " + " | ".join(f"{b} trials" for b in budgets) + " |")
    print("|---|---|" + "---|" * len(budgets))
    for fn in functions:
        for label in labels:
            parts = []
            for b in budgets:
                v = cells.get((fn, label, b))
                if not v:
                    parts.append("")
                    continue
                med, q1, q3 = quantiles(v)
                parts.append(f"{med:.2f} [{q1:.2f}, {q3:.2f}] ({len(v)})")
            if any(parts):
                print(f"| {fn} | {label} | " + " | ".join(parts) + " |")
    print("\n## Best sampler per implementation (median log10 regret)\n")
    print("| function | budget | best Kiln | best Optuna | Kiln - Optuna |")
    print("|---|---|---|---|---|")
    for fn in functions:
        for b in budgets:
            best = {}
            for impl in ("kiln", "optuna"):
                meds = [(statistics.median(v), label) for (f, label, bb), v in cells.items()
                        if f == fn and bb == b and label.startswith(impl + ":")
                        and not label.endswith(":random")]
                if meds:
                    best[impl] = min(meds)
            if len(best) == 2:
                (mk, lk), (mo, lo) = best["kiln"], best["optuna"]
                print(f"| {fn} | {b} | {mk:.2f} ({lk}) | {mo:.2f} ({lo}) | {mk - mo:+.2f} |")


def overhead_table(rows):
    cells = {}
    for r in rows:
        if r["kind"] == "overhead":
            # CPU time when present: steadier than wall time on a shared machine.
            cells[(r["function"], f'{r["impl"]}:{r["sampler"]}', r["n_trials"])] = r.get(
                "cpu_ms_per_ask_tell", r["ms_per_ask_tell"])
    if not cells:
        return
    sizes = sorted({k[2] for k in cells})
    print("\n## Overhead: CPU ms per ask+tell at n finished trials\n")
    print("| function | sampler | " + " | ".join(f"n={n}" for n in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    for fn in sorted({k[0] for k in cells}):
        for label in sorted({k[1] for k in cells if k[0] == fn}):
            parts = []
            for n in sizes:
                ms = cells.get((fn, label, n))
                ref = cells.get((fn, "optuna:tpe", n))
                if ms is None:
                    parts.append("")
                elif label.startswith("kiln:") and ref:
                    parts.append(f"{ms:.3f} (Optuna TPE / this: {ref / ms:.3g}x)")
                else:
                    parts.append(f"{ms:.3f}")
            print(f"| {fn} | {label} | " + " | ".join(parts) + " |")


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    rows = load(argv[1:])
    quality_table(rows)
    overhead_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
