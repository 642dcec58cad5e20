"""The receiver's side of herdcast's extensions and of udpcast's abort rules, against a
scripted sender (a few lines of Python speaking the protocol) in a namespace lab: the
behaviours a well-behaved sender never triggers."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.lab.netlab import NetLab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parent.parent

FAKE_SENDER = r"""
import socket, sys, time
sys.path.insert(0, sys.argv[3])
from agent.udpcast.extensions import build_connect_reply
from agent.udpcast.protocol import Cap, Op, build, parse
mode, bcast = sys.argv[1], sys.argv[2]
BS, DATA = 1000, bytes(range(256)) * 10  # 2560 bytes: blocks of 1000, 1000, 560
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.bind(("0.0.0.0", 9001))
s.settimeout(0.2)
caps = Cap.STOCK if mode == "stock-forged-end" else Cap.STOCK | Cap.HERDCAST
end = time.monotonic() + 30
peer = None
while peer is None and time.monotonic() < end:
    try:
        data, addr = s.recvfrom(2048)
    except socket.timeout:
        s.sendto(build(Op.HELLO, capabilities=caps, mcast_addr="0.0.0.0", blocksize=BS),
                 (bcast, 9000))
        continue
    p = parse(data)
    if p and p[0] == Op.CONNECT_REQ:
        peer = addr
reply = dict(client_number=0, blocksize=BS, capabilities=caps, mcast_addr="0.0.0.0")
key, SECRET = None, bytes(range(16))  # the receiver's secret, echoed in every HC_DIGEST_ACK
if len(sys.argv) > 4:  # a signing sender (test_signed)
    from agent.codec import wire_index
    from agent.trust import keys, statements
    from agent.udpcast.extensions import connect_nonce
    from agent.udpcast.protocol import HcDigestAckSigned
    key, nonce = keys.load_private(sys.argv[4]), connect_nonce(data)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect(peer)
    statement = statements.Session(nonce, peer[0], probe.getsockname()[0], 9001, "0.0.0.0",
                                   BS, len(DATA), wire_index(None), bytes(32)).message()
    signature = statements.sign(key, statement)
    s.sendto(build_connect_reply(image_size=len(DATA), secret=SECRET, **reply) + bytes(32)
             + signature, peer)
elif caps & Cap.HERDCAST:  # a herdcast sender announces the image size
    s.sendto(build_connect_reply(image_size=len(DATA), secret=SECRET, **reply), peer)
else:
    s.sendto(build(Op.CONNECT_REPLY, **reply), peer)
time.sleep(0.3)
if mode == "early-ack":  # a verdict before the receiver sent any digest
    for _ in range(3):
        s.sendto(build(Op.HC_DIGEST_ACK, agreed=1, total_bytes=len(DATA), secret=SECRET), peer)

def forged_end(slice_no):
    # an end marker (REQACK of 0 bytes) where the stream does not end: any OK is a bug
    for _ in range(3):
        s.sendto(build(Op.REQACK, slice_no=slice_no, slice_bytes=0, rxmit=0,
                       ready_set=bytes(128)), peer)
    stop = time.monotonic() + 0.5
    while time.monotonic() < stop:
        try:
            answer = parse(s.recvfrom(2048)[0])
        except socket.timeout:
            continue
        if answer and answer[0] == Op.OK and answer[1].slice_no == slice_no:
            print("ANSWERED-FORGED-END", file=sys.stderr, flush=True)

def data(slice_no, block, nbytes=len(DATA)):
    chunk = DATA[block * BS:(block + 1) * BS]
    return build(Op.DATA, slice_no=slice_no, block_no=block, slice_bytes=nbytes) + chunk

def ask(slice_no, nbytes):
    while time.monotonic() < end:
        s.sendto(build(Op.REQACK, slice_no=slice_no, slice_bytes=nbytes, rxmit=0,
                       ready_set=bytes(128)), peer)
        try:
            answer = parse(s.recvfrom(2048)[0])
        except socket.timeout:
            continue
        if answer and answer[0] == Op.OK and answer[1].slice_no == slice_no:
            return

if mode == "skip":
    s.sendto(data(0, 0), peer)
    time.sleep(0.2)
    for _ in range(20):  # two slices ahead, on and on: the receiver was dropped
        s.sendto(data(2, 0), peer)
    time.sleep(2)
    sys.exit(0)
if mode == "early-end":
    forged_end(0)  # the announced 2560 bytes are not there yet
for block in range(3):
    s.sendto(data(0, block), peer)
ask(0, len(DATA))
if mode == "stock-forged-end":  # the receiver takes it (nothing to check it against)...
    ask(1, 0)
    for _ in range(10):  # ...but the sender goes on with slice 1: it was not the end
        s.sendto(data(1, 0), peer)
        time.sleep(0.05)
    time.sleep(2)
    sys.exit(0)
ask(1, 0)
while time.monotonic() < end:
    try:
        p = parse(s.recvfrom(2048)[0])
    except socket.timeout:
        continue
    if p and p[0] == Op.HC_DIGEST and mode == "mismatch":
        s.sendto(build(Op.HC_DIGEST_ACK, agreed=0, total_bytes=p[1].total_bytes,
                           secret=SECRET), peer)
    if p and p[0] == Op.HC_DIGEST and mode == "wrong-total":
        s.sendto(build(Op.HC_DIGEST_ACK, agreed=1, total_bytes=p[1].total_bytes + 1,
                           secret=SECRET), peer)
    if p and p[0] == Op.HC_DIGEST and key is not None:
        t, sha = p[1].total_bytes, p[1].sha256
        signature = statements.sign(key, statements.result_message(statement, t, sha,
                                                                   statements.RAW))
        if mode == "forged-signature":
            signature = bytes(64)
        s.sendto(HcDigestAckSigned.build(dict(opcode=int(Op.HC_DIGEST_ACK), agreed=1,
                 total_bytes=t, secret=SECRET, sha256=sha, kind=statements.RAW,
                 signature=signature)), peer)
    if p and p[0] == Op.HC_DIGEST and mode == "early-end":
        s.sendto(build(Op.HC_DIGEST_ACK, agreed=1, total_bytes=p[1].total_bytes,
                           secret=SECRET), peer)
    if p and p[0] == Op.DISCONNECT:
        break
"""


def run(tmp_path: Path, mode: str) -> tuple[int, str, Path, float]:
    with NetLab(2, net=98) as lab:
        h0, h1 = lab.hosts
        out, log = tmp_path / "out.bin", tmp_path / "r.log"
        rcv = h1.popen([sys.executable, "-m", "agent", "receive", "--nokbd", "--no-progress",
                        "--interface", "eth0", "-f", str(out)], cwd=ROOT,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=log.open("wb"))
        time.sleep(0.5)
        t0 = time.monotonic()
        snd = h0.popen([sys.executable, "-c", FAKE_SENDER, mode, "10.98.0.255", str(ROOT)],
                       stderr=(tmp_path / "s.log").open("wb"))
        rc = rcv.wait(timeout=30)
        elapsed = time.monotonic() - t0
        snd.wait(timeout=30)
    return rc, log.read_text() + (tmp_path / "s.log").read_text(), out, elapsed


def test_digest_mismatch_fails_the_receiver(tmp_path):
    rc, text, out, _ = run(tmp_path, "mismatch")
    assert rc == 1, text
    assert "herdcast receive: image digest differs from the sender's" in text
    assert out.read_bytes() == bytes(range(256)) * 10  # written, but reported corrupt


def test_unconfirmed_digest_fails_after_a_bounded_wait(tmp_path):
    rc, text, _, elapsed = run(tmp_path, "silent")
    assert rc == 1, text
    assert "herdcast receive: sender did not confirm the digest" in text
    assert elapsed < 20


def test_data_two_slices_ahead_means_dropped_by_sender(tmp_path):
    rc, text, _, _ = run(tmp_path, "skip")
    assert rc == 1, text
    assert "herdcast receive: dropped by sender" in text


@pytest.mark.parametrize("mode", ["early-ack", "wrong-total"])
def test_a_digest_ack_not_answering_our_digest_is_ignored(tmp_path, mode):
    """An agreeing HC_DIGEST_ACK sent before the receiver sent its digest, or naming another
    total, is not the sender's verdict: the receiver waits for a real one, then fails."""
    rc, text, _, _ = run(tmp_path, mode)
    assert rc == 1, text
    assert "herdcast receive: sender did not confirm the digest" in text


def test_an_end_marker_before_the_announced_size_is_ignored(tmp_path):
    rc, text, out, _ = run(tmp_path, "early-end")
    assert rc == 0, text
    assert "ANSWERED-FORGED-END" not in text
    assert out.read_bytes() == bytes(range(256)) * 10


def test_a_stock_senders_end_contradicted_by_more_data_fails(tmp_path):
    """A stock sender announces no size: a forged end there is taken, but the sender going
    on with the next slice shows it was not the end, and the receiver fails."""
    rc, text, _, _ = run(tmp_path, "stock-forged-end")
    assert rc == 1, text
    assert "after an end marker" in text and "incomplete" in text
