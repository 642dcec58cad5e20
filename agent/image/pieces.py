"""Piece hashes: what lets a carousel receiver drop a forged datagram the moment it
arrives, instead of finding a spoiled chunk once the chunk is whole (agent.image.chunks).

A chunk's payload flies in pieces of the session's block size. Its *piece list* is the
16-byte truncated sha256 of each piece, cut into *list pieces* of one block each (zero-
padded), which fly ahead of the chunk's data. The *offer* a receiver fetches (and a signed
session signs for its nonce) is the manifest plus, per chunk, the 16-byte hash of each of
its list pieces: a list piece is checked on arrival against the offer, a data piece on
arrival against its list piece; a receiver keeps no piece it cannot check.

16 bytes per piece only filter: a chunk still counts by its manifest hashes, so the
pieces' strength decides how much a forger can cost, never what a disk holds. The lists
are 1.1% of the payload at a 1456-byte block, multicast once for all; the offer, fetched by
each receiver, grows by 16 bytes per 91 pieces' list (about 64 bytes per chunk).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from construct import Bytes, Const, ConstructError, GreedyBytes, Int32ub, Int64ub, Struct

from agent.image.chunks import ChunkError, ChunkTable, parse_manifest

HASH_BYTES = 16
SHARE = 256  # chunks at least per process making piece lists (fewer: one process does all)
OFFER_MAGIC = b"HERDCAST-OFFER01"

Offer = Struct(
    "magic" / Const(OFFER_MAGIC),
    "blocksize" / Int32ub,
    "reserved" / Int32ub,
    "manifest_bytes" / Int64ub,
    "manifest" / Bytes(lambda this: this.manifest_bytes),
    "index" / GreedyBytes,  # every chunk's list-piece hashes, in table order
)


def piece_hash(data: bytes | memoryview) -> bytes:
    return hashlib.sha256(data).digest()[:HASH_BYTES]


def counts(wire_bytes: int, blocksize: int) -> tuple[int, int]:
    """(data pieces, list pieces) of a payload of `wire_bytes` at `blocksize`."""
    data = -(-wire_bytes // blocksize)
    return data, -(-data // (blocksize // HASH_BYTES))


def piece_list(payload: bytes | memoryview, blocksize: int) -> bytes:
    """The chunk's list pieces, back to back (each one block, zero-padded)."""
    view, per = memoryview(payload), blocksize // HASH_BYTES
    hashes = [piece_hash(view[at:at + blocksize]) for at in range(0, len(view), blocksize)]
    return b"".join(b"".join(hashes[at:at + per]).ljust(blocksize, b"\0")
                    for at in range(0, len(hashes), per))


def piece_lists(fd: int, where: list[tuple[int, int]], blocksize: int) -> list[bytes]:
    """The piece list of each payload at (offset, length) in the file open on `fd`, made on
    every core: hashlib keeps the GIL for a piece (it lets go from 2 KiB), so threads would
    take turns. A sender serving 2,300 chunks spent a second on this before its first chunk;
    the shares go to forked processes, which see `fd` as it is. Where none can be made,
    this process makes them all. (multiprocessing is imported here: a receiver, which
    needs the rest of this module at every boot, never makes lists.)"""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    workers = min(os.cpu_count() or 1, len(where) // SHARE)
    if workers > 1:
        shares = [where[len(where) * i // workers:len(where) * (i + 1) // workers]
                  for i in range(workers)]
        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) \
                    as pool:
                parts = list(pool.map(_lists, [fd] * workers, shares, [blocksize] * workers))
            return [lst for part in parts for lst in part]
        except (OSError, ImportError, BrokenProcessPool):
            pass  # no processes, or no POSIX semaphores (a node's initramfs has no /dev/shm)
    return _lists(fd, where, blocksize)


def _lists(fd: int, where: list[tuple[int, int]], blocksize: int) -> list[bytes]:
    return [piece_list(os.pread(fd, length, offset), blocksize) for offset, length in where]


def hash_at(piece: int, blocksize: int) -> int:
    """Where data piece `piece`'s hash lies in its chunk's list pieces, back to back."""
    per = blocksize // HASH_BYTES
    return piece // per * blocksize + piece % per * HASH_BYTES


def list_index(lists: bytes, blocksize: int) -> bytes:
    """The offer's entry for one chunk: the hash of each of its list pieces."""
    return b"".join(piece_hash(lists[at:at + blocksize])
                    for at in range(0, len(lists), blocksize))


def build_offer(manifest: bytes, blocksize: int, index: bytes) -> bytes:
    return Offer.build(dict(blocksize=blocksize, reserved=0, manifest_bytes=len(manifest),
                            manifest=manifest, index=index))


@dataclass(frozen=True)
class Pieces:
    """What a receiver checks pieces against: per chunk, its list pieces' hashes."""

    blocksize: int
    index: tuple[bytes, ...]  # per chunk: list pieces' hashes, back to back

    def list_ok(self, chunk: int, piece: int, data: bytes | memoryview) -> bool:
        """Whether list piece `piece` of `chunk` is the one the offer names."""
        at = piece * HASH_BYTES
        row = self.index[chunk]
        return at < len(row) and len(data) == self.blocksize and \
            piece_hash(data) == row[at:at + HASH_BYTES]


def parse_offer(raw: bytes, blocksize: int) -> tuple[ChunkTable, Pieces]:
    """The manifest and piece index of an offer; ChunkError when either is malformed or
    made for another block size."""
    try:
        offer = Offer.parse(raw)
    except ConstructError as exc:
        raise ChunkError(f"not a chunk offer ({exc})") from None
    if offer.blocksize != blocksize:
        raise ChunkError(f"the offer's pieces are {offer.blocksize} bytes, the session's "
                         f"blocks {blocksize}")
    table = parse_manifest(offer.manifest)
    rows, at = [], 0
    for chunk in table.chunks:
        size = counts(chunk.wire_bytes, blocksize)[1] * HASH_BYTES
        rows.append(bytes(offer.index[at:at + size]))
        at += size
    if at != len(offer.index):
        raise ChunkError(f"the offer's piece index is {len(offer.index)} bytes, its "
                         f"manifest needs {at}")
    return table, Pieces(blocksize, tuple(rows))
