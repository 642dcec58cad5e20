"""Reading a receiver's sockets: each datagram where it lies in one scratch buffer, a
herdcast sender's GSO runs taken whole (UDP GRO), and failures that say "network".

Both receive paths (receive.link's rounds and receive.carousel's chunks) read through
`drain`, so the batch splitting is written once.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterable, Iterator

from agent.errors import HerdcastError

SCRATCH = 65536  # more than MAX_UDP_PAYLOAD: any datagram (or GRO batch of them) fits
SOL_UDP, UDP_GRO = 17, 104
GRO_CMSG = socket.CMSG_SPACE(4)  # the batch's datagram size (an int)


class ReceiveError(HerdcastError, RuntimeError):
    """The receive failed; the message is the one line the user sees."""


def network_error(what: str, exc: OSError) -> ReceiveError:
    """A socket call failed: say it is the network, and what was being done."""
    return ReceiveError(f"network: {what} failed: {exc.strerror or exc}",
                        "check the interface (-i) and that it is up")


def enable_gro(socks: Iterable[socket.socket]) -> bool:
    """Take a herdcast sender's GSO runs (up to 40 blocks) whole, as one read (UDP GRO,
    Linux 5.0+; a real NIC's GRO batches too): a read and a dispatch per datagram were
    most of a receiver's CPU. Only with a herdcast sender, which sends such runs:
    reading a batch's size (recvmsg) costs more per call than recv_into, a loss when
    every datagram comes alone (udp-sender's). False (and off everywhere) on a kernel
    without it: one datagram per read, as before."""
    socks = list(socks)
    try:
        for s in socks:
            s.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        for s in socks:
            with contextlib.suppress(OSError):
                s.setsockopt(SOL_UDP, UDP_GRO, 0)
        return False
    return True


class Reads:
    """How many reads the receive took (a GRO batch is one): against the datagrams they
    held, what batching saved."""

    count = 0


def drain(sock: socket.socket, scratch: bytearray, gro: bool) -> Iterator[tuple[int, int]]:
    """(offset, length) in `scratch` of each datagram `sock` holds, until it is dry: one
    recv_into per datagram, or with `gro` one recvmsg_into per GRO batch of same-sized
    datagrams (the last may be shorter), split here. Each must be handled before the next
    is asked for (the next read overwrites `scratch`). An ICMP port unreachable from the
    sender's host is skipped; any other socket failure is a network ReceiveError."""
    if not gro:
        recv_into = sock.recv_into
        while True:
            try:
                n = recv_into(scratch)
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionRefusedError:
                continue  # the sender's host said port unreachable: it is gone
            except OSError as exc:
                raise network_error("receiving from the sender", exc) from exc
            Reads.count += 1
            yield 0, n
    recvmsg_into, into = sock.recvmsg_into, [scratch]
    while True:
        try:
            n, ancillary, _, _ = recvmsg_into(into, GRO_CMSG)
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionRefusedError:
            continue
        except OSError as exc:
            raise network_error("receiving from the sender", exc) from exc
        Reads.count += 1
        size = n
        for level, kind, data in ancillary:
            if level == SOL_UDP and kind == UDP_GRO:
                size = int.from_bytes(data[:4], sys.byteorder)
        if size >= n or size <= 0:
            yield 0, n
            continue
        for at in range(0, n, size):
            yield at, min(size, n - at)
