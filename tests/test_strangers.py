"""One stranger's packet cannot abort a fleet: an HC_LATE "missed", a CONNECT_REPLY refusing
the receiver (-1), or DATA far into a stream, from another host, leave a waiting receiver
waiting; it images from its sender as if they never came. Default options.

After a receiver connected, the kernel drops datagrams from anybody but its sender, so those
packets are forged with the sender's own address and port, from a raw socket in a third
namespace (what an attacker on the LAN can do); before it picked a sender they come from a
third address.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest
from peers import ROOT, herdcast_receiver, herdcast_sender, make_source, sha

from builder.lab.netlab import NetLab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

STRANGER = r"""
import socket, struct, sys, time
sys.path.insert(0, sys.argv[1])
from agent.udpcast.protocol import Cap, LateStatus, Op, build
how, src, far_ahead, targets = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]

def checksum(b):
    b += b"\0" * (len(b) % 2)
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF

def forged(payload, dst):
    # IPv4 + UDP from src:9001 (the sender's address and port) to dst:9000
    length = 8 + len(payload)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, length)
    udp = struct.pack("!HHHH", 9001, 9000, length, 0) + payload
    udp = udp[:6] + struct.pack("!H", checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0x4243, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:] + udp

if how == "spoof":
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    send = lambda payload, dst: s.sendto(forged(payload, dst), (dst, 0))
else:  # from this host's own address, udpcast's sender port
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.bind(("0.0.0.0", 9001))
    send = lambda payload, dst: s.sendto(payload, (dst, 9000))

caps = Cap.STOCK | Cap.HERDCAST
packets = [
    build(Op.HC_LATE, status=int(LateStatus.MISSED), slice_no=7),
    build(Op.CONNECT_REPLY, client_number=-1, blocksize=1456, capabilities=caps,
          mcast_addr="0.0.0.0"),
] + [build(Op.DATA, slice_no=7, block_no=i % 4, slice_bytes=4 * 1456) + bytes(1456)
     for i in range(far_ahead)]
for payload in packets:
    for dst in targets:
        send(payload, dst)
    time.sleep(0.01)
print("sent", len(packets), "packets", file=sys.stderr)
"""


def stranger(host, how: str, src: str, far_ahead: int, *targets: str) -> None:
    proc = host.run(sys.executable, "-c", STRANGER, str(ROOT), how, src, str(far_ahead),
                    *targets)
    assert "sent" in proc.stderr


def _wait_for(path: Path, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while text not in (path.read_text() if path.exists() else ""):
        assert time.monotonic() < deadline, path.read_text() if path.exists() else path
        time.sleep(0.05)


def test_forged_packets_from_the_senders_address_do_not_abort_a_connected_receiver(tmp_path):
    src = make_source(tmp_path, 2_000_003)
    with NetLab(4, net=150) as lab:
        h0, h1, h2, h3 = lab.hosts
        out, log = tmp_path / "victim.bin", tmp_path / "victim.log"
        ctl_out, ctl_log = tmp_path / "control.bin", tmp_path / "control.log"
        victim = herdcast_receiver(h1, out, log)
        control = herdcast_receiver(h3, ctl_out, ctl_log)
        time.sleep(0.3)
        slog = tmp_path / "send.log"
        snd = herdcast_sender(h0, slog, "-f", str(src))  # starts on GO
        _wait_for(log, f"to {h0.ip}")  # "Connected as #0 to <sender>": sockets tied to it
        _wait_for(ctl_log, f"to {h0.ip}")
        # the forgeries reach the receivers: a stream of them far ahead (as a sender that
        # left a receiver behind) makes the control receiver give up, as it should...
        stranger(h2, "spoof", h0.ip, 20, h3.ip)
        assert control.wait(timeout=10) == 1
        # ...but one packet of each kind does not
        stranger(h2, "spoof", h0.ip, 3, h1.ip)
        time.sleep(3)
        assert victim.poll() is None, log.read_text()
        h2.run(sys.executable, "-c", "import socket, sys; sys.path.insert(0, sys.argv[1]); "
               "from agent.udpcast.protocol import Op, build; "
               "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(build(Op.GO), "
               f"({h0.ip!r}, 9001))", str(ROOT))
        # the control receiver said why it gave up (HC_FAIL): one of two was not imaged
        assert snd.wait(timeout=60) == 1, slog.read_text()
        assert victim.wait(timeout=30) == 0, log.read_text()
    assert sha(out) == sha(src)
    assert "missed" in ctl_log.read_text()
    sent = slog.read_text()
    assert f"  {h1.ip} " in sent and "digest agreed" in sent, sent
    assert re.search(rf"^  {re.escape(h3.ip)} .*FAILED \(.*missed the start", sent, re.M), sent


def test_packets_from_a_third_address_before_a_sender_do_not_abort_a_waiting_receiver(
        tmp_path):
    src = make_source(tmp_path, 1_000_003)
    with NetLab(3, net=151) as lab:
        h0, h1, h2 = lab.hosts
        out, log = tmp_path / "r.bin", tmp_path / "r.log"
        rcv = herdcast_receiver(h1, out, log)
        time.sleep(0.5)
        stranger(h2, "third", h2.ip, 3, h1.ip, "10.151.0.255")
        time.sleep(3)  # past the wait that tells a running transfer from a stray packet
        assert rcv.poll() is None, log.read_text()
        slog = tmp_path / "send.log"
        snd = herdcast_sender(h0, slog, "-f", str(src), "--min-receivers", "1")
        assert snd.wait(timeout=60) == 0, slog.read_text()
        assert rcv.wait(timeout=30) == 0, log.read_text()
    text = log.read_text()
    assert sha(out) == sha(src)
    assert f"sender {h2.ip} refused us" in text  # heard, and not given up for
    assert f"stray packet(s) from {h2.ip}" in text

