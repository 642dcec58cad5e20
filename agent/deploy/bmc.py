"""Power control, behind one small interface: what `herdcast deploy` asks of a node's BMC.

    boot_from_network_once()   the next boot is PXE, once (the disk afterwards)
    power_on_or_cycle()        on if off, a hard restart if on; says which
    power_state()              "on", "off", ... as the BMC says it

agent.deploy.drivers picks a node's driver: Redfish through sushy (agent.deploy.redfish),
IPMI through pyghmi (agent.deploy.ipmi), and for a node without a BMC a Wake-on-LAN magic
packet on the deploy's interface (`WakeOnLan`, here; it cannot set the boot device nor say
the power state). Every failure is a `BmcError` naming the node and its BMC (never the credentials).
"""

from __future__ import annotations

import socket
from typing import Protocol

from agent.deploy.inventory import Node
from agent.errors import HerdcastError

WOL_PORT = 9
SO_BINDTODEVICE = 25


class BmcError(HerdcastError):
    """A BMC refused or did not answer; the message names the node and the BMC."""


class PowerControl(Protocol):
    """What deploy needs of a node's power; each driver implements these three."""

    def boot_from_network_once(self) -> None: ...

    def power_on_or_cycle(self) -> str: ...

    def power_state(self) -> str: ...


def scrub(text: str, *secrets: str) -> str:
    """A library's error text with any credential in it masked (a URL it echoes, a
    message that quotes a request): a BMC error line must never carry one."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def magic_packet(mac: str) -> bytes:
    """Wake-on-LAN: six 0xff bytes, then the MAC sixteen times."""
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise ValueError(f"not a MAC: {mac}")
    return b"\xff" * 6 + raw * 16


class WakeOnLan:
    """A node with no BMC: a magic packet broadcast on `interface` alone (SO_BINDTODEVICE,
    so it never leaves by another route), and nothing else: its boot order is the admin's
    (network first), its power state unknown."""

    def __init__(self, node: Node, interface: str | None) -> None:
        self.node, self.interface = node, interface

    def boot_from_network_once(self) -> None:
        """Nothing to ask: a machine without a BMC boots what its firmware lists first."""

    def power_on_or_cycle(self) -> str:
        if self.interface is None:
            return "no BMC and no --interface for Wake-on-LAN: power it on by hand"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE,
                                self.interface.encode() + b"\0")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sock.sendto(magic_packet(self.node.mac), ("255.255.255.255", WOL_PORT))
            except OSError as exc:
                raise BmcError(f"node {self.node.name}: Wake-on-LAN on {self.interface}: "
                               f"{exc.strerror or exc}",
                               "check --interface, or power the node on by hand") from None
        return f"no BMC: Wake-on-LAN sent on {self.interface}"

    def power_state(self) -> str:
        return "unknown (no BMC)"
