"""`herdcast receive`: udp-receiver's behaviour, plus digest confirmation and late join.

Phases, as udpcast's receiver runs them:
1. negotiate: CONNECT_REQ to the control address; a HELLO makes us ask the sender directly
   (an async HELLO makes us a passive listener); CONNECT_REPLY gives our client number, the
   block size and the data group. herdcast repeats its CONNECT_REQ every second until
   answered (udpcast sends one and hangs if it is lost), and recognises a transfer that
   started without it.
2. transfer: every socket is connect()ed to the sender's IP:port, so the kernel drops rogue
   datagrams; packets go to agent.transfer.receive.slices, completed slices to the writer thread.
3. end: the empty slice is OK'd; the output flushed; with a herdcast sender the digest is
   confirmed; repeated REQACKs are answered until --exit-wait of quiet; DISCONNECT.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import sys
import time
from dataclasses import dataclass

from agent.net import netif
from agent.transfer.options import ReceiveOptions
from agent.transfer.progress import Progress, human_bytes
from agent.transfer.receive.output import (
    Output,
    OutputError,
    SliceWriter,
    check_image_fits,
    check_target,
)
from agent.transfer.receive.slices import DEFAULT_BUFFERS, Assembler, MissedStart, TransferAborted
from agent.transfer.result import TransferResult
from agent.udpcast.protocol import (
    DATA_HEADER,
    FEC_HEADER,
    HEADER_SIZE,
    MAX_SLICE_SIZE,
    Cap,
    LateStatus,
    Op,
    bitmap_test,
    build,
    image_size,
    parse,
)

DEFAULT_RCVBUF = 4 << 20  # the largest single throughput factor (performance-notes)
DEAD_SENDER_TIMEOUT = 30.0  # silence mid-transfer when no --receive-timeout is given
CONNECT_RETRY = 1.0  # seconds between CONNECT_REQ repeats while unanswered
MISSED_START_WAIT = 2.0  # how long a running transfer may go on without answering us
DIGEST_INTERVAL = 0.25
DIGEST_TIMEOUT = 5.0
EXIT_WAIT_CAP = 5.0  # extra bound on the exit wait if REQACKs keep coming
WRITER_TIMEOUT = 120.0
SCRATCH = 65536
BUFFER_BUDGET = 48 << 20  # slice buffers beyond 3 only while they fit (big --blocksize)
_DATA, _FEC, _REQACK = int(Op.DATA), int(Op.FEC), int(Op.REQACK)
_HC_DIGEST_ACK = int(Op.HC_DIGEST_ACK)


class ReceiveError(RuntimeError):
    """The receive failed; the message is the one line the user sees."""


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


def _plausible(op: Op, msg) -> bool:
    """Sanity checks on negotiation messages, which arrive before the kernel filters by
    sender: a stray datagram must not pass for a sender's HELLO or CONNECT_REPLY."""
    if op in (Op.CONNECT_REPLY, Op.HELLO, Op.HELLO_NEW):
        return (msg.capabilities & Cap.STOCK == Cap.STOCK
                and 1 <= msg.blocksize <= 65507 - HEADER_SIZE
                and (op != Op.CONNECT_REPLY or msg.client_number < 1024))
    return True


_log_file = None  # --log: udpcast appends its messages to this file too


def _info(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
    if _log_file is not None:
        with contextlib.suppress(OSError):
            _log_file.write(text + "\n")
            _log_file.flush()


class Receiver:
    """One receive: sockets, negotiation, transfer, end handshake."""

    def __init__(self, opts: ReceiveOptions) -> None:
        self.opts = opts
        self.port = opts.portbase
        self.sender_port = opts.portbase + 1
        self.socks: list[socket.socket] = []
        self.sel = selectors.DefaultSelector()
        self.scratch = bytearray(SCRATCH)
        self.mv = memoryview(self.scratch)
        self.session: Session | None = None
        self.ucast: socket.socket | None = None
        self.output: Output | None = None
        self.writer: SliceWriter | None = None
        self.assembler: Assembler | None = None
        self.tty_state = None
        self.disconnect_due = False
        self.joined: set[str] = set()

    # --- set-up -------------------------------------------------------------------------

    def open_sockets(self) -> None:
        """udpcast's receiver sockets: ifIP:P (all sends), bcast:P, rdv group:P."""
        opts = self.opts
        self.nif = netif.select_interface(opts.interface)
        self.control = netif.control_address(self.nif, opts.ttl, opts.mcast_rdv_address)
        rcvbuf = opts.rcvbuf or DEFAULT_RCVBUF
        self.rcvbuf = rcvbuf
        self.ucast = netif.udp_socket(self.nif.ip, self.port, broadcast=True, rcvbuf=rcvbuf)
        self.socks.append(self.ucast)
        if self.nif.broadcast and self.nif.broadcast != self.nif.ip:
            self.socks.append(netif.udp_socket(self.nif.broadcast, self.port, rcvbuf=rcvbuf))
        if netif.is_multicast(self.control):
            netif.set_multicast_sender(self.ucast, self.nif, opts.ttl)
            rdv = netif.udp_socket(self.control, self.port, rcvbuf=rcvbuf)
            netif.join_group(rdv, self.control, self.nif)
            self.socks.append(rdv)
        for s in self.socks:
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ)

    def close(self) -> None:
        """Release sockets, terminal mode and output (idempotent)."""
        self._restore_tty()
        with contextlib.suppress(Exception):
            self.sel.close()
        for s in self.socks:
            s.close()
        self.socks.clear()
        if self.output is not None:
            self.output.close()

    def _send(self, data: bytes, dest: tuple[str, int] | None = None) -> None:
        assert self.ucast is not None
        dest = dest or (self.session.sender if self.session else None)
        if dest is None:
            return
        with contextlib.suppress(OSError):  # a transient ENOBUFS must not end the transfer
            self.ucast.sendto(data, dest)

    def _connect_req(self, dest: tuple[str, int]) -> None:
        if not self.opts.passive:
            self._send(build(Op.CONNECT_REQ, capabilities=Cap.STOCK | Cap.HERDCAST,
                             rcvbuf=self.ucast.getsockopt(socket.SOL_SOCKET,
                                                          socket.SO_RCVBUF)), dest)

    # --- phase 1: negotiation -----------------------------------------------------------

    def negotiate(self) -> Session:
        """Find the sender and get connected (or learn that we are late)."""
        opts = self.opts
        control = (self.control, self.sender_port)
        target = control
        self._connect_req(target)
        now = time.monotonic()
        next_req = now + CONNECT_RETRY
        last_activity = now
        suspect: tuple[str, float] | None = None  # a sender seen mid-transfer, and when
        late_sender: str | None = None
        hellos: dict[str, Session] = {}  # senders whose HELLO we answered
        while True:
            now = time.monotonic()
            timeout = next_req - now
            if opts.start_timeout:
                timeout = min(timeout, last_activity + opts.start_timeout - now)
            if suspect:
                timeout = min(timeout, suspect[1] + MISSED_START_WAIT - now)
            for key, _ in self.sel.select(max(timeout, 0)):
                while True:
                    try:
                        n, (ip, port) = key.fileobj.recvfrom_into(self.scratch)
                    except (BlockingIOError, InterruptedError):
                        break
                    if port != self.sender_port:
                        continue
                    parsed = parse(self.mv[:n])
                    if parsed is None:
                        continue
                    op, msg = parsed
                    if not _plausible(op, msg):
                        continue
                    last_activity = time.monotonic()
                    if op == Op.CONNECT_REPLY:
                        if msg.client_number < 0:
                            raise ReceiveError(f"sender {ip} refused us: its table of 1024 "
                                               "receivers is full")
                        return Session((ip, port), msg.client_number, msg.blocksize,
                                       msg.mcast_addr, msg.capabilities, False,
                                       image_size(self.mv[:n]))
                    if op in (Op.HELLO, Op.HELLO_NEW):
                        if msg.capabilities & Cap.NEW_GEN and (msg.capabilities & Cap.ASYNC
                                                               or opts.passive):
                            return Session((ip, port), 0, msg.blocksize, msg.mcast_addr,
                                           msg.capabilities, True)
                        target = (ip, port)
                        self._connect_req(target)
                        next_req = time.monotonic() + CONNECT_RETRY
                        hellos[ip] = Session((ip, port), -1, msg.blocksize, msg.mcast_addr,
                                             msg.capabilities, False)
                        self._join_data_group(msg.mcast_addr)
                    elif op == Op.HC_LATE:
                        if msg.status == LateStatus.MISSED:
                            raise ReceiveError(
                                "the transfer started without this receiver and the sender "
                                "cannot re-read its input: restart the sender")
                        if msg.status == LateStatus.NEXT_ROUND and late_sender != ip:
                            _info("joined late: waiting for the next round")
                            late_sender, suspect, target = ip, None, (ip, port)
                    elif op in (Op.DATA, Op.FEC, Op.REQACK) and ip in hellos and (
                            ip != late_sender):
                        # we answered its HELLO but the CONNECT_REPLY was lost: the sender
                        # counts us in, so follow its transfer (client number unknown:
                        # answer every REQACK, which udpcast senders accept)
                        _info(f"no CONNECT_REPLY from {ip} (lost?): following its transfer")
                        return hellos[ip]
                    elif (op in (Op.DATA, Op.FEC, Op.REQACK) and ip != late_sender
                          and suspect is None):
                        suspect = (ip, time.monotonic())
                        self._connect_req((ip, port))  # a herdcast sender answers HC_LATE
            now = time.monotonic()
            if suspect and now >= suspect[1] + MISSED_START_WAIT:
                raise ReceiveError(
                    f"a transfer from {suspect[0]} was already running: this receiver missed "
                    "its start and the sender cannot take it in (stock udp-sender); start "
                    "the receivers before the sender, or restart the sender")
            if opts.start_timeout and now >= last_activity + opts.start_timeout:
                raise ReceiveError(f"no sender answered within --start-timeout "
                                   f"{opts.start_timeout:g} s (is udp-sender/herdcast send "
                                   f"running on this network, port {self.port}?)")
            if now >= next_req:
                self._connect_req(target)
                next_req = now + CONNECT_RETRY

    # --- phase 2: transfer --------------------------------------------------------------

    def attach(self, session: Session) -> None:
        """Join the data group and tie every socket to the sender."""
        self.session = session
        self.disconnect_due = True
        if session.client_number >= 0:
            _info(f"Connected as #{session.client_number} to {session.sender[0]}")
        self._join_data_group(session.group)
        for s in self.socks:
            s.connect(session.sender)  # from now on the kernel drops rogue datagrams

    def _join_data_group(self, group: str) -> None:
        """Listen on the data group (once), unless it is no group, ours or the control."""
        if (group in self.joined or group in ("0.0.0.0", self.nif.ip, self.control)
                or not netif.is_multicast(group)):
            return
        self.joined.add(group)
        _info(f"Listening to multicast on {group}")
        s = netif.udp_socket(group, self.port, rcvbuf=self.rcvbuf)
        netif.join_group(s, group, self.nif)
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ)
        self.socks.append(s)

    def _keyboard(self) -> bool:
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
        _info("Press any key to start receiving data!")
        return True

    def _restore_tty(self) -> None:
        if self.tty_state is not None:
            import termios

            with contextlib.suppress(OSError):
                termios.tcsetattr(0, termios.TCSADRAIN, self.tty_state)
            self.tty_state = None
            with contextlib.suppress(Exception):
                self.sel.unregister(0)

    def _handle(self, n: int) -> None:
        """One datagram from the sender (already in self.scratch)."""
        scratch = self.scratch
        op = scratch[0] << 8 | scratch[1]
        if n < HEADER_SIZE and op != _HC_DIGEST_ACK:  # HC_DIGEST_ACK is 12 bytes
            return
        if op == _DATA:
            h = DATA_HEADER.unpack_from(scratch)
            self.assembler.on_data(h[2], h[3], h[5], self.mv[HEADER_SIZE:n])
        elif op == _REQACK:
            parsed = parse(self.mv[:n])
            if parsed is None:
                return
            msg = parsed[1]
            clnr = self.session.client_number
            if clnr >= 0 and bitmap_test(msg.ready_set, clnr):
                return  # already answered OK for this slice
            self._pending_answer = True
            self._send(self.assembler.on_reqack(msg.slice_no, msg.slice_bytes, msg.rxmit))
        elif op == _FEC:
            h = FEC_HEADER.unpack_from(scratch)
            self.assembler.on_fec(h[1], h[2], h[3], h[5], self.mv[HEADER_SIZE:n])
        elif op == _HC_DIGEST_ACK:
            parsed = parse(self.mv[:n])
            if parsed is not None:
                self.digest_ack = parsed[1]

    def _pump(self, timeout: float) -> bool:
        """Wait up to `timeout` for datagrams and handle them all; True if any came."""
        got = False
        for key, _ in self.sel.select(timeout):
            if key.data == "kbd":
                with contextlib.suppress(OSError):
                    os.read(0, 64)
                self._restore_tty()
                _info("Sending go signal")
                self._send(build(Op.GO))
                continue
            recv_into = key.fileobj.recv_into
            handle = self._handle
            while True:
                try:
                    n = recv_into(self.scratch)
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionRefusedError:
                    continue  # ICMP port unreachable from the sender's host: it is gone
                got = True
                handle(n)
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
                    self._handle(n)

    def transfer(self, session: Session) -> None:
        """Receive slices until the end slice; raises ReceiveError/TransferAborted."""
        opts = self.opts
        self.session = session
        self.disconnect_due = True  # the sender counts us in from CONNECT_REPLY on
        check_image_fits(opts.file, session.image_size)
        self.output = Output(opts)
        slice_bytes = MAX_SLICE_SIZE * session.blocksize
        buffers = max(3, min(DEFAULT_BUFFERS, BUFFER_BUDGET // slice_bytes))
        self.assembler = Assembler(session.blocksize, lambda s: self.writer(s), buffers)
        self.writer = SliceWriter(self.output, self.assembler.release)
        self.writer.start()
        self.attach(session)
        self.digest_ack = None
        self._pending_answer = False
        kbd = self._keyboard()
        progress = Progress("receive", total=session.image_size, enabled=not opts.no_progress)
        self.progress = progress
        silence = opts.receive_timeout or DEAD_SENDER_TIMEOUT
        self._drain_before_connect()
        asm = self.assembler
        last_rx = time.monotonic()
        started = False
        while not asm.ended:
            if self._pump(1.0):
                last_rx = time.monotonic()
                if not started and (asm.started or self._pending_answer):
                    started = True
                    _info("Transfer started: first data from the sender")
                    if kbd:
                        self._restore_tty()
            elif started or opts.start_timeout:
                idle = time.monotonic() - last_rx
                limit = silence if started else opts.start_timeout
                if idle >= limit:
                    if started:
                        if opts.receive_timeout:
                            raise ReceiveError(
                                f"nothing from sender {session.sender[0]} for "
                                f"--receive-timeout {opts.receive_timeout:g} s mid-transfer "
                                f"(at byte {asm.delivered_bytes}): the image is incomplete")
                        raise ReceiveError(
                            f"sender went silent for {DEAD_SENDER_TIMEOUT:g} s mid-transfer "
                            f"(at byte {asm.delivered_bytes}): the image is incomplete")
                    raise ReceiveError(f"sender {session.sender[0]} did not start within "
                                       f"--start-timeout {opts.start_timeout:g} s")
            if self.writer.error:
                raise ReceiveError(self.writer.error)
            progress.update(asm.delivered_bytes)

    # --- phase 3: end -------------------------------------------------------------------

    def finish(self) -> str:
        """Flush, confirm the digest with a herdcast sender, exit-wait, DISCONNECT.
        Returns the hex digest of the received stream."""
        opts = self.opts
        session = self.session
        deadline = time.monotonic() + WRITER_TIMEOUT
        self.writer.queue.put(None)
        while self.writer.is_alive():  # keep answering REQACK repeats meanwhile
            if time.monotonic() > deadline:
                raise ReceiveError(f"writing {self.output.path} did not finish within "
                                   f"{WRITER_TIMEOUT:g} s")
            self._pump(0.05)
            self.writer.join(0.0)
        if self.writer.error:
            raise ReceiveError(self.writer.error)
        self.output.finish()
        digest = self.writer.sha256.digest()
        if session.capabilities & Cap.HERDCAST and not session.passive:
            self._confirm_digest(digest)
        # exit wait: answer repeated REQACKs until --exit-wait ms pass without one
        hard_stop = time.monotonic() + opts.exit_wait / 1000 + EXIT_WAIT_CAP
        quiet_since = time.monotonic()
        while True:
            now = time.monotonic()
            left = min(quiet_since + opts.exit_wait / 1000, hard_stop) - now
            if left <= 0:
                break
            self._pending_answer = False
            self._pump(left)
            if self._pending_answer:
                quiet_since = time.monotonic()
        return digest.hex()

    def _confirm_digest(self, digest: bytes) -> None:
        total = self.writer.bytes
        message = build(Op.HC_DIGEST, total_bytes=total, sha256=digest)
        give_up = time.monotonic() + DIGEST_TIMEOUT
        while self.digest_ack is None:
            if time.monotonic() >= give_up:
                raise ReceiveError(f"sender did not confirm the digest within "
                                   f"{DIGEST_TIMEOUT:g} s (the data was written: "
                                   f"{total} bytes, sha256 {digest.hex()})")
            self._send(message)
            next_send = time.monotonic() + DIGEST_INTERVAL
            while self.digest_ack is None and time.monotonic() < next_send:
                self._pump(max(next_send - time.monotonic(), 0))
        if not self.digest_ack.agreed:
            raise ReceiveError("image digest differs from the sender's: the written data is "
                               f"corrupt ({total} bytes here, "
                               f"{self.digest_ack.total_bytes} at the sender)")

    def disconnect(self) -> None:
        """udpcast sends DISCONNECT at exit, on success and on abort alike."""
        if self.disconnect_due and self.session and not self.opts.passive:
            self._send(build(Op.DISCONNECT))
        self.disconnect_due = False


def receive(opts: ReceiveOptions) -> TransferResult:
    """Receive one image as udp-receiver would; never raises for transfer failures."""
    start = time.monotonic()
    if opts.ignore_lost_data:
        return TransferResult(False, error="--ignore-lost-data is not supported by herdcast: "
                                           "a receiver never writes an image with holes")
    r = Receiver(opts)
    try:
        check_target(opts.file)
        r.open_sockets()
        _info(f"UDP receiver for {opts.file or '(stdout)'} at {r.nif.ip} on {r.nif.name}")
        session = r.negotiate()
        r.transfer(session)
        digest = r.finish()
        r.disconnect()
        nbytes = r.writer.bytes
        return TransferResult(True, bytes=nbytes, seconds=time.monotonic() - start,
                              sha256=digest)
    except MissedStart as exc:
        error = (f"{exc}: this receiver missed the start of the transfer; start the "
                 "receivers before the sender, or restart the sender")
    except (ReceiveError, TransferAborted, OutputError, netif.InterfaceError) as exc:
        error = str(exc)
    except OSError as exc:
        error = f"network error: {exc}"
    finally:
        if getattr(r, "progress", None) is not None:
            r.progress.close()
        r.disconnect()
        if r.writer is not None and r.writer.is_alive():
            r.writer.queue.put(None)
        r.close()
    written = r.writer.bytes if r.writer is not None else 0
    return TransferResult(False, bytes=written, seconds=time.monotonic() - start, error=error)


def run_receiver(opts: ReceiveOptions) -> int:
    """`herdcast receive`: run, print the outcome on stderr, return the exit status."""
    global _log_file
    if opts.log:
        try:
            _log_file = open(opts.log, "a")  # noqa: SIM115 - closed below
        except OSError as exc:
            print(f"herdcast receive: --log {opts.log}: {exc.strerror}", file=sys.stderr)
            return 1
    try:
        result = receive(opts)
        if not result.ok:
            print(f"herdcast receive: {result.error}", file=sys.stderr, flush=True)
            if _log_file is not None:
                _log_file.write(f"herdcast receive: {result.error}\n")
            return 1
        rate = result.bytes / result.seconds / 1e6 if result.seconds > 0 else 0.0
        _info(f"Transfer complete: {human_bytes(result.bytes)} ({result.bytes} bytes) in "
              f"{result.seconds:.2f} s, {rate:.1f} MB/s, sha256 {result.sha256}")
        return 0
    finally:
        if _log_file is not None:
            _log_file.close()
            _log_file = None
