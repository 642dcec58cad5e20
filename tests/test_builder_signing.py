"""A signed fleet's initrd: the trusted key goes in, pyca cryptography is frozen in only
then, and a bad key is refused before any work."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agent.trust.keys import KeyFileError, generate
from builder import freeze
from builder.config import BuildConfig


def _excluded(argv: list[str]) -> set[str]:
    return {argv[i + 1] for i, a in enumerate(argv) if a == "--exclude-module"}


def test_cryptography_is_frozen_in_only_for_a_signed_fleet():
    unsigned = freeze.pyinstaller_argv(Path(sys.executable), Path("/tmp/w"), Path("e.py"))
    signed = freeze.pyinstaller_argv(Path(sys.executable), Path("/tmp/w"), Path("e.py"),
                                     signing=True)
    assert "cryptography" in _excluded(unsigned)
    assert "cryptography" not in _excluded(signed)
    assert freeze.source_hash(Path(sys.executable)) != \
        freeze.source_hash(Path(sys.executable), signing=True)  # two cached freezes


def test_a_bad_trust_key_is_refused_before_any_work(tmp_path):
    bad = tmp_path / "fleet.pub"
    bad.write_text("ssh-ed25519 AAAA")
    with pytest.raises(KeyFileError, match="not a 'herdcast-ed25519"):
        BuildConfig(out=tmp_path / "out", work=tmp_path / "work", trust_key=bad)
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_a_good_trust_key_is_taken(tmp_path):
    generate(tmp_path / "fleet.key", tmp_path / "fleet.pub")
    cfg = BuildConfig(out=tmp_path / "out", work=tmp_path / "work",
                      trust_key=tmp_path / "fleet.pub")
    assert cfg.trust_key == tmp_path / "fleet.pub"
