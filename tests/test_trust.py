"""Signed sessions: key files, and statements that verify only as signed."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from agent.trust import keys, statements
from agent.trust.keys import KeyFileError


def _pair(tmp_path: Path):
    keys.generate(tmp_path / "fleet.key", tmp_path / "fleet.pub")
    return (keys.load_private(str(tmp_path / "fleet.key")),
            keys.load_public(str(tmp_path / "fleet.pub")))


def test_keygen_writes_a_private_key_only_root_reads_and_a_one_line_public_key(tmp_path):
    line = keys.generate(tmp_path / "k", tmp_path / "k.pub")
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
    assert (tmp_path / "k.pub").read_text() == line + "\n"
    assert line.startswith("herdcast-ed25519 ") and len(line.split()) == 2
    with pytest.raises(KeyFileError, match="exists"):
        keys.generate(tmp_path / "k", tmp_path / "other.pub")


def test_bad_key_files_are_one_line_errors(tmp_path):
    (tmp_path / "bad.pub").write_text("ssh-ed25519 AAAA")
    with pytest.raises(KeyFileError, match="not a 'herdcast-ed25519"):
        keys.load_public(str(tmp_path / "bad.pub"))
    (tmp_path / "bad.key").write_text("nonsense")
    with pytest.raises(KeyFileError, match="not an unencrypted PEM"):
        keys.load_private(str(tmp_path / "bad.key"))
    with pytest.raises(KeyFileError, match="No such file"):
        keys.load_private(str(tmp_path / "missing.key"))


def test_result_verifies_only_for_the_signed_nonce_total_and_digest(tmp_path):
    private, public = _pair(tmp_path)
    nonce = statements.new_nonce()
    digest = hashlib.sha256(b"image").digest()
    signature = statements.sign(private, statements.result_message(nonce, 5, digest))
    assert statements.verify(public, statements.result_message(nonce, 5, digest), signature)
    other = hashlib.sha256(b"imagE").digest()
    assert not statements.verify(public, statements.result_message(nonce, 5, other), signature)
    assert not statements.verify(public, statements.result_message(nonce, 6, digest), signature)
    assert not statements.verify(public, statements.result_message(statements.new_nonce(), 5,
                                                                   digest), signature)
    assert not statements.verify(public, statements.result_message(nonce, 5, digest),
                                 bytes(64))


def test_a_session_signature_is_not_a_result_signature(tmp_path):
    private, public = _pair(tmp_path)
    nonce = statements.new_nonce()
    session = statements.session_message(nonce, bytes(4), 5)
    signature = statements.sign(private, session)
    assert statements.verify(public, session, signature)
    assert not statements.verify(public, statements.result_message(nonce, 5, bytes(32)),
                                 signature)


def test_another_key_does_not_verify(tmp_path):
    private, _ = _pair(tmp_path)
    (tmp_path / "o").mkdir()
    _, other_public = _pair(tmp_path / "o")
    msg = statements.session_message(statements.new_nonce(), bytes(4), 1)
    assert not statements.verify(other_public, msg, statements.sign(private, msg))
