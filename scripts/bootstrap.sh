#!/usr/bin/env bash
# One-time (and idempotent) set-up: the Rust wasm32 toolchain, a virtual environment at .venv in the
# repository root, and the project installed into it with its development extras. Quiet when done already.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/ensure-wasm-toolchain.sh

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "error: $python not found; install Python >= 3.10 (Debian: apt-get install -y python3 python3-venv)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    if ! "$python" -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        echo "error: '$python -m venv' failed; install the venv module (Debian: apt-get install -y python3-venv)" >&2
        exit 1
    fi
fi

# Reinstall only when the dependency list changed.
stamp=".venv/.flclient-installed"
want="$(cat pyproject.toml scripts/flower-constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    log=".venv/pip-install.log"
    echo "installing Python dependencies into .venv (log: $log)" >&2
    if ! { .venv/bin/python -m pip install --upgrade pip &&
           .venv/bin/python -m pip install -e '.[dev]' -c scripts/flower-constraints.txt; } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "error: installing the Python dependencies failed; the full log is $log" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi
