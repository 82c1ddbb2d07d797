"""PackStream v1 encoding and decoding (the value format inside Bolt messages), written from the public spec.

Covers what the stand-in needs: null, booleans, integers (all widths), 64-bit floats, strings, bytes, lists, maps
and structures. Structures are decoded generically as `Structure(tag, fields)`; the stand-in never sends graph
entities (nodes, paths, temporals), only the scalar rows our statements return.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any


class PackStreamError(ValueError):
    """The bytes are not valid PackStream (or a value cannot be encoded)."""


@dataclass
class Structure:
    tag: int
    fields: list[Any] = field(default_factory=list)


_INT8, _INT16, _INT32, _INT64 = 0xC8, 0xC9, 0xCA, 0xCB
_FLOAT = 0xC1
_NULL, _FALSE, _TRUE = 0xC0, 0xC2, 0xC3
_BYTES8, _BYTES16, _BYTES32 = 0xCC, 0xCD, 0xCE
_STR8, _STR16, _STR32 = 0xD0, 0xD1, 0xD2
_LIST8, _LIST16, _LIST32 = 0xD4, 0xD5, 0xD6
_MAP8, _MAP16, _MAP32 = 0xD8, 0xD9, 0xDA


def _size_header(out: bytearray, size: int, tiny_base: int | None, m8: int, m16: int, m32: int) -> None:
    if tiny_base is not None and size < 0x10:
        out.append(tiny_base + size)
    elif size < 0x100:
        out += bytes((m8, size))
    elif size < 0x10000:
        out.append(m16)
        out += struct.pack(">H", size)
    elif size < 0x100000000:
        out.append(m32)
        out += struct.pack(">I", size)
    else:
        raise PackStreamError(f"value too large to encode ({size} items/bytes)")


def _pack_into(out: bytearray, value: Any) -> None:
    if value is None:
        out.append(_NULL)
    elif value is True:
        out.append(_TRUE)
    elif value is False:
        out.append(_FALSE)
    elif isinstance(value, int):
        if -0x10 <= value < 0x80:
            out += struct.pack(">b", value)
        elif -0x80 <= value < 0x80:
            out.append(_INT8)
            out += struct.pack(">b", value)
        elif -0x8000 <= value < 0x8000:
            out.append(_INT16)
            out += struct.pack(">h", value)
        elif -0x80000000 <= value < 0x80000000:
            out.append(_INT32)
            out += struct.pack(">i", value)
        elif -0x8000000000000000 <= value < 0x8000000000000000:
            out.append(_INT64)
            out += struct.pack(">q", value)
        else:
            raise PackStreamError(f"integer {value} does not fit in 64 bits")
    elif isinstance(value, float):
        out.append(_FLOAT)
        out += struct.pack(">d", value)
    elif isinstance(value, str):
        data = value.encode("utf-8")
        _size_header(out, len(data), 0x80, _STR8, _STR16, _STR32)
        out += data
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        _size_header(out, len(data), None, _BYTES8, _BYTES16, _BYTES32)
        out += data
    elif isinstance(value, (list, tuple)):
        _size_header(out, len(value), 0x90, _LIST8, _LIST16, _LIST32)
        for item in value:
            _pack_into(out, item)
    elif isinstance(value, dict):
        _size_header(out, len(value), 0xA0, _MAP8, _MAP16, _MAP32)
        for key, item in value.items():
            if not isinstance(key, str):
                raise PackStreamError(f"map keys must be strings, got {key!r}")
            _pack_into(out, key)
            _pack_into(out, item)
    elif isinstance(value, Structure):
        if len(value.fields) >= 0x10:
            raise PackStreamError("structures hold at most 15 fields")
        out.append(0xB0 + len(value.fields))
        out.append(value.tag)
        for item in value.fields:
            _pack_into(out, item)
    else:
        raise PackStreamError(f"cannot encode {type(value).__name__} in PackStream")


def pack(value: Any) -> bytes:
    out = bytearray()
    _pack_into(out, value)
    return bytes(out)


class Unpacker:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise PackStreamError("truncated PackStream value")
        chunk = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return chunk

    def _u(self, fmt: str, n: int) -> int:
        return struct.unpack(fmt, self._take(n))[0]

    def unpack(self) -> Any:
        marker = self._take(1)[0]
        if marker < 0x80:
            return marker
        if marker >= 0xF0:
            return marker - 0x100
        high = marker & 0xF0
        if high == 0x80:
            return self._take(marker & 0x0F).decode("utf-8")
        if high == 0x90:
            return [self.unpack() for _ in range(marker & 0x0F)]
        if high == 0xA0:
            return self._map(marker & 0x0F)
        if high == 0xB0:
            tag = self._take(1)[0]
            return Structure(tag, [self.unpack() for _ in range(marker & 0x0F)])
        if marker == _NULL:
            return None
        if marker == _TRUE:
            return True
        if marker == _FALSE:
            return False
        if marker == _FLOAT:
            return struct.unpack(">d", self._take(8))[0]
        ints = {_INT8: (">b", 1), _INT16: (">h", 2), _INT32: (">i", 4), _INT64: (">q", 8)}
        if marker in ints:
            return self._u(*ints[marker])
        sizes = {0: (">B", 1), 1: (">H", 2), 2: (">I", 4)}
        for base, kind in ((_STR8, "str"), (_LIST8, "list"), (_MAP8, "map"), (_BYTES8, "bytes")):
            if base <= marker <= base + 2:
                size = self._u(*sizes[marker - base])
                if kind == "str":
                    return self._take(size).decode("utf-8")
                if kind == "bytes":
                    return self._take(size)
                if kind == "list":
                    return [self.unpack() for _ in range(size)]
                return self._map(size)
        if marker in (0xDC, 0xDD):  # struct8 / struct16 (PackStream v1 legacy)
            size = self._u(">B", 1) if marker == 0xDC else self._u(">H", 2)
            tag = self._take(1)[0]
            return Structure(tag, [self.unpack() for _ in range(size)])
        raise PackStreamError(f"unknown PackStream marker 0x{marker:02X}")

    def _map(self, size: int) -> dict[str, Any]:
        out = {}
        for _ in range(size):
            key = self.unpack()
            if not isinstance(key, str):
                raise PackStreamError(f"map key must be a string, got {key!r}")
            out[key] = self.unpack()
        return out


def unpack(data: bytes) -> Any:
    """Decode exactly one value; trailing bytes are an error."""
    unpacker = Unpacker(data)
    value = unpacker.unpack()
    if unpacker.pos != len(data):
        raise PackStreamError(f"{len(data) - unpacker.pos} trailing bytes after the value")
    return value
