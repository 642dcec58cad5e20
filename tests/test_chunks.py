"""Chunked images (agent.image.chunks, chunkfile, chunksink): a real ext4 disk cut into
chunks, every chunk applied in a shuffled order onto a junk disk gives the used bytes back;
the manifest's construct declaration builds and parses; a forged payload or manifest is
refused; a disk that already holds a chunk is recognised."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
from pathlib import Path

import pytest
from conftest import needs_loop

from agent.image.chunkfile import ChunkedFile, chunk_image, is_chunked
from agent.image.chunks import (
    CHUNK_BYTES,
    ChunkError,
    Manifest,
    decode_payload,
    parse_manifest,
)
from agent.image.chunksink import ChunkSink, probe, scan, target_matches
from agent.image.pieces import (
    HASH_BYTES,
    build_offer,
    counts,
    hash_at,
    list_index,
    parse_offer,
    piece_hash,
    piece_list,
    piece_lists,
)
from agent.image.stream import encode
from agent.image.usedmap import used_map
from builder.lab.fsdisk import Part, file_digests, fsck, make_disk

MiB = 1 << 20
PARTS = [Part("ext4", 40, {"a": 6_000_000, "b": 3_000_000})]


@pytest.fixture(scope="module")
def disk(tmp_path_factory) -> Path:
    """A 48 MiB GPT disk with a 40 MiB ext4 holding 9 MB of files (made once)."""
    path = tmp_path_factory.mktemp("chunks") / "src.img"
    make_disk(path, 48, PARTS)
    return path


def _chunked(disk: Path, out: Path):
    umap = used_map(str(disk))
    return chunk_image(str(disk), str(out), extents=umap.extents, disk_size=umap.disk_size,
                       meta={"host": "lab"})


@contextlib.contextmanager
def _blank_target(tmp_path: Path):
    """(path, fd, the chunked image img.chunks open) of a new all-zero 48 MiB target."""
    target = tmp_path / "blank.img"
    with open(target, "wb") as f:
        f.truncate(48 * MiB)
    stored = ChunkedFile.open(str(tmp_path / "img.chunks"))
    fd = os.open(target, os.O_RDWR)
    try:
        yield target, fd, stored
    finally:
        os.close(fd)
        stored.close()


@needs_loop
def test_every_chunk_in_any_order_makes_the_disk(disk, tmp_path):
    out = tmp_path / "img.chunks"
    table = _chunked(disk, out)
    assert is_chunked(out.read_bytes()[:32])
    assert table.meta == {"host": "lab"}
    assert table.used_bytes == used_map(str(disk)).used_bytes
    assert all(c.offset % CHUNK_BYTES == 0 for c in table.chunks)
    assert out.stat().st_size < 12 * MiB  # 9 MB of random files, the rest compressed
    target = tmp_path / "target.img"
    target.write_bytes(random.Random(1).randbytes(48 * MiB))  # junk: anything unwritten shows
    stored = ChunkedFile.open(str(out))
    fd = os.open(target, os.O_RDWR)
    try:
        sink = ChunkSink(fd, str(target), stored.table)
        order = list(range(len(table.chunks)))
        random.Random(2).shuffle(order)
        for i in order:
            chunk = table.chunks[i]
            assert not target_matches(fd, chunk) or not chunk.data_bytes
            sink.put(chunk, decode_payload(chunk, stored.payload(i)))
            assert target_matches(fd, chunk)
        sink.blank_space()
    finally:
        os.close(fd)
        stored.close()
    assert fsck(target, PARTS) == []
    assert file_digests(target, PARTS) == file_digests(disk, PARTS)


@needs_loop
def test_a_blank_disk_lacks_every_chunk_with_data_and_holds_the_rest(disk, tmp_path):
    """A new or wiped disk (all zero) is told apart without hashing: every chunk with data
    is lacking there, a chunk of nothing but used zeros is already there; once a chunk is
    written it is found, zero target or not."""
    table = _chunked(disk, tmp_path / "img.chunks")
    with _blank_target(tmp_path) as (target, fd, stored):
        assert [target_matches(fd, c) for c in table.chunks] == \
            [not c.data_bytes for c in table.chunks]
        assert any(not c.data_bytes for c in table.chunks)  # the test sees both kinds
        assert [there for _, there in scan(fd, table)] == [not c.data_bytes
                                                            for c in table.chunks]
        chunk = next(c for c in table.chunks if c.data_bytes)
        ChunkSink(fd, str(target), table).put(chunk, stored.decoded(chunk.index))
        assert target_matches(fd, chunk)


@needs_loop
def test_the_disk_scan_finds_what_the_disk_holds_in_table_order(disk, tmp_path):
    """scan (a receiver's, in windows of many chunks) says of each chunk what
    target_matches says: on a junk disk holding every other chunk with data, those and
    nothing else (besides chunks of used zeros, which junk does not hold)."""
    table = _chunked(disk, tmp_path / "img.chunks")
    target = tmp_path / "half.img"
    target.write_bytes(random.Random(3).randbytes(48 * MiB))
    stored = ChunkedFile.open(str(tmp_path / "img.chunks"))
    fd = os.open(target, os.O_RDWR)
    try:
        written = [c for c in table.chunks if c.data_bytes][::2]
        for chunk in written:
            ChunkSink(fd, str(target), table).put(chunk, stored.decoded(chunk.index))
        found = list(scan(fd, table))
        assert [c.index for c, _ in found] == [c.index for c in table.chunks]
        assert [c.index for c, there in found if there] == [c.index for c in written]
        assert [there for _, there in found] == [target_matches(fd, c) for c in table.chunks]
    finally:
        os.close(fd)
        stored.close()


@needs_loop
def test_a_chunks_probe_reads_data_on_its_disk_and_decides_a_zeroed_one(disk, tmp_path):
    """The scan's shortcut: each chunk with data has a probe (a few bytes of its first DATA
    extent) that is never all zero on the disk it was made from, so a disk reading zero
    there lacks it. On a zeroed disk holding every third chunk, the scan finds exactly
    those; with the probe of one of them zeroed again, that one is lacking (sent again)."""
    table = _chunked(disk, tmp_path / "img.chunks")
    with open(disk, "rb") as f:
        for c in table.chunks:
            where = probe(c)
            assert (where is None) == (not c.data_bytes)
            if where is not None:
                f.seek(where[0])
                assert any(f.read(where[1])), c.index
    with _blank_target(tmp_path) as (target, fd, stored):
        written = [c for c in table.chunks if c.data_bytes][::3]
        for chunk in written:
            ChunkSink(fd, str(target), table).put(chunk, stored.decoded(chunk.index))
        there = {c.index for c, found in scan(fd, table) if found}
        assert there == {c.index for c in written} | {c.index for c in table.chunks
                                                     if not c.data_bytes}
        offset, length = probe(written[0])
        os.pwrite(fd, bytes(length), offset)
        assert written[0].index not in {c.index for c, found in scan(fd, table) if found}


@needs_loop
def test_a_stream_image_and_its_disk_chunk_alike(disk, tmp_path):
    umap = used_map(str(disk))
    stream = tmp_path / "img.hcimg"
    fd = os.open(disk, os.O_RDONLY)
    with open(stream, "wb") as f:
        for piece in encode(fd, umap.disk_size, umap.extents, {"host": "lab"}):
            f.write(piece)
    os.close(fd)
    from_stream = chunk_image(str(stream), str(tmp_path / "a.chunks"))
    from_disk = _chunked(disk, tmp_path / "b.chunks")
    assert from_stream.digest == from_disk.digest
    assert from_stream.raw == from_disk.raw


@needs_loop
def test_manifest_declaration_builds_and_parses(disk, tmp_path):
    table = _chunked(disk, tmp_path / "img.chunks")
    parsed = Manifest.parse(table.raw)
    assert parsed.header.chunks == len(table.chunks)
    assert Manifest.build(parsed) == table.raw
    assert parse_manifest(Manifest.build(parsed)).digest == table.digest


@needs_loop
def test_forged_payloads_and_manifests_are_refused(disk, tmp_path):
    table = _chunked(disk, tmp_path / "img.chunks")
    stored = ChunkedFile.open(str(tmp_path / "img.chunks"))
    chunk = max(table.chunks, key=lambda c: c.wire_bytes)
    good = stored.payload(chunk.index)
    stored.close()
    forged = bytearray(good)
    forged[len(forged) // 2] ^= 1
    with pytest.raises(ChunkError):
        decode_payload(chunk, bytes(forged))
    with pytest.raises(ChunkError):
        decode_payload(chunk, good[:-1])
    assert decode_payload(chunk, good)
    parsed = Manifest.parse(table.raw)
    parsed.chunks[0].offset = 12345  # not on a chunk boundary
    with pytest.raises(ChunkError):
        parse_manifest(Manifest.build(parsed))
    with pytest.raises(ChunkError):
        parse_manifest(table.raw[:-1])
    assert hashlib.sha256(table.raw).digest() != hashlib.sha256(table.raw[:-1]).digest()


def test_piece_lists_made_on_every_core_are_each_payloads(tmp_path, monkeypatch):
    """A sender's piece lists, made by several processes (each a share of the payloads),
    are each payload's own, in order; where no process can be made, this one makes them."""
    import concurrent.futures

    import agent.image.pieces as pieces

    path = tmp_path / "payloads.bin"
    rng = random.Random(7)
    sizes = [rng.randrange(1, 40_000) for _ in range(3 * pieces.SHARE + 17)]
    blob = rng.randbytes(sum(sizes))
    path.write_bytes(blob)
    where, at = [], 0
    for n in sizes:
        where.append((at, n))
        at += n
    want = [piece_list(blob[o:o + n], 1456) for o, n in where]
    monkeypatch.setattr(pieces.os, "cpu_count", lambda: 3)
    pools: list[int] = []

    class Counted(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, workers, **kwargs):
            pools.append(workers)
            super().__init__(workers, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Counted)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert piece_lists(fd, where, 1456) == want
        assert pools == [3]  # three processes, a share each

        def refused(*args, **kwargs):
            raise OSError(11, "Resource temporarily unavailable")

        monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", refused)
        assert piece_lists(fd, where, 1456) == want
    finally:
        os.close(fd)


@needs_loop
@pytest.mark.parametrize("blocksize", [1456, 1000])  # 1000: not a multiple of a hash
def test_every_piece_is_checked_by_the_offer(disk, tmp_path, blocksize):
    """The offer names each list piece, each list piece each payload piece: a piece that
    differs in one byte is refused alone; an offer for another block size is refused."""
    _chunked(disk, tmp_path / "img.chunks")
    stored = ChunkedFile.open(str(tmp_path / "img.chunks"))
    lists = [piece_list(stored.payload(c.index), blocksize) for c in stored.table.chunks]
    offer = build_offer(stored.table.raw, blocksize,
                        b"".join(list_index(lst, blocksize) for lst in lists))
    table, pieces = parse_offer(offer, blocksize)
    assert table.raw == stored.table.raw
    checked = 0
    for c, lst in zip(table.chunks, lists, strict=True):
        data, nlists = counts(c.wire_bytes, blocksize)
        assert len(lst) == nlists * blocksize
        for j in range(nlists):
            piece = lst[j * blocksize:(j + 1) * blocksize]
            assert pieces.list_ok(c.index, j, piece)
            assert not pieces.list_ok(c.index, j, bytes([piece[0] ^ 1]) + piece[1:])
        payload = stored.payload(c.index)
        for i in range(data):
            at, piece = hash_at(i, blocksize), payload[i * blocksize:(i + 1) * blocksize]
            assert piece_hash(piece) == lst[at:at + HASH_BYTES]
            assert piece_hash(bytes([piece[0] ^ 1]) + piece[1:]) != lst[at:at + HASH_BYTES]
            checked += 1
    assert checked > 1000
    with pytest.raises(ChunkError, match="block"):
        parse_offer(offer, blocksize + 8)
    with pytest.raises(ChunkError, match="piece index"):
        parse_offer(offer[:-1], blocksize)
    stored.close()


@needs_loop
def test_a_chunked_image_gives_back_the_disks_image_stream(disk, tmp_path):
    """What a stored chunked image sends to herdcast receivers that take no chunks (and
    expands for stock ones) is byte for byte the image stream of the disk it came from."""
    table = _chunked(disk, tmp_path / "img.chunks")
    stored = ChunkedFile.open(str(tmp_path / "img.chunks"))
    umap = used_map(str(disk))
    fd = os.open(disk, os.O_RDONLY)
    try:
        want = hashlib.sha256(b"".join(encode(fd, umap.disk_size, umap.extents,
                                              table.meta))).digest()
    finally:
        os.close(fd)
    assert hashlib.sha256(b"".join(stored.stream())).digest() == want
    stored.close()


class _FailingReads:
    """A reader whose every read fails as a dying disk's does (EIO)."""

    def read(self, length: int, offset: int) -> bytes:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    def close(self) -> None:
        pass


def test_a_read_error_names_the_bytes_and_the_fix(disk, tmp_path, monkeypatch):
    """The pass (the stream's encode) and a chunk made again from the disk
    (agent.image.diskchunks) say which bytes could not be read and what to do, instead of a
    bare "Input/output error"."""
    from agent.image import diskchunks
    from agent.image.chunks import CHUNK_BYTES as SPAN
    from agent.image.stream import StreamError

    umap = used_map(str(disk))
    first = umap.extents[0]
    with pytest.raises(StreamError) as raised:
        list(encode(None, umap.disk_size, umap.extents, None,
                    read=_FailingReads().read))
    assert f"bytes {first.offset}-" in raised.value.what
    assert "Input/output error" in raised.value.what and "dmesg" in raised.value.fix
    table = _chunked(disk, tmp_path / "img.chunks")
    monkeypatch.setattr(diskchunks, "reading", lambda fd: _FailingReads())
    chunks = diskchunks.DiskChunks(str(disk), table, 1, 1456, workers=1)
    try:
        with pytest.raises(ChunkError) as raised:
            chunks.chunk(0)
    finally:
        chunks.close()
    start = table.chunks[0].offset
    assert f"reading chunk 0 of {disk} (bytes {start}-{start + SPAN})" in raised.value.what
    assert "Input/output error" in raised.value.what and "sound copy" in raised.value.fix


def test_chunks_made_again_from_the_disk_are_the_stored_ones_in_any_order(disk, tmp_path):
    """agent.image.diskchunks gives each chunk's payload and piece list exactly as the pass
    made them, in turn (the next ones begun on the pool) and out of turn (a chunk's holes:
    what is begun for the chunks in turn is kept, not thrown away)."""
    from agent.image import diskchunks

    table = _chunked(disk, tmp_path / "img.chunks")
    stored = ChunkedFile.open(str(tmp_path / "img.chunks"))
    chunks = diskchunks.DiskChunks(str(disk), table, 3, 1456, workers=2)
    try:
        def want(i: int) -> tuple[bytes, bytes]:
            return stored.payload(i), piece_list(stored.payload(i), 1456)

        assert chunks.chunk(0) == want(0)
        begun = set(chunks._made)
        assert begun == set(range(1, 1 + chunks.ahead))
        assert chunks.chunk(len(table.chunks) - 1, ahead=False) == want(len(table.chunks) - 1)
        assert set(chunks._made) == begun  # the holes' chunk left the turn's work alone
        for i in range(1, len(table.chunks)):
            assert chunks.chunk(i) == want(i), i
    finally:
        chunks.close()
        stored.close()
