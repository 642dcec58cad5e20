"""Signed sessions end to end in namespaces: a receiver that trusts a key images only from
a sender holding its pair, and says SUCCESS only for the result that sender signed.

Default options apart from the keys (and --start-timeout, so that a refusal ends the test
instead of a receiver waiting, as it should, for a sender that signs).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from peers import herdcast_receiver, herdcast_sender, make_source, sha, stock_sender
from test_receiver_extensions import FAKE_SENDER, ROOT

from agent.trust import TRUSTED_KEY_PATH, keys
from agent.udpcast.protocol import NONCE_BYTES, SIGNATURE_BYTES
from builder.lab.netlab import NetLab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]


def pair(tmp_path: Path, name: str = "fleet") -> tuple[Path, Path]:
    keys.generate(tmp_path / f"{name}.key", tmp_path / f"{name}.pub")
    return tmp_path / f"{name}.key", tmp_path / f"{name}.pub"


def test_statement_sizes_match_the_wire():
    from agent.trust import statements

    assert statements.NONCE_BYTES == NONCE_BYTES
    assert statements.SIGNATURE_BYTES == SIGNATURE_BYTES
    assert TRUSTED_KEY_PATH == "/etc/herdcast/trusted.pub"


def test_a_signed_session_images_and_says_so(tmp_path):
    key, pub = pair(tmp_path)
    src = make_source(tmp_path, 2_000_003)
    with NetLab(3, net=160) as lab:
        h0, h1, h2 = lab.hosts
        outs = [tmp_path / "a.bin", tmp_path / "b.bin"]
        # one receiver requires the signature, one does not ask for it: both are served
        procs = [herdcast_receiver(h1, outs[0], tmp_path / "a.log", "--trust-key", str(pub)),
                 herdcast_receiver(h2, outs[1], tmp_path / "b.log")]
        time.sleep(0.5)
        slog = tmp_path / "send.log"
        snd = herdcast_sender(h0, slog, "-f", str(src), "--min-receivers", "2",
                              "--sign-key", str(key))
        assert snd.wait(timeout=60) == 0, slog.read_text()
        assert [p.wait(timeout=30) for p in procs] == [0, 0], (tmp_path / "a.log").read_text()
    text = (tmp_path / "a.log").read_text()
    assert f"sender {h0.ip} signed the session with the trusted key" in text
    assert "the sender's signed result names the bytes written here" in text
    assert sha(outs[0]) == sha(outs[1]) == sha(src)


def _refused(tmp_path: Path, pub: Path, start_sender) -> str:
    with NetLab(2, net=161) as lab:
        h0, h1 = lab.hosts
        out, log = tmp_path / "r.bin", tmp_path / "r.log"
        rcv = herdcast_receiver(h1, out, log, "--trust-key", str(pub), "--start-timeout", "6")
        time.sleep(0.5)
        start_sender(h0, tmp_path)
        assert rcv.wait(timeout=40) == 1, log.read_text()
    text = log.read_text()
    assert f"ignoring sender {h0.ip}:" in text and "SUCCESS" not in text
    assert "Transfer complete" not in text
    assert not out.exists() or out.stat().st_size == 0
    return text


def test_a_receiver_with_a_key_refuses_an_unsigned_herdcast_sender(tmp_path):
    _, pub = pair(tmp_path)
    src = make_source(tmp_path, 200_003)
    text = _refused(tmp_path, pub, lambda h, t: herdcast_sender(
        h, t / "send.log", "-f", str(src), "--min-receivers", "1"))
    assert "does not sign its sessions" in text


@pytest.mark.skipif(shutil.which("udp-sender") is None, reason="udpcast not installed")
def test_a_receiver_with_a_key_refuses_a_stock_udp_sender(tmp_path):
    _, pub = pair(tmp_path)
    src = make_source(tmp_path, 200_003)
    text = _refused(tmp_path, pub, lambda h, t: stock_sender(
        h, src, t / "send.log", "--min-receivers", "1"))
    assert "does not sign its sessions" in text


def test_a_sender_signing_with_another_key_is_refused(tmp_path):
    _, pub = pair(tmp_path)
    other, _ = pair(tmp_path, "other")
    src = make_source(tmp_path, 200_003)
    text = _refused(tmp_path, pub, lambda h, t: herdcast_sender(
        h, t / "send.log", "-f", str(src), "--min-receivers", "1", "--sign-key", str(other)))
    assert "does not verify" in text


@pytest.mark.parametrize("mode", ["signed", "forged-signature"])
def test_a_forged_result_signature_fails_the_receiver(tmp_path, mode):
    """A scripted sender that signs the session, then acknowledges the digest with an
    agreeing but badly signed result: FAILED. Its correctly signed twin: SUCCESS."""
    key, pub = pair(tmp_path)
    with NetLab(2, net=162) as lab:
        h0, h1 = lab.hosts
        out, log = tmp_path / "out.bin", tmp_path / "r.log"
        rcv = h1.popen([sys.executable, "-m", "agent", "receive", "--nokbd", "--no-progress",
                        "--interface", "eth0", "-f", str(out), "--trust-key", str(pub)],
                       cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=log.open("wb"))
        time.sleep(0.5)
        snd = h0.popen([sys.executable, "-c", FAKE_SENDER, mode, "10.162.0.255", str(ROOT),
                        str(key)], stderr=(tmp_path / "s.log").open("wb"))
        rc = rcv.wait(timeout=40)
        snd.wait(timeout=30)
    text = log.read_text() + (tmp_path / "s.log").read_text()
    if mode == "signed":
        assert rc == 0, text
        return
    assert rc == 1, text
    assert "with a valid signature (the signature of its result does not verify)" in text
