"""agent.transfer.compress: round-trips, and the stock tools reading what herdcast writes."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess

import pytest
import zstandard

from agent.transfer.compress import CODECS, CompressError, compressing_reader, decompressing_writer

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
    with pytest.raises(CompressError):
        _decompress(blob[: len(blob) // 2], codec)


@pytest.mark.parametrize("codec", CODECS)
def test_garbage_is_refused(codec):
    _needs(codec)
    with pytest.raises(CompressError, match="compression"):
        _decompress(b"this is not compressed at all" * 100, codec)


def test_unknown_codec_names_the_choices():
    with pytest.raises(CompressError, match="gz, lzop, zstd"):
        compressing_reader(io.BytesIO(b""), "rar")
    with pytest.raises(CompressError, match="rar"):
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
