"""agent.udpcast.protocol against golden bytes from stock udpcast 20120424 captures, plus property
tests; and the receiver's slice assembly replaying captured sessions (no sockets)."""

from __future__ import annotations

import random

import pytest
from conftest import FIXTURES
from hypothesis import given, settings
from hypothesis import strategies as st
from pcap import read_udp

from agent.transfer.receive.slices import (
    FAR_AHEAD_PACKETS,
    Assembler,
    DroppedBySender,
    MissedStart,
)
from agent.transfer.send.network import default_data_group
from agent.udpcast import protocol
from agent.udpcast.protocol import (
    DATA_HEADER,
    FEC_HEADER,
    HEADER_SIZE,
    MESSAGES,
    SIZES,
    WINDOW_SLICES,
    Cap,
    Op,
    bitmap_set,
    build,
    parse,
)


def bitmap_from(indices, nbytes: int = protocol.BITMAP_BYTES) -> bytes:
    """An LSB-first bitmap with the given bits set (the code sets bits one by one)."""
    bm = bytearray(nbytes)
    for i in indices:
        bitmap_set(bm, i)
    return bytes(bm)


def bitmap_indices(bitmap: bytes | bytearray, limit: int) -> list[int]:
    """The set bits below `limit`."""
    return [i for i in range(limit) if bitmap[i >> 3] & (1 << (i & 7))]


FIX = FIXTURES
SESSIONS = FIX / "udpcast-20120424" / "sessions.pcap"
SOURCE = (FIX / "udpcast-20120424" / "source.bin").read_bytes()
SCENARIOS = sorted((FIX / "udpcast-scenarios").glob("*.pcap"))
ALL_CAPTURES = [SESSIONS, *SCENARIOS]
# sessions.pcap: 1 multicast, 2 broadcast, 3 FEC (datagram index ranges, by DISCONNECTs)
SESSION_RANGES = {1: (0, 288), 2: (288, 547), 3: (547, 959)}


def _fields(container) -> dict:
    return {k: v for k, v in container.items() if not k.startswith("_")}


@pytest.fixture(scope="module")
def sessions():
    return read_udp(SESSIONS)


def _session(datagrams, n):
    lo, hi = SESSION_RANGES[n]
    return datagrams[lo:hi]


# --- golden bytes ---------------------------------------------------------------------


@pytest.mark.parametrize("pcap", ALL_CAPTURES, ids=lambda p: p.stem)
def test_every_captured_datagram_parses_with_its_size(pcap):
    datagrams = read_udp(pcap)
    assert datagrams
    for d in datagrams:
        assert 9000 in (d.sport, d.dport)
        parsed = parse(d.payload)
        assert parsed is not None, d
        op, msg = parsed
        if op == Op.DATA:
            payload = len(d.payload) - HEADER_SIZE
            assert payload == min(1456, msg.slice_bytes - msg.block_no * 1456)
            assert msg.block_no < protocol.MAX_SLICE_SIZE
        elif op == Op.FEC:
            assert len(d.payload) == HEADER_SIZE + 1456
        else:
            assert len(d.payload) == SIZES[op]
        # direction: receivers talk from 9000 to 9001, the sender the other way
        sender_ops = {Op.HELLO, Op.HELLO_STREAMING, Op.CONNECT_REPLY, Op.DATA, Op.FEC,
                      Op.REQACK}
        assert (d.sport == 9001) == (op in sender_ops)


def test_session_negotiation_fields(sessions):
    s1 = _session(sessions, 1)
    op, req = parse(s1[0].payload)
    assert op == Op.CONNECT_REQ and req.capabilities == Cap.STOCK and req.rcvbuf == 212992
    assert s1[0].dst == "10.77.0.255" and s1[0].dport == 9001
    op, hello = parse(s1[2].payload)
    assert op == Op.HELLO and s1[2].payload[:2] == b"\x05\x00"
    assert hello.capabilities == 9 and hello.blocksize == 1456
    assert hello.mcast_addr == "234.77.0.10"  # 20120424's (232 + (a & 7)).b.c.d rule
    replies = [(d.dst, parse(d.payload)[1]) for d in s1 if parse(d.payload)[0] ==
               Op.CONNECT_REPLY]
    assert [(dst, r.client_number) for dst, r in replies] == [("10.77.0.11", 0),
                                                              ("10.77.0.12", 1)]
    assert all(r.blocksize == 1456 and r.capabilities == 9 and r.mcast_addr == "234.77.0.10"
               for _, r in replies)


def test_session_data_and_acks(sessions):
    s1 = _session(sessions, 1)
    data = [DATA_HEADER.unpack_from(d.payload) for d in s1 if parse(d.payload)[0] == Op.DATA]
    assert {(h[2], h[5]) for h in data} == {(0, 163072), (1, 136864), (2, 64)}
    assert all(d.dst == "234.77.0.10" for d in s1 if parse(d.payload)[0] == Op.DATA)
    msgs = [(d, *parse(d.payload)) for d in s1]
    reqacks = [m for _, op, m in msgs if op == Op.REQACK]
    assert [(m.slice_no, m.slice_bytes, m.rxmit) for m in reqacks] == [
        (0, 163072, 0), (0, 163072, 1), (1, 136864, 0), (1, 136864, 1), (2, 64, 0),
        (3, 0, 0)]
    assert bitmap_indices(reqacks[1].ready_set, 1024) == [1]  # #1 already answered OK
    retransmits = [m for _, op, m in msgs if op == Op.RETRANSMIT]
    first = retransmits[0]
    assert first.slice_no == 0 and first.rxmit == 0
    assert bitmap_indices(first.received, 1024) == list(range(92))
    assert first.received[:12] == b"\xff" * 11 + b"\x0f"
    oks = [(d.src, m.slice_no) for d, op, m in msgs if op == Op.OK]
    assert ("10.77.0.11", 3) in oks and ("10.77.0.12", 3) in oks


def test_broadcast_and_fec_sessions(sessions):
    s2 = _session(sessions, 2)
    assert {d.dst for d in s2 if parse(d.payload)[0] == Op.DATA} == {"10.77.0.255"}
    s3 = _session(sessions, 3)
    fecs = [FEC_HEADER.unpack_from(d.payload) for d in s3 if parse(d.payload)[0] == Op.FEC]
    assert fecs and {h[1] for h in fecs} == {8}  # 8 stripes
    slice0 = sorted(h[3] for h in fecs if h[2] == 0)
    assert slice0 == list(range(64))  # 8 stripes x 8 redundancy, numbered s + r*S
    assert {d.dst for d in s3 if parse(d.payload)[0] == Op.DATA} == {"10.77.0.11"}


def test_async_and_newer_sender_captures():
    run3 = read_udp(FIX / "udpcast-scenarios" / "run3_snd.pcap")
    hellos = [parse(d.payload)[1] for d in run3 if parse(d.payload)[0] == Op.HELLO]
    assert hellos and all(h.capabilities == Cap.STOCK | Cap.ASYNC for h in hellos)
    ends = [FEC_HEADER.unpack_from(d.payload) for d in run3
            if parse(d.payload)[0] == Op.FEC and FEC_HEADER.unpack_from(d.payload)[5] == 0]
    assert len(ends) == 64  # async+FEC end marker
    run8 = read_udp(FIX / "udpcast-scenarios" / "run8_snd.pcap")
    hello = next(parse(d.payload)[1] for d in run8 if parse(d.payload)[0] == Op.HELLO)
    assert hello.mcast_addr == "233.254.77.1"  # 20230924's rule, garbage after it ignored
    assert default_data_group("192.168.77.1") == "233.254.77.1"


@pytest.mark.parametrize("pcap", ALL_CAPTURES, ids=lambda p: p.stem)
def test_build_of_parse_is_identity(pcap):
    checked = 0
    for d in read_udp(pcap):
        op, msg = parse(d.payload)
        if op in (Op.DATA, Op.FEC):
            header = d.payload[:HEADER_SIZE]
            assert build(op, **_fields(msg)) == header
            continue
        if op in (Op.HELLO, Op.HELLO_STREAMING) and (any(d.payload[12:24]) or
                                                     any(d.payload[26:28])):
            continue  # 20230924 leaves these bytes uninitialised
        assert build(op, **_fields(msg)) == d.payload
        checked += 1
    assert checked > 0


# --- properties -----------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2000))
def test_parse_never_raises_on_garbage(data):
    result = parse(data)
    assert result is None or result[0] in MESSAGES


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(MESSAGES)), st.binary(max_size=300))
def test_parse_never_raises_on_known_opcodes(op, tail):
    data = op.to_bytes(2, "big") + tail
    result = parse(data)
    if len(data) >= SIZES[op]:
        assert result is not None and result[0] == op
    else:
        assert result is None


def _field_strategy(name: str, sub):
    size = sub.sizeof()
    if name == "mcast_addr":
        return st.ip_addresses(v=4).map(str)
    if name == "reason":  # HC_FAIL's line: text without NULs (the padding), up to its size
        return st.text(st.characters(blacklist_characters="\x00"), max_size=size // 4)
    fmt = getattr(getattr(sub, "subcon", sub), "fmtstr", None) or getattr(sub, "fmtstr", "")
    if "s" not in fmt and fmt and fmt[-1] in "bhilq":
        bits = size * 8
        return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if fmt and fmt[-1] in "BHILQ":
        return st.integers(0, 2 ** (size * 8) - 1)
    return st.binary(min_size=size, max_size=size)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_build_parse_round_trip(data):
    op = data.draw(st.sampled_from(sorted(MESSAGES)))
    fields = {}
    for sub in MESSAGES[op].subcons:
        if sub.name is None or sub.name == "opcode":
            continue
        fields[sub.name] = data.draw(_field_strategy(sub.name, sub.subcon), label=sub.name)
    raw = build(op, **fields)
    assert len(raw) == SIZES[op]
    parsed_op, msg = parse(raw)
    assert parsed_op == op
    assert _fields(msg) == {"opcode": int(op), **fields}


# --- replay through the receiver's slice assembly --------------------------------------


class Collector:
    """A sink that writes completed slices to memory and gives the buffers back."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.assembler: Assembler | None = None

    def __call__(self, s) -> None:
        self.out += s.data
        self.assembler.release(s)


def _assembler(blocksize=1456) -> tuple[Assembler, Collector]:
    sink = Collector()
    asm = Assembler(blocksize, sink, buffers=3)
    sink.assembler = asm
    return asm, sink


def replay(datagrams, asm: Assembler, drop=lambda d: False) -> list[bytes]:
    """Feed the sender's datagrams to the assembler; return the replies it would send."""
    replies = []
    for d in datagrams:
        if d.sport != 9001 or drop(d):
            continue
        mv = memoryview(d.payload)
        op = protocol.opcode(mv)
        if op == Op.DATA:
            _, _, sno, bno, _, nbytes = DATA_HEADER.unpack_from(mv)
            asm.on_data(sno, bno, nbytes, mv[HEADER_SIZE:])
        elif op == Op.FEC:
            _, stripes, sno, fno, _, nbytes = FEC_HEADER.unpack_from(mv)
            asm.on_fec(stripes, sno, fno, nbytes, mv[HEADER_SIZE:])
        elif op == Op.REQACK:
            msg = parse(mv)[1]
            replies.append(asm.on_reqack(msg.slice_no, msg.slice_bytes, msg.rxmit))
    return replies


@pytest.mark.parametrize("session", [1, 2, 3])
def test_replay_reassembles_source(sessions, session):
    asm, sink = _assembler()
    replies = replay(_session(sessions, session), asm)
    assert asm.ended
    assert bytes(sink.out) == SOURCE
    assert all(parse(r)[0] == Op.OK for r in replies)
    assert parse(replies[-1])[1].slice_no == 3


def test_replay_with_retransmissions_run2():
    source = (FIX / "udpcast-scenarios" / "source.bin").read_bytes()
    asm, sink = _assembler()
    replay(read_udp(FIX / "udpcast-scenarios" / "run2_snd.pcap"), asm)
    assert asm.ended and bytes(sink.out) == source


def test_lost_block_is_asked_for_with_the_received_bitmap(sessions):
    asm, sink = _assembler()
    lost = {(0, 5), (0, 111)}

    def drop(d):
        if protocol.opcode(d.payload) != Op.DATA:
            return False
        h = DATA_HEADER.unpack_from(d.payload)
        return (h[2], h[3]) in lost

    replies = [parse(r) for r in replay(_session(sessions, 1)[:120], asm, drop)]
    assert len(replies) == 1
    op, msg = replies[0]
    assert op == Op.RETRANSMIT and msg.slice_no == 0 and msg.rxmit == 0
    assert bitmap_indices(msg.received, 112) == [i for i in range(112) if i not in (5, 111)]
    assert sink.out == b""  # nothing written while slice 0 has holes
    asm.on_data(0, 5, 163072, memoryview(SOURCE[5 * 1456:6 * 1456]))
    asm.on_data(0, 111, 163072, memoryview(SOURCE[111 * 1456:112 * 1456]))
    assert bytes(sink.out) == SOURCE[:163072]
    op, msg = parse(asm.on_reqack(0, 163072, 7))
    assert op == Op.OK and msg.slice_no == 0


def test_fec_repairs_losses_without_retransmission(sessions):
    asm, sink = _assembler()
    rng = random.Random(3)
    dropped = []

    def drop(d):
        if protocol.opcode(d.payload) != Op.DATA:
            return False
        h = DATA_HEADER.unpack_from(d.payload)
        if h[2] == 1 and h[3] % 8 == 2 and len(dropped) < 8 and rng.random() < 0.5:
            dropped.append(h[3])  # up to 8 (the FEC blocks' worth) on stripe 2 of slice 1
            return True
        return False

    replies = replay(_session(sessions, 3), asm, drop)
    assert len(dropped) == 8
    assert bytes(sink.out) == SOURCE
    assert all(parse(r)[0] == Op.OK for r in replies)
    assert asm.ended


def test_data_two_slices_ahead_means_dropped():
    asm, _ = _assembler(blocksize=100)
    asm.on_data(0, 0, 300, memoryview(bytes(100)))
    asm.on_data(1, 0, 300, memoryview(bytes(100)))
    for block in range(FAR_AHEAD_PACKETS - 1):  # a forged packet or a few: ignored
        asm.on_data(2, block % 3, 300, memoryview(bytes(100)))
    with pytest.raises(DroppedBySender, match="slice 2 while slice 0"):
        asm.on_data(2, 0, 300, memoryview(bytes(100)))


def test_a_herdcast_senders_window_is_not_taken_for_a_drop():
    """From a sender with Cap.WINDOW, slices n+1..n+3 may come while n is incomplete: they
    are kept and delivered in order once n completes; only slice n+4 means dropped."""
    asm = Assembler(100, sink := Collector(), buffers=WINDOW_SLICES)
    sink.assembler = asm
    asm.window = WINDOW_SLICES
    block = {no: bytes([no]) * 100 for no in range(WINDOW_SLICES)}
    asm.on_data(0, 0, 200, memoryview(block[0]))  # slice 0 lacks its second block
    for no in range(1, WINDOW_SLICES):
        for b in (0, 1):
            asm.on_data(no, b, 200, memoryview(block[no]))
    assert sink.out == b"" and asm.ignored == 0
    asm.on_data(0, 1, 200, memoryview(block[0]))
    assert bytes(sink.out) == b"".join(block[no] * 2 for no in range(WINDOW_SLICES))
    asm.on_data(WINDOW_SLICES, 0, 200, memoryview(bytes(100)))  # slice 4, incomplete
    with pytest.raises(DroppedBySender, match=f"slice {2 * WINDOW_SLICES} while slice 4"):
        for _ in range(FAR_AHEAD_PACKETS):
            asm.on_data(2 * WINDOW_SLICES, 0, 200, memoryview(bytes(100)))


def test_a_new_slice_waits_a_moment_for_the_writer_to_free_a_buffer():
    """Every buffer held by a writer about to give one back (descheduled for a moment): the
    first packet of the next slice waits for it instead of being dropped as lost, which
    cost a whole slice's retransmission each time."""
    import threading

    held = []
    asm = Assembler(100, held.append, buffers=3)
    for no in range(3):
        asm.on_data(no, 0, 100, memoryview(bytes([no]) * 100))
    assert len(held) == 3 and asm.free.empty()
    threading.Timer(0.01, asm.release, [held[0]]).start()
    asm.on_data(3, 0, 100, memoryview(b"x" * 100))
    assert asm.delivered_bytes == 400 and bytes(held[-1].data) == b"x" * 100


def test_first_packets_far_into_the_stream_mean_missed_start():
    asm, _ = _assembler(blocksize=100)
    for _ in range(FAR_AHEAD_PACKETS - 2):
        asm.on_data(40, 0, 300, memoryview(bytes(100)))
    assert asm.on_reqack(40, 300, 0) is None
    with pytest.raises(MissedStart):
        asm.on_data(40, 0, 300, memoryview(bytes(100)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1100), st.integers(0, 200000),
                          st.binary(max_size=200)), max_size=40))
def test_assembler_survives_bogus_fields(packets):
    asm, sink = _assembler(blocksize=100)
    for sno, bno, nbytes, payload in packets:
        try:
            asm.on_data(sno, bno, nbytes, memoryview(payload))
            asm.on_fec(1 + bno % 9, sno, bno, nbytes, memoryview(payload * 2))
            answer = asm.on_reqack(sno, nbytes, bno)
            if answer is None:  # an end marker not at the end, or a stray far ahead
                assert nbytes == 0 or asm.contradicted is not None or sno > asm.next_slice + 1
                continue
            assert parse(answer)[0] in (Op.OK, Op.RETRANSMIT)
        except (DroppedBySender, MissedStart):
            break
    assert len(sink.out) == asm.delivered_bytes


def test_bitmap_helpers_are_lsb_first():
    assert bitmap_from([0, 9], 2) == b"\x01\x02"


def test_connect_reply_image_size_extension():
    """A herdcast sender appends the image size to CONNECT_REPLY for herdcast receivers;
    the first 32 bytes stay udpcast's, so the stock parse still reads them."""
    from agent.udpcast.extensions import build_connect_reply, image_size, reply_secret

    fields = dict(client_number=3, blocksize=1456, capabilities=Cap.STOCK | Cap.HERDCAST,
                  mcast_addr="233.254.0.10")
    plain = build_connect_reply(**fields)
    extended = build_connect_reply(image_size=3_000_001, secret=b"s" * 16, **fields)
    assert len(plain) == 32 and len(extended) == 60  # + size, codec, 3 padding, secret
    assert reply_secret(extended) == b"s" * 16 and reply_secret(plain) is None
    assert extended[:32] == plain
    assert parse(extended) == parse(plain)
    assert image_size(extended) == 3_000_001
    assert image_size(plain) is None
    assert image_size(build_connect_reply(image_size=0, **fields)) is None


def test_connect_reply_names_the_compression_for_herdcast_receivers():
    from agent.udpcast.extensions import build_connect_reply, reply_codec

    fields = dict(client_number=3, blocksize=1456, capabilities=Cap.STOCK | Cap.HERDCAST,
                  mcast_addr="233.254.0.10")
    assert reply_codec(build_connect_reply(image_size=5, codec="zstd", **fields)) == "zstd"
    assert reply_codec(build_connect_reply(image_size=5, **fields)) == "none"
    assert reply_codec(build_connect_reply(**fields)) is None  # stock form: nothing said
    forged = bytearray(build_connect_reply(image_size=5, **fields))
    forged[40] = 99
    assert reply_codec(bytes(forged)) is None


def test_hc_fail_carries_one_line_cut_on_a_character_boundary():
    """A herdcast receiver's reason: the sender reads it back whole when it fits, cut at a
    character (not mid-UTF-8) when it does not, with the receiver's secret; garbage is
    dropped, never raised."""
    from agent.udpcast.extensions import build_fail
    from agent.udpcast.protocol import REASON_BYTES, SECRET_BYTES

    secret = bytes(range(SECRET_BYTES))
    op, msg = parse(build_fail("disk /dev/sda: 1000 bytes is smaller than the image", secret))
    assert op == Op.HC_FAIL and msg.reason == "disk /dev/sda: 1000 bytes is smaller than the image"
    assert msg.secret == secret
    long = parse(build_fail("é" * REASON_BYTES, secret))[1].reason
    assert long == "é" * (REASON_BYTES // 2)
    assert parse(bytes([0x48, 0x04, 0, 0]) + secret + b"\xff" * REASON_BYTES) is None
