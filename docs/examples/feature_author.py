"""Feature author: scaffold a crate, build it to a signed-ready WASM module and prove it against its golden vectors.

Run it with ``python docs/examples/feature_author.py DIR``; the tests run it too (with ``CARGO_TARGET_DIR`` set to
a directory they reuse, so that the helper crate is compiled once). Each step is the ``featurec`` command shown in
the feature author's guide.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def featurec(*args: str) -> str:
    """Run ``featurec ARGS`` (as ``python -m featurec``) and return what it printed; a failure raises."""
    proc = subprocess.run([sys.executable, "-m", "featurec", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"featurec {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def main(workdir: Path) -> Path:
    """``featurec new``, ``build``, ``test``, ``keygen`` and ``sign`` in ``workdir``; returns the signed module."""
    featurec("new", "my_feature", "--dir", str(workdir))
    crate = workdir / "my_feature"
    featurec("build", str(crate), "-o", str(workdir / "dist"))
    featurec("test", str(crate))  # golden vectors, and the wasm build against the native build, bit for bit
    module = workdir / "dist" / "my_feature-0.1.0.wasm"
    featurec("keygen", "--out", str(workdir / "publisher"))
    featurec("sign", str(module), "--key", str(workdir / "publisher.key"))
    return module


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
