"""The receiving half of a signed session (agent.trust): `herdcast receive --trust-key`, or
a node whose initramfs holds agent.trust.TRUSTED_KEY_PATH.

A receiver with a trusted key sends a fresh nonce in its CONNECT_REQ and acts only on what is
signed. It takes only a CONNECT_REPLY whose signature of the session statement verifies for
what it will act on: its nonce and its own address, the address and port the reply came from
(its sockets are then tied to them), the group, block size, image size, codec and image the
reply names. Anything else (unsigned replies, HC_LATE, a stranger's DATA) is noted, never
obeyed: no address is blacklisted for it, since a forger can use any address. It says
SUCCESS only for a signed HC_DIGEST_ACK whose result statement names that session, the total
and sha256 it computed of what it wrote, and the kind of stream it wrote. Off by default: an
unsigned fleet keeps working with stock udpcast.
"""

from __future__ import annotations

import os

from agent.codec import wire_index
from agent.say import say
from agent.transfer.options import ReceiveOptions
from agent.trust import TRUSTED_KEY_PATH, statements
from agent.udpcast.extensions import image_size, reply_codec, reply_signature, signed_result


class Trust:
    """The key a sender must sign with, this receive's nonce, the senders ignored so far
    (for the messages: each is named once)."""

    def __init__(self, key, path: str) -> None:
        self.key = key
        self.path = path
        self.nonce = statements.new_nonce()
        self.refused: set[str] = set()
        self.statement: bytes | None = None  # the session statement taken
        self.last_refusal: str | None = None  # why the last signed result was refused

    def refuse(self, ip: str, why: str) -> None:
        """Say once per sender why its message is ignored (it is not blacklisted: the next
        one from that address may be the key holder's)."""
        if ip not in self.refused:
            self.refused.add(ip)
            say(f"ignoring sender {ip}: {why}; waiting for one that signs with {self.path}")

    def reply_problem(self, datagram, msg, source: tuple[str, int], own_ip: str
                      ) -> str | None:
        """Why this CONNECT_REPLY, from `source`, does not prove the key holder answers us
        now with what it names (None: it does, and its statement is kept)."""
        signed = reply_signature(datagram)
        if signed is None:
            return "it does not sign its sessions (a stock udp-sender, or no --sign-key)"
        image, signature = signed
        if reply_codec(datagram) is None:
            return "it names a compression this herdcast does not know"
        message = statements.Session(
            self.nonce, own_ip, source[0], source[1], msg.mcast_addr, msg.blocksize,
            image_size(datagram) or 0, wire_index(reply_codec(datagram)), image).message()
        if not statements.verify(self.key, message, signature):
            return "its session signature does not verify (another key, or not for us)"
        self.statement = message
        return None

    def result_problem(self, datagram, total: int, digest: bytes, kind: int
                       ) -> tuple[str | None, bool]:
        """(why the HC_DIGEST_ACK is refused or None, whether the signed sha256 and kind
        equal `digest` and `kind`)."""
        result = signed_result(datagram)
        if result is None:
            return "its digest acknowledgement is not signed", False
        if self.statement is None:
            return "no signed session", False
        sha256, their_kind, signature = result
        message = statements.result_message(self.statement, total, sha256, their_kind)
        if not statements.verify(self.key, message, signature):
            return "the signature of its result does not verify", False
        return None, sha256 == digest and their_kind == kind


def load(opts: ReceiveOptions) -> Trust | None:
    """The trusted key of this receive: --trust-key, else TRUSTED_KEY_PATH if present, else
    none (an unsigned session). Raises KeyFileError for a key that cannot be read."""
    path = opts.trust_key
    if path is None and os.path.exists(TRUSTED_KEY_PATH):
        path = TRUSTED_KEY_PATH
    if path is None:
        return None
    from agent.trust.keys import load_public

    return Trust(load_public(path), path)
