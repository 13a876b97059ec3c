#!/usr/bin/env bash
# Runs every test: C++ unit tests (ctest), the Python package's tests, and the
# integration tests that drive real kilnd / kiln-agent / kiln-shim processes.
# Expects a build in $KILN_BUILD_DIR (default build/dev); `make test` builds first.
set -uo pipefail
cd "$(dirname "$0")/.."
export KILN_BUILD_DIR=${KILN_BUILD_DIR:-build/dev}
export KILN_BUILD_DIR=$(realpath "$KILN_BUILD_DIR")
failed=()

echo "== C++ unit tests (ctest)"
ctest --test-dir "$KILN_BUILD_DIR" -j 2 --output-on-failure || failed+=("C++ unit tests")

echo "== Python package tests"
/usr/bin/python3 -m pytest -q -p no:cacheprovider python/tests || failed+=("Python package tests")

echo "== Integration tests"
/usr/bin/python3 -m pytest -q -p no:cacheprovider --durations=10 tests/integration || failed+=("integration tests")

if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all test suites passed"
