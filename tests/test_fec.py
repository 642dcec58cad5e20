"""agent.udpcast.fec against udpcast's own FEC packets (captured) and as an erasure code."""

from __future__ import annotations

import os
import random

import pytest
from conftest import FIXTURES
from hypothesis import given, settings
from hypothesis import strategies as st
from pcap import read_udp

from agent.udpcast import fec
from agent.udpcast.protocol import (
    DATA_HEADER,
    FEC_HEADER,
    HEADER_SIZE,
    Op,
    bitmap_test,
    opcode,
    parse,
)

FIX = FIXTURES
BLOCKSIZE = 1456


def _capture_slices(pcap, source: bytes, first: int):
    """(slices {slice_no: (offset, bytes)}, FEC packets [(header, payload)]) of one session
    of a capture, the slice offsets worked out from the DATA packets' slice sizes."""
    sizes, fecs = {}, []
    for d in read_udp(pcap)[first:]:
        op = opcode(d.payload)
        if op == Op.DATA:
            h = DATA_HEADER.unpack_from(d.payload)
            sizes[h[2]] = h[5]
        elif op == Op.FEC:
            fecs.append((FEC_HEADER.unpack_from(d.payload), d.payload[HEADER_SIZE:]))
        elif op == Op.DISCONNECT and sizes:
            break
    slices, offset = {}, 0
    for no in sorted(sizes):
        slices[no] = (offset, sizes[no])
        offset += sizes[no]
    assert offset == len(source)  # the capture holds the whole stream
    return slices, fecs


def _blocks(source: bytes, offset: int, nbytes: int) -> list[bytes]:
    return [source[offset + i: offset + min(i + BLOCKSIZE, nbytes)]
            for i in range(0, nbytes, BLOCKSIZE)]


CAPTURES = [
    (FIX / "udpcast-20120424" / "sessions.pcap", FIX / "udpcast-20120424" / "source.bin", 547),
    (FIX / "udpcast-scenarios" / "run3_snd.pcap", FIX / "udpcast-scenarios" / "source.bin", 0),
]


@pytest.mark.parametrize("pcap,source,first", CAPTURES, ids=["session3", "run3"])
def test_encode_matches_udpcast_fec_packets(pcap, source, first):
    data = source.read_bytes()
    slices, fecs = _capture_slices(pcap, data, first)
    checked = 0
    for (_, stripes, slice_no, fec_no, _, nbytes), payload in fecs[:160]:
        if nbytes == 0 or slice_no not in slices:
            continue  # the async end marker carries no data
        blocks = _blocks(data, *slices[slice_no])
        stripe, r = fec_no % stripes, fec_no // stripes
        members = fec.stripe_blocks(len(blocks), stripes, stripe)
        if not members:
            continue  # FEC of an empty stripe is stale memory in udpcast
        assert len(payload) == BLOCKSIZE
        assert fec.encode_stripe([blocks[i] for i in members], r + 1, BLOCKSIZE)[r] == payload
        checked += 1
    assert checked >= 50


@pytest.mark.parametrize("pcap,source,first", CAPTURES, ids=["session3", "run3"])
def test_captured_fec_repairs_lost_blocks(pcap, source, first):
    data = source.read_bytes()
    slices, fecs = _capture_slices(pcap, data, first)
    slice_no = next(no for no, (_, n) in slices.items() if n >= 64 * BLOCKSIZE)
    offset, nbytes = slices[slice_no]
    blocks = _blocks(data, offset, nbytes)
    stripes = next(h[1] for h, _ in fecs if h[2] == slice_no)
    rng = random.Random(7)
    for stripe in range(2):
        members = fec.stripe_blocks(len(blocks), stripes, stripe)
        received = {h[3] // stripes: p for h, p in fecs
                    if h[2] == slice_no and h[3] % stripes == stripe}
        assert len(received) == 8
        lost = set(rng.sample(range(len(members)), 8 - stripe))  # as many as there are FEC
        stripe_data = [None if j in lost else blocks[i] for j, i in enumerate(members)]
        # use the last FEC blocks, not the first, to exercise any-subset decoding
        fec_subset = dict(sorted(received.items())[-len(lost):])
        repaired = fec.decode_stripe(stripe_data, fec_subset, BLOCKSIZE)
        assert set(repaired) == lost
        for j in lost:
            original = blocks[members[j]]
            assert repaired[j][:len(original)] == original


def test_too_few_fec_blocks_is_an_error():
    blocks = [os.urandom(BLOCKSIZE) for _ in range(4)]
    parity = fec.encode_stripe(blocks, 1, BLOCKSIZE)
    with pytest.raises(ValueError, match="only 1 FEC"):
        fec.decode_stripe([None, None, blocks[2], blocks[3]], {0: parity[0]}, BLOCKSIZE)


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 20), redundancy=st.integers(1, 8), seed=st.integers(0, 2**32))
def test_any_erasures_up_to_redundancy_are_repaired(k, redundancy, seed):
    rng = random.Random(seed)
    size = 64
    blocks = [rng.randbytes(size) for _ in range(k)]
    blocks[-1] = blocks[-1][: rng.randint(1, size)]  # a short last block, zero-padded
    parity = fec.encode_stripe(blocks, redundancy, size)
    lost = set(rng.sample(range(k), min(k, rng.randint(1, redundancy))))
    rows = rng.sample(range(redundancy), len(lost))
    repaired = fec.decode_stripe([None if j in lost else b for j, b in enumerate(blocks)],
                                 {r: parity[r] for r in rows}, size)
    for j in lost:
        assert repaired[j] == blocks[j].ljust(size, b"\0")


def test_encode_slice_numbers_fec_blocks_like_udpcast():
    blocks = [bytes([i]) * 100 for i in range(10)]
    out = fec.encode_slice(blocks, stripes=4, redundancy=2, blocksize=100)
    assert [no for no, _ in out] == [0, 1, 2, 3, 4, 5, 6, 7]
    short = fec.encode_slice(blocks[:1], stripes=4, redundancy=2, blocksize=100)
    assert [no for no, _ in short] == [0, 4]  # empty stripes get no FEC


def test_field_arithmetic():
    for a in range(1, 256):
        assert fec.gf_mul(a, fec.gf_inv(a)) == 1
    assert fec.gf_mul(0x80, 2) == 0x1D  # reduction by 0x11D


# --- the receiver's use of FEC (agent.transfer.receive.slices) -----------------------------


def _slice_assembler(blocksize: int):
    from agent.transfer.receive.slices import Assembler

    out = bytearray()

    def sink(s) -> None:
        out.extend(s.data)
        asm.release(s)

    asm = Assembler(blocksize, sink, buffers=3)
    return asm, out


def test_fec_for_stripes_longer_than_the_code_is_dropped_not_a_crash():
    """One stripe over a 1024-block slice has more data blocks than the code covers (128):
    its FEC blocks are ignored and the slice waits for retransmission (was an IndexError)."""
    bs, nblocks = 100, 1024
    data = os.urandom(bs * nblocks)
    asm, out = _slice_assembler(bs)
    for b in range(1, nblocks):  # block 0 lost
        asm.on_data(0, b, len(data), memoryview(data[b * bs:(b + 1) * bs]))
    asm.on_fec(1, 0, 0, len(data), memoryview(os.urandom(bs)))
    assert asm.ignored == 1 and not out
    op, msg = parse(asm.on_reqack(0, len(data), 0))
    assert op == Op.RETRANSMIT and not bitmap_test(msg.received, 0)
    asm.on_data(0, 0, len(data), memoryview(data[:bs]))
    assert bytes(out) == data


def test_fec_blocks_kept_are_capped_at_what_each_stripe_misses():
    """Memory stays bounded by the losses: FEC blocks for complete stripes are not stored,
    and a stripe keeps no more of them than it misses data blocks."""
    bs, stripes, redundancy, nblocks = 100, 8, 8, 64
    data = os.urandom(bs * nblocks - 37)  # a short last block too
    blocks = [data[b * bs:(b + 1) * bs] for b in range(nblocks)]
    asm, out = _slice_assembler(bs)
    lost = {2, 10, 3}  # two in stripe 2, one in stripe 3
    for b in range(nblocks):
        if b not in lost:
            asm.on_data(0, b, len(data), memoryview(blocks[b]))
    fec_blocks = fec.encode_slice(blocks, stripes, redundancy, bs)
    for fec_no, payload in fec_blocks:
        if fec_no % stripes != 3:  # stripe 3's FEC is lost too: the slice cannot finish yet
            asm.on_fec(stripes, 0, fec_no, len(data), memoryview(payload))
    s = asm.active[0]
    assert {stripe: len(kept) for stripe, kept in s.fec_blocks.items() if kept} == {2: 2}
    assert s.fec_count == 2 and not out
    asm.on_data(0, 3, len(data), memoryview(blocks[3]))  # retransmitted: stripe 2 repaired
    assert bytes(out) == data



def _lossy_slice(rng, nblocks: int, bs: int, short: int, loss: float):
    data = rng.randbytes(bs * nblocks - min(short, bs - 1))
    blocks = [data[b * bs:(b + 1) * bs] for b in range(nblocks)]
    asm, out = _slice_assembler(bs)
    lost = {b for b in range(nblocks) if rng.random() < loss}
    for b in range(nblocks):
        if b not in lost:
            asm.on_data(0, b, len(data), memoryview(blocks[b]))
    return data, blocks, asm, out, lost


def _retransmit(asm, data: bytes, blocks, nblocks: int) -> None:
    """Answer the REQACK as a sender would: resend what the RETRANSMIT says is missing."""
    op, msg = parse(asm.on_reqack(0, len(data), 0))
    if op == Op.RETRANSMIT:
        for b in range(nblocks):
            if not bitmap_test(msg.received, b):
                asm.on_data(0, b, len(data), memoryview(blocks[b]))


@settings(max_examples=80, deadline=None)
@given(stripes=st.integers(1, 1100), nblocks=st.integers(1, 1024), bs=st.integers(1, 12),
       redundancy=st.integers(1, 6), short=st.integers(0, 3), seed=st.integers(0, 2**32),
       loss=st.floats(0, 0.5))
def test_any_stripe_count_and_slice_size_repairs_or_waits_for_retransmission(
        stripes, nblocks, bs, redundancy, short, seed, loss):
    """FEC decoding reached with any stripe count and slice size: a slice whose every
    stripe lost no more data blocks than FEC blocks arrived is repaired at once; any other
    (or one whose stripes are longer than the code covers) is completed by retransmission.
    Always delivered intact, never an exception."""
    bs *= 4
    rng = random.Random(seed)
    data, blocks, asm, out, lost = _lossy_slice(rng, nblocks, bs, short, loss)
    covered = -(-nblocks // stripes) <= 128
    got: dict[int, int] = {}
    if covered:
        for fec_no, payload in fec.encode_slice(blocks, stripes, redundancy, bs):
            if rng.random() >= loss:
                got[fec_no % stripes] = got.get(fec_no % stripes, 0) + 1
                asm.on_fec(stripes, 0, fec_no, len(data), memoryview(payload))
    else:  # what a sender would send: the receiver must drop it
        for fec_no in range(min(stripes, nblocks) * redundancy):
            asm.on_fec(stripes, 0, fec_no % 65536, len(data), memoryview(rng.randbytes(bs)))
    repairable = covered and all(
        sum(b in lost for b in fec.stripe_blocks(nblocks, stripes, st_)) <= got.get(st_, 0)
        for st_ in range(min(stripes, nblocks)))
    assert (bytes(out) == data) == repairable or (not lost and bytes(out) == data)
    _retransmit(asm, data, blocks, nblocks)
    assert bytes(out) == data


@settings(max_examples=60, deadline=None)
@given(nblocks=st.integers(1, 1024), bs=st.integers(1, 12), seed=st.integers(0, 2**32),
       loss=st.floats(0, 0.5),
       junk=st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 65535),
                               st.integers(0, 2**32 - 1)), max_size=12))
def test_forged_fec_headers_never_raise(nblocks, bs, seed, loss, junk):
    """FEC packets with any stripes, block number and slice size (forged, or another
    sender's) never raise; the slice still completes. (Like DATA, a forged FEC block that
    fits can spoil a repair: udpcast's stream has no integrity, the digest check catches
    it.)"""
    bs *= 4
    rng = random.Random(seed)
    data, blocks, asm, out, _ = _lossy_slice(rng, nblocks, bs, 0, loss)
    for stripes, fec_no, nbytes in junk:
        asm.on_fec(stripes, 0, fec_no, nbytes, memoryview(rng.randbytes(bs)))
    _retransmit(asm, data, blocks, nblocks)
    assert len(out) in (0, len(data))
