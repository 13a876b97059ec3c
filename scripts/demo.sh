#!/usr/bin/env bash
# `make demo`: starts a local Kiln (kilnd with its embedded SQLite store and a local
# agent), submits a real Fashion-MNIST training with the kiln CLI, streams its progress,
# shows its metrics, and says where to look next.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=$(realpath "${KILN_BUILD_DIR:-build/dev}")/bin
DATA_DIR=${KILN_DEMO_DIR:-$(mktemp -d /tmp/kiln-demo.XXXXXX)}
PORT=${KILN_DEMO_PORT:-8470}
if (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null; then
  echo "demo: port $PORT is taken; using a free one"
  PORT=0
fi

password_file="$DATA_DIR/demo-admin-password"
mkdir -p "$DATA_DIR"
[ -f "$password_file" ] || (head -c 12 /dev/urandom | base64 | tr -d '/+=' > "$password_file")
export KILN_ADMIN_PASSWORD=$(cat "$password_file")

echo "== Starting Kiln: kilnd --local-agent --data-dir $DATA_DIR"
rm -f "$DATA_DIR/kilnd.url"
"$BIN/kilnd" --local-agent --no-gpus --data-dir "$DATA_DIR" --port "$PORT" > "$DATA_DIR/kilnd.log" 2>&1 &
KILND_PID=$!
trap 'kill $KILND_PID 2>/dev/null || true; wait $KILND_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  [ -s "$DATA_DIR/kilnd.url" ] && break
  kill -0 $KILND_PID 2>/dev/null || { echo "demo: kilnd exited; its log:"; cat "$DATA_DIR/kilnd.log"; exit 1; }
  sleep 0.1
done
export KILN_URL=$(cat "$DATA_DIR/kilnd.url")
export KILN_USER=admin KILN_PASSWORD=$KILN_ADMIN_PASSWORD
echo "   listening on $KILN_URL"

echo "== Submitting examples/fashion_mnist/train.py (PyTorch MLP, 3 epochs, 2 CPU slots)"
cd "$ROOT/examples/fashion_mnist"
set +e
JOB=$("$BIN/kiln" run --slots 2 --name fashion-mnist --json -- /usr/bin/python3 train.py | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
set -e
[ -n "$JOB" ] || { echo "demo: submission failed"; exit 1; }
echo "   job $JOB submitted; streaming its logs"
set +e
"$BIN/kiln" logs --follow "$JOB"
"$BIN/kiln" job show "$JOB" > /dev/null
STATE=$("$BIN/kiln" job show "$JOB" --json | /usr/bin/python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["state"])')
set -e

echo
echo "== Job $JOB: $STATE"
"$BIN/kiln" job show "$JOB"
echo
echo "== Metrics of job $JOB"
"$BIN/kiln" metrics "$JOB"
cat <<MSG

== Where to look next
   Everything is stored in $DATA_DIR (SQLite database kiln.db, packages, task folders).
   Start this Kiln again and look around:
       $BIN/kiln up --data-dir $DATA_DIR --port ${PORT/#0/8470} &
       export KILN_URL=http://127.0.0.1:${PORT/#0/8470} KILN_USER=admin KILN_PASSWORD=$KILN_ADMIN_PASSWORD
       $BIN/kiln jobs
       $BIN/kiln job show $JOB
       $BIN/kiln logs $JOB
       $BIN/kiln metrics $JOB --json
   Train with Kiln's C++ trainer instead:  kiln run --slots 2 --no-package -- $BIN/kiln-train
   The REST API is described in docs/api.md.
MSG
[ "$STATE" = "FINISHED" ]
