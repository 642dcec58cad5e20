"""`--allow`: the receivers a sender answers, so a service serves the fleet and nobody else.

Each `--allow` value is an IPv4 address, a network (`10.0.0.0/24`), a MAC (`aa:bb:cc:dd:ee:ff`,
matched against the kernel's neighbour table: the machine that really owns the address the
request came from), or a file of such entries one per line (`#` starts a comment). Without
`--allow` every receiver is answered, as udpcast does. A CONNECT_REQ from outside the list is
not answered, not queued for a round and not in any report, so forged requests from made-up
addresses cost nothing. A MAC entry needs the neighbour table to know the address: until it
does, the request is not answered but the address is probed (one empty datagram to its
receiver port makes the kernel resolve it), and its next CONNECT_REQ is.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable

from agent.errors import UsageError

_MAC = re.compile(r"[0-9a-f]{2}([:-][0-9a-f]{2}){5}")


class AllowError(UsageError):
    """An --allow value that is no address, network, MAC or readable file."""


class AllowList:
    """Who may connect. `admits(ip)`: True, False, or None while the MAC is not known."""

    def __init__(self, networks: list, macs: set[str]) -> None:
        self.networks, self.macs = networks, macs

    @classmethod
    def parse(cls, values: Iterable[str]) -> AllowList | None:
        """The list the --allow values name; None when there are none (everybody)."""
        networks: list = []
        macs: set[str] = set()
        values = list(values)
        if not values:
            return None
        for value in values:
            for entry in value.split(","):
                entry = entry.strip()
                if entry:
                    _add(entry, networks, macs, source=None)
        if not networks and not macs:
            raise AllowError("--allow: the list names nobody",
                             "give addresses, networks or MACs of the fleet")
        return cls(networks, macs)

    def admits(self, ip: str, mac_of: Callable[[str], str | None]) -> bool | None:
        """Whether a CONNECT_REQ from `ip` is answered (None: only its MAC can tell, and
        the neighbour table does not know it yet)."""
        try:
            address = ipaddress.IPv4Address(ip)
        except ValueError:
            return False
        if any(address in net for net in self.networks):
            return True
        if not self.macs:
            return False
        mac = mac_of(ip)
        if mac is None:
            return None
        return mac.lower() in self.macs


def _add(entry: str, networks: list, macs: set[str], source: str | None) -> None:
    where = f" (in {source})" if source else ""
    if _MAC.fullmatch(entry.lower()):
        macs.add(entry.lower().replace("-", ":"))
        return
    with contextlib.suppress(ValueError):
        networks.append(ipaddress.IPv4Network(entry, strict=False))
        return
    if source is not None or "/" not in entry and "." in entry and entry[0].isdigit():
        raise AllowError(f"--allow: {entry!r}{where} is no IPv4 address, network or MAC",
                         "give e.g. 10.0.0.21, 10.0.0.0/24 or aa:bb:cc:dd:ee:ff, or a file "
                         "of them")
    try:
        with open(entry, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise AllowError(f"--allow: {entry!r} is no address, network or MAC, and not a "
                         f"readable file ({exc.strerror})",
                         "give addresses, networks, MACs, or a file of them") from None
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            _add(line, networks, macs, source=entry)


def probe(ip: str, port: int) -> None:
    """One empty datagram to `ip`: the kernel resolves its MAC to send it (a receiver
    ignores an empty datagram)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"", (ip, port))
