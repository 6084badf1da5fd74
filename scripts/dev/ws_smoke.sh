#!/usr/bin/env bash
# WebSocket smoke test (docs/smoke.md).
#
#   scripts/dev/ws_smoke.sh [URL] [ws-smoke options...]      default URL ws://localhost:9000
#   scripts/dev/ws_smoke.sh [URL] --manual                   guided manual mode with wscat
#
# Client choice (WS_SMOKE_CLIENT=auto|websocat|wscat|python overrides it):
#   1. websocat, when installed: scripted checks of /ws/echo and /ws/health;
#   2. wscat, for the guided manual mode: only when asked (--manual or WS_SMOKE_MANUAL=1) and
#      stdin/stdout are a terminal;
#   3. otherwise the project's Python checker, ws-smoke (all checks, with diagnoses).
# The script always says which client it used. Exit status: that client's.
set -euo pipefail

url="ws://localhost:9000"
if [[ $# -gt 0 && $1 != -* ]]; then
    url=$1
    shift
fi
manual=${WS_SMOKE_MANUAL:-0}
args=()
for arg in "$@"; do
    if [[ $arg == --manual ]]; then manual=1; else args+=("$arg"); fi
done
choice=${WS_SMOKE_CLIENT:-auto}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

# ws:// base for the manual clients: http(s) -> ws(s), endpoint paths trimmed.
base=$url
case $base in
    http://*) base="ws://${base#http://}" ;;
    https://*) base="wss://${base#https://}" ;;
    ws://* | wss://*) ;;
    *) base="ws://$base" ;;
esac
base=${base%/}
for suffix in /ws/echo /ws/health /ws; do base=${base%"$suffix"}; done

run_websocat() {
    echo "client: websocat ($(command -v websocat))"
    local failed=0 out
    echo "== /ws/health: expect a health_status greeting"
    if out=$(timeout 10 websocat -n1 "$base/ws/health") && [[ $out == *'"type":"health_status"'* ]]; then
        echo "PASS $out"
    else
        echo "FAIL /ws/health: ${out:-no message}"; failed=1
    fi
    echo "== /ws/echo: expect a welcome, then the echo of what we send"
    if out=$( (echo '{"type":"smoke_test","data":"hello"}'; sleep 2) \
            | timeout 10 websocat "$base/ws/echo" | head -n 2) \
            && [[ $out == *'"type":"echo"'* && $out == *'"data":"hello"'* ]]; then
        echo "PASS $(tail -n 1 <<<"$out")"
    else
        echo "FAIL /ws/echo: ${out:-no message}"; failed=1
    fi
    if [[ $failed -ne 0 ]]; then
        echo "for diagnoses run the Python checker: WS_SMOKE_CLIENT=python $0 $url"
    fi
    return "$failed"
}

run_wscat() {
    echo "client: wscat ($(command -v wscat)), guided manual mode"
    local endpoint
    for endpoint in /ws/echo /ws/health /ws; do
        echo
        echo "== $base$endpoint"
        case $endpoint in
            /ws/echo) echo 'expect a welcome; type {"type":"test","data":"hello"} and expect an echo whose original matches; Ctrl-C closes with 1000' ;;
            /ws/health) echo 'expect health_status with config and environment, then a heartbeat every ping_interval; type {"type":"get_status"}; stay past 60 s to prove no proxy idle timeout' ;;
            /ws) echo 'type {"type":"ping"} and expect a pong; anything else is echoed under "data"' ;;
        esac
        wscat -c "$base$endpoint" || true
    done
}

run_python() {
    local checker=()
    if command -v ws-smoke >/dev/null 2>&1; then
        checker=(ws-smoke)
    elif [[ -x $repo/.venv/bin/ws-smoke ]]; then
        checker=("$repo/.venv/bin/ws-smoke")
    elif command -v python3 >/dev/null 2>&1; then
        checker=(env "PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}" python3 -m smoke)
    else
        echo "ws_smoke.sh: no client: install websocat or wscat, or the project (ws-smoke)" >&2
        return 2
    fi
    echo "client: python (ws-smoke)"
    "${checker[@]}" "$url" ${args[@]+"${args[@]}"}
}

interactive=0
if [[ -t 0 && -t 1 ]]; then interactive=1; fi

case $choice in
    websocat) run_websocat; exit $? ;;
    wscat) run_wscat; exit $? ;;
    python) run_python; exit $? ;;
    auto) ;;
    *) echo "ws_smoke.sh: WS_SMOKE_CLIENT must be auto, websocat, wscat or python" >&2; exit 2 ;;
esac

if [[ $manual -eq 1 ]] && command -v wscat >/dev/null 2>&1 && [[ $interactive -eq 1 ]]; then
    run_wscat; exit $?
fi
if [[ $manual -ne 1 ]] && command -v websocat >/dev/null 2>&1; then
    run_websocat; exit $?
fi
if ! command -v websocat >/dev/null 2>&1; then echo "websocat not found"; fi
if command -v wscat >/dev/null 2>&1; then
    if [[ $interactive -ne 1 ]]; then
        echo "wscat found, but not interactive (no terminal): guided manual mode skipped"
    elif [[ $manual -ne 1 ]]; then
        echo "wscat found: pass --manual for the guided manual mode"
    fi
else
    hint=""
    if [[ $manual -eq 1 ]]; then hint=" (--manual needs it: npm install -g wscat)"; fi
    echo "wscat not found$hint"
fi
run_python
