"""Unit tests of the sender's pieces that need no network: slice buffers, pacing, the
retransmission bookkeeping and the final verdict."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from types import SimpleNamespace

import pytest

from agent.transfer.options import OptionError, SendOptions, parse_send_args
from agent.transfer.result import SendStats
from agent.transfer.send import pacer as pacing
from agent.transfer.send.batch import Destination, SliceBuffer, gso_blocks
from agent.transfer.send.carousel import Carousel
from agent.transfer.send.inflight import runs_of
from agent.transfer.send.network import SendError, block_size_for
from agent.transfer.send.pacer import Pacer, congested_blocks, pause, truesize
from agent.transfer.send.participants import Table
from agent.transfer.send.reader import EOF, SliceReader
from agent.transfer.send.record import Receiver, Verdict
from agent.transfer.send.report import verdict
from agent.transfer.send.round import Round
from agent.transfer.send.session import SendSession
from agent.udpcast.protocol import (
    DATA_HEADER,
    HEADER_SIZE,
    MAX_UDP_PAYLOAD,
    WINDOW_SLICES,
    Cap,
    Op,
)

HC_CAPS = Cap.STOCK | Cap.HERDCAST | Cap.WINDOW  # what a herdcast receiver asks with


def test_prepare_writes_one_data_header_per_block_and_a_short_last_block():
    buf = SliceBuffer(1456, Destination(), blocks=8)
    assert buf.prepare(7, 3 * 1456 + 100) == 4
    headers = [DATA_HEADER.unpack_from(buf.header_view, i * HEADER_SIZE) for i in range(4)]
    assert headers == [(int(Op.DATA), 0, 7, i, 0, 3 * 1456 + 100) for i in range(4)]
    assert buf.iov[7].iov_len == 100 and buf.iov[5].iov_len == 1456
    buf.prepare(8, 8 * 1456)  # the short block from before is full length again
    assert buf.iov[7].iov_len == 1456


def test_reader_cuts_the_stream_into_slices_and_hashes_it():
    data = bytes(range(256)) * 40  # 10240 bytes: two full 4096-byte slices and 2048
    buffers = [SliceBuffer(1024, Destination(), blocks=4) for _ in range(3)]
    reader = SliceReader(io.BytesIO(data), buffers, 4096)
    got = []
    while True:
        item = reader.next_slice(timeout=5)
        if item is EOF:
            break
        buf, n, fec = item
        got.append(bytes(buf.view[:n]))
        reader.release(buf)
    assert [len(g) for g in got] == [4096, 4096, 2048] and b"".join(got) == data
    assert reader.sha.digest() == hashlib.sha256(data).digest() and reader.total == 10240


def test_runs_and_congestion_count_consecutive_losses():
    missing = 0b1110_0000_0101 | (1 << 20)
    assert runs_of(missing, 32) == [(0, 1), (2, 1), (9, 3), (20, 1)]
    assert congested_blocks(missing, 32) == 3  # only the run of three looks like overrun


def test_pacer_slows_down_on_overrun_and_speeds_up_on_clean_slices():
    p = Pacer(1456, None, 212992)
    assert 4 <= p.burst <= 64
    start = p.rate
    p.feedback(1024, 200)
    assert p.rate < start
    slowed = p.rate
    for _ in range(5):
        p.feedback(1024, 0)
    assert p.rate > slowed


def test_pacer_cuts_once_per_loss_event():
    """Slices sent before a cut report the same overrun: only a slice sent after the cut
    may cut the rate again."""
    p = Pacer(1456, None, 4 << 20)
    p.feedback(1024, 200, slice_no=10, next_no=14)  # slices 11..13 were already out
    once = p.rate
    for no in (11, 12, 13):
        p.feedback(1024, 200, slice_no=no, next_no=15)
    assert p.rate == once
    p.feedback(1024, 200, slice_no=14, next_no=18)  # sent at the lower rate, and still lost
    assert p.rate < once


def test_pacer_ramps_with_the_time_reports_cover_not_their_number():
    """Reports that come now and then (the carousel's HC_NEED): ten clean ones in 0.1 s
    raise the rate as much as one would; one after 1 s of no loss raises it far more, up to
    the link's speed at most; a loss after it cuts."""
    many, one = Pacer(1456, None, 4 << 20), Pacer(1456, None, 4 << 20)
    many.rate = one.rate = 200e6
    many.feedback(100, 0, now=0.0)
    one.feedback(100, 0, now=0.0)
    for i in range(1, 11):
        many.feedback(100, 0, now=i * 0.01)
    one.feedback(100, 0, now=0.1)
    assert many.rate == pytest.approx(one.rate, rel=0.15)
    one.feedback(100, 0, now=1.1)
    assert one.rate > 1.5 * many.rate
    fast = Pacer(1456, None, 4 << 20, link_bits=1e9)
    fast.feedback(100, 0, now=0.0)
    fast.feedback(100, 0, now=5.0)
    assert fast.rate == 1e9
    fast.feedback(100, 10, now=5.1)
    assert fast.rate < 1e9


def test_a_short_wait_for_the_pacer_is_slept_not_polled(monkeypatch):
    """epoll counts whole milliseconds: a 0.4 ms wait for the next burst handed to it took
    1 ms and held the chunk carousel near 700 Mbit/s whatever its rate. A wait under
    SLEEP_UNDER is slept after a look at what receivers said (receive(0)); a longer one
    polls for the wait, answering receivers meanwhile."""
    slept, polled = [], []
    monkeypatch.setattr(pacing.time, "sleep", slept.append)
    pause(0.0004, polled.append)
    assert (polled, slept) == ([0], [0.0004])
    slept.clear()
    polled.clear()
    pause(0.01, polled.append)
    assert (polled, slept) == ([0.01], [])
    pause(0.0, polled.append)
    assert (polled, slept) == ([0.01], [])


def test_the_carousel_cuts_once_when_every_receiver_reports_the_same_loss():
    """Two receivers overrun by the same burst each report it (HC_NEED): one cut. A loss in
    what was sent after the cut, reported later, cuts again."""
    c = SimpleNamespace(pacer=Pacer(1456, None, 4 << 20), reported={}, sends=10)
    for ip in ("a", "b"):  # their first reports, nothing lost
        Carousel._pace(c, ip, 500, 0, 0.0)
    c.sends = 20
    Carousel._pace(c, "a", 900, 100, 0.5)
    once = c.pacer.rate
    Carousel._pace(c, "b", 900, 100, 0.55)  # the same overrun, seen by the other
    c.sends = 21
    Carousel._pace(c, "a", 50, 10, 0.6)  # pieces of chunks that went before the cut
    assert c.pacer.rate == once
    c.sends = 30
    Carousel._pace(c, "a", 900, 100, 1.0)  # sent at the lower rate, and still lost
    assert c.pacer.rate < once


def test_pacer_never_exceeds_max_bitrate():
    p = Pacer(1456, 10_000_000)
    for _ in range(50):
        p.feedback(1024, 0)
    assert p.rate == 10_000_000


def test_pacer_grants_at_most_a_burst_then_asks_to_wait():
    p = Pacer(1456, 8_000_000)
    now = p.last
    first = p.grant(1000, now)
    assert 0 < first <= p.burst
    assert p.grant(1000, now) == 0 and p.wait(10) > 0


def test_verdict_fails_on_any_dropped_or_disagreeing_receiver():
    ok = Receiver("10.0.0.1", 10, digest="ab", verdict=Verdict.OK)
    stock = Receiver("10.0.0.2", 10, verdict=Verdict.OK)
    assert verdict([ok, stock]) == (True, None)
    bad, why = verdict([ok, Receiver("10.0.0.3", 5, verdict=Verdict.DROPPED)])
    assert not bad and "10.0.0.3" in why.what and why.fix
    assert verdict([])[0] is False


def test_async_needs_a_rate_and_is_refused_without_one():
    with pytest.raises(OptionError, match="--max-bitrate"):
        parse_send_args(["--async"])


class _Reader:
    """Hands out full slices of one buffer forever (the ring logic never reads them)."""

    def __init__(self) -> None:
        self.buf = SliceBuffer(1024, Destination(), blocks=4)

    def next_slice(self, timeout: float = 0.0):
        return self.buf, 4096, None

    def release(self, buf) -> None:
        pass


def test_slice_n_plus_2_waits_for_slice_n_even_if_n_plus_1_completed_first():
    from agent.image.source import Source

    session = SendSession(SendOptions(), None, None, 4, Destination(),  # no network needed
                          Source("raw"), None)
    t = Round(session, Table(), _Reader(), None, None, SendStats(), False)
    assert t._start_slice() and t._start_slice()
    assert [s.no for s in t.inflight] == [0, 1]
    t.inflight.remove(t.inflight[1])  # slice 1 answered OK by everybody, slice 0 not yet
    assert not t._start_slice()
    t.inflight.clear()  # slice 0 done as well
    assert t._start_slice() and t.inflight[0].no == 2


@pytest.mark.parametrize("second,ring", [(Cap.STOCK, 2), (HC_CAPS, WINDOW_SLICES)],
                         ids=["stock-beside", "all-herdcast"])
def test_slices_in_flight_are_udpcasts_two_unless_every_receiver_takes_more(second, ring):
    from agent.image.source import Source

    session = SendSession(SendOptions(), None, None, 4, Destination(),  # no network needed
                          Source("raw"), None)
    table = Table()
    table.connect("10.0.0.2", ("10.0.0.2", 9000), HC_CAPS, 0)
    table.connect("10.0.0.3", ("10.0.0.3", 9000), second, 0)
    t = Round(session, table, _Reader(), None, None, SendStats(), False)
    assert t._start_slice()
    t.inflight[0].heard |= set(table.participants)  # everybody answered slice 0
    while t._start_slice():
        pass
    assert [s.no for s in t.inflight] == list(range(ring))


@pytest.mark.parametrize("wanted, mtu, expected", [
    (None, 1500, 1456),  # udpcast's default is what Ethernet's MTU carries
    (None, 9000, 8956),  # jumbo frames: a sixth of the packets
    (None, 65536, 8956),  # loopback: no bigger than a jumbo frame's (slice memory)
    (30000, 65536, 30000),
    (1000, 1500, 1000),
    (8956, 9000, 8956),
])
def test_block_size_follows_the_mtu_unless_given(wanted, mtu, expected):
    assert block_size_for(wanted, "eth0", mtu) == expected


def test_block_size_over_the_mtu_is_refused_with_the_largest_that_fits():
    with pytest.raises(SendError, match=r"--blocksize 1460: .*eth0's MTU 1500.*--blocksize 1456"):
        block_size_for(1460, "eth0", 1500)
    with pytest.raises(SendError, match="MTU 100"):
        block_size_for(None, "eth0", 100)


def test_gso_messages_stay_within_one_udp_datagram():
    for bs in (1456, 4000, 8956, 32000):
        n = gso_blocks(bs)
        assert n * (HEADER_SIZE + bs) <= MAX_UDP_PAYLOAD == 65507
        assert (n + 1) * (HEADER_SIZE + bs) > MAX_UDP_PAYLOAD or n == 40
    assert gso_blocks(8956) == 7
    assert SliceBuffer(8956, Destination(), 64).gso_blocks == 7


def test_jumbo_bursts_are_sized_by_their_bigger_buffers():
    assert truesize(1456) == 2304
    assert truesize(8956) == 16384
    small = Pacer(1456, min_rcvbuf=212992)
    jumbo = Pacer(8956, min_rcvbuf=212992)
    assert jumbo.burst * truesize(8956) * 3 <= 212992 or jumbo.burst == 4
    assert jumbo.burst < small.burst


def test_automatic_slices_keep_udpcasts_size_in_bytes():
    from agent.transfer.send.session import slice_blocks as _slice_blocks

    assert _slice_blocks(SendOptions(blocksize=1456)) == 1024
    assert _slice_blocks(SendOptions(blocksize=8956)) == 166  # ~1.5 MB, not 9 MB
    assert _slice_blocks(SendOptions(blocksize=8956, max_slice_size=100)) == 100
    assert _slice_blocks(SendOptions(blocksize=8956, default_slice_size=512)) == 512


def test_a_silence_means_gone_only_past_what_the_receivers_own_loss_explains():
    """The CI flake (a stock receiver at 30 % loss each way dropped after 5 unanswered
    requests): the requests a silence must last scale with the receiver's answer rate, so a
    receiver on a clean link is still dropped after 1 or 2, one never heard needs ~14."""
    from agent.transfer.send.passes import FALSE_DROP
    from agent.transfer.send.record import Receiver

    clean, lossy, unheard = Receiver("10.0.0.1"), Receiver("10.0.0.2"), Receiver("10.0.0.3")
    clean.requests, clean.answers = 100, 100
    lossy.requests, lossy.answers = 100, 49  # 30 % loss each way: 0.7 * 0.7 answered
    unheard.requests = unheard.silent = 5
    assert clean.silence_that_means_gone(FALSE_DROP) <= 2
    assert 12 <= lossy.silence_that_means_gone(FALSE_DROP) <= 15
    assert unheard.silence_that_means_gone(FALSE_DROP) >= 13
    assert 0.51 ** unheard.silence_that_means_gone(FALSE_DROP) < 1e-3


def test_the_chunking_pass_writes_in_memory_only_what_fits(tmp_path, monkeypatch):
    """A stream image's chunks go to memory (memfd) when even uncompressed they fit in half
    of what is free, so no temporary file is written to (and read back from) a disk during
    the transfer; a bigger one's go to a temporary file. (A disk's that would not fit are
    made again from the disk: test_carousel.)"""
    from agent.hw.memory import available
    from agent.transfer.send.chunking import _fits_in_memory, _scratch

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert available() > 0
    fd, path = _scratch(_fits_in_memory(1 << 20))
    try:
        assert path == f"/proc/self/fd/{fd}" and "memfd:" in os.readlink(path)
        with open(path, "wb") as f:
            f.write(b"chunks")
        with open(path, "rb") as f:
            assert f.read() == b"chunks"
    finally:
        os.close(fd)
    fd, path = _scratch(_fits_in_memory(1 << 62))
    assert fd is None and os.path.dirname(path) == str(tmp_path)
    os.unlink(path)
