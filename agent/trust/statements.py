"""What a signing sender signs, declared once with construct.

- The session: everything that decides what lands on the receiver's disk, for the nonce that
  receiver sent. Its address (so a signature asked for by another host is no use to it: no
  signing oracle), the sender's address and port (the receiver ties its sockets to them),
  the data group, the block size, the image size, the stream's compression and the image's
  identity. Signed into the CONNECT_REPLY: the key holder answers this node now, with this.
- The result: the session's hash (so it names that very session), the total bytes, the
  sha256 of the stream the sender sent and the stream's kind (a raw disk or a herdcast
  image). Signed into the final digest acknowledgement; the receiver says SUCCESS only when
  its own digest of what it wrote, and the kind it wrote, equal these.

Each statement starts with its own context string, so a signature over one can never be
passed off as the other (or as an older version's).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass

from construct import Bytes, Const, Int8ub, Int16ub, Int32ub, Int64ub, Struct

NONCE_BYTES = 16
SIGNATURE_BYTES = 64
IMAGE_ID_BYTES = 32
# the stream's kind: a raw disk or file, an agent.image stream, or agent.image.chunks' chunks
# (the digest is then the image digest over the chunks' content hashes)
RAW, IMAGE, CHUNKS = 0, 1, 2

SessionStatement = Struct(
    "context" / Const(b"herdcast session v2\x00"),
    "nonce" / Bytes(NONCE_BYTES),
    "receiver" / Bytes(4),  # the receiver's IPv4 address (where its CONNECT_REQ came from)
    "sender" / Bytes(4),  # the sender's IPv4 address and port the receiver ties itself to
    "sender_port" / Int16ub,
    "group" / Bytes(4),  # the data group (IPv4) the receiver will join
    "blocksize" / Int32ub,
    "image_size" / Int64ub,
    "codec" / Int8ub,  # agent.codec's wire number of the stream's compression
    "image" / Bytes(IMAGE_ID_BYTES),  # the image's identity (send.session.image_identity)
)

ResultStatement = Struct(
    "context" / Const(b"herdcast result v2\x00\x00"),
    "session" / Bytes(32),  # sha256 of the signed session statement
    "total_bytes" / Int64ub,
    "sha256" / Bytes(32),
    "kind" / Int8ub,  # RAW, IMAGE or CHUNKS
)


@dataclass(frozen=True)
class Session:
    """The facts of one signed session, as both ends know them."""

    nonce: bytes
    receiver: str
    sender: str
    sender_port: int
    group: str
    blocksize: int
    image_size: int
    codec: int
    image: bytes

    def message(self) -> bytes:
        """The bytes signed into the CONNECT_REPLY."""
        return SessionStatement.build({
            "nonce": self.nonce, "receiver": _ip(self.receiver), "sender": _ip(self.sender),
            "sender_port": self.sender_port, "group": _ip(self.group),
            "blocksize": self.blocksize, "image_size": self.image_size, "codec": self.codec,
            "image": self.image})


def _ip(address: str) -> bytes:
    try:
        return ipaddress.IPv4Address(address).packed
    except ValueError:
        return bytes(4)


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def result_message(session: bytes, total_bytes: int, sha256: bytes, kind: int) -> bytes:
    """The bytes signed into the HC_DIGEST_ACK; `session` is the session statement signed
    for this receiver."""
    return ResultStatement.build({"session": hashlib.sha256(session).digest(),
                                  "total_bytes": total_bytes, "sha256": sha256,
                                  "kind": kind})


def sign(private_key, message: bytes) -> bytes:
    return private_key.sign(message)


def verify(public_key, message: bytes, signature: bytes) -> bool:
    """Whether `signature` is the key holder's over `message`; never raises on forgeries."""
    from cryptography.exceptions import InvalidSignature

    try:
        public_key.verify(bytes(signature), message)
    except (InvalidSignature, ValueError):
        return False
    return True
