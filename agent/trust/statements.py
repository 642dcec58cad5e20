"""What a signing sender signs, declared once with construct.

- The session answer: the receiver's nonce, bound to the sender's data group and image
  size, signed into the CONNECT_REPLY. It proves the key holder answers this node now.
- The result: the nonce, the total bytes and the sha256 of the stream the sender sent,
  signed into the final digest acknowledgement. The receiver says SUCCESS only when its
  own digest of what it wrote equals this one.

Each statement starts with its own context string, so a signature over one can never be
passed off as the other.
"""

from __future__ import annotations

import os

from construct import Bytes, Const, Int64ub, Struct

NONCE_BYTES = 16
SIGNATURE_BYTES = 64

SessionStatement = Struct(
    "context" / Const(b"herdcast session v1\x00"),
    "nonce" / Bytes(NONCE_BYTES),
    "group" / Bytes(4),  # the data group (IPv4) the receiver will join
    "image_size" / Int64ub,
)

ResultStatement = Struct(
    "context" / Const(b"herdcast result v1\x00\x00"),
    "nonce" / Bytes(NONCE_BYTES),
    "total_bytes" / Int64ub,
    "sha256" / Bytes(32),
)


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def session_message(nonce: bytes, group: bytes, image_size: int) -> bytes:
    return SessionStatement.build({"nonce": nonce, "group": group, "image_size": image_size})


def result_message(nonce: bytes, total_bytes: int, sha256: bytes) -> bytes:
    return ResultStatement.build({"nonce": nonce, "total_bytes": total_bytes,
                                  "sha256": sha256})


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
