"""The chunk carousel between herdcast peers, with the defaults a user gets (a disk with a
real ext4 sent to receivers that write disks in place): a receiver that joins half-way is
done about one image-time later, a disk holding most of the image receives only what
changed, a receiver killed at 90% and restarted receives the rest, a receiver that fails
tells the sender why (HC_FAIL), and a forger spoofing the sender's address and ports costs
bandwidth, never a disk: its pieces are dropped on arrival (piece hashes), so the transfer
takes about the unattacked time. Receivers take the sender's GSO runs whole (UDP GRO)."""

from __future__ import annotations

import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import peers
import pytest
from conftest import needs_loop
from peers import (
    ROOT,
    herdcast_receiver,
    herdcast_sender,
    logs,
    stock_receiver,
    used_extents_equal,
    wait,
    wait_log,
)
from test_signed import pair

from builder.lab.fsdisk import Part, attached, make_disk, mounted
from builder.lab.loopdev import loop_device
from builder.lab.netlab import NetLab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180), needs_loop]

MiB = 1 << 20
DISK_MIB = 48
PARTS = [Part("ext4", 40, {"a": 14_000_000, "b": 10_000_000, "c": 6_000_000})]
RATE = 12.5e6  # bytes/s at 100 Mbit/s


@pytest.fixture(scope="module")
def disk(tmp_path_factory) -> Path:
    """A 48 MiB GPT disk, a 40 MiB ext4 with 30 MB of random files (made once)."""
    path = tmp_path_factory.mktemp("carousel") / "src.img"
    make_disk(path, DISK_MIB, PARTS)
    return path


def junk(path: Path) -> Path:
    return peers.junk(path, DISK_MIB * MiB)


def received(log: Path) -> int:
    """Chunk payload bytes a receiver took from the wire (its last run)."""
    return int(re.findall(r"chunks: received (\d+) payload bytes", log.read_text())[-1])


def reads(log: Path) -> int:
    """Socket reads a receiver took for everything it received (its last run)."""
    return int(re.findall(r"pieces lost, (\d+) reads", log.read_text())[-1])


def seconds(log: Path) -> float:
    return float(re.search(r"chunks: all \d+ received in ([\d.]+) s", log.read_text())[1])


def test_a_receiver_joining_half_way_is_done_one_image_time_later(disk, tmp_path):
    first, late = junk(tmp_path / "first.img"), junk(tmp_path / "late.img")
    with NetLab(3, net=192) as lab:
        h0, h1, h2 = lab.hosts
        h0.shape("100mbit")
        a = herdcast_receiver(h1, first, tmp_path / "first.log", "--unpack")
        time.sleep(0.3)
        snd = herdcast_sender(h0, tmp_path / "send.log", "-f", str(disk),
                              "--min-receivers", "1")
        wire = int(wait_log(tmp_path / "send.log", r"used bytes in (\d+) bytes")[1])
        wait_log(tmp_path / "first.log", "to receive")
        time.sleep(wire / RATE / 2)
        b = herdcast_receiver(h2, late, tmp_path / "late.log", "--unpack")
        rcs = [wait(snd, 90), wait(a, 30), wait(b, 30)]
    log = logs(tmp_path)
    assert rcs == [0, 0, 0], log
    assert "0 of" in (tmp_path / "late.log").read_text()  # it lacked every chunk
    assert seconds(tmp_path / "late.log") <= 1.15 * seconds(tmp_path / "first.log"), log
    assert used_extents_equal(disk, first) and used_extents_equal(disk, late)
    # the sender's GSO runs come whole (UDP GRO): far fewer reads than pieces
    assert reads(tmp_path / "first.log") < received(tmp_path / "first.log") / 1456 / 4, log


@pytest.mark.skipif(shutil.which("udp-receiver") is None, reason="udpcast not installed")
def test_serve_takes_chunk_receivers_mid_carousel_and_others_in_a_round_after(disk, tmp_path):
    """--serve: a node that boots while the carousel turns joins it and completes; a stock
    udp-receiver and a herdcast receiver storing a file (neither takes chunks) arriving
    meanwhile wait, the herdcast one told so, and get a round of the raw disk after."""
    first, late = junk(tmp_path / "first.img"), junk(tmp_path / "late.img")
    stock, stored = tmp_path / "stock.img", tmp_path / "stored.img"
    with NetLab(5, net=199) as lab:
        h = lab.hosts
        h[0].shape("100mbit")
        snd = herdcast_sender(h[0], tmp_path / "send.log", "--serve", "-f", str(disk))
        a = herdcast_receiver(h[1], first, tmp_path / "first.log", "--unpack")
        wire = int(wait_log(tmp_path / "send.log", r"used bytes in (\d+) bytes")[1])
        wait_log(tmp_path / "first.log", "to receive")
        time.sleep(wire / RATE / 3)
        procs = [herdcast_receiver(h[2], late, tmp_path / "late.log", "--unpack"),
                 stock_receiver(h[3], stock, tmp_path / "stock.log"),
                 herdcast_receiver(h[4], stored, tmp_path / "stored.log", "--store")]
        rcs = [wait(a, 60), *(wait(p, 90) for p in procs)]
        snd.send_signal(signal.SIGTERM)
        rcs.append(wait(snd, 30))
    log = logs(tmp_path)
    assert rcs == [0, 0, 0, 0, 0], log
    late_log = (tmp_path / "late.log").read_text()
    assert "chunk carousel" in late_log and "0 of" in late_log, log  # joined mid-turn
    assert "joined late: waiting for the next round" in (tmp_path / "stored.log").read_text()
    assert f"receiver {h[2].ip} joins the carousel" in log
    assert used_extents_equal(disk, first) and used_extents_equal(disk, late)
    assert stock.read_bytes() == disk.read_bytes() == stored.read_bytes()  # the raw round


def test_on_a_lossy_link_only_the_lost_pieces_fly_again(disk, tmp_path):
    """Each receiver loses 1% of the multicast datagrams (nft, at random, each its own):
    nearly every chunk of ~600 pieces comes incomplete, and receivers ask for its missing
    pieces (HC_HOLES), not the chunk again: the sender's data packets stay within 30% of
    the image's."""
    outs = [junk(tmp_path / f"disk{i}.img") for i in range(2)]
    with NetLab(3, net=196) as lab:
        h0 = lab.hosts[0]
        h0.shape("100mbit")
        for h in lab.hosts[1:]:
            h.run("nft", "add", "table", "inet", "loss")
            h.run("nft", "add chain inet loss in { type filter hook input priority 0; }")
            h.run("nft", "add rule inet loss in ip daddr 224.0.0.0/4 numgen random mod 100 "
                  "< 1 drop")
        procs = [herdcast_receiver(h, out, tmp_path / f"recv{i}.log", "--unpack")
                 for i, (h, out) in enumerate(zip(lab.hosts[1:], outs, strict=True))]
        time.sleep(0.3)
        snd = herdcast_sender(h0, tmp_path / "send.log", "-f", str(disk), "--min-receivers",
                              "2")
        rcs = [wait(snd, 90), *(wait(p, 30) for p in procs)]
    log = logs(tmp_path)
    assert rcs == [0, 0, 0], log
    wire = int(re.search(r"used bytes in (\d+) bytes", log)[1])
    packets = int(re.search(r"(\d+) packets \(", log)[1])
    assert packets <= 1.3 * wire / 1456, log  # 1.06-1.23x measured; whole chunks: 1.5x
    assert all(used_extents_equal(disk, out) for out in outs)


def test_a_spoofed_disconnect_does_not_end_a_chunk_receivers_part(disk, tmp_path):
    """A stranger spoofs DISCONNECT from a chunk receiver's address for the whole carousel
    (a stock receiver's, and one with a guessed secret): the sender believes a herdcast
    receiver's DISCONNECT only with its secret, so the receiver stays in and is imaged."""
    from test_forger import DISCONNECT_FORGER

    out = junk(tmp_path / "disk.img")
    with NetLab(3, net=250) as lab:
        h0, h1, h2 = lab.hosts
        h0.shape("100mbit")  # ~3 s of carousel under the forgeries
        rcv = herdcast_receiver(h1, out, tmp_path / "recv.log", "--unpack")
        forger = h2.popen([sys.executable, "-c", DISCONNECT_FORGER, str(ROOT), h0.ip, h1.ip,
                           "30"], stderr=(tmp_path / "forger.log").open("wb"))
        time.sleep(0.3)
        snd = herdcast_sender(h0, tmp_path / "send.log", "-f", str(disk), "--min-receivers",
                              "1")
        rcs = [wait(snd, 90), wait(rcv, 30)]
        forger.terminate()  # it forged all along: until the carousel ended
        forger.wait(timeout=20)
    log = logs(tmp_path)
    assert "chunk carousel to" in log and "forged" in log, log
    assert rcs == [0, 0], log
    assert "disconnected" not in (tmp_path / "send.log").read_text(), log
    assert used_extents_equal(disk, out)


def test_a_disk_holding_the_last_version_receives_what_changed(disk, tmp_path):
    new = tmp_path / "new.img"
    shutil.copy(disk, new)
    with attached(new) as dev, mounted(f"{dev}p1", "ext4") as mnt:
        (mnt / "update.bin").write_bytes(random.Random(9).randbytes(2 * MiB))
    old = tmp_path / "old.img"
    shutil.copy(disk, old)  # last month's image on this node's disk
    blank = junk(tmp_path / "blank.img")
    with NetLab(3, net=193) as lab:
        h0, h1, h2 = lab.hosts
        procs = [herdcast_receiver(h1, old, tmp_path / "old.log", "--unpack", "--verify",
                                   "readback"),
                 herdcast_receiver(h2, blank, tmp_path / "blank.log", "--unpack")]
        time.sleep(0.3)
        snd = herdcast_sender(h0, tmp_path / "send.log", "-f", str(new), "--min-receivers",
                              "2")
        rcs = [wait(snd, 90), *(wait(p, 30) for p in procs)]
    assert rcs == [0, 0, 0], logs(tmp_path)
    assert received(tmp_path / "old.log") <= received(tmp_path / "blank.log") / 4, \
        logs(tmp_path)
    # --verify readback: the chunks it kept and those it received, read back from its disk
    assert "every chunk is the manifest's" in (tmp_path / "old.log").read_text()
    assert used_extents_equal(new, old) and used_extents_equal(new, blank)


def test_a_chunk_receiver_that_fails_tells_the_sender_why(disk, tmp_path):
    """A receiver joining the carousel with a disk too small for the image refuses it
    before writing a byte, and the sender's table and report say so in the receiver's
    words (HC_FAIL, believed with its secret); a file receiver (the default: written as the
    disk) takes the chunks meanwhile."""
    import json

    small = tmp_path / "small.img"
    small.write_bytes(b"\xa5" * (8 * MiB))
    out, report = tmp_path / "out.img", tmp_path / "report.json"
    with NetLab(3, net=196) as lab, loop_device(small) as dev:
        h0, h1, h2 = lab.hosts
        h0.shape("40mbit")  # the carousel lasts ~6 s: the small disk joins while it runs
        file_rcv = herdcast_receiver(h2, out, tmp_path / "file.log")
        time.sleep(0.3)
        snd = herdcast_sender(h0, tmp_path / "send.log", "-f", str(disk), "--min-receivers",
                              "1", "--report", str(report))
        wait_log(tmp_path / "file.log", "to receive")
        small_rcv = herdcast_receiver(h1, Path(dev), tmp_path / "small.log")
        rcs = [wait(snd, 90), wait(small_rcv, 30), wait(file_rcv, 30)]
    text = logs(tmp_path)
    assert rcs == [1, 1, 0], text
    assert "chunk carousel" in (tmp_path / "file.log").read_text(), text
    assert used_extents_equal(disk, out)
    assert small.read_bytes() == b"\xa5" * (8 * MiB)  # nothing written
    reason = f"disk {dev}: {8 * MiB} bytes is smaller than the image"
    sent = (tmp_path / "send.log").read_text()
    row = [x for x in sent.splitlines() if x.strip().startswith(h1.ip)]
    assert row and f"FAILED ({reason}" in row[0], sent
    (rec,) = [r for r in json.loads(report.read_text())["receivers"] if r["address"] == h1.ip]
    assert rec["verdict"] == "failed" and rec["reason"].startswith(reason), rec


def test_a_receiver_killed_at_90_percent_receives_the_rest_when_restarted(disk, tmp_path):
    out = junk(tmp_path / "out.img")
    with NetLab(2, net=194) as lab:
        h0, h1 = lab.hosts
        h0.shape("100mbit")
        rcv = herdcast_receiver(h1, out, tmp_path / "run1.log", "--unpack")
        time.sleep(0.3)
        snd = herdcast_sender(h0, tmp_path / "send.log", "-f", str(disk),
                              "--min-receivers", "1")
        wire = int(wait_log(tmp_path / "send.log", r"used bytes in (\d+) bytes")[1])
        wait_log(tmp_path / "run1.log", "to receive")
        time.sleep(0.9 * wire / RATE)
        rcv.send_signal(signal.SIGKILL)  # a node losing power: no DISCONNECT, no sync
        rcv.wait(timeout=10)
        again = herdcast_receiver(h1, out, tmp_path / "run2.log", "--unpack")
        rcs = [wait(again, 60), wait(snd, 60)]
    run2 = (tmp_path / "run2.log").read_text()
    assert rcs == [0, 0], logs(tmp_path)
    have, carried = map(int, re.search(r"chunks: (\d+) of (\d+) already", run2).groups())
    assert have >= carried * 0.6, run2  # most of it was on the disk already
    assert received(tmp_path / "run2.log") <= 0.35 * wire, run2  # about the missing part
    assert used_extents_equal(disk, out)


FORGER = r"""
import os, socket, struct, sys, time
sys.path.insert(0, sys.argv[1])
from agent.udpcast import carousel as wire
from agent.transfer.send.network import default_data_group
from agent.udpcast.extensions import build_fail
from agent.udpcast.protocol import HcDigestAckSigned, Op, build
src, seconds, targets = sys.argv[2], float(sys.argv[3]), sys.argv[4:]
group = default_data_group(src)

def checksum(b):
    b += b"\0" * (len(b) % 2)
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF

def forged(payload, dst):  # IPv4 + UDP from the sender's address and port to dst:9000
    length = 8 + len(payload)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, length)
    udp = struct.pack("!HHHH", 9001, 9000, length, 0) + payload
    udp = udp[:6] + struct.pack("!H", checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0x4243, 0, 1, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:] + udp

raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
sniff = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sniff.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sniff.bind((group, 9000))
sniff.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                 socket.inet_aton(group) + socket.inet_aton("0.0.0.0"))
sniff.setblocking(False)
chunks = {}  # chunk -> wire bytes, learnt from the sender's own pieces
sent, end, k = 0, time.monotonic() + seconds, 0
def send(payload, dsts):
    global sent
    for dst in dsts:
        try:
            raw.sendto(forged(payload, dst), (dst, 0))
            sent += 1
        except OSError:
            pass
while time.monotonic() < end:
    k += 1
    try:
        while True:
            head = sniff.recv(65536)
            if head[:2] == int(Op.HC_CHUNK).to_bytes(2, "big"):
                _, _, index, _, _, size = wire.CHUNK_HEADER.unpack_from(head)
                chunks[index] = size
    except BlockingIOError:
        pass
    send(build(Op.DATA, slice_no=k % 50, block_no=0, slice_bytes=1456) + os.urandom(1456),
         [group, *targets])
    send(build(Op.REQACK, slice_no=k % 50, slice_bytes=0, rxmit=0, ready_set=bytes(128)),
         [group, *targets])  # an end of stream
    for index, size in list(chunks.items())[k % 8::8]:  # poison chunks that fly again
        piece = k % max(1, size // 1456)
        send(wire.CHUNK_HEADER.pack(int(Op.HC_CHUNK), 0, index, piece, wire.PIECE_DATA, size)
             + os.urandom(min(1456, size - piece * 1456)), [group])
        send(wire.CHUNK_HEADER.pack(int(Op.HC_CHUNK), 0, index, k % 4, wire.PIECE_LIST, size)
             + os.urandom(1456), [group])  # and their piece lists
    send(HcDigestAckSigned.build(dict(opcode=int(Op.HC_DIGEST_ACK), agreed=1,
                                      total_bytes=k, secret=os.urandom(16),
                                      sha256=bytes(32), kind=2, signature=bytes(64))),
         targets)
    send(wire.build(Op.HC_MANIFEST_INFO, length=100, sha256=bytes(32),
                    signature=os.urandom(64)), targets)
    send(wire.build(Op.HC_IDLE, chunks=1), [group])
    send(build_fail("forged: stop", os.urandom(16), Op.HC_STOP), targets)
    time.sleep(0.002)
print("forged", sent, "packets,", len(chunks), "chunks poisoned", file=sys.stderr)
"""


def test_a_forger_spoofing_the_sender_costs_bandwidth_never_a_disk(disk, tmp_path):
    key, pub = pair(tmp_path)
    outs = [junk(tmp_path / f"disk{i}.img") for i in range(3)]
    with NetLab(5, net=195) as lab:
        h0, forger = lab.hosts[0], lab.hosts[4]
        h0.shape("100mbit")
        forger.run("ip", "route", "add", "224.0.0.0/4", "dev", "eth0")
        procs = [herdcast_receiver(h, out, tmp_path / f"recv{i}.log", "--unpack",
                                   "--trust-key", str(pub))
                 for i, (h, out) in enumerate(zip(lab.hosts[1:4], outs, strict=True))]
        time.sleep(0.3)
        snd = herdcast_sender(h0, tmp_path / "send.log", "-f", str(disk),
                              "--min-receivers", "3", "--sign-key", str(key))
        for i in range(3):  # the transfer is signed from here on: the attack begins
            wait_log(tmp_path / f"recv{i}.log", "Connected to")
        attack = forger.popen([sys.executable, "-c", FORGER, str(ROOT), h0.ip, "8",
                               *(h.ip for h in lab.hosts[1:4])],
                              stdout=subprocess.DEVNULL,
                              stderr=(tmp_path / "forger.log").open("wb"))
        rcs = [wait(snd, 90), *(wait(p, 30) for p in procs)]
        attack.wait(timeout=20)
    log = logs(tmp_path)
    assert rcs == [0, 0, 0, 0], log
    assert re.search(r"forged \d{4,} packets", log), log  # the attack did happen
    wire = int(re.search(r"used bytes in (\d+) bytes", log)[1])
    dropped = 0
    for i, out in enumerate(outs):
        text = (tmp_path / f"recv{i}.log").read_text()
        assert "signed result names the chunks" in text
        assert used_extents_equal(disk, out)
        # forged pieces were dropped on arrival (piece hashes): no chunk was spoilt, and
        # the transfer took about one image-time at 100 Mbit/s, as unattacked (~1.05x)
        assert ", 0 chunk(s) failed their hash" in text, text
        dropped += int(re.search(r"(\d+) forged piece\(s\) dropped", text)[1])
        assert seconds(tmp_path / f"recv{i}.log") <= 1.2 * wire / RATE, text
    assert dropped, log


def test_a_receiver_asks_only_for_what_the_sender_has_passed():
    """HC_NEED after the first: chunks ahead of the one being sent are not asked for again
    (they are on their way, in a lagging receiver's queue perhaps; asked for again they
    flew twice); between refreshes only the chunks seen go by incomplete, again after
    RE_ASK while they have not come (the sender ignores asks for what it just sent); every HC_NEED
    carries the pace counts, an empty one when nothing is asked; all of it once the
    sender says nobody wants anything."""
    from types import SimpleNamespace

    from agent.transfer.receive.carousel import RE_ASK, ChunkReceiver
    from agent.udpcast import carousel as wire
    from agent.udpcast.protocol import Op

    sent: list[bytes] = []
    r = ChunkReceiver.__new__(ChunkReceiver)
    r.link = SimpleNamespace(send=sent.append)
    r.table = SimpleNamespace(chunks=[None] * 100)
    r.partial, r.holed, r.went_by, r.asked = {}, set(), 0, {}
    r.lacking, r.current, r.received, r.lost = (1 << 100) - 1, -1, 0, 0
    r.need_at = r.refresh_at = 0.0

    def asked(now: float) -> tuple[set[int], tuple[int, int]]:
        sent.clear()
        r._need(now)
        chunks, counts = set(), (0, 0)
        for datagram in sent:
            op, msg = wire.parse(datagram)
            assert op == Op.HC_NEED
            mask = wire.need_mask(msg.first, msg.bitmap, 100)
            chunks |= {i for i in range(100) if mask >> i & 1}
            counts = (counts[0] + msg.received, counts[1] + msg.lost)
        return chunks, counts

    assert asked(0.0)[0] == set(range(100))  # at first: all of it
    assert r.refresh_at == RE_ASK  # then soon what the sender had just sent (IN_FLIGHT)
    r.current, r.received = 40, 500  # chunk 40 is coming; 0-39 went by
    r.lacking &= ~((1 << 40) - 1) | 1 << 7  # all of them whole but chunk 7
    r.went_by = 1 << 7
    assert asked(0.1) == ({7}, (500, 0))  # between refreshes: what went by incomplete
    r.received, r.lost = 300, 9
    assert asked(0.2) == (set(), (300, 9))  # nothing to ask: the counts still go
    assert asked(0.7)[0] == {7}  # not come again within RE_ASK: asked for again
    assert r.need_at == 0.7 + RE_ASK
    r.lacking &= ~(1 << 7)  # it came
    assert asked(1.3)[0] == set() and r.need_at == r.refresh_at == 0.7 + 2.0
    r.lacking |= 1 << 7
    assert asked(5.0)[0] == {7}  # a refresh: behind chunk 40, not 40-99 on their way
    r.current, r.refresh_at = -1, 0.0  # HC_IDLE: the sender wants nothing
    assert asked(5.1)[0] == {7, *range(40, 100)}
