"""The node's network: choose the NIC, bring it up, address it by DHCP or statically.

The NIC is the one pxelinux booted from when `BOOTIF=` names its MAC (a node with four
ports must image over the one cabled to the imaging network), else the first with carrier.
Addresses always get a broadcast address: udpcast receivers find the sender by
broadcasting on it, and an address without one (as a bare `ip addr add` leaves it) makes
them wait forever.

Netlink through pyroute2 does the work; DHCP is pyroute2's own client, run until it is BOUND
and then left without a RELEASE, so the address stays for the whole transfer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.errors import HerdcastError
from agent.net.netif import ARPHRD_ETHER
from agent.net.netlink import IPRoute


class NetworkError(HerdcastError, RuntimeError):
    """No network: the message says what failed and which parameter to change."""


@dataclass
class NetConfig:
    """How the node's NIC ended up configured."""

    ifname: str
    mac: str
    ip: str
    prefixlen: int
    broadcast: str
    gateway: str | None
    method: str  # dhcp | static | existing
    server: str | None = None  # the DHCP server that answered
    mtu: int | None = None  # set from the DHCP lease (option 26), when it gave one
    note: str | None = None  # something the console should show, e.g. an MTU not taken
    hostname: str | None = None  # the name the DHCP server gave (option 12), if any

    def describe(self) -> str:
        gw = f" gateway {self.gateway}" if self.gateway else ""
        by = f" from {self.server}" if self.server else ""
        by += f", host name {self.hostname}" if self.hostname else ""
        mtu = f" mtu {self.mtu}" if self.mtu else ""
        note = f" ({self.note})" if self.note else ""
        return (f"{self.ifname} ({self.mac}) {self.ip}/{self.prefixlen} broadcast "
                f"{self.broadcast}{gw}{mtu} by {self.method}{by}{note}")


def broadcast_of(ip: str, prefixlen: int) -> str:
    """The directed broadcast address of ip/prefixlen."""
    return str(ipaddress.IPv4Interface(f"{ip}/{prefixlen}").network.broadcast_address)


def prefixlen_of(netmask: str | int | None, ip: str) -> int:
    """A netmask (255.255.255.0 or 24) as a prefix length; classful default without one."""
    if netmask is None or netmask == "":
        first = int(ip.split(".")[0])
        return 8 if first < 128 else 16 if first < 192 else 24
    try:
        return ipaddress.IPv4Network(f"0.0.0.0/{netmask}").prefixlen
    except ValueError as exc:
        raise NetworkError(f"netmask={netmask}: not a netmask (use e.g. 255.255.255.0)") from exc


@dataclass
class Link:
    """One link as netlink reports it."""

    index: int
    ifname: str
    mac: str
    up: bool
    carrier: bool
    kind: int


def links(ipr: IPRoute) -> list[Link]:
    """Every link but loopback, in index order."""
    out = []
    for msg in ipr.get_links():
        name = msg.get_attr("IFLA_IFNAME")
        if msg["flags"] & 0x8:  # IFF_LOOPBACK
            continue
        oper = msg.get_attr("IFLA_OPERSTATE")
        out.append(Link(msg["index"], name, (msg.get_attr("IFLA_ADDRESS") or "").lower(),
                        bool(msg["flags"] & 0x1),
                        msg.get_attr("IFLA_CARRIER") == 1 and oper in ("UP", "UNKNOWN"),
                        msg["ifi_type"]))
    return sorted(out, key=lambda link: link.index)


def choose_nic(ipr: IPRoute, mac: str | None = None, timeout: float = 20.0,
               say: Callable[[str], None] = print) -> Link:
    """The BOOTIF NIC, or the first Ethernet NIC to get carrier; brought up either way."""
    deadline = time.monotonic() + timeout
    candidates = [link for link in links(ipr) if link.kind == ARPHRD_ETHER]
    if mac:
        candidates = [link for link in candidates if link.mac == mac.lower()]
        if not candidates:
            seen = ", ".join(f"{link.ifname} {link.mac}" for link in links(ipr)) or "none"
            raise NetworkError(f"no NIC has the BOOTIF MAC {mac} (NICs: {seen}); check "
                               "BOOTIF= or the NIC driver (netmodule=)")
    if not candidates:
        raise NetworkError("no Ethernet NIC found; load its driver with netmodule=NAME")
    for link in candidates:
        if not link.up:
            ipr.link("set", index=link.index, state="up")
    said = False
    while True:
        current = {link.index: link for link in links(ipr)}
        ready = [current[c.index] for c in candidates
                 if c.index in current and current[c.index].carrier]
        if ready:
            return ready[0]
        if time.monotonic() >= deadline:
            names = ", ".join(c.ifname for c in candidates)
            raise NetworkError(f"no carrier on {names} after {timeout:.0f} s; check the cable "
                               "and switch port" + ("" if mac else ", or set BOOTIF="))
        if not said:
            say(f"waiting up to {timeout:.0f} s for carrier on "
                f"{', '.join(c.ifname for c in candidates)}")
            said = True
        time.sleep(0.1)


def configure_static(ipr: IPRoute, link: Link, ip: str, netmask: str | int | None,
                     gateway: str | None = None) -> NetConfig:
    """ip/netmask with its broadcast address, and a default route through gateway."""
    try:
        ipaddress.IPv4Address(ip)
    except ValueError as exc:
        raise NetworkError(f"ip={ip}: not an IPv4 address") from exc
    prefixlen = prefixlen_of(netmask, ip)
    brd = broadcast_of(ip, prefixlen)
    ipr.addr("replace", index=link.index, address=ip, prefixlen=prefixlen, broadcast=brd)
    if gateway:
        try:
            ipr.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=link.index)
        except Exception as exc:  # pyroute2 NetlinkError: unreachable gateway and the like
            raise NetworkError(f"gateway={gateway}: cannot route through it ({exc}); is it "
                               f"inside {ip}/{prefixlen}?") from exc
    return NetConfig(link.ifname, link.mac, ip, prefixlen, brd, gateway or None, "static")


def _no_store_lease():
    """A lease type that keeps nothing on disk (the initramfs is gone after the reboot)."""
    from pyroute2.dhcp.leases import Lease

    class MemoryLease(Lease):
        def dump(self) -> None:
            pass

        @classmethod
        def load(cls, interface: str):
            return None

    return MemoryLease


async def _dhcp_lease(ifname: str, timeout: float):
    from pyroute2.dhcp.client import AsyncDHCPClient, ClientConfig
    from pyroute2.dhcp.enums.dhcp import Option
    from pyroute2.dhcp.fsm import State

    # the broadcast address and the MTU too: receivers find the sender by broadcast, and a
    # network with jumbo frames says so in option 26 (the sender then sends 6x fewer packets);
    # the host name (option 12) is the clone's when no hostname= names it
    wanted = (Option.SUBNET_MASK, Option.ROUTER, Option.BROADCAST_ADDRESS,
              Option.INTERFACE_MTU, Option.LEASE_TIME, Option.RENEWAL_TIME,
              Option.REBINDING_TIME, Option.HOST_NAME)
    cfg = ClientConfig(interface=ifname, lease_type=_no_store_lease(), hooks=(),
                       handle_signals=False, release=False, write_pidfile=False,
                       vendor_id="herdcast", host_name=None, retransmission=_backoff,
                       requested_parameters=wanted)
    async with AsyncDHCPClient(cfg) as client:
        await client.bootstrap()
        await client.wait_for_state(State.BOUND, timeout=timeout)
        return client.lease


def _backoff():
    """DISCOVER again after 1, 2, 4, 4, ... s: a node on a busy PXE network must not sulk."""
    delay = 1.0
    while True:
        yield delay
        delay = min(delay * 2, 4.0)


def configure_dhcp(ipr: IPRoute, link: Link, timeout: float = 60.0) -> NetConfig:
    """A lease from pyroute2's DHCP client, applied with a broadcast address."""
    try:
        lease = asyncio.run(_dhcp_lease(link.ifname, timeout))
    except TimeoutError as exc:
        raise NetworkError(f"no DHCP answer on {link.ifname} within {timeout:.0f} s; check "
                           "the DHCP server, or set dhcp=no ip=... netmask=...") from exc
    ip = lease.ip
    try:
        prefixlen = lease.prefixlen
    except LookupError:
        prefixlen = prefixlen_of(None, ip)
    try:
        brd = lease.broadcast_address
    except LookupError:
        brd = broadcast_of(ip, prefixlen)
    try:
        gateway = lease.default_gateway
    except (LookupError, IndexError):
        gateway = None
    try:
        server = lease.server_id
    except LookupError:
        server = None
    mtu, note = _apply_mtu(ipr, link, lease)
    ipr.addr("replace", index=link.index, address=ip, prefixlen=prefixlen, broadcast=brd)
    if gateway:
        try:
            ipr.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=link.index)
        except Exception:  # a bad router option must not stop imaging on the local net
            gateway = None
    name = lease.ack["options"].get("host_name") or None  # option 12: personalize's default
    return NetConfig(link.ifname, link.mac, ip, prefixlen, brd, gateway, "dhcp", server,
                     mtu, note, name.strip() if isinstance(name, str) else None)


def _apply_mtu(ipr: IPRoute, link: Link, lease) -> tuple[int | None, str | None]:
    """Set the MTU the DHCP server gave (option 26); (mtu set, or None, and a note when the
    NIC refused it: imaging still works at the NIC's own MTU)."""
    try:
        mtu = int(lease.mtu)
    except (LookupError, TypeError, ValueError):
        return None, None
    if not 576 <= mtu <= 65535:
        return None, f"DHCP gave MTU {mtu}, which no Ethernet uses: kept the NIC's"
    try:
        ipr.link("set", index=link.index, mtu=mtu)
    except Exception as exc:  # pyroute2 NetlinkError: beyond what the driver can do
        return None, f"{link.ifname} refused the DHCP server's MTU {mtu} ({exc}): kept its own"
    return mtu, None


def setup_network(*, dhcp: bool = True, ip: str | None = None, netmask: str | None = None,
                  gateway: str | None = None, mac: str | None = None,
                  carrier_timeout: float = 20.0, dhcp_timeout: float = 60.0,
                  say: Callable[[str], None] = print) -> NetConfig:
    """Choose the NIC, bring it (and lo) up, and address it: the node's whole network step."""
    with IPRoute() as ipr:
        lo = ipr.link_lookup(ifname="lo")
        if lo:
            ipr.link("set", index=lo[0], state="up")
        link = choose_nic(ipr, mac, carrier_timeout, say)
        say(f"NIC {link.ifname} ({link.mac}) has carrier")
        if dhcp and not ip:
            say(f"asking DHCP on {link.ifname}")
            return configure_dhcp(ipr, link, dhcp_timeout)
        if not ip:
            raise NetworkError("dhcp=no needs ip= (and netmask=, gateway=) on the kernel "
                               "command line")
        return configure_static(ipr, link, ip, netmask, gateway)


def existing_config(ifname: str | None = None) -> NetConfig:
    """The address an interface already has (`--no-network`, e.g. in a test namespace)."""
    with IPRoute() as ipr:
        for link in links(ipr):
            if ifname and link.ifname != ifname:
                continue
            for addr in ipr.get_addr(index=link.index, family=2):
                ip = addr.get_attr("IFA_ADDRESS")
                plen = addr["prefixlen"]
                brd = addr.get_attr("IFA_BROADCAST") or broadcast_of(ip, plen)
                return NetConfig(link.ifname, link.mac, ip, plen, brd, None, "existing")
    raise NetworkError(f"no IPv4 address on {ifname or 'any NIC'} (--no-network uses the "
                       "existing configuration)")
