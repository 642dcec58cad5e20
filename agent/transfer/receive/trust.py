"""The receiving half of a signed session (agent.trust): `herdcast receive --trust-key`, or
a node whose initramfs holds agent.trust.TRUSTED_KEY_PATH.

A receiver with a trusted key sends a fresh nonce in its CONNECT_REQ, takes only a
CONNECT_REPLY whose signature of the session statement verifies (any other sender is
ignored, and told DISCONNECT so it does not wait for us), and says SUCCESS only for a signed
HC_DIGEST_ACK whose result statement verifies and names the total and sha256 it computed of
what it wrote. Off by default: an unsigned fleet keeps working with stock udpcast.
"""

from __future__ import annotations

import ipaddress
import os

from agent.say import say
from agent.transfer.options import ReceiveOptions
from agent.trust import TRUSTED_KEY_PATH, statements
from agent.udpcast.protocol import image_size, reply_signature, signed_result


class Trust:
    """The key a sender must sign with, this receive's nonce, the senders refused so far."""

    def __init__(self, key, path: str) -> None:
        self.key = key
        self.path = path
        self.nonce = statements.new_nonce()
        self.refused: set[str] = set()
        self.last_refusal: str | None = None  # why the last signed result was refused

    def refuse(self, ip: str, why: str) -> None:
        """Say once per sender why it is ignored."""
        if ip not in self.refused:
            self.refused.add(ip)
            say(f"ignoring sender {ip}: {why}; waiting for one that signs with {self.path}")

    def reply_problem(self, datagram, msg) -> str | None:
        """Why this CONNECT_REPLY does not prove the key holder answers us now (None: it
        does)."""
        signature = reply_signature(datagram)
        if signature is None:
            return "it does not sign its sessions (a stock udp-sender, or no --sign-key)"
        message = statements.session_message(
            self.nonce, ipaddress.IPv4Address(msg.mcast_addr).packed,
            image_size(datagram) or 0)
        if not statements.verify(self.key, message, signature):
            return "its session signature does not verify (signed with another key?)"
        return None

    def result_problem(self, datagram, total: int, digest: bytes) -> tuple[str | None, bool]:
        """(why the HC_DIGEST_ACK is refused or None, whether the signed sha256 equals
        `digest`)."""
        result = signed_result(datagram)
        if result is None:
            return "its digest acknowledgement is not signed", False
        sha256, signature = result
        if not statements.verify(self.key, statements.result_message(self.nonce, total,
                                                                     sha256), signature):
            return "the signature of its result does not verify", False
        return None, sha256 == digest


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
