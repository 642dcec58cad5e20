"""A signed fleet's initrd: the trusted key goes in, pyca cryptography is frozen into every
node (it verifies signatures and makes each clone's SSH host keys), and a bad key is refused
before any work."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agent.trust.keys import KeyFileError, generate
from builder import freeze
from builder.config import BuildConfig


def _excluded(argv: list[str]) -> set[str]:
    return {argv[i + 1] for i, a in enumerate(argv) if a == "--exclude-module"}


def test_cryptography_is_frozen_into_every_node():
    """An unsigned fleet still makes fresh SSH host keys (identity=fresh) on the node, so
    leaving cryptography out of an unsigned build broke the freeze check."""
    argv = freeze.pyinstaller_argv(Path(sys.executable), Path("/tmp/w"), Path("e.py"))
    assert "cryptography" not in _excluded(argv)
    assert argv[argv.index("cryptography") - 1] == "--hidden-import"


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
