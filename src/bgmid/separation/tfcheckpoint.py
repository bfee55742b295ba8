"""Read TensorFlow (V2 "tensor bundle") checkpoints without TensorFlow: numpy arrays by variable name.

Why: pretrained separators such as Spleeter ship as TensorFlow checkpoints, and TensorFlow is a 500 MB
dependency that bgmid does not otherwise need. A checkpoint ``PREFIX`` is two documented files:

* ``PREFIX.index`` -- an SSTable (LevelDB's table format, which TensorFlow's ``tensorflow/core/lib/io/table``
  re-implements): data blocks of sorted key/value entries, each key stored as (shared prefix length with the
  previous key, the differing suffix), with "restart points" where a key is stored whole; an index block whose
  entries point at the data blocks; a 48-byte footer holding the metaindex and index block handles and the
  magic number ``0xdb4775248b80fb57``. Every block is followed by a 1-byte compression type and a masked CRC-32C.
  The key ``""`` holds a ``BundleHeaderProto`` (number of shards, endianness); every other key is a variable
  name whose value is a serialized ``BundleEntryProto`` (dtype, shape, shard id, offset, size, masked CRC-32C).
* ``PREFIX.data-SSSSS-of-NNNNN`` -- the raw tensor bytes (little-endian), at the entry's offset in shard ``SSSSS``.

Both protobuf messages are decoded here from the wire format (varints and length-delimited fields), so
neither tensorflow nor protobuf is needed. Only uncompressed tables (what TensorFlow writes) and numeric
tensors are read; string tensors and sliced (partitioned) variables raise :class:`CheckpointError`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgmid.errors import BgmidError

__all__ = ["CheckpointError", "TFCheckpoint", "TensorEntry", "crc32c", "mask_crc", "parse_sstable"]

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two BlockHandles of at most 10 + 10 bytes, zero-padded to 40, then the 8-byte magic
BLOCK_TRAILER = 5  # compression type (1 byte) + masked crc32c (4 bytes)

#: TensorFlow DataType enum -> numpy dtype (little-endian); bfloat16 is widened to float32 when read.
DTYPES: dict[int, str] = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?",
                          14: "bfloat16", 17: "<u2", 19: "<f2", 22: "<u4", 23: "<u8"}


class CheckpointError(BgmidError):
    """A checkpoint file that is missing, damaged or in a form this reader does not handle."""


# ---------------------------------------------------------------------------------------------- checksums

def _crc_table() -> list[int]:
    poly = 0x82F63B78  # CRC-32C (Castagnoli), reflected
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C of ``data`` (continuing from ``crc``), as LevelDB and TensorFlow compute it. Pure Python: about
    5 MB/s, meant for index blocks and small tensors (the fetched files are checked by sha256 as a whole)."""
    c = crc ^ 0xFFFFFFFF
    t = _CRC_TABLE
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """LevelDB's masked CRC (rotate right by 15, add a constant): stored CRCs are masked so that a CRC of data
    that itself contains CRCs stays well distributed."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------- wire format

def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """A base-128 varint at ``pos`` (little-endian groups of 7 bits, high bit = more): (value, next pos)."""
    shift = value = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise CheckpointError("varint longer than 10 bytes")


def _fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of a protobuf message: ints for varint/fixed fields, bytes for length-delimited."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            val, pos = bytes(buf[pos:pos + n]), pos + n
        elif wire == 5:
            val, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise CheckpointError("truncated protobuf message")
        yield num, val


@dataclass(frozen=True)
class TensorEntry:
    """Where one variable's bytes are: a decoded ``BundleEntryProto``."""

    name: str
    dtype: int  #: TensorFlow DataType enum value (1 = float32)
    shape: tuple[int, ...]
    shard_id: int
    offset: int  #: bytes into the data shard
    size: int  #: bytes
    crc32c: int  #: masked CRC-32C of the bytes
    sliced: bool = False


def _shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for num, val in _fields(buf):
        if num == 2:  # repeated Dim {int64 size = 1; string name = 2}
            dims.append(next((int(v) for n, v in _fields(val) if n == 1), 0))  # type: ignore[arg-type]
        elif num == 3 and val:
            raise CheckpointError("tensor of unknown rank")
    return tuple(dims)


def decode_entry(name: str, buf: bytes) -> TensorEntry:
    """A ``BundleEntryProto``: dtype=1, shape=2, shard_id=3, offset=4, size=5, crc32c=6 (fixed32), slices=7."""
    f = {"dtype": 0, "shape": (), "shard_id": 0, "offset": 0, "size": 0, "crc32c": 0, "sliced": False}
    for num, val in _fields(buf):
        if num == 1:
            f["dtype"] = val
        elif num == 2:
            f["shape"] = _shape(val)  # type: ignore[arg-type]
        elif num in (3, 4, 5):
            f[("shard_id", "offset", "size")[num - 3]] = val
        elif num == 6:
            f["crc32c"] = val
        elif num == 7:
            f["sliced"] = True
    return TensorEntry(name=name, **f)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- SSTable

def _handle(buf: bytes, pos: int) -> tuple[int, int, int]:
    """A BlockHandle (varint offset, varint size) at ``pos``: (offset, size, next pos)."""
    off, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return off, size, pos


def _block(data: bytes, offset: int, size: int, verify: bool = True) -> bytes:
    """The contents of the block at ``offset`` (``size`` bytes, then its 5-byte trailer), CRC-checked."""
    end = offset + size + BLOCK_TRAILER
    if offset < 0 or end > len(data):
        raise CheckpointError(f"block at {offset}+{size} runs past the end of the table ({len(data)} bytes)")
    contents = data[offset:offset + size]
    ctype = data[offset + size]
    if ctype != 0:
        raise CheckpointError(f"compressed table block (type {ctype}); only uncompressed tables are read")
    if verify:
        (stored,) = struct.unpack_from("<I", data, offset + size + 1)
        if mask_crc(crc32c(contents + bytes([ctype]))) != stored:
            raise CheckpointError(f"block at byte {offset}: CRC-32C mismatch (damaged file)")
    return contents


def _entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Key/value pairs of one block. Keys are prefix-compressed: each entry stores how many leading bytes it
    shares with the previous key; the trailing restart array (uint32 offsets + count) marks whole keys and is
    only needed for binary search, so a full scan just checks it and stops where it begins."""
    if len(block) < 4:
        raise CheckpointError("block too short")
    (n_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 * (n_restarts + 1)
    if limit < 0:
        raise CheckpointError("bad restart array")
    restarts = struct.unpack_from(f"<{n_restarts}I", block, limit)
    pos, key = 0, b""
    while pos < limit:
        start = pos
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        if shared > len(key) or pos + non_shared + vlen > limit:
            raise CheckpointError(f"bad block entry at byte {start}")
        if start in restarts and shared:
            raise CheckpointError(f"restart point at byte {start} shares a prefix")
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        yield key, block[pos:pos + vlen]
        pos += vlen


def parse_sstable(data: bytes, verify: bool = True) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of an SSTable file's bytes, in key order."""
    if len(data) < FOOTER_SIZE:
        raise CheckpointError("file too short for a table footer")
    footer = data[-FOOTER_SIZE:]
    (magic,) = struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)
    if magic != TABLE_MAGIC:
        raise CheckpointError(f"not an SSTable (magic {magic:#x})")
    _, _, pos = _handle(footer, 0)  # metaindex: empty in TensorFlow bundles, not needed
    ioff, isize, _ = _handle(footer, pos)
    out = []
    for _, handle in _entries(_block(data, ioff, isize, verify)):
        off, size, _ = _handle(handle, 0)
        out.extend(_entries(_block(data, off, size, verify)))
    return out


# ---------------------------------------------------------------------------------------------- checkpoint

class TFCheckpoint:
    """The variables of checkpoint ``prefix`` (``prefix.index`` + ``prefix.data-*``), read on demand.

    >>> ck = TFCheckpoint("model")          # model.index, model.data-00000-of-00001
    >>> ck.names()[:2], ck.shape("conv2d/kernel")
    >>> w = ck.tensor("conv2d/kernel")      # numpy, the stored layout (HWIO for Conv2D kernels)
    """

    def __init__(self, prefix: str | os.PathLike, verify: bool = True) -> None:
        self.prefix = Path(prefix)
        index = Path(f"{self.prefix}.index")
        if not index.is_file():
            raise CheckpointError(f"{index}: no such checkpoint index file.")
        pairs = parse_sstable(index.read_bytes(), verify)
        self.num_shards = 1
        self.entries: dict[str, TensorEntry] = {}
        for key, value in pairs:
            if key == b"":  # BundleHeaderProto: num_shards=1, endianness=2 (0 little), version=3
                for num, val in _fields(value):
                    if num == 1:
                        self.num_shards = int(val)  # type: ignore[arg-type]
                    elif num == 2 and val:
                        raise CheckpointError(f"{index}: big-endian checkpoint")
                continue
            name = key.decode("utf-8")
            self.entries[name] = decode_entry(name, value)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name).shape

    def _entry(self, name: str) -> TensorEntry:
        if name not in self.entries:
            raise CheckpointError(f"{self.prefix}: no variable '{name}'")
        return self.entries[name]

    def shard_path(self, shard_id: int) -> Path:
        return Path(f"{self.prefix}.data-{shard_id:05d}-of-{self.num_shards:05d}")

    def raw(self, name: str, verify: bool = False) -> bytes:
        """The stored bytes of ``name`` (CRC-32C-checked when ``verify``: slow for large tensors)."""
        e = self._entry(name)
        path = self.shard_path(e.shard_id)
        try:
            with open(path, "rb") as f:
                f.seek(e.offset)
                buf = f.read(e.size)
        except OSError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        if len(buf) != e.size:
            raise CheckpointError(f"{path}: '{name}' runs past the end of the file (truncated?)")
        if verify and mask_crc(crc32c(buf)) != e.crc32c:
            raise CheckpointError(f"{path}: '{name}' fails its CRC-32C check (damaged file)")
        return buf

    def tensor(self, name: str, verify: bool = False) -> np.ndarray:
        """``name`` as a numpy array of its stored shape (a copy, native byte order)."""
        e = self._entry(name)
        if e.sliced:
            raise CheckpointError(f"'{name}' is a sliced (partitioned) variable, not supported")
        if e.dtype not in DTYPES:
            raise CheckpointError(f"'{name}' has TensorFlow dtype {e.dtype}, not a numeric type this reader knows")
        buf = self.raw(name, verify)
        dt = DTYPES[e.dtype]
        if dt == "bfloat16":  # the top 16 bits of a float32
            a = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(buf, np.dtype(dt)).astype(np.dtype(dt).newbyteorder("="))
        n = int(np.prod(e.shape, dtype=np.int64))
        if a.size != n:
            raise CheckpointError(f"'{name}': {a.size} values stored for shape {e.shape}")
        return a.reshape(e.shape).copy()

    def tensors(self) -> dict[str, np.ndarray]:
        """Every numeric variable (the others are skipped)."""
        return {n: self.tensor(n) for n, e in sorted(self.entries.items()) if e.dtype in DTYPES and not e.sliced}
