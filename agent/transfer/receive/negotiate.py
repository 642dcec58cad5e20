"""Finding the sender: CONNECT_REQ until a CONNECT_REPLY (or an async HELLO) says who it is.

As udpcast's receiver: CONNECT_REQ to the control address; a HELLO makes us ask that sender
directly (an async HELLO, or --passive, makes us a listener that never answers);
CONNECT_REPLY gives our client number, the block size and the data group. herdcast repeats
its CONNECT_REQ every second until answered (udpcast sends one and hangs if it is lost), and
recognises a transfer that started without it: a herdcast sender answers HC_LATE (wait for
the next round, or restart the sender), a stock one just keeps sending.

One stranger's packet does not make it give up: an HC_LATE "missed" counts only once its
sender has kept saying so for a second (it is asked directly meanwhile), a CONNECT_REPLY
refusing us (-1: table full) only makes us wait for a slot, and a transfer "already running"
must be a stream of packets, not one. Once a CONNECT_REPLY is taken, every socket is tied to
that sender (receive.link) and packets from anybody else are dropped by the kernel.
"""

from __future__ import annotations

import time

from agent.say import say
from agent.transfer.receive.link import Link, ReceiveError, Session, network_error
from agent.udpcast.protocol import (
    HEADER_SIZE,
    MAX_UDP_PAYLOAD,
    Cap,
    LateStatus,
    Op,
    build,
    image_size,
    parse,
    reply_codec,
)

CONNECT_RETRY = 1.0  # seconds between CONNECT_REQ repeats while unanswered
MISSED_START_WAIT = 2.0  # how long a running transfer may go on without answering us
RUNNING_PACKETS = 10  # packets in that time that make it a running transfer, not a stray


def _plausible(op: Op, msg) -> bool:
    """Sanity checks on negotiation messages, which arrive before the kernel filters by
    sender: a stray datagram must not pass for a sender's HELLO or CONNECT_REPLY."""
    if op in (Op.CONNECT_REPLY, Op.HELLO, Op.HELLO_NEW):
        return (msg.capabilities & Cap.STOCK == Cap.STOCK
                and 1 <= msg.blocksize <= MAX_UDP_PAYLOAD - HEADER_SIZE
                and (op != Op.CONNECT_REPLY or msg.client_number < 1024))
    return True


def negotiate(link: Link) -> Session:
    """Find the sender and get connected (or learn that we are late); raises ReceiveError."""
    opts = link.opts
    target = (link.control, link.sender_port)
    link.connect_req(target)
    now = time.monotonic()
    next_req = now + CONNECT_RETRY
    last_activity = now
    suspect: tuple[str, float] | None = None  # a sender seen mid-transfer, and when
    suspect_packets = 0
    late_sender: str | None = None
    hellos: dict[str, Session] = {}  # senders whose HELLO we answered
    missed: dict[str, float] = {}  # senders that said we missed the start, since when
    asked: dict[str, float] = {}  # when we last asked each of them directly
    refused: set[str] = set()  # senders that answered "table full"
    while True:
        now = time.monotonic()
        timeout = next_req - now
        if opts.start_timeout:
            timeout = min(timeout, last_activity + opts.start_timeout - now)
        if suspect:
            timeout = min(timeout, suspect[1] + MISSED_START_WAIT - now)
        for key, _ in link.sel.select(max(timeout, 0)):
            while True:
                try:
                    n, (ip, port) = key.fileobj.recvfrom_into(link.scratch)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    raise network_error("waiting for the sender", exc) from exc
                if port != link.sender_port:
                    continue
                parsed = parse(link.mv[:n])
                if parsed is None:
                    continue
                op, msg = parsed
                if not _plausible(op, msg):
                    continue
                if link.trust is not None and ip in link.trust.refused:
                    continue  # not a sender for us: its chatter is no activity either
                last_activity = time.monotonic()
                if op == Op.CONNECT_REPLY:
                    if msg.client_number < 0:
                        if ip not in refused:
                            refused.add(ip)
                            say(f"sender {ip} refused us (its table of 1024 receivers is "
                                "full): waiting for a slot or another sender")
                        continue
                    if link.trust is not None:
                        why = link.trust.reply_problem(link.mv[:n], msg)
                        if why is not None:
                            link.trust.refuse(ip, why)
                            link.send(build(Op.DISCONNECT), (ip, port))  # don't wait for us
                            continue
                        say(f"sender {ip} signed the session with the trusted key")
                    return Session((ip, port), msg.client_number, msg.blocksize,
                                   msg.mcast_addr, msg.capabilities, False,
                                   image_size(link.mv[:n]), reply_codec(link.mv[:n]))
                if op in (Op.HELLO, Op.HELLO_NEW):
                    if msg.capabilities & Cap.NEW_GEN and (msg.capabilities & Cap.ASYNC
                                                           or opts.passive):
                        if link.trust is not None:  # nothing there is signed
                            link.trust.refuse(ip, "an --async sender cannot sign a session")
                            continue
                        return Session((ip, port), 0, msg.blocksize, msg.mcast_addr,
                                       msg.capabilities, True)
                    target = (ip, port)
                    link.connect_req(target)
                    next_req = time.monotonic() + CONNECT_RETRY
                    hellos[ip] = Session((ip, port), -1, msg.blocksize, msg.mcast_addr,
                                         msg.capabilities, False)
                    link.join_data_group(msg.mcast_addr)
                elif op == Op.HC_LATE:
                    since = missed.setdefault(ip, last_activity)
                    if msg.status == LateStatus.MISSED and last_activity - since < CONNECT_RETRY:
                        if last_activity - asked.get(ip, 0.0) >= CONNECT_RETRY / 2:
                            asked[ip] = last_activity  # it must say so again, to us
                            link.connect_req((ip, port))
                    elif msg.status == LateStatus.MISSED:
                        raise ReceiveError(
                            "the transfer started without this receiver and the sender "
                            "cannot re-read its input: restart the sender")
                    if msg.status == LateStatus.NEXT_ROUND and late_sender != ip:
                        say("joined late: waiting for the next round")
                        late_sender, suspect, target = ip, None, (ip, port)
                elif op in (Op.DATA, Op.FEC, Op.REQACK) and ip in hellos and (
                        ip != late_sender) and link.trust is None:
                    # we answered its HELLO but the CONNECT_REPLY was lost: the sender
                    # counts us in, so follow its transfer (client number unknown:
                    # answer every REQACK, which udpcast senders accept)
                    say(f"no CONNECT_REPLY from {ip} (lost?): following its transfer")
                    return hellos[ip]
                elif op in (Op.DATA, Op.FEC, Op.REQACK) and ip != late_sender:
                    if suspect is None:
                        suspect, suspect_packets = (ip, time.monotonic()), 0
                        link.connect_req((ip, port))  # a herdcast sender answers HC_LATE
                    if ip == suspect[0]:
                        suspect_packets += 1
        now = time.monotonic()
        if suspect and now >= suspect[1] + MISSED_START_WAIT \
                and suspect_packets < RUNNING_PACKETS:
            say(f"ignored {suspect_packets} stray packet(s) from {suspect[0]}: no transfer "
                "is running there")
            suspect = None
        elif suspect and now >= suspect[1] + MISSED_START_WAIT:
            raise ReceiveError(
                f"a transfer from {suspect[0]} was already running: this receiver missed "
                "its start and the sender cannot take it in (stock udp-sender); start "
                "the receivers before the sender, or restart the sender")
        if opts.start_timeout and now >= last_activity + opts.start_timeout \
                and link.trust is not None and link.trust.refused:
            raise ReceiveError(f"no sender signing with {link.trust.path} answered within "
                               f"--start-timeout {opts.start_timeout:g} s (ignored: "
                               f"{', '.join(sorted(link.trust.refused))})")
        if opts.start_timeout and now >= last_activity + opts.start_timeout:
            raise ReceiveError(f"no sender answered within --start-timeout "
                               f"{opts.start_timeout:g} s (is udp-sender/herdcast send "
                               f"running on this network, port {link.port}?)")
        if now >= next_req:
            link.connect_req(target)
            next_req = now + CONNECT_RETRY
