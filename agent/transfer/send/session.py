"""The sender's sockets, its participant table, and the wait for the start.

udpcast's layout: every sender packet leaves from <ifIP>:P+1; receivers' broadcasts reach
<bcast>:P+1 and, when the rendezvous address is a group, <group>:P+1. Participants are keyed
by source IP (one receiver per IP, as udpcast) with a slot number (clNr) for the REQACK
bitmap, and — unlike udpcast, which ANDs everybody's capabilities — their own capabilities,
so one stock receiver does not switch off herdcast's extensions for the others.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import time
from dataclasses import dataclass, field

from agent.net import netif
from agent.transfer.options import SendOptions
from agent.transfer.result import ReceiverReport
from agent.transfer.send.batch import enable_gso
from agent.udpcast.protocol import (
    HEADER_SIZE,
    MAX_CLIENTS,
    Cap,
    Op,
    build,
    build_connect_reply,
    default_data_group,
    parse,
)

SENDER_CAPS = Cap.STOCK | Cap.HERDCAST
CHECK_INTERVAL = 0.05  # how often start triggers are looked at (udpcast: up to 2 s)


class SendError(RuntimeError):
    """The send failed: a one-line reason saying what to change."""


@dataclass
class Participant:
    """One connected receiver."""

    ip: str
    addr: tuple[str, int]
    slot: int
    caps: int
    rcvbuf: int
    report: ReceiverReport
    silent: int = 0  # consecutive REQACK rounds it did not answer
    finished: bool = False  # OK'd the end slice
    left: bool = False  # said DISCONNECT after finishing
    heard: bool = False  # sent anything since CONNECT_REQ (so it got CONNECT_REPLY)
    digest: tuple[int, bytes] | None = None

    @property
    def herdcast(self) -> bool:
        """Whether it speaks herdcast's extensions (digest, late join)."""
        return bool(self.caps & Cap.HERDCAST)


# What a 9000-byte jumbo frame carries. An interface with a bigger MTU (loopback's 65536)
# gets no bigger blocks unless asked: 8956 is what the interop tests prove with stock
# udp-receiver, and per-packet costs no longer dominate at that size.
AUTO_MAX_BLOCKSIZE = 8956


def block_size_for(wanted: int | None, ifname: str, mtu: int) -> int:
    """The block size to send: --blocksize if it fits the interface's MTU, else the largest
    that does (1456 at Ethernet's 1500, as udpcast; 8956 with 9000-byte jumbo frames, which
    cuts the per-packet work every receiver does sixfold)."""
    fits = (mtu - netif.IP_UDP_HEADERS - HEADER_SIZE) & ~3
    if fits < 64:
        raise SendError(f"{ifname}'s MTU {mtu} is too small for udpcast's datagrams "
                        "(at least 108 bytes)")
    if wanted is None:
        return min(fits, AUTO_MAX_BLOCKSIZE)
    if wanted > fits:
        raise SendError(f"--blocksize {wanted}: a block with its headers exceeds {ifname}'s "
                        f"MTU {mtu} and would be IP-fragmented; use --blocksize {fits} or "
                        "less, or raise the MTU")
    return wanted


class Network:
    """The sender's sockets and addresses."""

    def __init__(self, opts: SendOptions) -> None:
        try:
            self.nif = netif.select_interface(opts.interface)
            self.control = netif.control_address(self.nif, opts.ttl, opts.mcast_rdv_address)
        except netif.InterfaceError as exc:
            raise SendError(str(exc)) from exc
        self.port = opts.portbase
        self.blocksize = block_size_for(opts.blocksize, self.nif.name,
                                        netif.mtu_of(self.nif.name))
        # async: no return channel; receivers go passive on seeing the bit in HELLO
        self.caps = SENDER_CAPS | (Cap.ASYNC if opts.async_ else 0)
        self.sockets: list[socket.socket] = []
        try:
            self.main = netif.udp_socket(self.nif.ip, self.port + 1, broadcast=True,
                                         sndbuf=opts.sendbuf)
            self.sockets.append(self.main)
            netif.set_multicast_sender(self.main, self.nif, opts.ttl)
            if self.nif.broadcast:
                self.sockets.append(netif.udp_socket(self.nif.broadcast, self.port + 1,
                                                     broadcast=True))
            if netif.is_multicast(self.control):
                rdv = netif.udp_socket(self.control, self.port + 1)
                netif.join_group(rdv, self.control, self.nif)
                self.sockets.append(rdv)
        except OSError as exc:
            self.close()
            raise SendError(f"cannot open the sender's sockets on {self.nif.name} "
                            f"({self.nif.ip}) port {self.port + 1}: {exc.strerror or exc} "
                            "(try another --portbase)") from exc
        self.fd = self.main.fileno()
        self.gso = not os.environ.get("HERDCAST_NO_GSO") and enable_gso(self.main,
                                                                         self.blocksize)
        self.dest: tuple[str, int] = (self.control, self.port)  # data address, set at start
        self.image_size: int | None = None  # bytes a receiver will write, when known
        if opts.broadcast:
            self.advertised = self.nif.broadcast or self.control
        else:
            self.advertised = opts.mcast_data_address or default_data_group(self.nif.ip)
        self.poller = select.epoll()
        self._by_fd = {}
        for s in self.sockets:
            self.poller.register(s.fileno(), select.EPOLLIN)
            self._by_fd[s.fileno()] = s
        self._buf = bytearray(2048)
        self._view = memoryview(self._buf)
        self.garbage = 0

    def close(self) -> None:
        """Close every socket."""
        for s in self.sockets:
            s.close()
        if getattr(self, "poller", None) is not None:
            self.poller.close()

    def send(self, message: bytes, address: tuple[str, int]) -> None:
        """Send one control message from the main socket; a full buffer drops it (UDP)."""
        try:
            self.main.sendto(message, address)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            if exc.errno not in (111, 113, 101):  # refused/unreachable: the peer is gone
                raise

    def receive(self, timeout: float) -> list[tuple[Op, object, tuple[str, int]]]:
        """Parsed messages that arrived, waiting up to `timeout` seconds for the first."""
        out = []
        events = self.poller.poll(timeout if timeout > 0 else 0)
        for fd, _ in events:
            s = self._by_fd.get(fd)
            if s is None:
                continue
            while True:
                try:
                    n, addr = s.recvfrom_into(self._buf, 0, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                parsed = parse(self._view[:n])
                if parsed is None:
                    self.garbage += 1
                    continue
                out.append((parsed[0], parsed[1], addr))
        return out

    def hello(self) -> None:
        """Announce the sender to the control address (receivers answer CONNECT_REQ)."""
        self.send(build(Op.HELLO, capabilities=self.caps, mcast_addr=self.advertised,
                        blocksize=self.blocksize), (self.control, self.port))


@dataclass
class Table:
    """The participants of the current round, keyed by IP."""

    participants: dict[str, Participant] = field(default_factory=dict)
    reports: dict[str, ReceiverReport] = field(default_factory=dict)  # every round's rows

    def connect(self, ip: str, addr: tuple[str, int], caps: int, rcvbuf: int) -> Participant | None:
        """Add (or refresh) a participant; None when all 1024 slots are taken."""
        p = self.participants.get(ip)
        if p is not None:
            p.addr, p.caps = addr, caps
            return p
        used = {q.slot for q in self.participants.values()}
        slot = next((i for i in range(MAX_CLIENTS) if i not in used), None)
        if slot is None:
            return None
        report = self.reports.setdefault(ip, ReceiverReport(ip))
        report.status = "ok"
        p = Participant(ip, addr, slot, caps, rcvbuf, report)
        self.participants[ip] = p
        return p

    def remove(self, ip: str, status: str) -> Participant | None:
        """Take a participant out of the round, recording why."""
        p = self.participants.pop(ip, None)
        if p is not None:
            p.report.status = status
        return p

    def min_rcvbuf(self) -> int | None:
        """The smallest receive buffer a participant declared."""
        bufs = [p.rcvbuf for p in self.participants.values() if p.rcvbuf]
        return min(bufs) if bufs else None


def reply(net: Network, p: Participant | None, addr: tuple[str, int]) -> None:
    """CONNECT_REPLY: the slot (-1 when the table is full), block size, caps and group."""
    fields = dict(client_number=p.slot if p else -1, blocksize=net.blocksize,
                  capabilities=net.caps, mcast_addr=net.advertised)
    if p is not None and p.herdcast:  # herdcast receivers also learn the image size
        net.send(build_connect_reply(image_size=net.image_size or 0, **fields), addr)
    else:
        net.send(build(Op.CONNECT_REPLY, **fields), addr)


def _keyboard_ready() -> bool:
    return bool(select.select([sys.stdin], [], [], 0)[0])


@contextlib.contextmanager
def _cbreak(enabled: bool):
    """Any key (not just Enter) starts, as udpcast's console does; the terminal is restored."""
    if not enabled:
        yield
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    try:
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
    except (OSError, termios.error):
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError, termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def wait_for_start(net: Network, table: Table, opts: SendOptions, *, keyboard: bool,
                   **kwargs) -> str:
    """Negotiate until a start trigger fires; see `_wait_for_start`."""
    with _cbreak(keyboard):
        return _wait_for_start(net, table, opts, keyboard=keyboard, **kwargs)


def _wait_for_start(net: Network, table: Table, opts: SendOptions, *, keyboard: bool,
                    on_other=None, expect: set[str] | None = None,
                    hello_interval: float | None = None, give_up: float | None = None) -> str:
    """Negotiate until a start trigger fires; returns what started it.

    Triggers (udpcast's, checked every 50 ms instead of every 2 s): GO from any host, a key
    on the console, --min-receivers/--min-wait/--max-wait, --autostart; `expect` (late-join
    rounds) starts as soon as those IPs are connected, or after `give_up` seconds.
    --start-timeout aborts (its timer restarts on every message, as udpcast's).
    """
    start = time.monotonic()
    interval = hello_interval
    if interval is None:
        ms = opts.rexmit_hello_interval or (1000 if opts.autostart or opts.async_ else 0)
        interval = ms / 1000 if ms else None
    net.hello()
    hellos = 0
    next_hello = start + interval if interval else None
    first_connect: float | None = None
    last_message = start
    rule = opts.min_receivers is not None or opts.min_wait is not None \
        or opts.max_wait is not None
    if keyboard:
        print("Ready. Press any key to start sending data.", file=sys.stderr, flush=True)
    while True:
        now = time.monotonic()
        timeout = CHECK_INTERVAL
        if next_hello is not None:
            timeout = min(timeout, max(0.0, next_hello - now))
        for op, msg, addr in net.receive(timeout):
            last_message = time.monotonic()
            ip = addr[0]
            if op == Op.CONNECT_REQ:
                if expect is not None and on_other is not None and not on_other(ip):
                    continue
                p = table.connect(ip, addr, msg.capabilities, msg.rcvbuf)
                reply(net, p, addr)
                if p is not None and first_connect is None:
                    first_connect = last_message
            elif op == Op.GO:
                if expect is None and (table.participants or opts.async_):
                    return "GO"
            elif op == Op.DISCONNECT:
                table.remove(ip, "disconnected")
                table.reports.pop(ip, None)
                if not table.participants:
                    first_connect = None
        now = time.monotonic()
        n = len(table.participants)
        if expect is not None:
            if expect <= set(table.participants):
                return "late receivers connected"
            if give_up is not None and now - start >= give_up:
                return "late-join wait over"
        else:
            if keyboard and _keyboard_ready():
                os.read(sys.stdin.fileno(), 4096)
                return "keyboard"
            if rule and first_connect is not None:
                waited = now - first_connect
                if n >= max(1, opts.min_receivers or 0) and waited >= (opts.min_wait or 0):
                    return f"{n} receiver(s) connected"
                if opts.max_wait is not None and waited >= opts.max_wait:
                    return "--max-wait reached"
            if opts.start_timeout and now - last_message >= opts.start_timeout:
                raise SendError(f"no transfer started within --start-timeout "
                                f"{opts.start_timeout:g} s ({n} receiver(s) connected): start "
                                "the receivers first, or raise --start-timeout")
        if next_hello is not None and now >= next_hello:
            net.hello()
            hellos += 1
            next_hello = now + interval
            if expect is None and opts.autostart and hellos >= opts.autostart:
                if n or opts.async_:
                    return "--autostart"
                raise SendError(f"no receiver connected after --autostart {opts.autostart} "
                                "HELLOs: start the receivers, or raise --autostart")
