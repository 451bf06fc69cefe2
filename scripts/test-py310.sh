#!/usr/bin/env bash
# The device-side tests on Python 3.10, the oldest Python the device install claims (requires-python >= 3.10).
#
# The coordinator extras need flwr, hence Python >= 3.11, so only the device core is installed here: the project
# itself without extras (pip resolves its dependencies for 3.10, which is part of what is checked) plus pytest and
# hypothesis, into .venv-py310. A 3.10 interpreter is taken from $PYTHON310, else `python3.10` on PATH, else
# pyenv's; without one this prints why and exits 0 (the 3.11 suite still ran). Re-installs only when
# pyproject.toml changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

is_python310() {
    "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1
}

find_python310() {
    local p
    # pyenv's shims answer `command -v` even when the version is not selected: each candidate is run to be sure.
    for p in "${PYTHON310:-}" "$(command -v python3.10 || true)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10.*/bin/python3.10; do
        if [ -n "$p" ] && [ -x "$p" ] && is_python310 "$p"; then echo "$p"; return; fi
    done
}

python310="$(find_python310 || true)"
if [ -z "$python310" ]; then
    echo "test-py310: no Python 3.10 found (set PYTHON310, or install one with pyenv): the 3.10 device tests did not run" >&2
    exit 0
fi

venv=".venv-py310"
stamp="$venv/.flclient-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    rm -rf "$venv"
    "$python310" -m venv "$venv"
    log="$venv/pip-install.log"
    if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check . "pytest>=8" "hypothesis>=6.100" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "test-py310: installing the device core on $("$python310" -V) failed; the full log is $log" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi

# The checkout's sources, not the copy pip installed, so that the tests see the code under test.
export PYTHONPATH="$root"
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slow and not e2e" \
    tests/flclient/gate tests/flclient/features tests/flclient/update tests/flclient/artifacts tests/flclient/fleet \
    tests/flclient/test_state.py tests/flclient/test_lifetime.py tests/flclient/test_node.py \
    tests/flclient/test_cli_entry.py tests/runtimes tests/device_profiles "$@"
