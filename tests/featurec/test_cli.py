"""featurec and flclient command lines, end to end: real cargo builds, real modules, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featurec._build import BuiltModule
from featurec._cli import main as featurec_main
from flclient._cli import main as flclient_main
from flclient.features._columns_io import read_columns

from ..flclient.features import wat

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "scripts" / "data" / "device_context_sample.csv"


def run(main: object, args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)  # type: ignore[operator]
    out, err = capsys.readouterr()
    return code, out, err


def test_new_build_test_inspect_sign_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(featurec_main, ["new", "my_feature", "--dir", str(tmp_path)], capsys)
    assert code == 0 and "created" in out
    crate = tmp_path / "my_feature"

    code, out, err = run(featurec_main, ["build", str(crate), "-o", str(tmp_path / "dist")], capsys)
    assert code == 0, err
    module = tmp_path / "dist" / "my_feature-0.1.0.wasm"
    assert out.splitlines()[0] == str(module) and "sha256" in out

    code, out, err = run(featurec_main, ["test", str(crate), "--random-rows", "500"], capsys)
    assert code == 0, out + err
    assert "ok   wasm vs golden expected" in out and "ok   wasm vs native" in out

    # A wrong expected value is reported with its row and column.
    golden = crate / "golden" / "vectors.json"
    obj = json.loads(golden.read_text())
    obj["expected"]["x_squared"][2] = 8.0
    golden.write_text(json.dumps(obj))
    code, out, err = run(featurec_main, ["test", str(crate), "--random-rows", "0"], capsys)
    assert code == 1
    assert "row 2 column x_squared: got 9.0, expected 8.0" in out and "does not match" in err
    # --bless rewrites expected outputs from the native build (after checking wasm agrees with it).
    code, out, _ = run(featurec_main, ["test", str(crate), "--bless", "--random-rows", "0"], capsys)
    assert code == 0 and "blessed" in out
    assert json.loads(golden.read_text())["expected"]["x_squared"][2] == 9.0

    code, out, _ = run(featurec_main, ["inspect", str(module)], capsys)
    assert code == 0 and "my_feature 0.1.0 (ABI 1)" in out and "imports  none" in out
    code, out, _ = run(featurec_main, ["inspect", str(module), "--json"], capsys)
    info = json.loads(out)
    assert info["valid"] and info["manifest"]["outputs"][0]["name"] == "x_squared"

    key = tmp_path / "keys" / "publisher"
    key.parent.mkdir()
    assert run(featurec_main, ["keygen", "--out", str(key)], capsys)[0] == 0
    code, _, err = run(featurec_main, ["keygen", "--out", str(key)], capsys)
    assert code == 1 and "already exists" in err
    assert run(featurec_main, ["sign", str(module), "--key", str(key) + ".key"], capsys)[0] == 0

    inputs = tmp_path / "in.csv"
    inputs.write_text("x\n1\n-2.5\nnan\n")
    output = tmp_path / "out.csv"
    code, _, err = run(
        flclient_main,
        [
            "features",
            "run",
            str(module),
            "--input",
            str(inputs),
            "--output",
            str(output),
            "--trusted-key",
            str(key) + ".pub",
        ],
        capsys,
    )
    assert code == 0, err
    assert output.read_text().splitlines() == ["x_squared,is_positive,status", "1.0,1,0", "6.25,0,0", "0.0,0,2"]


def test_featurec_user_mistakes_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["build", str(tmp_path / "nope")], "is not a directory"),
        (["build", str(tmp_path)], "has no Cargo.toml"),
        (["new", "Bad-Name", "--dir", str(tmp_path)], "must match"),
        (["inspect", str(tmp_path / "missing.wasm")], "cannot read"),
        (["sign", str(tmp_path / "missing.wasm"), "--key", "k"], "cannot read"),
        (["test", str(tmp_path / "m.wasm")], "needs its golden vectors"),
    ]
    (tmp_path / "m.wasm").write_bytes(wat.doubler())
    for args, message in cases:
        code, _, err = run(featurec_main, args, capsys)
        assert code == 1, args
        assert err.startswith("featurec: error:") and message in err and len(err.strip().splitlines()) == 1, err
    (tmp_path / "junk.wasm").write_bytes(b"hello")
    code, _, err = run(featurec_main, ["inspect", str(tmp_path / "junk.wasm")], capsys)
    assert code == 1 and "not a WebAssembly module" in err
    (tmp_path / "key.key").write_text("not a key")
    code, _, err = run(featurec_main, ["sign", str(tmp_path / "m.wasm"), "--key", str(tmp_path / "key.key")], capsys)
    assert code == 1 and "private key" in err


def test_inspect_rejects_forbidden_imports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    imports = '(import "env" "now" (func (result i64)))'
    path = tmp_path / "spy.wasm"
    path.write_bytes(wat.doubler(imports=imports))
    code, out, err = run(featurec_main, ["inspect", str(path)], capsys)
    assert code == 1
    assert "imports  env.now" in out and "a feature module may import nothing" in err


def test_flclient_features_run_csv_and_npz(
    device_context_module: BuiltModule, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_csv, out_npz = tmp_path / "f.csv", tmp_path / "f.npz"
    args = ["features", "run", str(device_context_module.path), "--input", str(SAMPLE)]
    code, _, err = run(
        flclient_main,
        [
            *args,
            "--output",
            str(out_csv),
            "--memory-mib",
            "16",
            "--fuel",
            "5000",
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        capsys,
    )
    assert code == 0, err
    assert "device_context 1.0.0: 2000 rows" in err
    header = out_csv.read_text().splitlines()[0]
    assert header == "hour_of_day,is_weekend,battery_bucket,location_hash,status"
    code, _, err = run(flclient_main, [*args, "--output", str(out_npz), "--timeout-ms", "2000"], capsys)
    assert code == 0, err
    with np.load(out_npz) as npz:
        assert sorted(npz.files) == ["battery_bucket", "hour_of_day", "is_weekend", "location_hash", "status"]
        csv_cols = read_columns(out_csv, [])  # header only: reading no columns is fine
        assert csv_cols == {}
        assert len(npz["status"]) == 2000 and (npz["status"] == 0).sum() > 1900


def test_flclient_user_mistakes_are_one_line_errors(
    device_context_module: BuiltModule, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = str(device_context_module.path)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("timestamp_ms,location_lat,location_lon,battery_level\n1,2,3,high\n")
    wrong_cols = tmp_path / "wrong.csv"
    wrong_cols.write_text("ts,lat\n1,2\n")
    out = str(tmp_path / "o.csv")
    big = tmp_path / "big.npz"  # 50k rows at ~400 fuel each exceed the 10M base budget with --fuel 1
    rows = read_columns(SAMPLE, device_context_module.manifest.inputs)
    np.savez(big, **{k: np.tile(v, 25) for k, v in rows.items()})
    cases = [
        ([module, "--input", str(bad_csv), "--output", out], "line 2, column 'battery_level': 'high'"),
        ([module, "--input", str(wrong_cols), "--output", out], "missing column(s)"),
        ([module, "--input", str(SAMPLE), "--output", str(tmp_path / "o.xlsx")], "use a .csv or .npz"),
        ([module, "--input", str(tmp_path / "none.csv"), "--output", out], "cannot read"),
        ([str(tmp_path / "none.wasm"), "--input", str(SAMPLE), "--output", out], "cannot read the module file"),
        ([module, "--input", str(SAMPLE), "--output", out, "--memory-mib", "0"], "memory_mib"),
        ([module, "--input", str(SAMPLE), "--output", out, "--sha256", "ab" * 32], "sha256 is"),
        ([module, "--input", str(big), "--output", out, "--fuel", "1"], "ran out of fuel"),
    ]
    for args, message in cases:
        code, _, err = run(flclient_main, ["features", "run", *args], capsys)
        assert code == 1, args
        assert err.startswith("flclient: error:") and message in err and len(err.strip().splitlines()) == 1, err
    assert not Path(out).exists()  # nothing half-written


def test_console_scripts_exit_cleanly() -> None:
    bindir = Path(sys.executable).parent
    proc = subprocess.run([str(bindir / "featurec"), "inspect", "/nonexistent.wasm"], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    proc = subprocess.run([str(bindir / "flclient"), "features", "run"], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage:" in proc.stderr


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (b'{"name": ' + b"[" * 200_000 + b"]" * 200_000 + b"}", "nested 200001 levels"),  # was a RecursionError
        (b"[1, 2]", "not a JSON object"),
        (b'{"name": "a", "name": "b"}', "repeats the key"),
    ],
)
def test_inspect_and_publish_refuse_hostile_manifests_in_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], manifest: bytes, message: str
) -> None:
    from featurec._errors import PublishError
    from featurec._publish import publish_module
    from flclient.features._abi import MANIFEST_SECTION
    from flclient.features._wasm_binary import with_custom_section

    path = tmp_path / "hostile.wasm"
    path.write_bytes(with_custom_section(wat.build(wat.doubler_wat(), embed=False), MANIFEST_SECTION, manifest))
    code, out, err = run(featurec_main, ["inspect", str(path)], capsys)
    assert code == 1 and "module   ? ?" in out
    assert message in err and all(line.startswith("featurec: error:") for line in err.strip().splitlines()), err
    with pytest.raises(PublishError, match=message):
        publish_module(path, repo=tmp_path / "repo", keys=[])


def test_python_m_featurec_is_the_command_line() -> None:
    import featurec

    proc = subprocess.run(
        [sys.executable, "-m", "featurec", "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"featurec {featurec.__version__}", proc.stderr
