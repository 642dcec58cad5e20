"""What the admin asked a clone to become: grow=, hostname=, identity=, userdata=.

One value object, built from boot parameters on a node and from options on a server, and
checked here once, so a bad name is one line before anything is written. The default is a
byte-faithful clone, as udpcast's: only a node given a name gets a fresh identity unless
told identity=keep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.errors import HerdcastError

IDENTITIES = ("fresh", "keep")
HOSTNAME_RE = re.compile(r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                         r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
USERDATA_SCHEMES = ("http://", "https://", "tftp://")


class WishError(HerdcastError, ValueError):
    """A personalisation parameter is malformed (a hostname that is not one)."""


def check_hostname(name: str) -> str:
    """`name` if it is a hostname (RFC 1123 labels, dots between), else WishError."""
    if not HOSTNAME_RE.fullmatch(name):
        raise WishError(f"{name[:64]!r} is not a hostname",
                        "use letters, digits and '-' (labels of up to 63, dots between), "
                        "e.g. node07 or node07.lab.example")
    return name


@dataclass(frozen=True)
class Wishes:
    """What to do to a clone after its digest agreed (agent.personalize.run)."""

    grow: bool = False
    hostname: str | None = None
    identity: str | None = None  # "fresh" | "keep"; None: fresh when a hostname is given
    userdata: str | None = None  # URL (or on a server a path) of cloud-init user-data

    def __post_init__(self) -> None:
        if self.hostname is not None:
            check_hostname(self.hostname)
        if self.identity not in (None, *IDENTITIES):
            raise WishError(f"identity {self.identity!r} is unknown",
                            "use identity=fresh or identity=keep")

    @property
    def fresh(self) -> bool:
        """New machine-id and SSH host keys."""
        return self.identity == "fresh" or (self.identity is None and bool(self.hostname))

    @property
    def into_root(self) -> bool:
        """Whether anything is to be written into the clone's root filesystem."""
        return bool(self.hostname or self.fresh or self.userdata)

    def describe(self) -> str:
        """One line for the plan and the console."""
        asked = (["grow the last partition"] if self.grow else []) + \
            ([f"hostname {self.hostname}"] if self.hostname else []) + \
            (["fresh machine-id and SSH host keys"] if self.fresh else []) + \
            ([f"cloud-init user-data from {self.userdata}"] if self.userdata else [])
        return ", ".join(asked) or "none (a byte-faithful clone; a GPT is fitted to the disk)"
