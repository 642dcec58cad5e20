"""The signing sender's half of a signed session (agent.trust): `herdcast send --sign-key`.

A receiver that trusts a key sends a nonce in its CONNECT_REQ. To it the sender appends to
its CONNECT_REPLY a signature of the session statement (that nonce, the data group, the image
size), and to its HC_DIGEST_ACK the sha256 it sent with a signature of the result statement
(the nonce, the total, that sha256). The receiver images only after the first verifies, and
says SUCCESS only when the second does and names what it wrote itself.
"""

from __future__ import annotations

import functools
import ipaddress

from agent.trust import keys, statements
from agent.udpcast.protocol import HcDigestAckSigned, Op, build


@functools.lru_cache(maxsize=4)
def signer(path: str):
    """The private key (loaded once; KeyFileError names the file and the fix)."""
    return keys.load_private(path)


def sign_reply(path: str | None, reply: bytes, nonce: bytes | None, group: str,
               image_size: int) -> bytes:
    """An extended CONNECT_REPLY, signed for `nonce` when there is a key and a nonce."""
    if path is None or nonce is None:
        return reply
    message = statements.session_message(nonce, ipaddress.IPv4Address(group).packed,
                                         image_size)
    return reply + statements.sign(signer(path), message)


def digest_ack(path: str | None, nonce: bytes | None, agreed: bool, total: int,
               sha256: bytes) -> bytes:
    """HC_DIGEST_ACK; signed, with the sha256 sent, for a receiver that gave a nonce."""
    if path is None or nonce is None:
        return build(Op.HC_DIGEST_ACK, agreed=int(agreed), total_bytes=total)
    signature = statements.sign(signer(path),
                                statements.result_message(nonce, total, sha256))
    return HcDigestAckSigned.build(dict(opcode=int(Op.HC_DIGEST_ACK), agreed=int(agreed),
                                        total_bytes=total, sha256=sha256,
                                        signature=signature))
