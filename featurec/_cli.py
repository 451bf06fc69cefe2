"""The ``featurec`` command line. User mistakes end with one line on stderr and a non-zero exit code."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from flclient import _signing
from flclient._atomic import atomic_write_bytes
from flclient._command import run_command
from flclient._errors import FLClientError

from . import __version__
from ._build import build_module
from ._errors import FeaturecError, KeyFileError
from ._inspect import inspect_module
from ._scaffold import new_crate
from ._testing import run_golden_test

__all__ = ["main"]

_MAX_SHOWN = 10


def _cmd_new(args: argparse.Namespace) -> int:
    crate = new_crate(args.name, Path(args.dir))
    print(f"created {crate}; build it with: featurec build {crate}")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    crate = Path(args.crate_dir)
    built = build_module(crate, Path(args.output) if args.output else Path.cwd(), optimize=not args.no_opt)
    print(built.path)
    print(f"sha256 {built.sha256}  {built.size} bytes  {built.manifest.name} {built.manifest.version}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    info = inspect_module(Path(args.module))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        m = info["manifest"] or {}
        print(f"{info['path']}: {info['size']} bytes, sha256 {info['sha256']}")
        print(f"module   {m.get('name', '?')} {m.get('version', '?')} (ABI {m.get('abi_version', '?')})")
        if m.get("description"):
            print(f"         {m['description']}")
        for kind in ("inputs", "outputs"):
            for c in m.get(kind, []):
                shape = f"[{','.join(map(str, c.get('shape', [])))}]" if c.get("shape") else ""
                unit = f" ({c['unit']})" if c.get("unit") else ""
                print(f"{kind[:-1]:8} {c.get('name')}: {c.get('dtype')}{shape}{unit}  {c.get('description', '')}")
        print("exports  " + ", ".join(e["name"] for e in info["exports"]))
        print("imports  " + (", ".join(f"{i['module']}.{i['name']}" for i in info["imports"]) or "none"))
        if info["build"]:
            print("build    " + ", ".join(f"{k}={v}" for k, v in sorted(info["build"].items())))
    if info["problems"]:
        for problem in info["problems"]:
            print(f"featurec: error: {args.module}: {problem}", file=sys.stderr)
        return 1
    return 0


def _cmd_test(args: argparse.Namespace) -> int:
    report = run_golden_test(
        Path(args.target),
        golden=Path(args.golden) if args.golden else None,
        bless=args.bless,
        random_rows=args.random_rows,
        seed=args.seed,
    )
    print(f"{report.module}: {report.golden_rows} golden rows, {report.random_rows} random rows")
    for check in report.checks:
        diffs = report.mismatches.get(check, [])
        print(f"  {'FAIL' if diffs else 'ok  '} {check}" + (f": {len(diffs)} mismatches" if diffs else ""))
        for row, column, got, want in diffs[:_MAX_SHOWN]:
            print(f"       row {row} column {column}: got {got!r}, expected {want!r}")
    if not report.ok:
        print(f"featurec: error: {report.module} does not match (see the rows above)", file=sys.stderr)
        return 1
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    private_path, public_path = Path(args.out + ".key"), Path(args.out + ".pub")
    for path in (private_path, public_path):
        if path.exists() and not args.force:
            raise KeyFileError(f"{path} already exists; use --force to replace it (the old key is lost)")
    private_pem, public_pem = _signing.generate_key_pair()
    atomic_write_bytes(private_path, private_pem, mode=0o600)
    atomic_write_bytes(public_path, public_pem)
    key = _signing.load_public_key(public_pem)
    print(f"wrote {private_path} (keep it secret) and {public_path}; key id {_signing.key_id(key)}")
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    module, key_path = Path(args.module), Path(args.key)
    try:
        data = module.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {module}: {exc.strerror or exc}") from exc
    try:
        key = _signing.load_private_key(key_path.read_bytes())
    except OSError as exc:
        raise KeyFileError(f"cannot read key {key_path}: {exc.strerror or exc}") from exc
    except _signing.SignatureError as exc:
        raise KeyFileError(f"{key_path}: {exc}") from exc
    signature = _signing.sign(data, key)
    out = Path(args.output) if args.output else module.with_name(module.name + ".sig")
    atomic_write_bytes(out, signature.to_bytes())
    print(f"{out} (key id {signature.key_id}, sha256 {signature.sha256})")
    return 0


def _cmd_repo_init(args: argparse.Namespace) -> int:
    from ._publish import init_repository, parse_role_values

    role_keys = {role: [Path(f) for f in getattr(args, role) or []] for role in _ROLES}
    repo = init_repository(
        Path(args.repo),
        role_keys=role_keys,
        thresholds=parse_role_values(args.threshold, what="--threshold"),
        expires_days=parse_role_values(args.expires, what="--expires"),
    )
    root = Path(args.repo) / "metadata" / "1.root.json"
    print(f"created TUF repository {repo.directory}; ship {root} with device configurations as trusted_root")
    return 0


def _cmd_repo_renew(args: argparse.Namespace) -> int:
    from ._publish import parse_role_values, renew_repository

    written = renew_repository(
        Path(args.repo),
        keys=[Path(k) for k in args.key],
        roles=args.role,
        expires_days=parse_role_values(args.expires, what="--expires"),
    )
    print(f"re-signed {', '.join(written)} in {args.repo}")
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from ._publish import parse_role_values, publish_module

    published = publish_module(
        Path(args.module),
        repo=Path(args.repo),
        keys=[Path(k) for k in args.key],
        expires_days=parse_role_values(args.expires, what="--expires"),
    )
    print(f"published {published.target_path} ({published.length} bytes) to {args.repo}")
    print(f'task pin: feature-module = "{published.name}@{published.version}"')
    print(f'          feature-module-sha256 = "{published.sha256}"')
    return 0


_ROLES = ("root", "targets", "snapshot", "timestamp", "modules", "checkpoints")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="featurec", description="Build, test, inspect, sign and publish WASM modules.")
    p.add_argument("--version", action="version", version=f"featurec {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("new", help="scaffold a feature crate that builds")
    s.add_argument("name", help="crate and module name ([a-z][a-z0-9_]*)")
    s.add_argument("--dir", default=".", help="parent directory (default: current)")
    s.set_defaults(func=_cmd_new)

    s = sub.add_parser("build", help="build a crate into <name>-<version>.wasm")
    s.add_argument("crate_dir")
    s.add_argument("-o", "--output", help="output directory (default: current)")
    s.add_argument("--no-opt", action="store_true", help="skip wasm-opt even when it is installed")
    s.set_defaults(func=_cmd_build)

    s = sub.add_parser("inspect", help="show a module's manifest, exports, imports, size and sha256")
    s.add_argument("module")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=_cmd_inspect)

    s = sub.add_parser("test", help="check a crate or module against golden vectors (and its native build)")
    s.add_argument("target", help="a crate directory or a built .wasm module")
    s.add_argument("--golden", help="golden vectors JSON (default: CRATE/golden/vectors.json)")
    s.add_argument("--bless", action="store_true", help="rewrite expected outputs from the native build")
    s.add_argument("--random-rows", type=int, default=2000, help="random rows for wasm-vs-native (default 2000)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_cmd_test)

    s = sub.add_parser("keygen", help="create an Ed25519 signing key pair")
    s.add_argument("--out", default="featurec-signing", help="file prefix: writes PREFIX.key and PREFIX.pub")
    s.add_argument("--force", action="store_true", help="replace existing key files")
    s.set_defaults(func=_cmd_keygen)

    s = sub.add_parser("sign", help="write a detached Ed25519 signature MODULE.sig")
    s.add_argument("module")
    s.add_argument("--key", required=True, help="private key from 'featurec keygen'")
    s.add_argument("-o", "--output", help="signature file (default: MODULE.sig)")
    s.set_defaults(func=_cmd_sign)

    s = sub.add_parser("publish", help="publish a module to a TUF repository (modules/<name>/<version>)")
    s.add_argument("module")
    s.add_argument("--repo", required=True, help="repository directory (served as-is by any static web server)")
    s.add_argument(
        "--key", action="append", required=True, help="private key: the modules role's and the online key (repeat)"
    )
    s.add_argument("--expires", action="append", default=[], metavar="ROLE=DAYS", help="validity of re-signed roles")
    s.set_defaults(func=_cmd_publish)

    s = sub.add_parser("repo", help="create or renew a TUF repository for modules and model checkpoints")
    repo_sub = s.add_subparsers(dest="repo_command", required=True)
    r = repo_sub.add_parser("init", help="create a repository; each role gets key files from 'featurec keygen'")
    r.add_argument("--repo", required=True, help="directory to create")
    for role in _ROLES:
        r.add_argument(f"--{role}", action="append", metavar="KEYFILE", help=f"{role} key (.pub, or .key to sign)")
    r.add_argument("--threshold", action="append", default=[], metavar="ROLE=N", help="signatures a role needs")
    r.add_argument("--expires", action="append", default=[], metavar="ROLE=DAYS", help="how long a role stays valid")
    r.set_defaults(func=_cmd_repo_init)
    r = repo_sub.add_parser("renew", help="re-sign with fresh expiry dates (recovery from expired metadata)")
    r.add_argument("--repo", required=True)
    r.add_argument("--key", action="append", required=True, help="private keys to sign with (repeat)")
    r.add_argument("--role", action="append", default=[], choices=_ROLES, help="roles to renew (default: all signable)")
    r.add_argument("--expires", action="append", default=[], metavar="ROLE=DAYS", help="how long a role stays valid")
    r.set_defaults(func=_cmd_repo_renew)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("featurec", _parser().parse_args(argv), (FeaturecError, FLClientError))


if __name__ == "__main__":
    sys.exit(main())
