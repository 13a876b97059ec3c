#!/usr/bin/env bash
# Runs the Kiln benchmarks with small default sizes (a few minutes on 2 cores).
# Builds nothing. Usage: bench/run_all.sh BUILD_DIR
#   BUILD_DIR must hold bin/kilnd, bin/kiln-shim, bin/kiln-agent and, for the metrics
#   benchmark, bin/bench_metrics_ingest, for the serving benchmark bin/kiln-serve (each
#   skipped with a note when it is missing).
# Full sizes: see bench/README.md.
set -euo pipefail
if [[ $# -ne 1 ]]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
export KILN_BUILD_DIR=$build
for b in kilnd kiln-shim kiln-agent; do
  [[ -x $build/bin/$b ]] || { echo "$build/bin/$b is missing: build it first" >&2; exit 2; }
done
echo "run_all: $(date -Iseconds), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg), build $build"

echo; echo "### platform_overhead (small: 10,000 training images, 1 pair)"
/usr/bin/python3 "$here/platform_overhead.py" --build-dir "$build" --repeats 1 \
  --train-args "--epochs 1 --train-limit 10000 --test-limit 2000"

echo; echo "### submit_latency (small: 50 sequential jobs, 200 jobs for throughput)"
/usr/bin/python3 "$here/submit_latency.py" --build-dir "$build" -n 50 --jobs 200

echo; echo "### elastic (smoke: elastic_bench.py all --quick; tuned torchrun and Kiln, 1 run each)"
/usr/bin/python3 "$here/elastic/elastic_bench.py" all --quick --build-dir "$build"

echo; echo "### serving (smoke: serving_bench.py all --quick; kiln-serve, Flask, gunicorn, master)"
if [[ -x $build/bin/kiln-serve ]] && command -v wrk >/dev/null; then
  /usr/bin/python3 "$here/serving/serving_bench.py" all --quick --build-dir "$build"
else
  echo "skipped: needs $build/bin/kiln-serve (a torch build) and wrk (scripts/install-deps.sh)"
fi

echo; echo "### metrics_ingest (small: 200,000 points)"
if [[ -x $build/bin/bench_metrics_ingest ]]; then
  "$build/bin/bench_metrics_ingest" --kilnd "$build/bin/kilnd" --points 200000
else
  echo "skipped: $build/bin/bench_metrics_ingest is not built (needs add_subdirectory(bench)" \
       "in the top-level CMakeLists.txt, then: cmake --build $build --target bench_metrics_ingest)"
fi
