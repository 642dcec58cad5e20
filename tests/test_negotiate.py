"""The receiver's negotiation (agent.transfer.receive.negotiate.Negotiation) replayed without
sockets: captured udpcast sessions and crafted packet sequences with their times, through
exactly the state machine `herdcast receive` runs. What a stranger on the LAN can send before
a receiver connects is here packet by packet; test_forger.py sends it through the commands.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FIXTURES
from pcap import read_udp

from agent.codec import wire_index
from agent.transfer.receive.negotiate import MAX_PEERS, Ask, Join, Negotiation
from agent.transfer.receive.sockets import ReceiveError
from agent.transfer.receive.trust import Trust
from agent.trust import keys, statements
from agent.udpcast.extensions import build_connect_reply
from agent.udpcast.protocol import Cap, LateStatus, Op, build

SESSIONS = FIXTURES / "udpcast-20120424" / "sessions.pcap"
ME, SENDER, STRANGER = "10.9.0.11", "10.9.0.10", "10.9.0.66"
CONTROL = ("10.9.0.255", 9001)
CAPS = Cap.STOCK | Cap.HERDCAST
SECRET = b"s" * 16


def machine(trust=None, start_timeout=None, own=ME, control=CONTROL) -> Negotiation:
    return Negotiation(control, 9001, own, port=9000, start_timeout=start_timeout,
                       trust=trust, now=0.0)


def asks(n: Negotiation) -> list[tuple[str, int]]:
    return [a.dest for a in n.take() if isinstance(a, Ask)]


@pytest.fixture
def trusted(tmp_path: Path):
    """(a receiver's Trust, the key holder's private key)."""
    keys.generate(tmp_path / "k", tmp_path / "k.pub")
    return (Trust(keys.load_public(str(tmp_path / "k.pub")), str(tmp_path / "k.pub")),
            keys.load_private(str(tmp_path / "k")))


def reply(client=0, **ext) -> bytes:
    fields = dict(client_number=client, blocksize=1456, capabilities=CAPS,
                  mcast_addr="233.254.0.10")
    if not ext:
        return build(Op.CONNECT_REPLY, **fields)
    return build_connect_reply(secret=SECRET, **ext, **fields)


def signed_reply(key, nonce: bytes, *, receiver=ME, sender=SENDER, port=9001, size=5000,
                 codec=None, sent_codec=None) -> bytes:
    """The CONNECT_REPLY a signing sender at sender:port sends `receiver` for `nonce`;
    `sent_codec` is what a forger changed the codec field to (the signature unchanged)."""
    image = bytes(range(32))
    statement = statements.Session(nonce, receiver, sender, port, "233.254.0.10", 1456, size,
                                   wire_index(codec), image).message()
    on_wire = codec if sent_codec is None else sent_codec
    return (reply(image_size=size, codec=on_wire) + image
            + statements.sign(key, statement))


# --- captured udpcast ---------------------------------------------------------------------


@pytest.mark.parametrize("receiver,client", [("10.77.0.11", 0), ("10.77.0.12", 1)])
def test_a_captured_udpcast_negotiation_ends_with_its_session(receiver, client):
    """sessions.pcap's first session, as each of its two receivers saw it."""
    n = machine(own=receiver, control=("10.77.0.255", 9001))
    assert asks(n) == [("10.77.0.255", 9001)]
    seen = []
    for d in read_udp(SESSIONS)[:40]:
        if d.sport == 9001 and d.dst in (receiver, "10.77.0.255") or d.dst.startswith("2"):
            seen += n.take()
            if n.feed(d.payload, (d.src, d.sport), d.time) is not None:
                break
    s = n.session
    assert s is not None and s.sender == ("10.77.0.10", 9001)
    assert (s.client_number, s.blocksize, s.group) == (client, 1456, "234.77.0.10")
    assert s.image_size is None and s.codec is None and s.secret is None  # stock
    assert Join("234.77.0.10") in seen + n.take()


def test_connect_req_is_repeated_every_second_until_answered():
    n = machine()
    assert asks(n) == [CONTROL]
    n.tick(0.5)
    assert asks(n) == []
    n.tick(1.0)
    assert asks(n) == [CONTROL]
    assert n.deadline() == 2.0


def test_a_hello_makes_an_unsigned_receiver_ask_that_sender():
    n = machine()
    n.take()
    n.feed(build(Op.HELLO, capabilities=CAPS, mcast_addr="233.254.0.10", blocksize=1456),
           (SENDER, 9001), 0.1)
    assert n.take() == [Ask((SENDER, 9001)), Join("233.254.0.10")]
    n.tick(1.2)
    assert asks(n) == [(SENDER, 9001)]


def test_packets_from_another_port_are_not_the_senders():
    n = machine()
    assert n.feed(reply(), (SENDER, 9003), 0.1) is None


# --- strangers, unsigned ------------------------------------------------------------------


def test_one_missed_from_a_stranger_is_asked_again_not_believed():
    n = machine()
    n.take()
    late = build(Op.HC_LATE, status=int(LateStatus.MISSED), slice_no=7)
    n.feed(late, (STRANGER, 9001), 0.1)
    assert asks(n) == [(STRANGER, 9001)]
    n.tick(3.0)
    n.feed(late, (STRANGER, 9001), 3.5)  # one more, long after: a stray again
    assert n.session is None
    n.feed(late, (STRANGER, 9001), 4.0)
    with pytest.raises(ReceiveError, match="started without this receiver"):
        n.feed(late, (STRANGER, 9001), 4.6)  # saying so for more than a second: believed


@pytest.mark.parametrize("packets,gives_up", [(3, False), (10, True)])
def test_a_stream_of_data_is_a_running_transfer_a_few_packets_are_strays(packets, gives_up):
    n = machine()
    for i in range(packets):
        n.feed(build(Op.DATA, slice_no=7, block_no=i, slice_bytes=4 * 1456) + bytes(1456),
               (STRANGER, 9001), 0.1 + i / 100)
    if gives_up:
        with pytest.raises(ReceiveError, match="already running"):
            n.tick(2.2)
    else:
        n.tick(2.2)
        assert n.session is None and n.suspect is None


def test_forged_sources_cannot_grow_the_state_without_bound():
    n = machine()
    for i in range(5 * MAX_PEERS):
        src = (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 9001)
        n.feed(build(Op.HELLO, capabilities=CAPS, mcast_addr="0.0.0.0", blocksize=1456),
               src, i / 1000)
        n.feed(build(Op.HC_LATE, status=int(LateStatus.NEXT_ROUND), slice_no=1), src, i / 1000)
        n.feed(reply(client=-1), src, i / 1000)
    assert max(len(n.hellos), len(n.asked), len(n.missed), len(n.refused)) <= MAX_PEERS


# --- a receiver with a trusted key acts only on what is signed ------------------------------


def test_a_signed_reply_for_this_receiver_is_taken(trusted):
    trust, key = trusted
    n = machine(trust)
    s = n.feed(signed_reply(key, trust.nonce, codec="zstd"), (SENDER, 9001), 0.1)
    assert s is not None and s.sender == (SENDER, 9001) and s.codec == "zstd"
    assert s.image_size == 5000 and s.secret == SECRET
    assert trust.statement is not None  # the result must name this session


def test_a_spoofed_unsigned_reply_does_not_blacklist_the_real_sender(trusted):
    """Issue 17 item 6: one forged CONNECT_REPLY from the sender's own address is ignored,
    and the key holder's reply from that address that follows is still taken."""
    trust, key = trusted
    n = machine(trust)
    for forged in (reply(), reply(image_size=5000), reply(image_size=5000) + bytes(96)):
        assert n.feed(forged, (SENDER, 9001), 0.1) is None
    assert not any(isinstance(a, Ask) and a.dest != CONTROL for a in n.take()[1:])
    assert n.feed(signed_reply(key, trust.nonce), (SENDER, 9001), 0.2) is not None


@pytest.mark.parametrize("forgery", ["oracle", "relayed", "other-port", "codec", "size",
                                     "old-nonce"])
def test_a_signed_reply_not_made_for_this_session_is_refused(trusted, forgery):
    """Issue 17 item 1: a signature the sender made for another host (a forger sent our
    nonce from its own address), relayed from another address or port, or with the codec or
    size changed on the way, or for another nonce, is not taken."""
    trust, key = trusted
    source = (SENDER, 9001)
    if forgery == "oracle":
        datagram = signed_reply(key, trust.nonce, receiver=STRANGER)
    elif forgery == "relayed":
        datagram, source = signed_reply(key, trust.nonce), (STRANGER, 9001)
    elif forgery == "other-port":
        datagram = signed_reply(key, trust.nonce, port=9003)
    elif forgery == "codec":  # a compressed stream would be written raw
        datagram = signed_reply(key, trust.nonce, codec="gz", sent_codec="none")
    elif forgery == "size":
        datagram = bytearray(signed_reply(key, trust.nonce))
        datagram[39] ^= 1
        datagram = bytes(datagram)
    else:
        datagram = signed_reply(key, statements.new_nonce())
    n = machine(trust)
    assert n.feed(datagram, source, 0.1) is None
    assert source[0] in trust.refused


def test_nothing_unsigned_ends_or_redirects_a_trusted_receiver(trusted):
    """Issue 17 item 7: HC_LATE "missed" for seconds, a stream of DATA, HELLOs and "table
    full" from a stranger: the trusted receiver keeps asking the control address, and takes
    the signed reply that comes in the end."""
    trust, key = trusted
    n = machine(trust)
    n.take()
    late = build(Op.HC_LATE, status=int(LateStatus.MISSED), slice_no=7)
    hello = build(Op.HELLO, capabilities=CAPS, mcast_addr="239.1.1.1", blocksize=1456)
    now = 0.0
    for step in range(500):
        now = step / 100
        for datagram in (late, hello, reply(client=-1),
                         build(Op.DATA, slice_no=7, block_no=step % 4, slice_bytes=5824)
                         + bytes(1456)):
            n.feed(datagram, (STRANGER, 9001), now)
        n.tick(now)
    actions = n.take()
    assert not any(isinstance(a, Join) for a in actions)  # no group joined on its word
    assert actions.count(Ask(CONTROL)) >= 4  # still asking everybody, once a second
    assert n.session is None
    assert n.feed(signed_reply(key, trust.nonce), (SENDER, 9001), now) is not None


def test_start_timeout_names_the_senders_ignored(trusted):
    trust, _ = trusted
    n = machine(trust, start_timeout=3)
    n.feed(reply(image_size=5), (STRANGER, 9001), 0.5)
    with pytest.raises(ReceiveError, match=f"ignored: {STRANGER}"):
        n.tick(3.6)


def test_a_forged_reply_from_the_sender_does_not_stop_its_next_round_counting(trusted):
    """The receiver is late: the key holder, mid-round, keeps saying "wait for the next
    round". One unsigned reply forged from its address does not make those words stop
    counting, so --start-timeout does not run out before the round the receiver waits for;
    its signed reply then is taken."""
    trust, key = trusted
    n = machine(trust, start_timeout=3)
    n.feed(reply(image_size=5000), (SENDER, 9001), 0.1)  # the forgery
    assert SENDER in trust.refused
    later = build(Op.HC_LATE, status=int(LateStatus.NEXT_ROUND), slice_no=9)
    for step in range(1, 21):
        n.feed(later, (SENDER, 9001), step / 2)
        n.tick(step / 2)
    assert n.feed(signed_reply(key, trust.nonce), (SENDER, 9001), 10.2) is not None
