"""Regenerate docs/device-toml.md from the device configuration (``python scripts/gen_device_config_doc.py``).

The reference is rendered by ``flclient._config.device_config_reference`` from ``DEVICE_TOML_KEYS``, the table
of keys the parser reads; a test fails when the committed file differs from it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flclient._config import device_config_reference  # noqa: E402

if __name__ == "__main__":
    path = ROOT / "docs" / "device-toml.md"
    path.write_text(device_config_reference(), encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)}")
