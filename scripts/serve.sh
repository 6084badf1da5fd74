#!/usr/bin/env bash
# Set up (once) and run the service on http://localhost:9000 with working defaults.
# Any setting from the README's table can be given in the environment:
#   WS_PING_INTERVAL=20 PORT=9100 scripts/serve.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -c 'import ensurepip' 2>/dev/null \
    || { echo "serve.sh: python3's venv module is missing: apt-get install python3-venv" >&2; exit 2; }
  python3 -m venv .venv
fi
[ -x .venv/bin/ws-service ] || .venv/bin/pip install --quiet --editable .
exec .venv/bin/ws-service
