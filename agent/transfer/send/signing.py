"""The signing sender's half of a signed session (agent.trust): `herdcast send --sign-key`.

A receiver that trusts a key sends a nonce in its CONNECT_REQ. The sender signs, for that
nonce and the address the request came from, the session statement (agent.trust.statements:
both addresses, its port, group, block size, image size, codec and image identity) into its
CONNECT_REPLY, and keeps it in the receiver's record; its HC_DIGEST_ACK carries the sha256
it sent and the stream's kind with a signature of the result statement, which names that
session. A statement names the receiver, so a signature another host asks for is of no use
to anybody else: the sender is no signing oracle.
"""

from __future__ import annotations

import functools

from agent.trust import keys, statements
from agent.udpcast.protocol import HcDigestAckSigned, Op, build


@functools.lru_cache(maxsize=4)
def signer(path: str):
    """The private key (loaded once; KeyFileError names the file and the fix)."""
    return keys.load_private(path)


def sign_reply(path: str | None, reply: bytes, session: statements.Session | None
               ) -> tuple[bytes, bytes | None]:
    """(the extended CONNECT_REPLY, signed for `session` when there is a key and a session,
    the statement signed or None)."""
    if path is None or session is None:
        return reply, None
    message = session.message()
    return reply + session.image + statements.sign(signer(path), message), message


def digest_ack(path: str | None, statement: bytes | None, secret: bytes, agreed: bool,
               total: int, sha256: bytes, kind: int) -> bytes:
    """HC_DIGEST_ACK echoing the receiver's secret; signed, with the sha256 sent and the
    stream's kind, for a receiver whose session was signed (`statement`)."""
    if path is None or statement is None:
        return build(Op.HC_DIGEST_ACK, agreed=int(agreed), total_bytes=total, secret=secret)
    signature = statements.sign(signer(path),
                                statements.result_message(statement, total, sha256, kind))
    return HcDigestAckSigned.build(dict(opcode=int(Op.HC_DIGEST_ACK), agreed=int(agreed),
                                        total_bytes=total, secret=secret, sha256=sha256,
                                        kind=kind, signature=signature))
