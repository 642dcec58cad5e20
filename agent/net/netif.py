"""Network interfaces and UDP sockets as udpcast uses them.

Interface facts come from the kernel's ioctls rather than pyroute2: the transfer needs only
name, address, broadcast and flags, and this keeps `herdcast send` light on a server and in
the initramfs. Socket set-up lives here once for both sides: bind with SO_REUSEADDR (so a
receiver restarted at once, or a second one on the same host, can bind the port again),
multicast joins, big receive buffers.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from agent.errors import HerdcastError

ARPHRD_ETHER = 1  # an interface's type (sysfs class/net/X/type, netlink ifi_type): Ethernet
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_SIOCGIFADDR = 0x8915
_SIOCGIFBRDADDR = 0x8919
_SIOCGIFNETMASK = 0x891B
_SIOCGIFMTU = 0x8921
IP_UDP_HEADERS = 20 + 8
_SIOCGIFHWADDR = 0x8927
_IFF_UP = 0x1
_IFF_BROADCAST = 0x2
_IFF_LOOPBACK = 0x8
_IFF_RUNNING = 0x40
_SO_RCVBUFFORCE = 33
_SO_SNDBUFFORCE = 32

DEFAULT_RDV_ADDRESS = "224.0.0.1"


class InterfaceError(HerdcastError, RuntimeError):
    """No usable interface: the message says which and what to pass instead."""


@dataclass(frozen=True)
class NetIf:
    """One IPv4 interface."""

    name: str
    index: int
    ip: str
    netmask: str
    broadcast: str | None
    flags: int
    mac: str

    @property
    def usable(self) -> bool:
        """Up, running (carrier) and not loopback."""
        return bool(self.flags & _IFF_UP and self.flags & _IFF_RUNNING
                    and not self.flags & _IFF_LOOPBACK)


def _ioctl(sock: socket.socket, request: int, name: str) -> bytes:
    return fcntl.ioctl(sock.fileno(), request, struct.pack("256s", name.encode()[:15]))


def set_link_up(ifname: str) -> None:
    """`ip link set IFNAME up` by ioctl: the hardware step brings a NIC up as soon as its
    driver made it (carrier negotiation then overlaps the disk probing) without importing
    pyroute2."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack_from("H", _ioctl(s, _SIOCGIFFLAGS, ifname), 16)[0]
        if not flags & _IFF_UP:
            fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS,
                        struct.pack("16sH", ifname.encode()[:15], flags | _IFF_UP))


def _addr(raw: bytes) -> str:
    return socket.inet_ntoa(raw[20:24])


def list_interfaces() -> list[NetIf]:
    """Every interface that has an IPv4 address, in kernel index order."""
    result = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for index, name in socket.if_nameindex():
            try:
                ip = _addr(_ioctl(s, _SIOCGIFADDR, name))
            except OSError:
                continue  # no IPv4 address
            flags = struct.unpack_from("H", _ioctl(s, _SIOCGIFFLAGS, name), 16)[0]
            netmask = _addr(_ioctl(s, _SIOCGIFNETMASK, name))
            broadcast = None
            if flags & _IFF_BROADCAST:
                try:
                    broadcast = _addr(_ioctl(s, _SIOCGIFBRDADDR, name))
                except OSError:
                    broadcast = None
                if broadcast == "0.0.0.0":
                    broadcast = None
            try:
                hw = _ioctl(s, _SIOCGIFHWADDR, name)[18:24]
                mac = ":".join(f"{b:02x}" for b in hw)
            except OSError:
                mac = "00:00:00:00:00:00"
            result.append(NetIf(name, index, ip, netmask, broadcast, flags, mac))
    return result


def mtu_of(name: str) -> int:
    """The interface's MTU; 1500 (Ethernet's) when the kernel does not say."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            return struct.unpack_from("i", _ioctl(s, _SIOCGIFMTU, name), 16)[0]
        except OSError:
            return 1500


def speed_of(name: str) -> float | None:
    """The link's speed in bits/s (sysfs), or None when it says nothing (a veth, a tap)."""
    try:
        with open(f"/sys/class/net/{name}/speed") as f:
            mbits = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return mbits * 1e6 if mbits > 0 else None


def _rank(nif: NetIf) -> tuple:
    """udpcast's default preference: eth0/en0, then eth*, then others; up with a broadcast
    address before the rest; loopback last."""
    return (
        bool(nif.flags & _IFF_LOOPBACK),
        not nif.usable,
        nif.broadcast is None,
        nif.name not in ("eth0", "en0"),
        not nif.name.startswith("eth"),
        nif.index,
    )


def select_interface(spec: str | None = None) -> NetIf:
    """The interface to use: `spec` is a name, an IP or a name prefix (udpcast's
    --interface); without it the IFNAME environment variable, then the best ranked."""
    spec = spec or os.environ.get("IFNAME") or None
    interfaces = list_interfaces()
    if spec:
        for match in (lambda n: n.name == spec, lambda n: n.ip == spec,
                      lambda n: n.name.startswith(spec)):
            found = [n for n in interfaces if match(n)]
            if found:
                return sorted(found, key=_rank)[0]
        names = ", ".join(f"{n.name} ({n.ip})" for n in interfaces) or "none"
        raise InterfaceError(f"--interface {spec}: no IPv4 interface has that name, address "
                             f"or prefix (have: {names})")
    if not interfaces:
        raise InterfaceError("no interface has an IPv4 address: configure the network "
                             "(dhcp=yes, or ip=/netmask=) or pass --interface")
    return sorted(interfaces, key=_rank)[0]


def control_address(nif: NetIf, ttl: int, rdv: str | None) -> str:
    """Where HELLO and the first CONNECT_REQ go: the interface broadcast address when the
    TTL is 1 and no rendezvous address is given, else the rendezvous address (224.0.0.1)."""
    if ttl == 1 and rdv is None:
        if nif.broadcast is None:
            raise InterfaceError(f"{nif.name} has no broadcast address: add one "
                                 f"(ip addr add {nif.ip}/24 brd + dev {nif.name}) or pass "
                                 "--mcast-rdv-address")
        return nif.broadcast
    return rdv or DEFAULT_RDV_ADDRESS


def is_multicast(address: str) -> bool:
    """Whether an IPv4 address is a multicast group."""
    return ipaddress.IPv4Address(address).is_multicast


def udp_socket(bind_ip: str, port: int, *, broadcast: bool = False,
               rcvbuf: int | None = None, sndbuf: int | None = None) -> socket.socket:
    """A non-blocking-capable UDP socket bound to bind_ip:port, with SO_REUSEADDR so that
    several herdcast processes (or a restarted one) can share the port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if broadcast:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    if rcvbuf:
        set_buffer(s, socket.SO_RCVBUF, _SO_RCVBUFFORCE, rcvbuf)
    if sndbuf:
        set_buffer(s, socket.SO_SNDBUF, _SO_SNDBUFFORCE, sndbuf)
    s.bind((bind_ip, port))
    return s


def set_buffer(s: socket.socket, opt: int, force_opt: int, size: int) -> int:
    """Set a socket buffer, past net.core.[rw]mem_max when root (the FORCE variant): at line
    rate a default 212 KB receive buffer overflows on every slice. Returns the size set."""
    try:
        s.setsockopt(socket.SOL_SOCKET, force_opt, size)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, opt, size)
    return s.getsockopt(socket.SOL_SOCKET, opt)


def set_multicast_sender(s: socket.socket, nif: NetIf, ttl: int) -> None:
    """Send multicast out of `nif` (no default route needed) with the given TTL."""
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(nif.ip))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)


def join_group(s: socket.socket, group: str, nif: NetIf) -> None:
    """Join `group` on `nif` (ip_mreqn by interface index)."""
    mreqn = socket.inet_aton(group) + socket.inet_aton(nif.ip) + struct.pack("i", nif.index)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
