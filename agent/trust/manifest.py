"""What a signing sender signs for the chunk carousel: the manifest (agent.image.chunks),
bound to the receiver's nonce, so a forger can neither pass off another image nor replay an
old manifest to a node. Every chunk's hash is in the manifest, so once it verifies, nothing
a forger sends can become a byte on the disk.
"""

from __future__ import annotations

from construct import Bytes, Const, Int64ub, Struct

from agent.trust.statements import NONCE_BYTES, sign, verify

ManifestStatement = Struct(
    "context" / Const(b"herdcast manifest v1"),
    "nonce" / Bytes(NONCE_BYTES),
    "length" / Int64ub,
    "sha256" / Bytes(32),
)


def manifest_message(nonce: bytes, length: int, sha256: bytes) -> bytes:
    return ManifestStatement.build({"nonce": nonce, "length": length, "sha256": sha256})


def sign_manifest(private_key, nonce: bytes, length: int, sha256: bytes) -> bytes:
    return sign(private_key, manifest_message(nonce, length, sha256))


def verify_manifest(public_key, nonce: bytes, length: int, sha256: bytes,
                    signature: bytes) -> bool:
    return verify(public_key, manifest_message(nonce, length, sha256), signature)
