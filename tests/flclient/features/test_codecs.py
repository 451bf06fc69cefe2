"""Property tests for the parsers and codecs under the feature host."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wasmtime
from hypothesis import given
from hypothesis import strategies as st

from flclient import _signing
from flclient.features import Column, FeatureManifestError, Manifest
from flclient.features._columns_io import ColumnFileError, read_columns, write_columns
from flclient.features._wasm_binary import (
    WasmFormatError,
    custom_section,
    custom_sections,
    leb128_u32,
    read_leb128_u32,
    with_custom_section,
)

from . import wat


@given(st.integers(0, 2**32 - 1))
def test_leb128_round_trip(value: int) -> None:
    encoded = leb128_u32(value)
    assert read_leb128_u32(encoded + b"\xff", 0) == (value, len(encoded))
    with pytest.raises(WasmFormatError, match="truncated"):
        read_leb128_u32(encoded[:-1], 0)


def test_leb128_rejects_oversized_values() -> None:
    with pytest.raises(WasmFormatError):
        read_leb128_u32(b"\xff\xff\xff\xff\x7f", 0)  # 35 bits
    with pytest.raises(WasmFormatError, match="longer than 5"):
        read_leb128_u32(b"\x80\x80\x80\x80\x80\x00", 0)
    with pytest.raises(ValueError):
        leb128_u32(2**32)


@given(sections=st.lists(st.tuples(st.sampled_from(["a", "b", "flfeature.manifest.v1", "é"]), st.binary(max_size=300))))
def test_custom_sections_replace_and_keep_the_module_valid(sections: list[tuple[str, bytes]]) -> None:
    data = wasmtime.wat2wasm('(module (func (export "f") (result i32) (i32.const 7)))')
    expected: dict[str, bytes] = {}
    for name, payload in sections:
        data = with_custom_section(bytes(data), name, payload)
        expected[name] = payload
    assert dict(custom_sections(data)) == expected
    for name, payload in expected.items():
        assert custom_section(data, name) == payload
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    inst = wasmtime.Instance(store, wasmtime.Module(engine, data), [])
    assert inst.exports(store)["f"](store) == 7


@given(cut=st.integers(9, 400), flip=st.integers(0, 400))
def test_section_parser_rejects_truncated_or_corrupt_modules(cut: int, flip: int) -> None:
    data = wat.doubler()
    truncated = data[: min(cut, len(data) - 1)]
    with contextlib.suppress(WasmFormatError):  # a clean error is the only allowed failure
        custom_sections(truncated)
    corrupt = bytearray(data)
    corrupt[flip % len(corrupt)] ^= 0xA5
    with contextlib.suppress(WasmFormatError):
        custom_sections(bytes(corrupt))
    with pytest.raises(WasmFormatError, match="magic"):
        custom_sections(b"\0asm\x02\0\0\0")


def test_duplicate_section_is_an_error() -> None:
    data = wasmtime.wat2wasm("(module)")
    doubled = bytes(data) + b"\x00\x03\x01ab" + b"\x00\x03\x01ac"
    with pytest.raises(WasmFormatError, match="appears 2 times"):
        custom_section(doubled, "a")


names = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True).filter(lambda s: s != "status")


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    all_names = draw(st.lists(names, min_size=2, max_size=8, unique=True))
    split = draw(st.integers(1, len(all_names) - 1))

    def col(n: str) -> Column:
        dtype = draw(st.sampled_from(["u8", "i16", "u64", "f32", "f64", "ascii"]))
        shape = (draw(st.integers(1, 16)),) if dtype == "ascii" else draw(st.sampled_from([(), (4,)]))
        return Column(
            name=n, dtype=dtype, shape=shape, unit=draw(st.text(max_size=5)), description=draw(st.text(max_size=20))
        )

    return Manifest(
        name=draw(names),
        version=draw(st.from_regex(r"(0|[1-9][0-9]{0,2})\.(0|[1-9])\.(0|[1-9])(-rc\.[1-9])?", fullmatch=True)),
        description=draw(st.text(max_size=30)),
        inputs=tuple(col(n) for n in all_names[:split]),
        outputs=tuple(col(n) for n in all_names[split:]),
    )


@given(manifests())
def test_manifest_round_trip(m: Manifest) -> None:
    assert Manifest.from_bytes(m.to_bytes()) == m


@given(manifests(), st.integers(0, 200))
def test_manifest_parser_rejects_truncation(m: Manifest, cut: int) -> None:
    data = m.to_bytes()
    cut = min(cut, len(data) - 1)
    with pytest.raises(FeatureManifestError):
        Manifest.from_bytes(data[:cut])


@given(manifests(), st.data())
def test_manifest_parser_raises_only_the_manifest_error_on_mutated_bytes(m: Manifest, data: st.DataObject) -> None:
    raw = bytearray(m.to_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw[at] = data.draw(st.sampled_from(b'[]{}",:0e.-\\ \x00\xff'))
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        parsed = Manifest.from_bytes(bytes(raw))
    except FeatureManifestError:
        return
    assert isinstance(parsed, Manifest)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


@given(key=st.sampled_from(["abi_version", "name", "version", "description", "inputs", "outputs"]), value=_json_values)
def test_manifest_parser_raises_only_the_manifest_error_on_any_json_value(key: str, value: Any) -> None:
    obj = {**wat.manifest(), key: value}
    if key in ("inputs", "outputs"):
        obj[key] = [value] if not isinstance(value, list) else value
    with contextlib.suppress(FeatureManifestError):
        Manifest.from_bytes(json.dumps(obj).encode())


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (b"[" * 300_000 + b"]" * 300_000, "nested 300000 levels"),  # under the 1 MiB cap; was a RecursionError
        (b'{"name": "a", "name": "b"}', "repeats the key"),
        (b'{"abi_version": Infinity}', "Infinity"),
    ],
)
def test_hostile_manifest_json_is_a_manifest_error(text: bytes, match: str) -> None:
    with pytest.raises(FeatureManifestError, match=match):
        Manifest.from_bytes(text)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"version": "1.0"}, "semantic version"),
        ({"name": "Bad"}, "module name"),
        ({"inputs": []}, "at least one input"),
        ({"extra": 1}, "unknown keys"),
        ({"abi_version": "1"}, "abi_version must be an integer"),
        ({"outputs": [{"name": "x", "dtype": "f64"}]}, "unique"),
        ({"outputs": [{"name": "y", "dtype": "f16"}]}, "unknown dtype"),
        ({"outputs": [{"name": "y", "dtype": "ascii"}]}, "ascii column needs shape"),
        ({"outputs": [{"name": "y", "dtype": "f32", "shape": [2, 2]}]}, "shape must be"),
        ({"outputs": [{"name": "status", "dtype": "u8"}]}, "must not be 'status'"),
    ],
)
def test_manifest_validation_names_the_problem(change: dict[str, Any], match: str) -> None:
    obj = {**wat.manifest(), **change}
    with pytest.raises(FeatureManifestError, match=match):
        Manifest.from_bytes(json.dumps(obj).encode())


def test_manifest_size_limit() -> None:
    with pytest.raises(FeatureManifestError, match="limit"):
        Manifest.from_bytes(b" " * (2 << 20))


# ---- CSV / npz column files -----------------------------------------------------------------------

COLS = (
    Column(name="t", dtype="u64"),
    Column(name="v", dtype="f32", shape=(3,)),
    Column(name="d", dtype="f64"),
    Column(name="h", dtype="ascii", shape=(5,)),
)


@st.composite
def column_data(draw: st.DrawFn) -> dict[str, np.ndarray[Any, Any]]:
    n = draw(st.integers(0, 20))
    f32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
    return {
        "t": np.array(draw(st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n)), dtype=np.uint64),
        "v": np.array(
            draw(st.lists(st.lists(f32, min_size=3, max_size=3), min_size=n, max_size=n)), dtype=np.float32
        ).reshape(n, 3),
        "d": np.array(draw(st.lists(st.floats(), min_size=n, max_size=n)), dtype=np.float64),
        "h": np.array(
            [
                s.encode()
                for s in draw(st.lists(st.from_regex(r"[0-9a-z]{0,5}", fullmatch=True), min_size=n, max_size=n))
            ],
            dtype="S5",
        ),
        "status": np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=np.uint8),
    }


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
@given(data=column_data())
def test_column_files_round_trip_exactly(
    tmp_path_factory: pytest.TempPathFactory, suffix: str, data: dict[str, np.ndarray[Any, Any]]
) -> None:
    path = tmp_path_factory.mktemp("cols") / f"c{suffix}"
    write_columns(path, COLS, data)
    back = read_columns(path, COLS)
    for c in COLS:
        assert back[c.name].dtype == data[c.name].dtype
        assert back[c.name].tobytes() == data[c.name].tobytes() or (
            c.element_dtype.kind == "f" and np.array_equal(back[c.name], data[c.name], equal_nan=True)
        )


def test_csv_errors_name_the_line_and_column(tmp_path: Path) -> None:
    p = tmp_path / "in.csv"
    p.write_text("t,v[0],v[1],v[2],d,h\n1,0,0,0,1.5,abc\n2,0,0,0,oops,abc\n")
    with pytest.raises(ColumnFileError, match=r"line 3, column 'd': 'oops' is not a valid f64"):
        read_columns(p, COLS)
    p.write_text("t,v[0],v[1],v[2],d,h\n-1,0,0,0,1.5,abc\n")
    with pytest.raises(ColumnFileError, match=r"line 2, column 't': '-1' is not a valid u64"):
        read_columns(p, COLS)
    p.write_text("t,d\n1,2\n")
    with pytest.raises(ColumnFileError, match=r"missing column\(s\) \['v\[0\]'"):
        read_columns(p, COLS)
    p.write_text("t,v[0],v[1],v[2],d,h\n1,0,0\n")
    with pytest.raises(ColumnFileError, match="line 2 has 3 fields"):
        read_columns(p, COLS)
    p.write_text("t,v[0],v[1],v[2],d,h\n1,0,0,0,1,toolong\n")
    with pytest.raises(ColumnFileError, match="at most 5"):
        read_columns(p, COLS)
    p.write_text('t,v[0],v[1],v[2],d,h\n1,0,0,0,1,"abc\n')  # an unterminated quote (was read to the end)
    with pytest.raises(ColumnFileError, match="bad CSV"):
        read_columns(p, COLS)
    p.write_text('t,v[0],v[1],v[2],d,h\n1,0,0,0,1,"ab"c\n')
    with pytest.raises(ColumnFileError, match="bad CSV"):
        read_columns(p, COLS)
    p.write_text("t,v[0],v[1],v[2],d,h\n1,0,1e39,0,1,abc\n")  # f32 overflow (was read as inf)
    with pytest.raises(ColumnFileError, match=r"line 2, column 'v\[1\]': '1e39' is beyond the f32 range"):
        read_columns(p, COLS)
    p.write_text("t,v[0],v[1],v[2],d,h\n1,0,0,0,1,abc\n" + "1," * 5000 + "\n")
    with pytest.MonkeyPatch.context() as mp:  # lines are streamed: a long one is refused before it is read whole
        mp.setattr("flclient.features._columns_io._MAX_LINE", 1000)
        with pytest.raises(ColumnFileError, match="line 3 is longer than 1000 characters"):
            read_columns(p, COLS)
    p.write_text("")
    with pytest.raises(ColumnFileError, match="empty"):
        read_columns(p, COLS)
    with pytest.raises(ColumnFileError, match="unsupported input format"):
        read_columns(tmp_path / "x.parquet", COLS)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ColumnFileError, match="not a readable .npz"):
        read_columns(tmp_path / "bad.npz", COLS)


# ---- signature files ------------------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_signature_parser_rejects_garbage(blob: bytes) -> None:
    with pytest.raises(_signing.SignatureError):
        _signing.DetachedSignature.from_bytes(blob)


def test_signature_round_trip() -> None:
    priv, pub = _signing.generate_key_pair()
    sig = _signing.sign(b"module bytes", _signing.load_private_key(priv))
    parsed = _signing.DetachedSignature.from_bytes(sig.to_bytes())
    assert parsed == sig
    assert _signing.verify(b"module bytes", parsed, [_signing.load_public_key(pub)]) == sig.key_id
    with pytest.raises(_signing.SignatureError, match="not a PEM public key"):
        _signing.load_public_key(priv)
