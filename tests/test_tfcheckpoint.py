"""The TensorFlow-free checkpoint reader (bgmid.separation.tfcheckpoint).

Three fixtures: a checkpoint written by TensorFlow 2.21 itself (``tests/data/tf_tiny``, made by
``scripts/make_tf_tiny_checkpoint.py``, values recomputed here); SSTables built byte by byte below (several data
blocks, restart points every 3 keys, shared-prefix keys, hand-encoded protobufs), to exercise what the small TF
file does not (multi-block index, damage); and Spleeter's real checkpoint when ``bgmid models fetch spleeter`` has
installed it (skipped otherwise).
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from bgmid.separation import pretrained
from bgmid.separation.tfcheckpoint import (
    CheckpointError,
    TFCheckpoint,
    crc32c,
    decode_entry,
    mask_crc,
    parse_sstable,
)

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))


# ------------------------------------------------------------------------------- a minimal SSTable writer

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def block(pairs: list[tuple[bytes, bytes]], restart_every: int = 3) -> bytes:
    out, restarts, prev = bytearray(), [], b""
    for i, (k, v) in enumerate(pairs):
        shared = 0
        if i % restart_every == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(k), len(prev)) and k[shared] == prev[shared]:
                shared += 1
        out += varint(shared) + varint(len(k) - shared) + varint(len(v)) + k[shared:] + v
        prev = k
    out += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def table(pairs: list[tuple[bytes, bytes]], per_block: int = 4) -> bytes:
    f, index = bytearray(), []

    def put(contents: bytes) -> bytes:
        off = len(f)
        f.extend(contents + b"\x00" + struct.pack("<I", mask_crc(crc32c(contents + b"\x00"))))
        return varint(off) + varint(len(contents))

    for i in range(0, len(pairs), per_block):
        chunk = pairs[i:i + per_block]
        index.append((chunk[-1][0], put(block(chunk))))
    meta = put(block([]))
    idx = put(block(index, restart_every=1))
    footer = (meta + idx).ljust(40, b"\x00") + struct.pack("<Q", 0xDB4775248B80FB57)
    return bytes(f) + footer


def entry_proto(dtype: int, shape: tuple[int, ...], offset: int, size: int, crc: int) -> bytes:
    dims = b"".join(b"\x12" + varint(len(d)) + d for d in (b"\x08" + varint(n) for n in shape))
    return (b"\x08" + varint(dtype) + b"\x12" + varint(len(dims)) + dims + b"\x20" + varint(offset)
            + b"\x28" + varint(size) + b"\x35" + struct.pack("<I", crc))


# ------------------------------------------------------------------------------- tests

def test_crc32c_known_values():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert crc32c(b"") == 0 and crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4
    assert crc32c(b"6789", crc32c(b"12345")) == crc32c(b"123456789")


def test_real_tensorflow_checkpoint():
    from make_tf_tiny_checkpoint import expected

    ck = TFCheckpoint(DATA / "tf_tiny" / "model")
    want = expected()
    assert ck.names() == sorted(want)
    for name, value in want.items():
        got = ck.tensor(name, verify=True)
        assert got.shape == value.shape and got.dtype == value.dtype, name
        np.testing.assert_array_equal(got, value, err_msg=name)


def test_hand_built_table_multi_block(tmp_path):
    rng = np.random.default_rng(0)
    names = sorted(f"net/{a}/{b}" for a in ("conv2d", "conv2d_1", "conv2d_transpose") for b in ("bias", "kernel"))
    arrays = {n: rng.standard_normal((2, 3)).astype(np.float32) for n in names}
    data, pairs = bytearray(), [(b"", b"\x08\x01")]  # BundleHeaderProto: num_shards 1
    for n in names:
        raw = arrays[n].tobytes()
        pairs.append((n.encode(), entry_proto(1, (2, 3), len(data), len(raw), mask_crc(crc32c(raw)))))
        data += raw
    blob = table(pairs, per_block=2)
    assert [k for k, _ in parse_sstable(blob)] == [k for k, _ in pairs]
    (tmp_path / "m.index").write_bytes(blob)
    (tmp_path / "m.data-00000-of-00001").write_bytes(bytes(data))
    ck = TFCheckpoint(tmp_path / "m")
    assert ck.names() == names
    for n in names:
        np.testing.assert_array_equal(ck.tensor(n, verify=True), arrays[n])

    # damage: a flipped tensor byte fails its CRC; a flipped index byte fails the block CRC; no magic, no table
    bad = bytearray(data)
    bad[ck.entries[names[0]].offset] ^= 1
    (tmp_path / "m.data-00000-of-00001").write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match="CRC"):
        ck.tensor(names[0], verify=True)
    broken = bytearray(blob)
    broken[3] ^= 0xFF
    with pytest.raises(CheckpointError, match="CRC"):
        parse_sstable(bytes(broken))
    with pytest.raises(CheckpointError, match="magic"):
        parse_sstable(blob[:-1] + b"\x00")
    (tmp_path / "m.data-00000-of-00001").write_bytes(bytes(data[:10]))
    with pytest.raises(CheckpointError, match="truncated"):
        ck.tensor(names[-1])
    with pytest.raises(CheckpointError, match="no such"):
        TFCheckpoint(tmp_path / "absent")


def test_entry_proto_fields():
    e = decode_entry("x", entry_proto(9, (5, 0, 300), 1 << 33, 0, 0xDEADBEEF) + b"\x18\x02")
    assert (e.dtype, e.shape, e.offset, e.size, e.crc32c, e.shard_id) == (9, (5, 0, 300), 1 << 33, 0, 0xDEADBEEF, 2)


spleeter_installed = pytest.mark.skipif(not pretrained.installed("spleeter"),
                                        reason="Spleeter weights not fetched ('bgmid models fetch spleeter')")


@spleeter_installed
def test_spleeter_checkpoint():
    ck = TFCheckpoint(pretrained.model_dir("spleeter") / "model")
    assert len(ck.names()) == 149 and ck.num_shards == 1
    assert ck.shape("conv2d/kernel") == (5, 5, 2, 16)  # HWIO, stereo in
    assert ck.shape("conv2d_transpose_11/kernel") == (5, 5, 1, 32)  # H, W, out, in
    assert ck.shape("conv2d_13/kernel") == (4, 4, 1, 2)
    g = ck.tensor("batch_normalization_23/moving_variance", verify=True)
    assert g.shape == (1,) and g[0] > 0
