"""Preallocated slice buffers and sendmmsg(2): the sender's per-packet hot path.

A slice buffer holds one slice's data, its 16-byte DATA headers and a ready-made array of
`struct mmsghdr`, each pointing (scatter-gather, two iovecs) at one block's header and
payload. Sending blocks i..j is then one sendmmsg call over a slice of that array: no Python
object per packet, one syscall per batch (measured +32% packets/s over a sendto loop).
The destination is one shared sockaddr_in the caller rewrites in place when the data address
changes, so the arrays never need rebuilding.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import socket
import struct
import time

from agent.say import say
from agent.udpcast.protocol import DATA_HEADER, HEADER_SIZE, MAX_SLICE_SIZE, MAX_UDP_PAYLOAD, Op

_libc = ctypes.CDLL(None, use_errno=True)
_sendmmsg = _libc.sendmmsg
_sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_sendmmsg.restype = ctypes.c_int


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint)]


_MMSG_SIZE = ctypes.sizeof(_MMsgHdr)
_IOV_SIZE = ctypes.sizeof(_IoVec)


class Destination:
    """One sockaddr_in that every prepared message points at; `set` rewrites it in place."""

    def __init__(self) -> None:
        self.raw = ctypes.create_string_buffer(16)
        self.address: tuple[str, int] | None = None

    def set(self, ip: str, port: int) -> None:
        """Point every message of every slice buffer at ip:port."""
        struct.pack_into("=H2s4s8x", self.raw, 0, socket.AF_INET, port.to_bytes(2, "big"),
                         socket.inet_aton(ip))
        self.address = (ip, port)


class SliceBuffer:
    """Room for one slice (up to `blocks` blocks of `blocksize`) and its prepared messages."""

    def __init__(self, blocksize: int, dest: Destination, blocks: int = MAX_SLICE_SIZE) -> None:
        self.blocksize = blocksize
        self.data = (ctypes.c_char * (blocks * blocksize))()
        self.view = memoryview(self.data).cast("B")
        self.headers = (ctypes.c_char * (blocks * HEADER_SIZE))()
        self.header_view = memoryview(self.headers).cast("B")
        self.iov = (_IoVec * (2 * blocks))()
        self.msgs = (_MMsgHdr * blocks)()
        data_addr = ctypes.addressof(self.data)
        hdr_addr = ctypes.addressof(self.headers)
        iov_addr = ctypes.addressof(self.iov)
        for i in range(blocks):
            self.iov[2 * i].iov_base = hdr_addr + i * HEADER_SIZE
            self.iov[2 * i].iov_len = HEADER_SIZE
            self.iov[2 * i + 1].iov_base = data_addr + i * blocksize
            self.iov[2 * i + 1].iov_len = blocksize
            hdr = self.msgs[i].msg_hdr
            hdr.msg_name = ctypes.addressof(dest.raw)
            hdr.msg_namelen = 16
            hdr.msg_iov = iov_addr + 2 * i * _IOV_SIZE
            hdr.msg_iovlen = 2
        self.msgs_addr = ctypes.addressof(self.msgs)
        self.iov_addr = iov_addr
        self.dest_addr = ctypes.addressof(dest.raw)
        # UDP GSO: one message per run of up to GSO_BLOCKS blocks, its iovecs the run's
        # header/payload pairs, which the kernel cuts back into one datagram per block
        self.gso_blocks = gso_blocks(blocksize)
        self.gso_msgs = (_MMsgHdr * (blocks // self.gso_blocks + 2))()
        self.gso_addr = ctypes.addressof(self.gso_msgs)
        self._short = -1  # block whose payload length prepare() shortened
        self.slice_no = -1
        self.nbytes = 0
        self.nblocks = 0

    def prepare(self, slice_no: int, nbytes: int) -> int:
        """Write the DATA headers of slice `slice_no` holding `nbytes`; returns its blocks."""
        bs = self.blocksize
        if self._short >= 0:
            self.iov[2 * self._short + 1].iov_len = bs
            self._short = -1
        nblocks = -(-nbytes // bs)
        pack = DATA_HEADER.pack_into
        hv = self.header_view
        op = int(Op.DATA)
        for i in range(nblocks):
            pack(hv, i * HEADER_SIZE, op, 0, slice_no, i, 0, nbytes)
        last = nbytes - (nblocks - 1) * bs if nblocks else bs
        if nblocks and last != bs:
            self.iov[2 * (nblocks - 1) + 1].iov_len = last
            self._short = nblocks - 1
        self.slice_no, self.nbytes, self.nblocks = slice_no, nbytes, nblocks
        return nblocks


SOL_UDP = 17
UDP_SEGMENT = 103
GSO_BLOCKS = 40  # blocks per GSO message: 40 x 1472 stays under the 64 KiB datagram limit


def gso_blocks(blocksize: int) -> int:
    """Blocks per GSO message: up to GSO_BLOCKS, as many as one UDP payload (65507 bytes)
    holds (7 jumbo-frame blocks)."""
    return max(1, min(GSO_BLOCKS, MAX_UDP_PAYLOAD // (HEADER_SIZE + blocksize)))


def enable_gso(sock: socket.socket, blocksize: int) -> bool:
    """Ask the kernel to cut messages longer than one packet into packets (UDP GSO, Linux
    4.18+): a run of blocks then crosses the IP stack and the bridge once instead of once
    per block, which is most of a sender's CPU time. Shorter messages are unaffected."""
    if gso_blocks(blocksize) < 2:
        return False
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, HEADER_SIZE + blocksize)
    except OSError:
        return False
    return True


def disable_gso(sock: socket.socket) -> None:
    """Back to one datagram per message (a device refused GSO)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)


def send_blocks_gso(fd: int, buf: SliceBuffer, first: int, count: int) -> int:
    """Send blocks first..first+count-1 as GSO messages of up to GSO_BLOCKS blocks.

    Only the last block of a slice is short, and it can only be the last segment of the
    last message, which GSO allows. Returns the blocks sent; raises OSError (EIO when the
    path cannot segment: the caller falls back to send_blocks)."""
    msgs = buf.gso_msgs
    n = 0
    start = first
    end = first + count
    while start < end:
        k = min(buf.gso_blocks, end - start)
        hdr = msgs[n].msg_hdr
        hdr.msg_name = buf.dest_addr
        hdr.msg_namelen = 16
        hdr.msg_iov = buf.iov_addr + 2 * start * _IOV_SIZE
        hdr.msg_iovlen = 2 * k
        n += 1
        start += k
    done = 0
    while done < n:
        r = _sendmmsg(fd, buf.gso_addr + done * _MMSG_SIZE, n - done, 0)
        if r < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.ENOBUFS, errno.EINTR):
                time.sleep(0.0002)
                continue
            if done:
                return min(count, done * buf.gso_blocks)
            raise OSError(err, os.strerror(err))
        done += r
    return count


def send_blocks(fd: int, buf: SliceBuffer, first: int, count: int,
                deadline: float | None = None) -> int:
    """Send blocks first..first+count-1 of `buf` with sendmmsg; returns how many went out.

    A full socket buffer (EAGAIN/ENOBUFS) is waited out briefly; other errors raise OSError.
    """
    sent = 0
    addr = buf.msgs_addr + first * _MMSG_SIZE
    while sent < count:
        n = _sendmmsg(fd, addr + sent * _MMSG_SIZE, count - sent, 0)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.ENOBUFS, errno.EINTR):
                if deadline is not None and time.monotonic() > deadline:
                    return sent
                time.sleep(0.0002)
                continue
            raise OSError(err, os.strerror(err))
        sent += n
    return sent


SIOCOUTQ = 0x5411  # (= TIOCOUTQ) a UDP socket's bytes sent and not yet gone on: sk_wmem_alloc
LOCAL_QUEUE = 512 << 10  # what may wait in this host's queues: ~4 ms at 1 Gbit/s


def queued(fd: int) -> int:
    """Bytes (kernel buffer sizes) this socket sent that have not left this host's queues
    yet: the qdisc (a shaper's included), the device, a veth's path into its namespace."""
    return int.from_bytes(fcntl.ioctl(fd, SIOCOUTQ, bytes(4)), "little")


class BlockSender:
    """Sends runs of a slice's blocks from one socket: as UDP GSO messages while the kernel
    takes them, else one datagram per block.

    Some paths accept UDP_SEGMENT at setsockopt time and refuse the first GSO send (a device
    without checksum offload answers EIO): the sender then turns GSO off for good and sends
    the same blocks plainly, so the transfer goes on at a lower packet rate instead of
    failing. The full sender and `--async` both send through here, so both fall back alike.
    HERDCAST_NO_GSO=1 starts without GSO (A/B benchmarks).
    """

    def __init__(self, sock: socket.socket, blocksize: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.gso = not os.environ.get("HERDCAST_NO_GSO") and enable_gso(sock, blocksize)

    def backed_up(self) -> bool:
        """Whether LOCAL_QUEUE bytes of ours already wait to leave this host: the link (or
        a shaper on it) is slower than the pacer. Sending more then only lengthens the
        queue every REQACK waits in (the wire idles at each slice's end), then overflows it
        (tbf drops, loss, retransmission rounds); waiting for it to drain holds the link's
        own rate from the first slice."""
        return queued(self.fd) > LOCAL_QUEUE

    def send(self, buf: SliceBuffer, first: int, count: int) -> int:
        """Send blocks first..first+count-1 of `buf`; returns how many went out."""
        if self.gso:
            try:
                return send_blocks_gso(self.fd, buf, first, count)
            except OSError as exc:
                self.gso = False
                disable_gso(self.sock)
                say(f"herdcast send: UDP GSO refused ({exc.strerror or exc}): sending one "
                    "datagram per block")
        return send_blocks(self.fd, buf, first, count)
