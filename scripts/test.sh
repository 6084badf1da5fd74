#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian 12 machine, then run all of it:
# lint, types, the service and smoke tests against real Granian and nginx, and the Ansible
# roles in molecule (podman containers). .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
need=()
command -v nginx >/dev/null || need+=(nginx)
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v chromium >/dev/null || need+=(chromium)
# promtool (alert rule checks) comes only with Debian's prometheus: ~19 MB, ~35 s to install.
command -v promtool >/dev/null || need+=(prometheus)
# shellcheck: actionlint runs it on the CI workflow's run: scripts (tests/test_workflow.py).
command -v shellcheck >/dev/null || need+=(shellcheck)
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing: ${need[*]} (install them as root: apt-get install -y ${need[*]})" >&2
    exit 2
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The host's own nginx must not hold ports the tests use: the tests run their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
  systemctl stop nginx || true
fi
# Nor does the prometheus server the package starts (only promtool is used).
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi
echo "nginx $(nginx -v 2>&1 | sed 's/.*\///'), podman $(podman --version | awk '{print $3}')"

step "python environment (.venv)"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check --editable '.[dev,bench]'

step "molecule base image (debootstrap, cached by podman)"
export CONTAINERS_CONF="$PWD/infra/containers.conf"
bash infra/images/build-base.sh

step "ruff and mypy --strict"
.venv/bin/ruff check .
.venv/bin/mypy

step "pytest"
.venv/bin/pytest "$@"
