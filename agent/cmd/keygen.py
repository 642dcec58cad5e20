"""`herdcast keygen NAME`: an Ed25519 key pair for signed sessions (agent.trust.keys).

NAME.key is private, for `herdcast send --sign-key`; NAME.pub is for `make initrd
TRUST_KEY=` and `herdcast receive --trust-key`. Exit status: 0 with both files written,
1 when they cannot be (a KeyFileError says why, in one line), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.say import say
from agent.trust.keys import KeyFileError, generate


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="herdcast keygen",
        description="Make an Ed25519 key pair for signed sessions: NAME.key (private, for "
                    "herdcast send --sign-key) and NAME.pub (for make initrd TRUST_KEY= "
                    "and herdcast receive --trust-key).")
    p.add_argument("name", help="path prefix of the two files, e.g. /etc/herdcast/fleet")
    return p


def main(argv: list[str]) -> int:
    name = parser().parse_args(argv).name
    folder = Path(f"{name}.key").parent
    if not folder.is_dir():
        raise KeyFileError(f"{folder}: no such directory",
                           f"create it first (mkdir -p {folder}) or give another NAME")
    try:
        line = generate(Path(f"{name}.key"), Path(f"{name}.pub"))
    except OSError as exc:
        raise KeyFileError(f"{exc.filename or name}: {exc.strerror or exc}",
                           "give a NAME in a directory you can write") from exc
    say(f"herdcast keygen: wrote {name}.key (keep it secret) and {name}.pub: {line}")
    return 0
