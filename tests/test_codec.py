"""agent.codec: the one codec table, round-trips, the stock tools reading what herdcast
writes, and bounded decompression (a bomb is refused in one line, in bounded memory)."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import zlib

import pytest
import zstandard

import agent.codec
from agent.codec import (
    NAMES,
    CodecError,
    compressing_reader,
    decompressing_reader,
    decompressing_writer,
    from_wire,
    sniff,
    wire_index,
)

CODECS = NAMES  # the names, as the options take them

STOCK = {"gz": ["gzip", "-dc"], "lzop": ["lzop", "-dc"], "zstd": ["zstd", "-dc"]}
STOCK_COMPRESS = {"gz": ["gzip", "-c"], "lzop": ["lzop", "-c"], "zstd": ["zstd", "-c", "-q"]}


def _payload(size: int = 3 * 1024 * 1024 + 17) -> bytes:
    """Half random, half repetitive: both code paths of every codec, and > one chunk."""
    half = size // 2
    return os.urandom(half) + (b"herdcast disk block " * (size // 20 + 1))[: size - half]


def _needs(codec: str) -> None:
    if shutil.which(STOCK[codec][0]) is None:
        pytest.skip(f"{STOCK[codec][0]} not installed (scripts/install-deps installs it)")


def _compress(data: bytes, codec: str, read_size: int = 65536) -> bytes:
    reader = compressing_reader(io.BytesIO(data), codec)
    parts = []
    while chunk := reader.read(read_size):
        parts.append(chunk)
    reader.close()
    return b"".join(parts)


def _decompress(blob: bytes, codec: str, write_size: int = 1456) -> bytes:
    out = io.BytesIO()
    writer = decompressing_writer(out, codec)
    for i in range(0, len(blob), write_size):
        writer.write(blob[i:i + write_size])
    writer.close()
    assert not out.closed, "the raw stream belongs to the caller"
    return out.getvalue()


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip(codec):
    _needs(codec)
    data = _payload()
    blob = _compress(data, codec)
    assert blob != data
    assert _decompress(blob, codec) == data


@pytest.mark.parametrize("codec", CODECS)
def test_empty_stream_round_trips(codec):
    _needs(codec)
    assert _decompress(_compress(b"", codec), codec) == b""


@pytest.mark.parametrize("codec", CODECS)
def test_stock_tool_reads_what_herdcast_writes(codec):
    """A stock `udp-receiver --pipe 'gzip -dc'` must read herdcast's compr=gz image."""
    _needs(codec)
    data = _payload()
    proc = subprocess.run(STOCK[codec], input=_compress(data, codec), capture_output=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == data


@pytest.mark.parametrize("codec", CODECS)
def test_herdcast_reads_what_stock_tool_writes(codec):
    """A stock `udp-sender --pipe 'gzip -c'` feeds a herdcast receiver with compr=gz."""
    _needs(codec)
    data = _payload(500_000)
    proc = subprocess.run(STOCK_COMPRESS[codec], input=data, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert _decompress(proc.stdout, codec) == data


def test_gzip_stream_is_a_gzip_member():
    blob = _compress(b"abc" * 1000, "gz")
    assert blob[:2] == b"\x1f\x8b"
    assert gzip.decompress(blob) == b"abc" * 1000


@pytest.mark.parametrize("codec", ["gz", "zstd"])
def test_concatenated_members_are_followed(codec):
    blob = _compress(b"first ", codec) + _compress(b"second", codec)
    assert _decompress(blob, codec, write_size=7) == b"first second"


@pytest.mark.parametrize("codec", CODECS)
def test_truncated_stream_fails_at_close(codec):
    """A transfer that stopped early must not look finished."""
    _needs(codec)
    blob = _compress(_payload(200_000), codec)
    with pytest.raises(CodecError):
        _decompress(blob[: len(blob) // 2], codec)


@pytest.mark.parametrize("codec", CODECS)
def test_garbage_is_refused(codec):
    _needs(codec)
    with pytest.raises(CodecError, match="compression"):
        _decompress(b"this is not compressed at all" * 100, codec)


def test_unknown_codec_names_the_choices():
    with pytest.raises(CodecError, match="gz, lzop, zstd"):
        compressing_reader(io.BytesIO(b""), "rar")
    with pytest.raises(CodecError, match="rar"):
        decompressing_writer(io.BytesIO(), "rar")


def test_zstd_frame_is_standard():
    data = b"zstd" * 5000
    assert zstandard.ZstdDecompressor().decompressobj().decompress(_compress(data, "zstd")) \
        == data


def test_reader_reads_from_a_real_file(tmp_path):
    data = _payload(300_000)
    src = tmp_path / "disk.img"
    src.write_bytes(data)
    with open(src, "rb") as raw:
        reader = compressing_reader(raw, "gz")
        assert gzip.decompress(reader.read()) == data
        assert not raw.closed


@pytest.mark.parametrize("codec", CODECS)
def test_reader_expands_a_file(codec):
    _needs(codec)
    data = _payload(700_000)
    got = decompressing_reader(io.BytesIO(_compress(data, codec)), codec)
    assert got.read() == data


def test_one_entry_per_codec_names_magic_and_wire():
    """Each codec's magic is what its stream starts with, and its wire number is its own."""
    assert NAMES == ("gz", "lzop", "zstd")
    assert sorted(c.wire for c in agent.codec.CODECS) == [1, 2, 3]
    for name in ("gz", "zstd"):
        assert sniff(_compress(b"x" * 100, name)) == name
    assert sniff(b"HERDCAST-IMAGE\x00\x01") is None
    assert [from_wire(wire_index(n)) for n in (None, "none", *NAMES)] == ["none", "none", *NAMES]
    assert from_wire(99) is None


def _bomb(codec: str, size: int) -> bytes:
    if codec == "zstd":
        return zstandard.ZstdCompressor(level=19).compress(bytes(size))
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    return z.compress(bytes(size)) + z.flush()


@pytest.mark.parametrize("codec", ["gz", "zstd"])
def test_a_bomb_is_handed_out_in_bounded_pieces(codec):
    """256 MiB of zeros in a few KiB: no write ever sees more than a bounded piece."""
    blob = _bomb(codec, 256 << 20)
    assert len(blob) < 300_000

    class Largest(io.RawIOBase):
        largest = total = 0

        def writable(self):
            return True

        def write(self, b):
            self.largest, self.total = max(self.largest, len(b)), self.total + len(b)
            return len(b)

    out = Largest()
    w = decompressing_writer(out, codec)
    w.write(blob)
    w.close()
    assert out.total == 256 << 20
    assert out.largest <= agent.codec.PIECE


@pytest.mark.parametrize("codec", CODECS)
def test_a_stream_expanding_past_its_limit_is_refused(codec):
    _needs(codec)
    blob = _compress(bytes(4 << 20), codec)
    with pytest.raises(CodecError, match="expands past 1048576 bytes"):
        _decompress_limited(blob, codec, 1 << 20)
    with pytest.raises(CodecError, match="expands past"):
        decompressing_reader(io.BytesIO(blob), codec, 1 << 20).read()
    assert _decompress_limited(blob, codec, 4 << 20) == bytes(4 << 20)


def _decompress_limited(blob: bytes, codec: str, limit: int) -> bytes:
    out = io.BytesIO()
    writer = decompressing_writer(out, codec, limit)
    for i in range(0, len(blob), 65536):
        writer.write(blob[i:i + 65536])
    writer.close()
    return out.getvalue()
