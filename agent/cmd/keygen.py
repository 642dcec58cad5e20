"""`herdcast keygen NAME`: an Ed25519 key pair for signed sessions (agent.trust.keys).

NAME.key is private, for `herdcast send --sign-key`; NAME.pub is for `make initrd
SIGN_PUBKEY=` and `herdcast receive --trust-key`. Exit status: 0 with both files written,
1 when they cannot be (a KeyFileError says why), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.say import say
from agent.trust.keys import generate


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="herdcast keygen",
        description="Make an Ed25519 key pair for signed sessions: NAME.key (private, for "
                    "herdcast send --sign-key) and NAME.pub (for make initrd SIGN_PUBKEY= "
                    "and herdcast receive --trust-key).")
    p.add_argument("name", help="path prefix of the two files, e.g. /etc/herdcast/fleet")
    return p


def main(argv: list[str]) -> int:
    name = parser().parse_args(argv).name
    line = generate(Path(f"{name}.key"), Path(f"{name}.pub"))
    say(f"herdcast keygen: wrote {name}.key (keep it secret) and {name}.pub: {line}")
    return 0
