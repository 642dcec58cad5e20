"""udpcast's wire protocol, every message declared once with construct.

Layouts are big-endian C structs as udpcast 20120424..20250223 sends them (udpcast's
protoc.h), checked against the captured sessions tests/test_protocol.py replays. Each
declaration is used both to build and to parse. The per-packet hot path (DATA and FEC
headers) uses a `struct.Struct` *derived* from the same construct declaration by
`fast_header`, so the layout still lives in one place while a packet costs one C call
instead of a construct parse.

herdcast's own extensions are gated by CAP_HERDCAST: a herdcast peer sets it in CONNECT_REQ
(receiver) or HELLO/CONNECT_REPLY (sender). Stock udpcast ignores unknown capability bits
(the receiver tests only NEW_GEN and ASYNC; the sender only BIG_ENDIAN), and the extension
messages below are sent only to peers that advertised the bit, so stock peers never see them.
"""

from __future__ import annotations

import ipaddress
import struct
from enum import IntEnum

from construct import (
    Adapter,
    Bytes,
    Construct,
    ConstructError,
    Container,
    FormatField,
    Int8ub,
    Int16sb,
    Int16ub,
    Int32sb,
    Int32ub,
    Int64ub,
    PaddedString,
    Padding,
    Struct,
)

MAX_UDP_PAYLOAD = 65507  # the most one IPv4 UDP datagram carries (65535 - 20 IP - 8 UDP)
MAX_CLIENTS = 1024  # udpcast's participant table; REQACK/RETRANSMIT bitmaps are this wide
BITMAP_BYTES = MAX_CLIENTS // 8  # 128
MAX_SLICE_SIZE = 1024  # blocks per slice (RETRANSMIT's block bitmap is 128 bytes too)
# slices in flight between herdcast peers that both set Cap.WINDOW (udpcast: 2): a receiver
# late to answer for a few ms (descheduled, a slow write) no longer idles the wire
WINDOW_SLICES = 4


class Op(IntEnum):
    """Opcodes: the first big-endian u16 of every datagram."""

    OK = 0
    RETRANSMIT = 1
    GO = 2
    CONNECT_REQ = 3
    DISCONNECT = 4
    REQACK = 6
    CONNECT_REPLY = 7
    DATA = 8
    FEC = 9
    HELLO_NEW = 10
    HELLO_STREAMING = 11
    HELLO = 0x0500
    # herdcast extensions (CAP_HERDCAST peers only); far from udpcast's range
    HC_DIGEST = 0x4801
    HC_DIGEST_ACK = 0x4802
    HC_LATE = 0x4803
    HC_FAIL = 0x4804
    HC_STOP = 0x4805
    # the chunk carousel (Cap.CHUNKS peers only; declared in agent.udpcast.carousel)
    HC_MANIFEST_REQ = 0x4810
    HC_MANIFEST_INFO = 0x4811
    HC_MANIFEST_PIECE = 0x4812
    HC_NEED = 0x4813
    HC_CHUNK = 0x4814
    HC_IDLE = 0x4815
    HC_HOLES = 0x4816
    # what personalising changed on the clone (agent.personalize; after the digest)
    HC_CHANGED = 0x4820
    HC_CHANGED_ACK = 0x4821


class Cap:
    """Capability bits (CONNECT_REQ, CONNECT_REPLY, HELLO)."""

    NEW_GEN = 0x01
    MULTICAST = 0x02
    FEC = 0x04
    BIG_ENDIAN = 0x08
    LITTLE_ENDIAN = 0x10
    ASYNC = 0x20
    HERDCAST = 0x100  # herdcast: digest exchange and late-join rounds understood
    CHUNKS = 0x200  # herdcast: the chunk carousel (receiver: can write chunks in place)
    WINDOW = 0x400  # herdcast: up to WINDOW_SLICES slices in flight, not udpcast's two

    STOCK = NEW_GEN | BIG_ENDIAN  # 0x09, what udpcast sends on both sides


class _IPv4(Adapter):
    """udpcast's 16-byte address field: IPv4 in the first 4 bytes, the rest ignored.

    20230924 leaves bytes 4..15 uninitialised, so parsing never looks at them; building
    writes zeros.
    """

    def _decode(self, obj: bytes, context, path) -> str:
        return str(ipaddress.IPv4Address(obj[:4]))

    def _encode(self, obj: str, context, path) -> bytes:
        return ipaddress.IPv4Address(obj).packed + bytes(12)


McastAddr = _IPv4(Bytes(16))

Hello = Struct(  # HELLO, HELLO_NEW, HELLO_STREAMING: 28 bytes, sender -> control address
    "opcode" / Int16ub,
    "reserved" / Int16sb,
    "capabilities" / Int32ub,
    "mcast_addr" / McastAddr,
    "blocksize" / Int16ub,
    Padding(2),
)

ConnectReq = Struct(  # 12 bytes, receiver -> control address, then unicast
    "opcode" / Int16ub,
    "reserved" / Int16ub,
    "capabilities" / Int32ub,
    "rcvbuf" / Int32ub,
)

ConnectReply = Struct(  # 32 bytes, sender -> receiver unicast
    "opcode" / Int16ub,
    "reserved" / Int16ub,
    "client_number" / Int32sb,  # -1: table full
    "blocksize" / Int32ub,
    "capabilities" / Int32ub,
    "mcast_addr" / McastAddr,
)

# herdcast extension: to a receiver that advertised Cap.HERDCAST the sender's CONNECT_REPLY
# carries, after udpcast's 32 bytes, the image size, so the receiver can refuse a disk too
# small for the image before writing anything (0 = size unknown, e.g. a pipe or stdin), the
# compression of the stream it will send (its codec's `wire` number, agent.codec), so herdcast
# receivers follow the sender without a matching compr= of their own, and a secret told only
# to this receiver (unicast): echoed in its HC_DIGEST and in the sender's HC_DIGEST_ACK, it
# proves each is the other's own, not a stranger's forgery from a spoofed address.
SECRET_BYTES = 16
ConnectReplyHc = Struct(
    *ConnectReply.subcons,
    "image_size" / Int64ub,
    "codec" / Int8ub,
    Padding(3),
    "secret" / Bytes(SECRET_BYTES),
)

# Signed sessions (agent.trust): a receiver holding a trusted key appends a fresh nonce to
# its CONNECT_REQ (stock udp-sender reads 12 bytes and ignores the rest); a signing sender
# appends to the extended CONNECT_REPLY the image's identity and its Ed25519 signature of the
# session statement (agent.trust.statements), and to its HC_DIGEST_ACK the sha256 it sent,
# the stream's kind and its signature of the result statement, which names that session.
NONCE_BYTES = 16
SIGNATURE_BYTES = 64
IMAGE_ID_BYTES = 32
ConnectReqHc = Struct(*ConnectReq.subcons, "nonce" / Bytes(NONCE_BYTES))
ConnectReplySigned = Struct(*ConnectReplyHc.subcons, "image" / Bytes(IMAGE_ID_BYTES),
                            "signature" / Bytes(SIGNATURE_BYTES))

Go = Struct("opcode" / Int16ub, "reserved" / Int16ub)  # 4 bytes
Disconnect = Struct("opcode" / Int16ub, "reserved" / Int16ub)  # 4 bytes
# a herdcast receiver leaving a herdcast sender echoes the secret its CONNECT_REPLY carried:
# a DISCONNECT spoofed from its address (which anyone can send) does not end its part
DisconnectHc = Struct(*Disconnect.subcons, "secret" / Bytes(SECRET_BYTES))

DataHeader = Struct(  # 16 bytes + min(blocksize, slice_bytes - block*blocksize)
    "opcode" / Int16ub,
    "reserved" / Int16ub,
    "slice_no" / Int32ub,
    "block_no" / Int16ub,
    "reserved2" / Int16ub,
    "slice_bytes" / Int32ub,
)

FecHeader = Struct(  # 16 bytes + blocksize
    "opcode" / Int16ub,
    "stripes" / Int16ub,
    "slice_no" / Int32ub,
    "fec_block_no" / Int16ub,
    "reserved2" / Int16ub,
    "slice_bytes" / Int32ub,
)

ReqAck = Struct(  # 144 bytes, sender -> data address
    "opcode" / Int16ub,
    "reserved" / Int16ub,
    "slice_no" / Int32ub,
    "slice_bytes" / Int32ub,
    "rxmit" / Int32ub,
    "ready_set" / Bytes(BITMAP_BYTES),  # bit = clNr that already answered OK
)

Ok = Struct("opcode" / Int16ub, "reserved" / Int16ub, "slice_no" / Int32ub)  # 8 bytes

Retransmit = Struct(  # 140 bytes, receiver -> sender
    "opcode" / Int16ub,
    "reserved" / Int16ub,
    "slice_no" / Int32ub,
    "rxmit" / Int32ub,
    "received" / Bytes(BITMAP_BYTES),  # bit i set = block i received
)

# --- herdcast extensions -----------------------------------------------------------------

HcDigest = Struct(  # receiver -> sender, after the end slice: what it wrote
    "opcode" / Int16ub,
    "reserved" / Int16ub,
    "total_bytes" / Int64ub,
    "sha256" / Bytes(32),
    "secret" / Bytes(SECRET_BYTES),  # its CONNECT_REPLY's: the receiver's own digest
)

HcDigestAck = Struct(  # sender -> receiver: 1 = digest agreed, 0 = mismatch
    "opcode" / Int16ub,
    "agreed" / Int16ub,
    "total_bytes" / Int64ub,
    "secret" / Bytes(SECRET_BYTES),  # the receiver's: the sender's own answer
)


HcDigestAckSigned = Struct(  # a signing sender's HC_DIGEST_ACK
    *HcDigestAck.subcons,
    "sha256" / Bytes(32),  # what the sender sent
    "kind" / Int8ub,  # the stream's kind (agent.trust.statements RAW or IMAGE)
    Padding(3),
    "signature" / Bytes(SIGNATURE_BYTES),  # over agent.trust's result statement
)


class LateStatus(IntEnum):
    """What the sender tells a receiver whose CONNECT_REQ arrives mid-transfer."""

    NEXT_ROUND = 1  # stay: the whole image follows in another round
    MISSED = 2  # the input cannot be re-read; restart the sender to image this node


HcLate = Struct(  # sender -> receiver unicast, answering a CONNECT_REQ mid-transfer
    "opcode" / Int16ub,
    "status" / Int16ub,
    "slice_no" / Int32ub,  # slice being sent now, for the message
)


class ChangedStatus(IntEnum):
    """HC_CHANGED: WORKING every second while the clone is personalised (the sender waits),
    then DONE (`text`: what was changed, a line each) or FAILED (`text`: why)."""

    WORKING, DONE, FAILED = 1, 2, 3


CHANGED_TEXT = 1200  # bytes of UTF-8, NUL-padded: the datagram stays within one frame
# receiver -> sender after its digest agreed, until the HC_CHANGED_ACK (16 bytes: as long as
# a DATA header, so the receiver's length check stays one test)
HcChanged = Struct("opcode" / Int16ub, "status" / Int16ub, "text" / Bytes(CHANGED_TEXT))
HcChangedAck = Struct("opcode" / Int16ub, "status" / Int16ub, Padding(12))

REASON_BYTES = 200  # one console line of why, UTF-8, NUL-padded
# HC_FAIL, receiver -> sender unicast: it stops, and why (one line). HC_STOP, the same
# from the sender to each herdcast receiver: the sender stops before their verdict.
HcFail = Struct(
    "opcode" / Int16ub,
    "reserved" / Int16ub,
    "secret" / Bytes(SECRET_BYTES),  # the receiver's CONNECT_REPLY's: only the two know it
    "reason" / PaddedString(REASON_BYTES, "utf8"),
)

MESSAGES: dict[int, Construct] = {
    Op.OK: Ok,
    Op.RETRANSMIT: Retransmit,
    Op.GO: Go,
    Op.CONNECT_REQ: ConnectReq,
    Op.DISCONNECT: Disconnect,
    Op.REQACK: ReqAck,
    Op.CONNECT_REPLY: ConnectReply,
    Op.DATA: DataHeader,
    Op.FEC: FecHeader,
    Op.HELLO_NEW: Hello,
    Op.HELLO_STREAMING: Hello,
    Op.HELLO: Hello,
    Op.HC_DIGEST: HcDigest,
    Op.HC_DIGEST_ACK: HcDigestAck,
    Op.HC_LATE: HcLate,
    Op.HC_CHANGED: HcChanged,
    Op.HC_CHANGED_ACK: HcChangedAck,
    Op.HC_FAIL: HcFail,
    Op.HC_STOP: HcFail,
}

SIZES: dict[int, int] = {op: msg.sizeof() for op, msg in MESSAGES.items()}
_OPCODE = struct.Struct(">H")


def build(op: Op, **fields) -> bytes:
    """Build one message; unspecified reserved fields are 0."""
    msg = MESSAGES[op]
    values = {"opcode": int(op), "reserved": 0, "reserved2": 0}
    values.update(fields)
    return msg.build(values)


def opcode(datagram: bytes | memoryview) -> int | None:
    """The opcode of a datagram, or None if it is too short to have one."""
    if len(datagram) < 2:
        return None
    return _OPCODE.unpack_from(datagram)[0]


def parse(datagram: bytes | memoryview) -> tuple[Op, Container] | None:
    """Parse any control message; None for garbage (unknown opcode, too short).

    Never raises on untrusted input: every datagram on the ports goes through here.
    DATA and FEC parse only their header; the payload follows at offset 16.
    """
    op = opcode(datagram)
    if op is None or op not in MESSAGES:
        return None
    size = SIZES[op]
    if len(datagram) < size:
        return None
    try:
        return Op(op), MESSAGES[op].parse(bytes(datagram[:size]))
    except (ConstructError, ValueError):
        return None


def fast_header(declaration: Struct) -> struct.Struct:
    """A struct.Struct with exactly `declaration`'s layout, for the per-packet hot path.

    Derived from the construct declaration (fixed-size FormatFields, Bytes and Padding only),
    so the layout is still declared once.
    """
    fmt = ">"
    for sub in declaration.subcons:
        inner = getattr(sub, "subcon", sub)
        while not isinstance(inner, FormatField) and hasattr(inner, "subcon"):
            inner = inner.subcon
        if isinstance(inner, FormatField):
            fmt += inner.fmtstr.lstrip("<>=!")
        elif sub.name is None:
            fmt += f"{sub.sizeof()}x"
        else:
            fmt += f"{sub.sizeof()}s"
    compiled = struct.Struct(fmt)
    if compiled.size != declaration.sizeof():
        raise AssertionError(f"fast_header: {fmt} is {compiled.size} bytes, "
                             f"declaration is {declaration.sizeof()}")
    return compiled


# (opcode, reserved, slice_no, block_no, reserved2, slice_bytes)
DATA_HEADER = fast_header(DataHeader)
# (opcode, stripes, slice_no, fec_block_no, reserved2, slice_bytes)
FEC_HEADER = fast_header(FecHeader)
HEADER_SIZE = DATA_HEADER.size  # 16
# The largest --blocksize: a DATA datagram (header and block) within MAX_UDP_PAYLOAD, a
# multiple of 4 as udpcast rounds it. 65488.
MAX_BLOCKSIZE = (MAX_UDP_PAYLOAD - HEADER_SIZE) & ~3


def bitmap_set(bitmap: bytearray, n: int) -> None:
    """Set bit n, LSB-first as udpcast lays its bitmaps (byte n>>3, mask 1<<(n&7))."""
    bitmap[n >> 3] |= 1 << (n & 7)


def bitmap_test(bitmap: bytes | bytearray, n: int) -> bool:
    """Whether bit n is set in an LSB-first udpcast bitmap."""
    return bool(bitmap[n >> 3] & (1 << (n & 7)))
