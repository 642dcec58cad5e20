"""A tiny capture reader for the golden-bytes tests: UDP/IPv4 datagrams out of pcap files.

The fixtures are pcapng (what tshark/dumpcap write); classic pcap is read too. Only what the
captures hold is decoded: Ethernet (with optional VLAN tags), Linux cooked v1/v2 and raw IP
links, IPv4 without fragments, UDP. Everything else is skipped, so no scapy is needed.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

_LINK_ETHERNET = 1
_LINK_RAW = 101
_LINK_SLL = 113
_LINK_SLL2 = 276
_LINK_IPV4 = 228


class Datagram(NamedTuple):
    """One UDP datagram: addresses as dotted quads, ports, payload, capture time."""

    src: str
    dst: str
    sport: int
    dport: int
    payload: bytes
    time: float = 0.0


def _ip_of_frame(linktype: int, frame: bytes) -> bytes | None:
    if linktype == _LINK_ETHERNET:
        off, ethertype = 14, struct.unpack_from(">H", frame, 12)[0] if len(frame) >= 14 else 0
        while ethertype in (0x8100, 0x88A8) and len(frame) >= off + 4:
            ethertype = struct.unpack_from(">H", frame, off + 2)[0]
            off += 4
        return frame[off:] if ethertype == 0x0800 else None
    if linktype == _LINK_SLL and len(frame) >= 16:
        return frame[16:] if struct.unpack_from(">H", frame, 14)[0] == 0x0800 else None
    if linktype == _LINK_SLL2 and len(frame) >= 20:
        return frame[20:] if struct.unpack_from(">H", frame, 0)[0] == 0x0800 else None
    if linktype in (_LINK_RAW, _LINK_IPV4):
        return frame
    return None


def _udp_of_ip(ip: bytes, ts: float) -> Datagram | None:
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
        return None
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack_from(">H", ip, 2)[0]
    flags_frag = struct.unpack_from(">H", ip, 6)[0]
    if flags_frag & 0x3FFF:  # a fragment: the captures have none
        return None
    udp = ip[ihl:total]
    if len(udp) < 8:
        return None
    sport, dport, length = struct.unpack_from(">HHH", udp)
    return Datagram(socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20]), sport, dport,
                    bytes(udp[8:length]), ts)


def _frames_pcapng(data: bytes) -> Iterator[tuple[int, bytes, float]]:
    off, endian, links, resolution = 0, "<", [], []
    while off + 12 <= len(data):
        btype = struct.unpack_from(endian + "I", data, off)[0]
        if btype == 0x0A0D0D0A:  # section header: byte order from the magic
            endian = "<" if data[off + 8:off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            links, resolution = [], []
        blen = struct.unpack_from(endian + "I", data, off + 4)[0]
        if blen < 12:
            break
        body = data[off + 8:off + blen - 4]
        if btype == 1:  # interface description
            links.append(struct.unpack_from(endian + "H", body)[0])
            resolution.append(1e-6)
            opt = 8
            while opt + 4 <= len(body):
                code, olen = struct.unpack_from(endian + "HH", body, opt)
                if code == 0:
                    break
                if code == 9 and olen == 1:  # if_tsresol
                    r = body[opt + 4]
                    resolution[-1] = 2.0 ** -(r & 0x7F) if r & 0x80 else 10.0 ** -r
                opt += 4 + (olen + 3) // 4 * 4
        elif btype == 6:  # enhanced packet
            iface, ts_hi, ts_lo, caplen = struct.unpack_from(endian + "IIII", body)
            ts = ((ts_hi << 32) | ts_lo) * resolution[iface]
            yield links[iface], body[20:20 + caplen], ts
        elif btype == 3:  # simple packet
            yield links[0], body[4:], 0.0
        off += blen


def _frames_pcap(data: bytes) -> Iterator[tuple[int, bytes, float]]:
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack_from(endian + "I", data, 20)[0] & 0xFFFF
    off = 24
    while off + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack_from(endian + "IIII", data, off)
        yield linktype, data[off + 16:off + 16 + caplen], sec + frac * (1e-9 if nano else 1e-6)
        off += 16 + caplen


def read_udp(path: str | Path) -> list[Datagram]:
    """Every IPv4 UDP datagram in a pcap or pcapng file, in capture order."""
    data = Path(path).read_bytes()
    frames = _frames_pcapng(data) if data[:4] == b"\x0a\x0d\x0d\x0a" else _frames_pcap(data)
    out = []
    for linktype, frame, ts in frames:
        ip = _ip_of_frame(linktype, frame)
        if ip is not None:
            dgram = _udp_of_ip(ip, ts)
            if dgram is not None:
                out.append(dgram)
    return out
