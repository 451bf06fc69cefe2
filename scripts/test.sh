#!/usr/bin/env bash
# Set up if needed, then lint, type-check and run the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
# The other end of the supported Flower range (under a minute warm, about 90 s with a fresh venv); only for a full run.
if [ "$#" -eq 0 ]; then
    if [ "${FLCLIENT_SKIP_FLOWER_RANGE:-0}" = "1" ]; then
        echo "skipped scripts/test-flower-range.sh: FLCLIENT_SKIP_FLOWER_RANGE=1" >&2
    else
        bash scripts/test-flower-range.sh
    fi
fi
