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
must be a stream of packets, not one. A receiver with a trusted key (receive.trust) acts on
nothing unsigned at all: no HC_LATE, no stranger's stream ends it, no HELLO redirects its
requests, and an unsigned or badly signed CONNECT_REPLY is ignored without blacklisting its
address (a forger can send one from the real sender's). Once a CONNECT_REPLY is taken, every
socket is tied to that sender (receive.link) and packets from anybody else are dropped by the
kernel.

`Negotiation` is the state machine without sockets, fed datagrams and ticks with the time,
so tests replay packet sequences through exactly the code the receiver runs; it asks its
driver to send CONNECT_REQs (`Ask`) and join groups (`Join`). `negotiate` is the driver.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from agent.say import say
from agent.transfer.receive.link import CONNECT_RETRY, Link, Session
from agent.transfer.receive.sockets import ReceiveError, network_error
from agent.udpcast.extensions import image_size, reply_codec, reply_secret
from agent.udpcast.protocol import HEADER_SIZE, MAX_UDP_PAYLOAD, Cap, LateStatus, Op, parse

MISSED_START_WAIT = 2.0  # how long a running transfer may go on without answering us
RUNNING_PACKETS = 10  # packets in that time that make it a running transfer, not a stray
MAX_PEERS = 256  # addresses remembered; forged sources cannot grow the state without bound


@dataclass(frozen=True)
class Ask:
    """Send a CONNECT_REQ to `dest`."""

    dest: tuple[str, int]


@dataclass(frozen=True)
class Join:
    """Listen on the data group `group` (a HELLO named it: slice 0 may come before the
    CONNECT_REPLY)."""

    group: str


def _plausible(op: Op, msg) -> bool:
    """Sanity checks on negotiation messages, which arrive before the kernel filters by
    sender: a stray datagram must not pass for a sender's HELLO or CONNECT_REPLY."""
    if op in (Op.CONNECT_REPLY, Op.HELLO, Op.HELLO_NEW):
        return (msg.capabilities & Cap.STOCK == Cap.STOCK
                and 1 <= msg.blocksize <= MAX_UDP_PAYLOAD - HEADER_SIZE
                and (op != Op.CONNECT_REPLY or msg.client_number < 1024))
    return True


class Negotiation:
    """The negotiation's state: fed datagrams (`feed`) and the time (`tick`), it ends with
    `session` set or raises ReceiveError; `actions` holds what the driver must do."""

    def __init__(self, control: tuple[str, int], sender_port: int, own_ip: str, *,
                 port: int, passive: bool = False, start_timeout: float | None = None,
                 trust=None, now: float) -> None:
        self.control, self.sender_port, self.own_ip = control, sender_port, own_ip
        self.port, self.passive, self.start_timeout = port, passive, start_timeout
        self.trust = trust  # receive.trust.Trust, or None: an unsigned session
        self.actions: list[Ask | Join] = [Ask(control)]
        self.session: Session | None = None
        self.target = control
        self.next_req = now + CONNECT_RETRY
        self.last_activity = now
        self.suspect: tuple[str, float] | None = None  # a sender seen mid-transfer, when
        self.suspect_packets = 0
        self.late_sender: str | None = None
        self.hellos: dict[str, Session] = {}  # senders whose HELLO we answered
        # senders saying we missed the start: (since when, last time) they keep saying so
        self.missed: dict[str, tuple[float, float]] = {}
        self.asked: dict[str, float] = {}  # when we last asked each of them directly
        self.refused: set[str] = set()  # senders that answered "table full"
        self.noted: set[tuple[str, str]] = set()  # (what, ip) said once, trusted receivers

    # --- the driver's side ---------------------------------------------------------------

    def take(self) -> list[Ask | Join]:
        """What to do now (and forget it)."""
        actions, self.actions = self.actions, []
        return actions

    def deadline(self) -> float:
        """When `tick` must run next at the latest."""
        due = self.next_req
        if self.start_timeout:
            due = min(due, self.last_activity + self.start_timeout)
        if self.suspect:
            due = min(due, self.suspect[1] + MISSED_START_WAIT)
        return due

    def feed(self, datagram: bytes | memoryview, source: tuple[str, int], now: float
             ) -> Session | None:
        """One datagram from `source`; returns the session once one is taken."""
        ip, port = source
        if port != self.sender_port or self.session is not None:
            return self.session
        parsed = parse(datagram)
        if parsed is None or not _plausible(*parsed):
            return None
        op, msg = parsed
        if self.trust is None or ip not in self.trust.refused or (
                op == Op.HC_LATE and msg.status == LateStatus.NEXT_ROUND):
            # a refused sender's chatter is no activity; but "wait for the next round" is
            # what the key holder tells a late receiver, from an address a reply forged
            # from it may have had refused: that wait must not run out for it
            self.last_activity = now
        if op == Op.CONNECT_REPLY:
            return self._reply(datagram, msg, source)
        if op in (Op.HELLO, Op.HELLO_NEW):
            return self._hello(msg, source, now)
        if op == Op.HC_LATE:
            self._late(msg, source, now)
        elif op in (Op.DATA, Op.FEC, Op.REQACK) and ip in self.hellos and (
                ip != self.late_sender) and self.trust is None:
            # we answered its HELLO but the CONNECT_REPLY was lost: the sender counts us
            # in, so follow its transfer (client number unknown: answer every REQACK,
            # which udpcast senders accept)
            say(f"no CONNECT_REPLY from {ip} (lost?): following its transfer")
            self.session = self.hellos[ip]
        elif op in (Op.DATA, Op.FEC, Op.REQACK) and ip != self.late_sender:
            if self.suspect is None:
                self.suspect, self.suspect_packets = (ip, now), 0
                self._ask_directly(source, now)  # a herdcast sender answers HC_LATE
            if ip == self.suspect[0]:
                self.suspect_packets += 1
        return self.session

    def tick(self, now: float) -> None:
        """Time passed: give up on strays, on a missed start, on --start-timeout; repeat
        the CONNECT_REQ when due. Raises ReceiveError."""
        if self.session is not None:
            return
        suspect = self.suspect
        if suspect and now >= suspect[1] + MISSED_START_WAIT:
            self.suspect = None
            if self.suspect_packets < RUNNING_PACKETS:
                say(f"ignored {self.suspect_packets} stray packet(s) from {suspect[0]}: no "
                    "transfer is running there")
            elif self.trust is not None:
                self._note("running", suspect[0], f"a transfer from {suspect[0]} runs "
                           "without this receiver (not signed: not acted on); waiting for "
                           "a signed session")
            else:
                raise ReceiveError(
                    f"a transfer from {suspect[0]} was already running: this receiver "
                    "missed its start and the sender cannot take it in (stock "
                    "udp-sender); start the receivers before the sender, or restart the "
                    "sender")
        if self.start_timeout and now >= self.last_activity + self.start_timeout:
            if self.trust is not None and self.trust.refused:
                raise ReceiveError(
                    f"no sender signing with {self.trust.path} answered within "
                    f"--start-timeout {self.start_timeout:g} s (ignored: "
                    f"{', '.join(sorted(self.trust.refused))})")
            raise ReceiveError(f"no sender answered within --start-timeout "
                               f"{self.start_timeout:g} s (is udp-sender/herdcast send "
                               f"running on this network, port {self.port}?)")
        if now >= self.next_req:
            self.actions.append(Ask(self.target))
            self.next_req = now + CONNECT_RETRY

    # --- each message --------------------------------------------------------------------

    def _reply(self, datagram, msg, source: tuple[str, int]) -> Session | None:
        ip = source[0]
        if msg.client_number < 0:
            if ip not in self.refused and len(self.refused) < MAX_PEERS:
                self.refused.add(ip)
                say(f"sender {ip} refused us (its table of 1024 receivers is full): "
                    "waiting for a slot or another sender")
            return None
        if self.trust is not None:
            why = self.trust.reply_problem(datagram, msg, source, self.own_ip)
            if why is not None:
                self.trust.refuse(ip, why)  # said once; the next reply is still read
                return None
            say(f"sender {ip} signed the session with the trusted key")
        self.session = Session(source, msg.client_number, msg.blocksize, msg.mcast_addr,
                               msg.capabilities, False, image_size(datagram),
                               reply_codec(datagram), reply_secret(datagram))
        return self.session

    def _hello(self, msg, source: tuple[str, int], now: float) -> Session | None:
        ip = source[0]
        if msg.capabilities & Cap.NEW_GEN and (msg.capabilities & Cap.ASYNC or self.passive):
            if self.trust is not None:  # nothing there is signed
                self.trust.refuse(ip, "an --async sender cannot sign a session")
                return None
            self.session = Session(source, 0, msg.blocksize, msg.mcast_addr,
                                   msg.capabilities, True)
            return self.session
        if self.trust is not None:  # ask it, but keep asking the control address too
            self._ask_directly(source, now)
            return None
        self.target = source
        self.actions.append(Ask(source))
        self.next_req = now + CONNECT_RETRY
        if len(self.hellos) < MAX_PEERS or ip in self.hellos:
            self.hellos[ip] = Session(source, -1, msg.blocksize, msg.mcast_addr,
                                      msg.capabilities, False)
        self.actions.append(Join(msg.mcast_addr))
        return None

    def _late(self, msg, source: tuple[str, int], now: float) -> None:
        ip = source[0]
        if self.trust is not None:  # unsigned: noted, never obeyed
            if msg.status == LateStatus.MISSED:
                self._note("missed", ip, f"sender {ip} says the transfer started without "
                           "this receiver (not signed: not acted on); waiting for a signed "
                           "session")
            elif msg.status == LateStatus.NEXT_ROUND:
                self._note("late", ip, f"sender {ip} says: joined late, wait for the next "
                           "round")
                self.late_sender, self.suspect = ip, None
            self._ask_directly(source, now)
            return
        if ip not in self.missed and len(self.missed) >= MAX_PEERS:
            self.missed.clear()
        since, last = self.missed.get(ip, (now, now))
        if now - last > 2 * CONNECT_RETRY:
            since = now  # said once long ago: a stray then, not a sender answering us now
        self.missed[ip] = (since, now)
        if msg.status == LateStatus.MISSED and now - since < CONNECT_RETRY:
            self._ask_directly(source, now)  # it must say so again, to us
        elif msg.status == LateStatus.MISSED:
            raise ReceiveError(
                "the transfer started without this receiver and the sender cannot re-read "
                "its input: restart the sender")
        if msg.status == LateStatus.NEXT_ROUND and self.late_sender != ip:
            say("joined late: waiting for the next round")
            self.late_sender, self.suspect, self.target = ip, None, source

    def _ask_directly(self, source: tuple[str, int], now: float) -> None:
        """A CONNECT_REQ to `source`, at most one per half CONNECT_RETRY."""
        ip = source[0]
        if now - self.asked.get(ip, -CONNECT_RETRY) >= CONNECT_RETRY / 2:
            if ip not in self.asked and len(self.asked) >= MAX_PEERS:
                self.asked.clear()
            self.asked[ip] = now
            self.actions.append(Ask(source))

    def _note(self, what: str, ip: str, line: str) -> None:
        """Say `line` once per (what, ip)."""
        if (what, ip) not in self.noted and len(self.noted) < MAX_PEERS:
            self.noted.add((what, ip))
            say(line)


def negotiate(link: Link) -> Session:
    """Find the sender and get connected (or learn that we are late); raises ReceiveError."""
    opts = link.opts
    n = Negotiation((link.control, link.sender_port), link.sender_port, link.nif.ip,
                    port=link.port, passive=opts.passive, start_timeout=opts.start_timeout,
                    trust=link.trust, now=time.monotonic())
    while True:
        for action in n.take():
            if isinstance(action, Ask):
                link.connect_req(action.dest)
            else:
                try:
                    link.join_data_group(action.group)
                except ReceiveError as exc:  # a HELLO's group is a hint; the reply's counts
                    say(f"not listening on {action.group} yet: {exc.what}")
        if n.session is not None:
            return n.session
        for key, _ in link.sel.select(max(n.deadline() - time.monotonic(), 0)):
            while n.session is None:
                try:
                    size, source = key.fileobj.recvfrom_into(link.scratch)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    raise network_error("waiting for the sender", exc) from exc
                n.feed(link.mv[:size], source, time.monotonic())
        if n.session is None:
            n.tick(time.monotonic())
