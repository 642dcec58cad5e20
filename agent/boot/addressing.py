"""The node's static addressing: `ip=`, `netmask=`, `gateway=` and pxelinux's colon-form `ip=`.

pxelinux's `ipappend 1` writes `ip=client:server:gateway:netmask` from the PXE DHCP lease; an
admin may also write `ip=10.0.0.5/24 netmask=... gateway=...` by hand. With dhcp=no these
merge into one address, prefix and gateway, checked here to make one usable subnet so the
node never finds out after loading its drivers; with dhcp=yes a hand-written address is an
error (which one did the admin mean?) and pxelinux's is only kept for the plan.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from agent.boot.tokens import BadValue, CmdlineError, shown


@dataclass(frozen=True)
class PxeIp:
    """`ip=client:server:gateway:netmask[:hostname:device:autoconf...]`: the kernel's syntax,
    as pxelinux's `ipappend 1` writes it from the PXE DHCP lease. Empty fields are None."""

    client: str | None
    server: str | None
    gateway: str | None
    netmask: str | None
    hostname: str | None = None
    device: str | None = None
    autoconf: str | None = None


@dataclass(frozen=True)
class IpValue:
    """What `ip=` said: a static address (with an optional /prefix), the colon form, or a word
    for the kernel's own autoconfiguration (ignored: herdcast configures with dhcp=)."""

    address: str | None = None
    prefix: int | None = None
    pxe: PxeIp | None = None


def host(text: str) -> ipaddress.IPv4Address:
    """A unicast host address (no network tricks: not 0/8, loopback, multicast, broadcast)."""
    addr = ipaddress.IPv4Address(text)  # AddressValueError is a ValueError
    if (addr.is_unspecified or addr.is_loopback or addr.is_multicast
            or addr == ipaddress.IPv4Address("255.255.255.255") or int(addr) >> 24 == 0):
        raise ValueError("not a host address")
    return addr


def mask(text: str) -> int:
    """A netmask as a prefix length: `255.255.255.0`, `24` or `/24`."""
    t = text.removeprefix("/")
    if re.fullmatch(r"[0-9]{1,2}", t):
        prefix = int(t)
    else:
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{text}").prefixlen  # rejects non-contiguous
    if not 1 <= prefix <= 32:
        raise ValueError("prefix out of range")
    return prefix


def dotted(prefix: int) -> str:
    """A prefix length as the dotted netmask the plan and the JSON show."""
    return str(ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask)


_IP_FIX = "use ip=10.0.0.5, ip=10.0.0.5/24 or pxelinux's ip=client:server:gateway:netmask"
_KERNEL_AUTOCONF = ("off", "none", "on", "any", "dhcp", "bootp", "rarp", "both")
_PXE_FIELDS = ("client", "server", "gateway", "netmask")


def convert_ip(value: str) -> IpValue:
    """`ip=` in any of its forms; the kernel's autoconf words mean "nothing static"."""
    if value == "" or value.lower() in _KERNEL_AUTOCONF:
        return IpValue()
    if ":" in value:
        # pxelinux writes 0.0.0.0 for what the lease did not give (no router: gateway 0.0.0.0)
        parts = ["" if p == "0.0.0.0" else p for p in value.split(":")]
        if len(parts) < 4:
            raise BadValue(f"colon form needs at least client:server:gateway:netmask; {_IP_FIX}")
        for i, label in enumerate(_PXE_FIELDS):
            if parts[i] == "":
                continue
            try:
                mask(parts[i]) if label == "netmask" else host(parts[i])
            except ValueError:
                raise BadValue(f"field {i + 1} ({label}) {parts[i]!r} is not an IPv4 "
                               f"{'netmask' if label == 'netmask' else 'address'}; {_IP_FIX}"
                               ) from None
        extra = [p or None for p in parts[4:7]] + [None] * 3
        pxe = PxeIp(*[p or None for p in parts[:4]], *extra[:3])
        return IpValue(address=pxe.client,
                       prefix=mask(pxe.netmask) if pxe.netmask else None, pxe=pxe)
    address, slash, prefix_text = value.partition("/")
    try:
        host(address)
        prefix = mask(prefix_text) if slash else None
    except ValueError:
        raise BadValue(f"not an IPv4 host address; {_IP_FIX}") from None
    return IpValue(address=address, prefix=prefix)


def convert_netmask(value: str) -> int | None:
    """`netmask=` as a prefix length (empty: unset)."""
    if value == "":
        return None
    try:
        return mask(value)
    except ValueError:
        raise BadValue("not a netmask; use netmask=255.255.255.0 or netmask=24") from None


def convert_gateway(value: str) -> str | None:
    """`gateway=` as a host address (empty: unset)."""
    if value == "":
        return None
    try:
        return str(host(value))
    except ValueError:
        raise BadValue("not an IPv4 host address; use gateway=10.0.0.1") from None


def static_addressing(values: dict[str, object], given: dict[str, str]
                      ) -> tuple[str | None, str | None, str | None]:
    """(address, dotted netmask, gateway) the node configures: all None with dhcp=yes.

    `values` are the converted parameters, `given` their text (for the error messages).
    """
    ip = values.get("ip") or IpValue()
    assert isinstance(ip, IpValue)
    if values["dhcp"]:
        for name in ("netmask", "gateway"):
            if values.get(name) is not None:
                raise CmdlineError(f"{shown(name, given[name])}: static addressing with "
                                   f"dhcp=yes; add dhcp=no to use it, or drop {name}=")
        if ip.address is not None and ip.pxe is None:
            raise CmdlineError(f"{shown('ip', given['ip'])}: static addressing with dhcp=yes; "
                               "add dhcp=no to use it, or drop ip=")
        return None, None, None
    if ip.address is None:
        raise CmdlineError("dhcp=no: no address; add ip=10.0.0.5 netmask=255.255.255.0, "
                           "or use dhcp=yes")
    prefix = values.get("netmask") or ip.prefix
    if prefix is None:
        raise CmdlineError(f"netmask: missing with dhcp=no and ip={ip.address}; add "
                           "netmask=255.255.255.0 or write ip=10.0.0.5/24")
    assert isinstance(prefix, int)
    iface = ipaddress.IPv4Interface(f"{ip.address}/{prefix}")
    net = iface.network
    if prefix <= 30 and iface.ip in (net.network_address, net.broadcast_address):
        raise CmdlineError(f"{shown('ip', given['ip'])}: the subnet's network or broadcast "
                           f"address with netmask {dotted(prefix)}; use a host address")
    gateway = values.get("gateway") or (ip.pxe.gateway if ip.pxe else None)
    if gateway is not None and ipaddress.IPv4Address(gateway) not in net:
        source = (shown("gateway", given["gateway"]) if values.get("gateway")
                  else shown("ip", given["ip"]))
        raise CmdlineError(f"{source}: not in the node's subnet {net}; use a gateway on that "
                           "subnet or leave gateway out")
    return ip.address, dotted(prefix), gateway  # type: ignore[return-value]
