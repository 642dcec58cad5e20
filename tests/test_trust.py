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


def _session(**change) -> statements.Session:
    facts = dict(nonce=bytes(16), receiver="10.0.0.11", sender="10.0.0.10", sender_port=9001,
                 group="233.254.0.10", blocksize=1456, image_size=5, codec=0,
                 image=bytes(range(32)))
    facts.update(change)
    return statements.Session(**facts)


# everything that decides what lands on the disk: each one changed is another statement
CHANGES = [dict(nonce=b"\1" * 16), dict(receiver="10.0.0.12"), dict(sender="10.0.0.66"),
           dict(sender_port=9003), dict(group="233.254.0.66"), dict(blocksize=1400),
           dict(image_size=6), dict(codec=1), dict(image=bytes(32))]


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: next(iter(c)))
def test_a_session_signature_binds_every_fact_of_the_session(tmp_path, change):
    private, public = _pair(tmp_path)
    signature = statements.sign(private, _session().message())
    assert statements.verify(public, _session().message(), signature)
    assert not statements.verify(public, _session(**change).message(), signature)


def test_result_verifies_only_for_its_session_total_digest_and_kind(tmp_path):
    private, public = _pair(tmp_path)
    session = _session().message()
    digest = hashlib.sha256(b"image").digest()
    raw = statements.RAW
    signature = statements.sign(private, statements.result_message(session, 5, digest, raw))
    assert statements.verify(public, statements.result_message(session, 5, digest, raw),
                             signature)
    other = hashlib.sha256(b"imagE").digest()
    for message in (statements.result_message(session, 5, other, raw),
                    statements.result_message(session, 6, digest, raw),
                    statements.result_message(session, 5, digest, statements.IMAGE),
                    statements.result_message(_session(receiver="10.0.0.12").message(), 5,
                                              digest, raw)):
        assert not statements.verify(public, message, signature)
    assert not statements.verify(public, statements.result_message(session, 5, digest, raw),
                                 bytes(64))


def test_a_session_signature_is_not_a_result_signature(tmp_path):
    private, public = _pair(tmp_path)
    session = _session().message()
    signature = statements.sign(private, session)
    assert statements.verify(public, session, signature)
    assert not statements.verify(public, statements.result_message(session, 5, bytes(32), 0),
                                 signature)


def test_another_key_does_not_verify(tmp_path):
    private, _ = _pair(tmp_path)
    (tmp_path / "o").mkdir()
    _, other_public = _pair(tmp_path / "o")
    msg = _session().message()
    assert not statements.verify(other_public, msg, statements.sign(private, msg))
