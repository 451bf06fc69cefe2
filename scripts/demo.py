"""The main job: a local federation on loopback (``flclient demo``).

1. featurec builds the reference crate wasm/rust-features/device_context into a WASM feature module;
2. a Flower SuperLink, the flclient ServerApp and N device processes start on 127.0.0.1; each device has its
   own non-IID partition of the digits data plus device context that goes through the WASM module;
3. R rounds run; per-round accuracy and loss are printed, out/demo/run.png is written, and everything stops.

Options: --devices N (default 8), --rounds R (default 3), --out DIR, --seed S.
"""

from __future__ import annotations

import sys

from featurec import FeaturecError
from flclient import FLClientError
from flclient._cli import main as flclient_main

if __name__ == "__main__":
    try:
        sys.exit(flclient_main(["demo", *sys.argv[1:]]))
    except FeaturecError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except FLClientError as exc:  # pragma: no cover - flclient_main already reports these
        print(f"demo: error: {exc}", file=sys.stderr)
        sys.exit(1)
