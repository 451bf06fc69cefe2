"""Regenerate docs/run-config.md from the ServerApp's RunConfig (``python scripts/gen_run_config_doc.py``).

The reference is rendered by :func:`flclient.server.run_config_reference` from the fields of
:class:`flclient.server.RunConfig`; a test fails when the committed file differs from it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flclient.server import run_config_reference  # noqa: E402

if __name__ == "__main__":
    path = ROOT / "docs" / "run-config.md"
    path.write_text(run_config_reference(), encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}")
