"""The documentation site builds with ``mkdocs build --strict``: a broken link, a missing page or an API name
mkdocstrings cannot resolve fails here with mkdocs' own output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip(
        "mkdocstrings_handlers.python",
        reason="the docs tools are not installed: pip install -e '.[dev]' (mkdocs, mkdocs-material, mkdocstrings)",
    )
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"mkdocs build took over {exc.timeout} s:\n{exc.stderr or ''}")
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}{proc.stderr}"
    for page in ("index.html", "gateway/index.html", "device-toml/index.html", "api/flclient/index.html"):
        assert (tmp_path / page).is_file(), f"the site has no {page}"
    assert 'id="flclient.Client"' in (tmp_path / "api" / "flclient" / "index.html").read_text()
    for page in (tmp_path / "api").glob("*/index.html"):
        left = re.findall(r":[a-z]+:<code>[^<]*</code>", page.read_text())
        assert not left, f"Sphinx roles left in {page.parent.name} (see scripts/mkdocs_hooks.py): {left[:3]}"
