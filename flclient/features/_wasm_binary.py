"""Just enough of the WebAssembly binary format to read and write custom sections.

A module is ``\\0asm`` + version 1 + sections; each section is an id byte, a LEB128 u32 payload size and
the payload. Custom sections (id 0) start with a LEB128-prefixed UTF-8 name. Appending a custom section
keeps a module valid, and engines ignore custom sections they do not know.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = [
    "WasmFormatError",
    "custom_section",
    "custom_sections",
    "leb128_u32",
    "read_leb128_u32",
    "with_custom_section",
]

MAGIC = b"\0asm\x01\0\0\0"
_CUSTOM = 0
_MAX_SECTION_ID = 13


class WasmFormatError(ValueError):
    """The bytes are not a well-formed WebAssembly binary (at the section level)."""


def leb128_u32(value: int) -> bytes:
    """Encode an unsigned 32-bit integer as unsigned LEB128."""
    if not 0 <= value < 1 << 32:
        raise ValueError(f"{value} does not fit in a u32")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_leb128_u32(data: bytes, pos: int) -> tuple[int, int]:
    """Decode an unsigned LEB128 u32 at ``pos``; returns (value, position after it)."""
    result = 0
    for i in range(5):
        if pos >= len(data):
            raise WasmFormatError("truncated LEB128 integer")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if result >= 1 << 32 or (i == 4 and byte & 0x70):
                raise WasmFormatError("LEB128 integer does not fit in a u32")
            return result, pos
    raise WasmFormatError("LEB128 integer longer than 5 bytes")


def _sections(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """Yield (id, section start, payload start, payload end) for every section."""
    if data[:8] != MAGIC:
        raise WasmFormatError("not a WebAssembly module (bad magic number or version)")
    pos = 8
    while pos < len(data):
        start = pos
        section_id = data[pos]
        if section_id > _MAX_SECTION_ID:
            raise WasmFormatError(f"unknown section id {section_id} at offset {pos}")
        size, pos = read_leb128_u32(data, pos + 1)
        end = pos + size
        if end > len(data):
            raise WasmFormatError(f"section at offset {start} runs past the end of the module")
        yield section_id, start, pos, end
        pos = end


def _custom_name(data: bytes, payload_start: int, payload_end: int) -> tuple[str, int]:
    length, pos = read_leb128_u32(data, payload_start)
    if pos + length > payload_end:
        raise WasmFormatError("custom section name runs past its section")
    try:
        return data[pos : pos + length].decode("utf-8"), pos + length
    except UnicodeDecodeError as exc:
        raise WasmFormatError("custom section name is not UTF-8") from exc


def custom_sections(data: bytes) -> list[tuple[str, bytes]]:
    """All custom sections as (name, payload), in file order."""
    found = []
    for section_id, _, start, end in _sections(data):
        if section_id == _CUSTOM:
            name, body = _custom_name(data, start, end)
            found.append((name, data[body:end]))
    return found


def custom_section(data: bytes, name: str) -> bytes | None:
    """The payload of the custom section ``name``; None if absent; an error if it appears twice."""
    payloads = [payload for n, payload in custom_sections(data) if n == name]
    if len(payloads) > 1:
        raise WasmFormatError(f"custom section {name!r} appears {len(payloads)} times")
    return payloads[0] if payloads else None


def with_custom_section(data: bytes, name: str, payload: bytes) -> bytes:
    """A copy of the module with every custom section ``name`` removed and one new one appended."""
    kept = bytearray(MAGIC)
    for section_id, start, body, end in _sections(data):
        if section_id == _CUSTOM and _custom_name(data, body, end)[0] == name:
            continue
        kept += data[start:end]
    encoded_name = name.encode("utf-8")
    content = leb128_u32(len(encoded_name)) + encoded_name + payload
    return bytes(kept) + bytes([_CUSTOM]) + leb128_u32(len(content)) + content
