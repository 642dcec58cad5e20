"""The receiver's end of the wire: its sockets, what it sends, and each datagram's dispatch.

udpcast's receiver sockets: ifIP:P (every send leaves from it), bcast:P, the rendezvous
group:P, and the data group:P once a HELLO or CONNECT_REPLY named it. Once the sender is
known every socket is connect()ed to it, so the kernel drops rogue datagrams and the
per-packet path (`handle`) can trust what it reads. Socket failures become a ReceiveError
that says "network", so they are never mistaken for the disk's.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import selectors
import socket
import stat
import time
from dataclasses import dataclass

from agent.net import netif
from agent.say import say
from agent.transfer.options import ReceiveOptions
from agent.transfer.receive.slices import Assembler
from agent.transfer.receive.sockets import (
    SCRATCH,
    ReceiveError,
    drain,
    enable_gro,
    network_error,
)
from agent.udpcast.extensions import build_disconnect, build_fail, reply_secret, said
from agent.udpcast.protocol import (
    DATA_HEADER,
    FEC_HEADER,
    HEADER_SIZE,
    SECRET_BYTES,
    Cap,
    ConnectReq,
    ConnectReqHc,
    Op,
    bitmap_test,
    build,
    parse,
)

# herdcast's default socket buffer: the largest single throughput factor measured (the
# kernel's ~200 KB default overflows while the writer thread holds the GIL for a moment);
# 16 MiB holds what comes while a new slice waits for a buffer (slices.DATA_BUFFER_WAIT)
DEFAULT_RCVBUF = 16 << 20
CONNECT_RETRY = 1.0  # seconds between CONNECT_REQ repeats while unanswered
_DATA, _FEC, _REQACK = int(Op.DATA), int(Op.FEC), int(Op.REQACK)
_CONNECT_REPLY = int(Op.CONNECT_REPLY)
_HC_DIGEST_ACK = int(Op.HC_DIGEST_ACK)
_HC_CHANGED_ACK = int(Op.HC_CHANGED_ACK)
HC_STOP = int(Op.HC_STOP)


@dataclass
class Session:
    """What negotiation learned about the sender."""

    sender: tuple[str, int]
    client_number: int
    blocksize: int
    group: str
    capabilities: int
    passive: bool
    image_size: int | None = None  # herdcast senders tell it in CONNECT_REPLY
    codec: str | None = None  # and the stream's compression ("none", "gz", ...)
    secret: bytes | None = None  # and ours, echoed in HC_DIGEST and HC_DIGEST_ACK


def can_take_chunks(opts: ReceiveOptions) -> bool:
    """Whether this receive writes an image in place, so it can take chunks in any order
    (receive.carousel): onto a block device or a file (new or regular), as an image is
    unpacked by default; not with --store, a pipe, stdout, a character device or
    --passive."""
    if opts.passive or opts.pipe or opts.file is None or opts.unpack is False:
        return False
    try:
        return not stat.S_ISCHR(os.stat(opts.file).st_mode)
    except FileNotFoundError:
        return True  # created as a sparse file, as the disk
    except OSError:
        return False


FAIL_COPIES = 2  # HC_FAIL is sent this many times: one lost datagram still tells why


class Link:
    """Sockets, sends, and the dispatch of the sender's datagrams to the assembler."""

    def __init__(self, opts: ReceiveOptions) -> None:
        self.opts = opts
        self.port = opts.portbase
        self.sender_port = opts.portbase + 1
        self.socks: list[socket.socket] = []
        self.sel = selectors.DefaultSelector()
        self.scratch = bytearray(SCRATCH)
        self.mv = memoryview(self.scratch)
        self.gro = False  # datagrams come in GRO batches (a herdcast sender's GSO runs)
        self.ucast: socket.socket | None = None
        self.session: Session | None = None
        self.assembler: Assembler | None = None
        self.joined: set[str] = set()
        self.tty_state = None
        self.disconnect_due = False  # the sender counts us in: say DISCONNECT at the end
        self.pending_answer = False  # a REQACK was answered since last cleared
        # (total, sha256, kind) in our HC_DIGEST (kind: agent.trust.statements RAW/IMAGE)
        self.digest_sent: tuple[int, bytes, int] | None = None
        self.digest_ack = None  # the sender's HC_DIGEST_ACK to it, once it came
        self.trust = None  # receive.trust.Trust: a signed session is required
        self.changed_ack = False  # the sender has what personalising changed (receive.personal)
        self.next_ask = 0.0  # when to repeat a CONNECT_REQ whose reply never came (unanswered)

    # --- set-up -------------------------------------------------------------------------

    def open(self) -> None:
        """Pick the interface and open udpcast's receiver sockets (ifIP:P, bcast:P, rdv:P)."""
        opts = self.opts
        self.nif = netif.select_interface(opts.interface)
        self.control = netif.control_address(self.nif, opts.ttl, opts.mcast_rdv_address)
        self.rcvbuf = opts.rcvbuf or DEFAULT_RCVBUF
        try:
            self.ucast = netif.udp_socket(self.nif.ip, self.port, broadcast=True,
                                          rcvbuf=self.rcvbuf)
            self.socks.append(self.ucast)
            if self.nif.broadcast and self.nif.broadcast != self.nif.ip:
                self.socks.append(netif.udp_socket(self.nif.broadcast, self.port,
                                                   rcvbuf=self.rcvbuf))
            if netif.is_multicast(self.control):
                netif.set_multicast_sender(self.ucast, self.nif, opts.ttl)
                rdv = netif.udp_socket(self.control, self.port, rcvbuf=self.rcvbuf)
                netif.join_group(rdv, self.control, self.nif)
                self.socks.append(rdv)
        except OSError as exc:
            raise network_error(f"opening port {self.port} on {self.nif.name} "
                                f"({self.nif.ip})", exc) from exc
        for s in self.socks:
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ)

    def close(self) -> None:
        """Release sockets and terminal mode (idempotent)."""
        self.restore_tty()
        with contextlib.suppress(Exception):
            self.sel.close()
        for s in self.socks:
            s.close()
        self.socks.clear()

    def send(self, data: bytes, dest: tuple[str, int] | None = None) -> None:
        """One datagram to `dest` (default: the sender); a failed send is a lost datagram."""
        assert self.ucast is not None
        dest = dest or (self.session.sender if self.session else None)
        if dest is None:
            return
        with contextlib.suppress(OSError):  # a transient ENOBUFS must not end the transfer
            self.ucast.sendto(data, dest)

    def connect_req(self, dest: tuple[str, int]) -> None:
        """CONNECT_REQ with our capabilities and socket buffer (not when --passive)."""
        if not self.opts.passive:
            fields = dict(opcode=int(Op.CONNECT_REQ), reserved=0,
                          capabilities=Cap.STOCK | Cap.HERDCAST | Cap.WINDOW
                          | self.chunks_cap(),
                          rcvbuf=self.ucast.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
            if self.trust is None:
                self.send(ConnectReq.build(fields), dest)
            else:  # the nonce a signing sender must sign
                self.send(ConnectReqHc.build(dict(fields, nonce=self.trust.nonce)), dest)

    def chunks_cap(self) -> int:
        """Cap.CHUNKS when this receive can take the chunk carousel (receive.carousel)."""
        return Cap.CHUNKS if can_take_chunks(self.opts) else 0

    def join_data_group(self, group: str) -> None:
        """Listen on the data group (once), unless it is no group, ours or the control."""
        if (group in self.joined or group in ("0.0.0.0", self.nif.ip, self.control)
                or not netif.is_multicast(group)):
            return
        self.joined.add(group)
        say(f"Listening to multicast on {group}")
        try:
            s = netif.udp_socket(group, self.port, rcvbuf=self.rcvbuf)
            netif.join_group(s, group, self.nif)
        except OSError as exc:
            raise network_error(f"joining the data group {group}", exc) from exc
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ)
        self.socks.append(s)

    def attach(self, session: Session, assembler: Assembler) -> None:
        """Join the data group, tie every socket to the sender, and feed `assembler`."""
        self.session = session
        self.assembler = assembler
        self.disconnect_due = True
        if session.client_number >= 0:
            say(f"Connected as #{session.client_number} to {session.sender[0]}")
        self.join_data_group(session.group)
        try:
            for s in self.socks:
                s.connect(session.sender)  # from now on the kernel drops rogue datagrams
        except OSError as exc:
            raise network_error(f"connecting to the sender {session.sender[0]}", exc) from exc
        self._drain_before_connect()
        if session.capabilities & Cap.HERDCAST:
            self.gro = enable_gro(self.socks)

    def fail(self, reason: str) -> None:
        """Tell a herdcast sender why this receiver stops (HC_FAIL, one line, before the
        DISCONNECT): its table, log and report then say "disk too small" or "write error"
        instead of "disconnected mid-transfer". Sent twice against a lost datagram; a stock
        sender is told nothing it would not understand."""
        session = self.session
        if not (self.disconnect_due and session and not self.opts.passive
                and session.capabilities & Cap.HERDCAST):
            return
        for _ in range(FAIL_COPIES):
            self.send(build_fail(reason, self.secret))

    # --- a CONNECT_REPLY that was lost ------------------------------------------------

    @property
    def unanswered(self) -> bool:
        """Following a herdcast sender whose CONNECT_REPLY to us was lost (receive.negotiate
        follows a sender that counts us in once its data flows): the transfer goes on, but
        our HC_DIGEST and HC_FAIL are believed only with the secret that reply carries."""
        s = self.session
        return (s is not None and s.client_number < 0 and not s.passive
                and self.trust is None and bool(s.capabilities & Cap.HERDCAST))

    def ask_again(self) -> None:
        """While unanswered, CONNECT_REQ every CONNECT_RETRY: a herdcast sender answers a
        receiver it counts in with its CONNECT_REPLY again (a stock one ignores it)."""
        if self.unanswered and (now := time.monotonic()) >= self.next_ask:
            self.next_ask = now + CONNECT_RETRY
            self.connect_req(self.session.sender)

    def late_reply(self, datagram: bytes | memoryview) -> None:
        """The CONNECT_REPLY that was lost, repeated: our client number and our secret."""
        parsed = parse(datagram)
        if not self.unanswered or parsed is None or parsed[0] != Op.CONNECT_REPLY \
                or parsed[1].client_number < 0:
            return
        self.session.client_number = parsed[1].client_number
        self.session.secret = reply_secret(datagram)
        say(f"Connected as #{self.session.client_number} to {self.session.sender[0]} (its "
            "CONNECT_REPLY came again)")

    @property
    def secret(self) -> bytes:
        """What our HC_DIGEST and HC_FAIL echo: the secret our CONNECT_REPLY told us (the
        sender believes them only with it), as it is now (it may come late); zeros before."""
        return self.session.secret or bytes(SECRET_BYTES)

    def digest_message(self, total: int, digest: bytes) -> bytes:
        """HC_DIGEST for what we wrote, with our secret as it is now."""
        return build(Op.HC_DIGEST, total_bytes=total, sha256=digest, secret=self.secret)

    def disconnect(self) -> None:
        """udpcast sends DISCONNECT at exit, on success and on abort alike; to a herdcast
        sender with our secret, so that one spoofed from our address is not believed."""
        session = self.session
        if self.disconnect_due and session and not self.opts.passive:
            herdcast = session.capabilities & Cap.HERDCAST
            self.send(build_disconnect(session.secret if herdcast else None))
        self.disconnect_due = False

    # --- keyboard start -----------------------------------------------------------------

    def keyboard(self) -> bool:
        """udpcast's keyboard start: a key on a terminal stdin sends GO."""
        if self.opts.nokbd or self.opts.passive:
            return False
        try:
            if not os.isatty(0):
                return False
            import termios
            import tty

            self.tty_state = termios.tcgetattr(0)
            tty.setcbreak(0)
        except (OSError, ImportError):
            return False
        self.sel.register(0, selectors.EVENT_READ, "kbd")
        say("Press any key to start receiving data!")
        return True

    def restore_tty(self) -> None:
        """Give the terminal its mode back and stop watching the keyboard."""
        if self.tty_state is not None:
            import termios

            with contextlib.suppress(OSError):
                termios.tcsetattr(0, termios.TCSADRAIN, self.tty_state)
            self.tty_state = None
            with contextlib.suppress(Exception):
                self.sel.unregister(0)

    # --- datagrams from the sender ------------------------------------------------------

    def handle(self, n: int, at: int = 0) -> None:
        """One datagram from the sender: the `n` bytes at `at` in self.scratch."""
        scratch = self.scratch
        op = scratch[at] << 8 | scratch[at + 1]
        if n < HEADER_SIZE and op != _HC_DIGEST_ACK:  # HC_DIGEST_ACK is 12 bytes
            return
        if self.assembler is None and op in (_DATA, _REQACK, _FEC):
            return  # slices for others: this one took the chunk carousel (receive.carousel)
        if op == _DATA:
            h = DATA_HEADER.unpack_from(scratch, at)
            self.assembler.on_data(h[2], h[3], h[5], self.mv[at + HEADER_SIZE:at + n])
        elif op == _REQACK:
            parsed = parse(self.mv[at:at + n])
            if parsed is None:
                return
            msg = parsed[1]
            clnr = self.session.client_number
            if clnr >= 0 and bitmap_test(msg.ready_set, clnr):
                return  # already answered OK for this slice
            answer = self.assembler.on_reqack(msg.slice_no, msg.slice_bytes, msg.rxmit)
            if answer is not None:
                self.pending_answer = True
                self.send(answer)
        elif op == _FEC:
            h = FEC_HEADER.unpack_from(scratch, at)
            self.assembler.on_fec(h[1], h[2], h[3], h[5], self.mv[at + HEADER_SIZE:at + n])
        elif op == _HC_DIGEST_ACK:
            parsed = parse(self.mv[at:at + n])
            # only an answer to the digest we sent, for the total we sent: an ACK before it
            # (or naming another total) is not the sender's verdict on what we wrote
            if parsed is None or self.digest_sent is None \
                    or parsed[1].total_bytes != self.digest_sent[0]:
                return
            ack = parsed[1]
            if self.session.secret is not None and not hmac.compare_digest(
                    ack.secret, self.session.secret):
                return  # not the sender's own answer (a forgery from its address)
            if self.trust is not None:  # the verdict must be signed, for what we wrote
                why, same = self.trust.result_problem(self.mv[at:at + n], *self.digest_sent)
                if why is not None:
                    self.trust.last_refusal = why
                    return
                ack.agreed = int(ack.agreed and same)
            self.digest_ack = ack
        elif op == _HC_CHANGED_ACK:
            self.changed_ack = True
        elif op == _CONNECT_REPLY:
            self.late_reply(self.mv[at:at + n])
        elif op == HC_STOP:
            self.sender_stops(self.mv[at:at + n])

    def sender_stops(self, datagram: memoryview) -> None:
        """HC_STOP: the sender cut the transfer and says why; ReceiveError with its words
        if it echoes our secret (a stranger spoofing the sender does not know it)."""
        parsed = parse(datagram)
        if parsed is not None and self.session.secret is not None and hmac.compare_digest(
                parsed[1].secret, self.session.secret):
            raise ReceiveError(said(parsed[1].reason))

    def pump(self, timeout: float) -> bool:
        """Wait up to `timeout` for datagrams and handle them all; True if any came."""
        self.ask_again()
        got = False
        for key, _ in self.sel.select(timeout):
            if key.data == "kbd":
                with contextlib.suppress(OSError):
                    os.read(0, 64)
                self.restore_tty()
                say("Sending go signal")
                self.send(build(Op.GO))
                continue
            handle = self.handle
            for at, n in drain(key.fileobj, self.scratch, self.gro):
                got = True
                handle(n, at)
        return got

    def _drain_before_connect(self) -> None:
        """Datagrams queued before connect() were not filtered by the kernel: check their
        source here, then the fast loop can trust every socket."""
        for s in self.socks:
            while True:
                try:
                    n, addr = s.recvfrom_into(self.scratch)
                except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                    break
                if addr == self.session.sender:
                    self.handle(n)
