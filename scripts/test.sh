#!/usr/bin/env bash
# Set up if needed, then lint, type-check and run the whole test suite (and its device-side part on Python 3.10).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
# A full run (no arguments) also runs the device-side tests on Python 3.10, the oldest Python claimed, and the
# other end of the supported Flower range (under a minute warm, about 90 s with a fresh venv).
if [ "$#" -eq 0 ]; then
    bash scripts/test-py310.sh
    if [ "${FLCLIENT_SKIP_FLOWER_RANGE:-0}" = "1" ]; then
        echo "skipped scripts/test-flower-range.sh: FLCLIENT_SKIP_FLOWER_RANGE=1" >&2
    else
        bash scripts/test-flower-range.sh
    fi
fi
