#!/usr/bin/python3
"""KServe v2 binary tensor data vs JSON, on the same kiln-serve, in the same run.

tritonclient.http sends its tensors as binary data by default (the JSON request, its length
in Inference-Header-Content-Length, then the raw float32 bytes) and asks the outputs back
the same way. This measures what that saves on the models and the image of serving_bench.py
(models.py), one image per request, against two anchors measured in the same run:

  wml            the Watson ML v4 JSON payload of serving_bench.py
  kserve-json    KServe v2 with the 784 values in "data"
  kserve-binary  KServe v2 with the 784 values as 3,136 bytes after the JSON, and the
                 outputs asked back as binary ("binary_data_output": true)

Each is sent by wrk (-t1, --latency, wml_post.lua with the header added by -H) straight to
a kiln-serve replica (batching on) and, with --master, to a real kilnd routing to its
replica. The payloads take turns (rounds of wml, kserve-json, kserve-binary, then the
reverse order) so that a drift of the machine falls on all of them; each row records
req/s, p50, p99 and the server's CPU time per request. Every answer is checked once
against the in-process output first. Asserts nothing about speed.

    /usr/bin/python3 bench/serving/kserve_binary_bench.py --build-dir build/sbench
    /usr/bin/python3 bench/serving/kserve_binary_bench.py --models mlp --master --quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
import time
import urllib.request
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import serving_bench as sb  # noqa: E402

PAYLOADS = ("wml", "kserve-json", "kserve-binary")


class Payloads:
    """The three request bodies of one model, written where wrk reads them."""

    def __init__(self, bench: sb.Bench, model: str) -> None:
        with open(os.path.join(bench.model_dir(model), "signature.json")) as f:
            spec = json.load(f)["inputs"][0]
        values = json.loads(bench.body)["input_data"][0]["values"][0]
        shape = [1, *spec["shape"]]
        self.bodies: dict[str, bytes] = {"wml": bench.body}
        self.headers: dict[str, dict[str, str]] = {"wml": {}, "kserve-json": {}}
        self.bodies["kserve-json"] = json.dumps({"inputs": [{
            "name": spec["name"], "shape": shape, "datatype": "FP32", "data": values}]}).encode()
        head = json.dumps({
            "inputs": [{"name": spec["name"], "shape": shape, "datatype": "FP32",
                        "parameters": {"binary_data_size": 4 * len(values)}}],
            "parameters": {"binary_data_output": True}}).encode()
        self.bodies["kserve-binary"] = head + struct.pack(f"<{len(values)}f", *values)
        self.headers["kserve-binary"] = {"Inference-Header-Content-Length": str(len(head))}
        self.files = {}
        for kind, body in self.bodies.items():
            self.files[kind] = os.path.join(bench.work, f"{model}-{kind}.body")
            with open(self.files[kind], "wb") as f:
                f.write(body)


def outputs_of(kind: str, body: bytes, json_length: Optional[str]) -> list[float]:
    """The one sample's outputs in any of the three answers."""
    if kind == "wml":
        return json.loads(body)["predictions"][0]["values"][0]
    if json_length is None:
        return json.loads(body)["outputs"][0]["data"]
    n = int(json_length)
    size = json.loads(body[:n])["outputs"][0]["parameters"]["binary_data_size"]
    return list(struct.unpack(f"<{size // 4}f", body[n:n + size]))


def check(bench: sb.Bench, side: str, model: str, kind: str, url: str, payloads: Payloads,
          headers: dict[str, str]) -> None:
    request = urllib.request.Request(url, data=payloads.bodies[kind], method="POST",
                                     headers={"Content-Type": "application/json", **headers,
                                              **payloads.headers[kind]})
    with urllib.request.urlopen(request, timeout=30) as reply:
        got = outputs_of(kind, reply.read(), reply.headers.get("Inference-Header-Content-Length"))
    if kind == "kserve-binary" and reply.headers.get("Inference-Header-Content-Length") is None:
        raise SystemExit(f"{side} ({model}): the binary request got no binary answer")
    want = bench.reference[model]
    if len(got) != len(want) or max(abs(a - b) for a, b in zip(got, want)) > sb.OUTPUT_TOLERANCE:
        raise SystemExit(f"{side} ({model}, {kind}): answer differs from the in-process output")


def run(bench: sb.Bench, side: str, model: str, routes: dict[str, str], roots: list[int],
        headers: dict[str, str], metrics_url: Optional[str], rounds: int) -> None:
    payloads = Payloads(bench, model)
    wml_payload = bench.payload, bench.body  # what serving_bench's helpers send
    for kind in PAYLOADS:
        check(bench, side, model, kind, routes[kind], payloads, headers)
    for r in range(rounds):
        for kind in PAYLOADS if r % 2 == 0 else reversed(PAYLOADS):
            bench.payload, bench.body = payloads.files[kind], payloads.bodies[kind]
            bench.measure(f"{side} {kind}", model, routes[kind], roots,
                          {**headers, **payloads.headers[kind]}, metrics_url)
    bench.payload, bench.body = wml_payload


def kserve_routes(base: str, wml_route: str, name: str) -> dict[str, str]:
    infer = f"{base}/v2/models/{name}/infer"
    return {"wml": base + wml_route, "kserve-json": infer, "kserve-binary": infer}


def report(bench: sb.Bench, models: list[str], sides: list[str]) -> None:
    print("\nmedian over rounds: req/s | p99 ms | CPU us/req")
    for model in models:
        for side in sides:
            figures = {}
            for kind in PAYLOADS:
                rows = [r for r in bench.rows
                        if r["model"] == model and r["side"] == f"{side} {kind}"]
                for c in sorted({r["concurrency"] for r in rows}):
                    at = [r for r in rows if r["concurrency"] == c]
                    figures[(kind, c)] = tuple(statistics.median(r[k] for r in at) for k in
                                               ("req_per_s", "p99_ms", "cpu_us_per_req"))
            for c in sorted({c for _, c in figures}):
                cells = [f"{kind} {figures[(kind, c)][0]:8.0f} {figures[(kind, c)][1]:6.2f} "
                         f"{figures[(kind, c)][2]:6.0f}" for kind in PAYLOADS
                         if (kind, c) in figures]
                print(f"  {model:4} {side:10} c={c:<3} " + " | ".join(cells))
                if ("kserve-binary", c) in figures and ("kserve-json", c) in figures:
                    b, j = figures[("kserve-binary", c)], figures[("kserve-json", c)]
                    w = figures.get(("wml", c))
                    print(f"  {'':4} {'':10}       binary/kserve-json: {b[0] / j[0]:.2f}x req/s, "
                          f"{b[2] / j[2]:.2f}x CPU per request"
                          + (f"; binary/wml: {b[0] / w[0]:.2f}x req/s" if w else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-dir", default=sb.default_build_dir())
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--master", action="store_true",
                        help="also through a real kilnd (its KServe route, bundles included)")
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-us", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke: 2 s per point, 1 round")
    parser.add_argument("--keep", action="store_true")
    opts = parser.parse_args()
    opts.models = [m for m in opts.models.split(",") if m]
    if any(m not in sb.MODELS for m in opts.models):
        parser.error(f"--models: choose from {','.join(sb.MODELS)}")
    opts.concurrency = [int(c) for c in opts.concurrency.split(",")]
    if opts.quick:
        opts.duration, opts.warmup, opts.rounds = 2.0, 1.0, 1
    opts.build_dir = os.path.abspath(opts.build_dir)
    # What serving_bench.Bench reads besides these.
    opts.threads = len(os.sched_getaffinity(0))
    opts.serve_args, opts.master_core = "", None

    bench = sb.Bench(opts)
    print(f"kserve_binary_bench: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}, {os.cpu_count()} "
          f"CPUs, load average {sb.load_average()}; wrk -t1 -c{{{opts.concurrency}}} "
          f"-d{opts.duration:g}s x {opts.rounds} rounds; kiln-serve --threads {opts.threads} "
          f"--max-batch-size {opts.max_batch_size}")
    sides = ["kiln-serve"] + (["master"] if opts.master else [])
    try:
        for model in opts.models:
            print(f"[{model}] kiln-serve", flush=True)
            started = bench.start_kiln_serve(model, "kiln-serve", opts.max_batch_size)
            if started is not None:
                server, port = started
                try:
                    base = f"http://127.0.0.1:{port}"
                    routes = kserve_routes(base, sb.WML_ROUTE.format(id="x"), f"bench-{model}")
                    bench.wait_answering(routes["wml"], server)
                    run(bench, "kiln-serve", model, routes, [server.proc.pid], {},
                        f"{base}/metrics", opts.rounds)
                finally:
                    server.stop()
            if opts.master:
                print(f"[{model}] master", flush=True)
                with bench.deployed(model) as master:
                    if master is not None:
                        base, deployment, roots, headers, metrics_url = master
                        routes = kserve_routes(base, sb.WML_ROUTE.format(id=deployment["id"]),
                                               deployment["name"])
                        bench.wait_answering(routes["wml"], None, headers)
                        run(bench, "master", model, routes, roots, headers, metrics_url,
                            opts.rounds)
        report(bench, opts.models, sides)
    finally:
        bench.close()


if __name__ == "__main__":
    main()
