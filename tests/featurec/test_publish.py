"""featurec repo init / publish / repo renew: real key files, a real module, a repository a device accepts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from featurec import FeaturecError
from featurec._cli import main
from featurec._errors import PublishError
from featurec._publish import parse_role_values, publish_module
from flclient.artifacts import ArtifactPin, ArtifactsConfig, TrustedArtifacts

from ..flclient.artifacts.support import StaticServer
from ..flclient.features import wat


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def _keys(tmp: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Path]:
    keys = {}
    for name in ("root", "targets", "online", "author", "model"):
        assert run(["keygen", "--out", str(tmp / name)], capsys)[0] == 0
        keys[name] = tmp / f"{name}.key"
    return keys


def test_init_publish_renew_and_fetch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    k = _keys(tmp_path, capsys)
    repo = tmp_path / "repo"
    code, out, err = run(
        [
            "repo", "init", "--repo", str(repo),
            "--root", str(k["root"]), "--targets", str(k["targets"]),
            "--snapshot", str(k["online"]), "--timestamp", str(k["online"]),
            "--modules", str(tmp_path / "author.pub"), "--checkpoints", str(tmp_path / "model.pub"),
            "--expires", "timestamp=2",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "1.root.json" in out
    module = tmp_path / "doubler-1.0.0.wasm"
    module.write_bytes(wat.doubler())
    code, out, err = run(
        ["publish", str(module), "--repo", str(repo), "--key", str(k["author"]), "--key", str(k["online"])], capsys
    )
    assert code == 0, err
    assert "modules/doubler/1.0.0" in out and 'feature-module = "doubler@1.0.0"' in out
    sha = out.split('feature-module-sha256 = "')[1].split('"')[0]
    # Publishing the same bytes again is a no-op; other bytes under the same version are refused.
    assert (
        run(
            ["publish", str(module), "--repo", str(repo), "--key", str(k["author"]), "--key", str(k["online"])], capsys
        )[0]
        == 0
    )
    other = tmp_path / "other.wasm"
    other.write_bytes(wat.build(wat.doubler_wat(extra="(func $unused)")))  # same name and version, other bytes
    code, _, err = run(
        ["publish", str(other), "--repo", str(repo), "--key", str(k["author"]), "--key", str(k["online"])], capsys
    )
    assert code == 1 and err.count("\n") == 1 and "already published with different bytes" in err
    code, out, err = run(["repo", "renew", "--repo", str(repo), "--key", str(k["online"])], capsys)
    assert code == 0 and "snapshot, timestamp" in out, err

    server = StaticServer(repo)
    try:
        (tmp_path / "root.json").write_bytes((repo / "metadata" / "1.root.json").read_bytes())
        cfg = ArtifactsConfig(
            repository_url=server.url(), trusted_root=tmp_path / "root.json", cache_dir=tmp_path / "dev"
        )
        with TrustedArtifacts(cfg) as device:
            got = device.fetch(ArtifactPin.parse("module", "doubler@1.0.0", sha256=sha))
            assert got.read_bytes() == wat.doubler()
    finally:
        server.close()


def test_user_mistakes_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    k = _keys(tmp_path, capsys)
    repo = tmp_path / "repo"
    code, _, err = run(["repo", "init", "--repo", str(repo), "--root", str(k["root"])], capsys)
    assert code == 1 and err.count("\n") == 1 and "role targets needs at least one key file" in err
    init = [
        "repo", "init", "--repo", str(repo), "--root", str(k["root"]), "--targets", str(k["targets"]),
        "--snapshot", str(k["online"]), "--timestamp", str(k["online"]), "--modules", str(k["author"]),
        "--checkpoints", str(k["model"]),
    ]  # fmt: skip
    code, _, err = run([*init, "--threshold", "root=2"], capsys)
    assert code == 1 and "threshold 2" in err
    assert run(init, capsys)[0] == 0
    code, _, err = run(init, capsys)
    assert code == 1 and "already exists" in err
    module = tmp_path / "m.wasm"
    module.write_bytes(wat.doubler())
    code, _, err = run(["publish", str(module), "--repo", str(repo), "--key", str(k["author"])], capsys)
    assert code == 1 and err.count("\n") == 1 and "snapshot" in err and "needs 1 signature" in err
    code, _, err = run(
        ["publish", str(module), "--repo", str(repo), "--key", str(k["model"]), "--key", str(k["online"])], capsys
    )
    assert code == 1 and "modules" in err and "needs 1 signature" in err
    code, _, err = run(["publish", str(module), "--repo", str(repo), "--key", str(tmp_path / "author.pub")], capsys)
    assert code == 1 and "public key" in err
    module.write_bytes(b"not wasm")
    code, _, err = run(["publish", str(module), "--repo", str(repo), "--key", str(k["author"])], capsys)
    assert code == 1 and err.count("\n") == 1 and "not a WebAssembly module" in err
    module.write_bytes(wat.doubler(omit=("flf1_free",)))
    code, _, err = run(["publish", str(module), "--repo", str(repo), "--key", str(k["author"])], capsys)
    assert code == 1 and "not a publishable feature module" in err and "flf1_free" in err
    code, _, err = run(["publish", str(module), "--repo", str(tmp_path / "nowhere"), "--key", str(k["author"])], capsys)
    assert code == 1 and err.startswith("featurec: error:")
    code, _, err = run(["repo", "renew", "--repo", str(repo), "--key", str(k["author"])], capsys)
    assert code == 1 and "snapshot" in err


def test_parse_role_values() -> None:
    assert parse_role_values(["timestamp=2", "root=3"], what="--expires") == {"timestamp": 2, "root": 3}
    for bad in ("timestamp", "nobody=1", "root=x", "root=0"):
        with pytest.raises(PublishError):
            parse_role_values([bad], what="--expires")


def test_publish_uses_the_injected_clock(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tuf.api.metadata import Metadata

    k = _keys(tmp_path, capsys)
    repo = tmp_path / "repo"
    init = [
        "repo", "init", "--repo", str(repo), "--root", str(k["root"]), "--targets", str(k["targets"]),
        "--snapshot", str(k["online"]), "--timestamp", str(k["online"]), "--modules", str(k["author"]),
        "--checkpoints", str(k["model"]),
    ]  # fmt: skip
    assert run(init, capsys)[0] == 0
    module = tmp_path / "m.wasm"
    module.write_bytes(wat.doubler())
    then = dt.datetime(2031, 5, 1, tzinfo=dt.timezone.utc)
    publish_module(module, repo=repo, keys=[k["author"], k["online"]], clock=lambda: then)
    ts = Metadata.from_bytes((repo / "metadata" / "timestamp.json").read_bytes())
    assert ts.signed.expires == then + dt.timedelta(days=1)
    with pytest.raises(FeaturecError):
        publish_module(tmp_path / "missing.wasm", repo=repo, keys=[k["author"]])
