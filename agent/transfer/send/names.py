"""A receiver's MAC and host name, when the sender's machine already knows them.

Both are read from local files only, never from the network, so a lookup costs a file read
and cannot hang: the MAC from the kernel's neighbour table (`/proc/net/arp`, filled when the
sender answers the receiver's CONNECT_REQ), the name from `/etc/hosts` or the DHCP server's
lease file when the sender runs on the PXE server (dnsmasq's). Reverse DNS is left out: it
can block for seconds per address, and a PXE lab's addresses rarely have PTR records.
"""

from __future__ import annotations

import time

ARP = "/proc/net/arp"
HOSTS = "/etc/hosts"
LEASES = ("/var/lib/misc/dnsmasq.leases", "/var/lib/dnsmasq/dnsmasq.leases")
REREAD = 1.0  # seconds between reads of the neighbour table while a MAC is unknown
_ATF_COM = 0x2  # a complete entry (the MAC is known)


def read_arp(path: str = ARP) -> dict[str, str]:
    """IP -> MAC of the complete entries of the kernel's neighbour table."""
    out: dict[str, str] = {}
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) >= 4:
            try:
                complete = int(parts[2], 16) & _ATF_COM
            except ValueError:
                continue
            if complete and parts[3] != "00:00:00:00:00:00":
                out[parts[0]] = parts[3].lower()
    return out


def read_names(hosts: str = HOSTS, leases: tuple[str, ...] = LEASES) -> dict[str, str]:
    """IP -> host name from the DHCP leases (dnsmasq: `expiry mac ip name id`) and hosts."""
    out: dict[str, str] = {}
    for path in leases:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) >= 4 and parts[3] != "*":
                        out.setdefault(parts[2], parts[3])
        except OSError:
            continue
    try:
        with open(hosts, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split("#", 1)[0].split()
                if len(parts) >= 2:
                    out.setdefault(parts[0], parts[1])
    except OSError:
        pass
    return out


class Names:
    """Cached lookups: the neighbour table is read again at most once a second while some
    MAC is still unknown; the names once per session."""

    def __init__(self, arp: str = ARP, hosts: str = HOSTS,
                 leases: tuple[str, ...] = LEASES) -> None:
        self._arp_path = arp
        self._macs: dict[str, str] = {}
        self._read_at = 0.0
        self._names = read_names(hosts, leases)

    def mac(self, ip: str) -> str | None:
        """The MAC of `ip`, None until the kernel has resolved it."""
        mac = self._macs.get(ip)
        if mac is None:
            now = time.monotonic()
            if now - self._read_at >= REREAD:
                self._read_at = now
                self._macs.update(read_arp(self._arp_path))
                mac = self._macs.get(ip)
        return mac

    def hostname(self, ip: str) -> str | None:
        return self._names.get(ip)
