#!/usr/bin/python3
"""In-process batched forward throughput of a TorchScript model: the limit on this machine.

Loads MODEL_DIR/model.pt and its signature.json, then for each batch size runs forward on a
[batch, *shape] tensor of the payload's sample repeated, under torch.inference_mode, for
--seconds, and prints one JSON line per batch size: {"batch", "forwards", "samples",
"seconds", "cpu_seconds",
"samples_per_s", "samples_per_cpu_s"}. No HTTP, no JSON decoding: only the model.

Threads are pinned: torch.set_num_threads(--threads) (the harness also sets
OMP_NUM_THREADS/OPENBLAS_NUM_THREADS before torch starts). To use N cores the harness starts
N of these processes with the same --start-at (a Unix time) so that they measure the same
seconds, and adds their samples.

    OMP_NUM_THREADS=1 /usr/bin/python3 bench/serving/inprocess.py MODEL_DIR PAYLOAD \
        --batches 1,32,128 --seconds 3 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("payload", help="a Watson ML payload file (its first sample is used)")
    parser.add_argument("--batches", default="1,32,128")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--start-at", type=float, default=0.0,
                        help="Unix time to start each batch size's timed loop (0: at once)")
    parser.add_argument("--print-output", action="store_true",
                        help="print the model's output for the payload's sample as JSON "
                             "(the reference every server's answer is checked against) and exit")
    opts = parser.parse_args()

    torch.set_num_threads(opts.threads)
    model = torch.jit.load(os.path.join(opts.model_dir, "model.pt")).eval()
    with open(os.path.join(opts.model_dir, "signature.json")) as f:
        shape = json.load(f)["inputs"][0]["shape"]
    with open(opts.payload) as f:
        sample = torch.tensor(json.load(f)["input_data"][0]["values"][0],
                              dtype=torch.float32).reshape(shape)

    if opts.print_output:
        with torch.inference_mode():
            print(json.dumps(model(sample.unsqueeze(0)).tolist()))
        return

    start_at = opts.start_at
    for batch in [int(b) for b in opts.batches.split(",")]:
        inputs = sample.expand([batch, *shape]).contiguous()
        with torch.inference_mode():
            for _ in range(20):  # warm-up: allocator, TorchScript profiling runs
                model(inputs)
            if start_at:
                time.sleep(max(0.0, start_at - time.time()))
            forwards = 0
            cpu_begin = time.process_time()
            begin = time.perf_counter()
            deadline = begin + opts.seconds
            now = begin
            while now < deadline:
                model(inputs)
                forwards += 1
                now = time.perf_counter()
        elapsed = now - begin
        cpu = time.process_time() - cpu_begin
        # Per CPU second as well: on a shared machine other work takes cores away from the
        # wall-clock figure, much less from this one.
        print(json.dumps({"batch": batch, "forwards": forwards, "samples": forwards * batch,
                          "seconds": round(elapsed, 4), "cpu_seconds": round(cpu, 4),
                          "samples_per_s": round(forwards * batch / elapsed, 1),
                          "samples_per_cpu_s": round(forwards * batch / cpu, 1)}), flush=True)
        if start_at:
            # The next batch size starts together too: a fixed gap after this one ends.
            start_at += opts.seconds + 2.0


if __name__ == "__main__":
    main()
