#!/usr/bin/env bash
# Run a lean subset of the federation e2e tests against the other end of the supported Flower range.
#
# The default environment (.venv, scripts/bootstrap.sh) stays on the oldest supported release (pinned by
# scripts/flower-constraints.txt); this script builds a second venv (FLOWER_RANGE_VENV, default .venv-flower-range)
# with flclient[server] and FLOWER_RELEASE (default the newest supported, 1.42.0), then runs the e2e tests named by
# FLOWER_RANGE_TESTS with PYTHONPATH at this checkout. Needs PyPI (or pip's cache) the first time.
#
#   bash scripts/test-flower-range.sh                  # flwr 1.42.0, the default lean subset
#   FLOWER_RELEASE=1.41.0 bash scripts/test-flower-range.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
release="${FLOWER_RELEASE:-1.42.0}"
venv="${FLOWER_RANGE_VENV:-$root/.venv-flower-range}"
tests="${FLOWER_RANGE_TESTS:-tests/flclient/e2e/test_federation.py -k test_multi_round_federation_improves_the_model}"
python="${PYTHON:-python3}"

packages=(".[server]" "flwr==$release" "scikit-learn>=1.3" "pytest>=8" "hypothesis>=6.100")
stamp="$venv/.flclient-range"
want="${packages[*]} $(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    rm -rf "$venv"
    "$python" -m venv "$venv"
    log="$venv/pip-install.log"
    echo "installing flclient[server] with flwr==$release into $venv (log: $log)" >&2
    if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check "${packages[@]}" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "error: installing flwr==$release failed; the full log is $log" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
fi
installed="$("$venv/bin/python" -c 'import flwr; print(flwr.__version__)')"
if [ "$installed" != "$release" ]; then
    echo "error: $venv has flwr $installed, expected $release" >&2
    exit 1
fi
echo "flwr $installed: $tests" >&2
# shellcheck disable=SC2086  # $tests is a path plus pytest options on purpose
PATH="$venv/bin:$PATH" PYTHONPATH="$root" "$venv/bin/python" -m pytest -q -p no:cacheprovider $tests
