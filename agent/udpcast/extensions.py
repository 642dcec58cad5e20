"""herdcast's extensions of udpcast's CONNECT_REQ, CONNECT_REPLY, DISCONNECT and
HC_DIGEST_ACK: the longer forms declared in agent.udpcast.protocol, read (and CONNECT_REPLY's
and DISCONNECT's built) here. A stock peer sends the short forms; each reader then says None.
HC_FAIL's builder is here too."""

from __future__ import annotations

from construct import ConstructError, Container, Struct

from agent.codec import from_wire, wire_index
from agent.udpcast.protocol import (
    REASON_BYTES,
    SECRET_BYTES,
    ConnectReplyHc,
    ConnectReplySigned,
    ConnectReqHc,
    DisconnectHc,
    HcDigestAckSigned,
    Op,
    build,
    opcode,
)


def image_size(datagram: bytes | memoryview) -> int | None:
    """The image size a herdcast sender appended to CONNECT_REPLY; None if absent/0."""
    ext = _extension(datagram, Op.CONNECT_REPLY, ConnectReplyHc)
    return ext.image_size or None if ext is not None else None


def reply_codec(datagram: bytes | memoryview) -> str | None:
    """The compression a herdcast sender announced in CONNECT_REPLY ("none", "gz", ...);
    None when it announced nothing (a stock sender) or something unknown."""
    ext = _extension(datagram, Op.CONNECT_REPLY, ConnectReplyHc)
    return None if ext is None else from_wire(ext.codec)


def build_connect_reply(*, image_size: int | None = None, codec: str | None = None,
                        secret: bytes = bytes(SECRET_BYTES), **fields) -> bytes:
    """CONNECT_REPLY; with `image_size` (herdcast receivers only) the extended form, which
    also names the stream's compression (None: none) and the receiver's secret."""
    if image_size is None:
        return build(Op.CONNECT_REPLY, **fields)
    values = {"opcode": int(Op.CONNECT_REPLY), "reserved": 0, "image_size": image_size,
              "codec": wire_index(codec), "secret": secret}
    values.update(fields)
    return ConnectReplyHc.build(values)


def _extension(datagram: bytes | memoryview, op: Op, declaration: Struct) -> Container | None:
    """`datagram` parsed with the longer herdcast `declaration` of `op`; None if shorter."""
    size = declaration.sizeof()
    if len(datagram) < size or opcode(datagram) != op:
        return None
    try:
        return declaration.parse(bytes(datagram[:size]))
    except (ConstructError, ValueError):
        return None


def reply_secret(datagram: bytes | memoryview) -> bytes | None:
    """The secret a herdcast sender told this receiver in its CONNECT_REPLY, or None."""
    ext = _extension(datagram, Op.CONNECT_REPLY, ConnectReplyHc)
    return ext.secret if ext is not None else None


def connect_nonce(datagram: bytes | memoryview) -> bytes | None:
    """The nonce a receiver with a trusted key appended to its CONNECT_REQ, or None."""
    ext = _extension(datagram, Op.CONNECT_REQ, ConnectReqHc)
    return ext.nonce if ext is not None else None


def reply_signature(datagram: bytes | memoryview) -> tuple[bytes, bytes] | None:
    """(image identity, signature) a signing sender appended to its CONNECT_REPLY, or
    None."""
    ext = _extension(datagram, Op.CONNECT_REPLY, ConnectReplySigned)
    return (ext.image, ext.signature) if ext is not None else None


def signed_result(datagram: bytes | memoryview) -> tuple[bytes, int, bytes] | None:
    """(sha256, kind, signature) of a signing sender's HC_DIGEST_ACK, or None."""
    ext = _extension(datagram, Op.HC_DIGEST_ACK, HcDigestAckSigned)
    return (ext.sha256, ext.kind, ext.signature) if ext is not None else None


def build_disconnect(secret: bytes | None) -> bytes:
    """DISCONNECT; with the receiver's `secret` (to a herdcast sender) the longer form, which
    the sender believes from that receiver alone."""
    if secret is None:
        return build(Op.DISCONNECT)
    return DisconnectHc.build({"opcode": int(Op.DISCONNECT), "reserved": 0, "secret": secret})


def disconnect_secret(datagram: bytes | memoryview) -> bytes | None:
    """The secret a herdcast receiver's DISCONNECT echoes, or None (a stock receiver's)."""
    ext = _extension(datagram, Op.DISCONNECT, DisconnectHc)
    return ext.secret if ext is not None else None


def build_fail(reason: str, secret: bytes, op: Op = Op.HC_FAIL) -> bytes:
    """HC_FAIL carrying `reason`, cut to REASON_BYTES on a character boundary, and the
    receiver's `secret` (its CONNECT_REPLY's), without which the sender does not believe
    it: a stranger spoofing a receiver's address cannot fail it. With `op` HC_STOP, the
    sender's to that receiver: it stops (a stranger spoofing the sender cannot stop it)."""
    raw = reason.encode("utf-8")[:REASON_BYTES]
    return build(op, secret=secret, reason=raw.decode("utf-8", "ignore"))


def said(reason: str) -> str:
    """An HC_FAIL or HC_STOP reason as a console, table, log or report shows it: printable
    characters only (it comes off the network), never empty."""
    text = "".join(c if c.isprintable() else "?" for c in reason).strip()
    return text or "no reason given"
