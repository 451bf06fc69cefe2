"""The ``flclient`` entry points: ``--version``, and ``demo`` saying what is missing before it starts anything."""

from __future__ import annotations

import sys

import pytest

from flclient import _daemon
from flclient._cli import main


def test_a_missing_demo_dependency_is_named_with_the_install_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(_daemon, "_DEMO_MODULES", {**_daemon._DEMO_MODULES, "no_such_module_xyz": "no-such-dist"})
    assert main(["demo", "--devices", "1", "--rounds", "1", "--out", "unused"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    if sys.version_info < (3, 11):
        assert "needs Python >= 3.11" in err and "works on 3.10" in err
    else:
        assert "the demo needs no-such-dist" in err and "pip install 'flclient[demo]'" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import flclient

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"flclient {flclient.__version__}"
