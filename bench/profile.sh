#!/usr/bin/env bash
# Profile the service under the benchmark's /ws load with py-spy (bounded: SECONDS_ seconds).
#   bench/profile.sh [OUT.svg]      (default bench/results/profile.svg; also writes .raw)
# The service is pinned to core 0 and the load to core 1, as in `python -m bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=${1:-bench/results/profile.svg}
SECONDS_=${PROFILE_SECONDS:-10}
PORT=$($PY -c 'from bench.servers import free_port; print(free_port())')
mkdir -p "$(dirname "$OUT")"
PORT=$PORT LOG_LEVEL=warning taskset -c 0 .venv/bin/ws-service >/dev/null 2>&1 &
SVC=$!
trap 'kill $SVC 2>/dev/null || true' EXIT
for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
.venv/bin/py-spy record --pid $SVC --rate 500 --nonblocking -d "$SECONDS_" -o "$OUT" &
SPY=$!
.venv/bin/py-spy record --pid $SVC --rate 500 --nonblocking -d "$SECONDS_" --format raw \
    -o "${OUT%.svg}.raw" >/dev/null 2>&1 &
SPY2=$!
sleep 0.5
taskset -c 1 $PY - "$PORT" "$SECONDS_" <<'PYEOF'
import asyncio, sys
from bench import load
port, seconds = int(sys.argv[1]), float(sys.argv[2])
r = asyncio.run(load.echo_load(f"ws://127.0.0.1:{port}/ws", 100, seconds - 1, 5_000_000))
print(f"{r.messages / r.seconds:.0f} messages/s during the profile")
PYEOF
wait $SPY $SPY2 || true
echo "flame graph: $OUT  collapsed stacks: ${OUT%.svg}.raw"
