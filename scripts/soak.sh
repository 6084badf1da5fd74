#!/usr/bin/env bash
# Soak run: 10,000 WebSocket connections through nginx (rendered from the deployment's role
# template) to ws-service, held 600 s with heartbeats, then 20,000 connect/close cycles.
# All on 127.0.0.1, every phase bounded. Prints the figures (drops by close code, heartbeat
# lateness p50/p99, RSS and fds before/after) and exits 0 only if nothing dropped and fds/RSS
# came back. Options pass through, e.g.:
#   scripts/soak.sh --connections 2000 --duration 60 --churn 5000
# See docs/reliability.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
[ -x "$PY" ] || { echo "no .venv: run scripts/test.sh (or pip install -e '.[dev]') first" >&2; exit 2; }
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "nginx is required (apt-get install -y nginx)" >&2; exit 2; }
exec "$PY" -m bench.soak --connections 10000 --duration 600 "$@"
