#!/usr/bin/env python3
"""Same-time A/B of two builds through the master: alternating rounds of serving_bench's
`master` side (a real kilnd, the model deployed, wrk on the Watson ML route).

    /usr/bin/python3 bench/serving/master_ab.py /tmp/build-a build/sbench --rounds 3

Each build directory holds bin/kilnd, kiln-agent, kiln-shim and kiln-serve (copy
build/sbench/bin somewhere before rebuilding to keep the "before" side). Rounds alternate
the order (A B, B A, ...) so that a drift in the machine's load hits both sides alike.
Prints one line per run: req/s, CPU per request (all of kilnd's tree) and kilnd's own
share, p99, the replica's mean batch and the load average before the run. Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serving_bench  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build_a")
    parser.add_argument("build_b")
    parser.add_argument("--model", default="mlp", choices=serving_bench.MODELS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="64", help="wrk -c values")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    args = parser.parse_args()

    def opts(build: str) -> argparse.Namespace:
        return argparse.Namespace(
            build_dir=os.path.abspath(build), models=[args.model], threads=2,
            max_batch_size=64, max_queue_delay_us=0, keep=False, master_core=None,
            serve_args="", concurrency=[int(c) for c in args.concurrency.split(",")],
            duration=args.duration, warmup=2.0)

    builds = {"A": args.build_a, "B": args.build_b}
    bench = serving_bench.Bench(opts(args.build_a))
    runs = []
    try:
        for r in range(args.rounds):
            for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
                bench.opts = opts(builds[name])
                first = len(bench.rows)
                bench.run_master(args.model)
                runs += [(name, row) for row in bench.rows[first:]]
    finally:
        bench.close()
    print(f"\nA = {args.build_a}, B = {args.build_b}, model {args.model}")
    for name, row in runs:
        print(f"{name} c={row['concurrency']}: {row['req_per_s']:,.0f} req/s, "
              f"{row['cpu_us_per_req']:.1f} CPU us/req (kilnd {row['front_cpu_us_per_req']:.1f}), "
              f"p99 {row['p99_ms']:.2f} ms, mean batch {row['mean_batch']:.1f}, "
              f"load {row['load']}")


if __name__ == "__main__":
    main()
