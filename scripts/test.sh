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
# The whole suite (no arguments) also runs the device-side tests on Python 3.10, the oldest Python claimed.
if [ "$#" -eq 0 ]; then
    bash scripts/test-py310.sh
fi
