#!/bin/bash
# Runs tests/gpu/gpu_check.py against a fresh kilnd on this (GPU) machine.
# KILN_BIN: folder with kilnd, kiln-agent, kiln-shim (default build/dev/bin);
# FMNIST_DIR: Fashion-MNIST *.gz files; results in $OUT (default /tmp) as gpu_check.json.
set -x
cd "$(dirname "$0")/../.."
B=${KILN_BIN:-build/dev/bin}
export OUT=${OUT:-/tmp} PYTHONUNBUFFERED=1 KILN_ADMIN_PASSWORD=password1 KILN_PYTHON_PATH=$PWD/python
nvidia-smi -L; python3 -c "import torch; print(torch.__version__, torch.cuda.is_available())"
rm -rf /tmp/k && mkdir -p /tmp/k
$B/kilnd --data-dir /tmp/k --port 0 --local-agent --slots 4 --log-level info > $OUT/kilnd.log 2>&1 &
for i in $(seq 1 50); do [ -f /tmp/k/kilnd.url ] && break; sleep 0.2; done
timeout 330 python3 tests/gpu/gpu_check.py
status=$?
kill %1
exit $status
