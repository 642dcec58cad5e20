"""The sender's sockets and addresses: the interface it picked, and the block size its MTU
allows.

udpcast's layout: every sender packet leaves from <ifIP>:P+1; receivers' broadcasts reach
<bcast>:P+1 and, when the rendezvous address is a group, <group>:P+1. Control messages go
through `send`/`receive`; DATA goes through `blocks` (sendmmsg, UDP GSO while the path takes
it).
"""

from __future__ import annotations

import errno
import ipaddress
import select
import socket

from agent.errors import HerdcastError
from agent.net import netif
from agent.transfer.options import SendOptions
from agent.transfer.send.batch import BlockSender
from agent.udpcast.extensions import connect_nonce, disconnect_secret
from agent.udpcast.protocol import HEADER_SIZE, Cap, Op, build, parse

SENDER_CAPS = Cap.STOCK | Cap.HERDCAST | Cap.WINDOW
_PEER_GONE = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)  # ICMP from a peer


def default_data_group(sender_ip: str) -> str:
    """The data group a sender picks without --mcast-data-address.

    udpcast 20120424 maps a.b.c.d to (232+(a&7)).b.c.d, which lands 192.168.x senders in the
    source-specific range 232/8 that SSM-aware networks refuse for any-source joins; 20230924
    moved to 233.254.0.0|(ip & 0x1FFFF). herdcast uses the 20230924 rule: receivers take the
    group from HELLO/CONNECT_REPLY, so either rule interoperates.
    """
    ip = int(ipaddress.IPv4Address(sender_ip))
    return str(ipaddress.IPv4Address(0xE9FE0000 | (ip & 0x1FFFF)))


class SendError(HerdcastError, RuntimeError):
    """The send failed: a one-line reason saying what to change."""


# What a 9000-byte jumbo frame carries. An interface with a bigger MTU (loopback's 65536)
# gets no bigger blocks unless asked: 8956 is what the interop tests prove with stock
# udp-receiver, and per-packet costs no longer dominate at that size.
AUTO_MAX_BLOCKSIZE = 8956
ANSWER_BUFFER = 2 << 20  # the sender's receive buffer: room for 1024 receivers' answers


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
    """The sender's sockets and addresses, fixed once opened (the data address, which can
    change per round, is the session's `dest`)."""

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
            # every receiver answers each REQACK at once: 1024 answers take ~800 KB of
            # buffer (an 8-byte OK costs a whole skb), more than the default 212 KB
            self.main = netif.udp_socket(self.nif.ip, self.port + 1, broadcast=True,
                                         sndbuf=opts.sendbuf, rcvbuf=ANSWER_BUFFER)
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
        self.blocks = BlockSender(self.main, self.blocksize)
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
            if exc.errno not in _PEER_GONE:
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
                if parsed is not None:  # garbage is dropped
                    if parsed[0] == Op.CONNECT_REQ:  # a receiver that wants a signed session
                        parsed[1].nonce = connect_nonce(self._view[:n])
                    elif parsed[0] == Op.DISCONNECT:  # a herdcast receiver's says who it is
                        parsed[1].secret = disconnect_secret(self._view[:n])
                    out.append((parsed[0], parsed[1], addr))
        return out

    def hello(self) -> None:
        """Announce the sender to the control address (receivers answer CONNECT_REQ)."""
        self.send(build(Op.HELLO, capabilities=self.caps, mcast_addr=self.advertised,
                        blocksize=self.blocksize), (self.control, self.port))


