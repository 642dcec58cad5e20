"""The chunk carousel's messages (herdcast peers that both set Cap.CHUNKS), declared once
with construct; the per-packet headers also as struct.Structs derived from them.

A receiver fetches the manifest (agent.image.chunks) from the sender directly
(HC_MANIFEST_REQ: pieces first..first+count; HC_MANIFEST_INFO: its length, sha256 and, in a
signed session, the signature of agent.trust.manifest's statement; HC_MANIFEST_PIECE: one
piece). Then it says which chunks it lacks (HC_NEED: a bitmap over 1024 chunks from
`first`, with the pieces it received and lost since its last HC_NEED, the sender's pace
signal), and the sender multicasts each chunk somebody lacks (HC_CHUNK: its list pieces,
then its payload's pieces; agent.image.pieces), once for all who asked. The "manifest"
fetched is the offer: the manifest and the hashes that check each piece on arrival. When
nobody lacks anything the sender says so now and then (HC_IDLE), so a receiver whose HC_NEED
was lost asks again at once. A receiver that holds most of a chunk that went by incomplete
says which pieces it lacks (HC_HOLES), and the sender sends those again, not the chunk.
"""

from __future__ import annotations

from construct import Bytes, Construct, ConstructError, Container, Int16ub, Int32ub, Padding, Struct

from agent.udpcast.protocol import SIGNATURE_BYTES, Op, fast_header, opcode

NEED_BITS = 1024  # chunks per HC_NEED
NEED_BYTES = NEED_BITS // 8
HOLE_BYTES = 256  # pieces per HC_HOLES: 2048, a chunk's payload at any block size >= 1024
PIECE_DATA, PIECE_LIST = 0, 1  # HC_CHUNK kinds: a piece of the payload, of its piece list

ManifestReq = Struct(  # receiver -> sender
    "opcode" / Int16ub, "reserved" / Int16ub, "first" / Int32ub, "count" / Int16ub,
    Padding(2))
ManifestInfo = Struct(  # sender -> receiver
    "opcode" / Int16ub, "reserved" / Int16ub, "length" / Int32ub, "sha256" / Bytes(32),
    "signature" / Bytes(SIGNATURE_BYTES))  # zeros when the session is not signed
ManifestPiece = Struct(  # sender -> receiver, + up to blocksize bytes of the manifest
    "opcode" / Int16ub, "reserved" / Int16ub, "piece" / Int32ub, "length" / Int32ub,
    Padding(4))
Need = Struct(  # receiver -> sender
    "opcode" / Int16ub, "reserved" / Int16ub, "first" / Int32ub,
    "received" / Int32ub,  # chunk pieces received since the last HC_NEED
    "lost" / Int32ub,  # pieces of chunks the sender moved past that never came
    "bitmap" / Bytes(NEED_BYTES))  # bit i (LSB-first) = chunk first+i lacking
ChunkHeader = Struct(  # sender -> data address, + one block: a list piece or a payload's
    "opcode" / Int16ub, "reserved" / Int16ub, "chunk" / Int32ub, "piece" / Int16ub,
    "kind" / Int16ub,  # PIECE_DATA or PIECE_LIST (agent.image.pieces)
    "wire_bytes" / Int32ub)
Idle = Struct("opcode" / Int16ub, "reserved" / Int16ub, "chunks" / Int32ub)
Holes = Struct(  # receiver -> sender: the data pieces of one chunk it still lacks
    "opcode" / Int16ub, "reserved" / Int16ub, "chunk" / Int32ub,
    "bitmap" / Bytes(HOLE_BYTES))  # bit i (LSB-first) = data piece i lacking

MESSAGES: dict[int, Construct] = {
    Op.HC_MANIFEST_REQ: ManifestReq, Op.HC_MANIFEST_INFO: ManifestInfo,
    Op.HC_MANIFEST_PIECE: ManifestPiece, Op.HC_NEED: Need, Op.HC_CHUNK: ChunkHeader,
    Op.HC_IDLE: Idle, Op.HC_HOLES: Holes,
}
SIZES = {op: msg.sizeof() for op, msg in MESSAGES.items()}
# (opcode, reserved, chunk, piece, kind, wire_bytes)
CHUNK_HEADER = fast_header(ChunkHeader)
PIECE_HEADER = fast_header(ManifestPiece)


def build(op: Op, **fields) -> bytes:
    """One carousel message; reserved fields are 0."""
    return MESSAGES[op].build({"opcode": int(op), "reserved": 0, "reserved2": 0, **fields})


def parse(datagram: bytes | memoryview) -> tuple[Op, Container] | None:
    """A carousel message's header; None for anything else or garbage (never raises)."""
    op = opcode(datagram)
    if op not in MESSAGES or len(datagram) < SIZES[op]:
        return None
    try:
        return Op(op), MESSAGES[op].parse(bytes(datagram[:SIZES[op]]))
    except (ConstructError, ValueError):
        return None


def need_bitmaps(lacking: int, chunks: int) -> list[tuple[int, bytes]]:
    """(first, bitmap) per HC_NEED for an int bitmap of lacking chunks (bit i = chunk i),
    only the windows that lack something."""
    out = []
    for first in range(0, chunks, NEED_BITS):
        window = (lacking >> first) & ((1 << NEED_BITS) - 1)
        if window:
            out.append((first, window.to_bytes(NEED_BYTES, "little")))
    return out


def need_mask(first: int, bitmap: bytes, chunks: int) -> int:
    """The int bitmap (bit i = chunk i) an HC_NEED stands for, cut to `chunks`."""
    return (int.from_bytes(bitmap, "little") << first) & ((1 << chunks) - 1)
