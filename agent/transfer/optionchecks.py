"""The checks of option values: text -> typed value, or one OptionError line naming the
option and what it takes. Each row of agent.transfer.optiontable names its check here (and
the rendering back to text, for `to_argv`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from agent.errors import UsageError
from agent.personalize.wishes import WishError, check_hostname
from agent.udpcast.protocol import MAX_BLOCKSIZE


class OptionError(UsageError, ValueError):
    """A bad option value: the message names the option and the fix, on one line
    (HerdcastError escapes any newline the user's text held)."""


@dataclass(frozen=True)
class FecSpec:
    """`--fec SxR/Z`: S stripes, R redundancy blocks per stripe, stripe size Z blocks."""

    stripes: int
    redundancy: int
    stripesize: int

    def __str__(self) -> str:
        return f"{self.stripes}x{self.redundancy}/{self.stripesize}"


# ---------------------------------------------------------------------------------------------
# Value checks: (value, the option's name) -> value, or OptionError naming the option


def parse_size(text: str, *, option: str, binary: bool = False) -> int:
    """A count with an optional k/m/g suffix (×1000, or ×1024 when `binary`)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*", text)
    if not m:
        raise OptionError(f"{option}: {text[:40]!r} is not a number (examples: 500000, 800k, 1g)")
    base = 1024 if binary else 1000
    scale = {"": 1, "k": base, "m": base**2, "g": base**3}[m.group(2).lower()]
    try:
        value = int(float(m.group(1)) * scale)
    except (OverflowError, ValueError):
        value = -1
    if not 0 < value < 2**63:
        raise OptionError(f"{option}: {text[:40]!r} out of range (examples: 500000, 800k, 1g)")
    return value


def parse_fec(text: str) -> FecSpec:
    """`--fec` as udpcast writes it: `8x8/128`, `8x8`, or just the redundancy."""
    m = re.fullmatch(r"(?:(\d+)x)?(\d+)(?:/(\d+))?", text.strip())
    if not m:
        raise OptionError(f"--fec: {text!r} is not STRIPESxREDUNDANCY/STRIPESIZE (e.g. 8x8/128)")
    stripes = int(m.group(1) or 8)
    redundancy = int(m.group(2))
    stripesize = int(m.group(3) or 128)
    if not 1 <= stripes <= 1024 or not 1 <= redundancy <= 128 or not 1 <= stripesize <= 128:
        raise OptionError(f"--fec: {text!r} out of range (stripes>=1, redundancy and stripe "
                          "size 1..128)")
    if stripes * stripesize > 1024:
        stripes = max(1, 1024 // stripesize)
    return FecSpec(stripes, redundancy, stripesize)


def size(binary: bool) -> Callable[[str, str], int]:
    return lambda text, option: parse_size(text, option=option, binary=binary)


def ipv4(multicast: bool = False) -> Callable[[str, str], str]:
    def check(text: str, option: str) -> str:
        try:
            address = ipaddress.IPv4Address(text)
        except ValueError:
            raise OptionError(f"{option}: {text!r} is not an IPv4 address "
                              "(e.g. 239.192.1.2)") from None
        if multicast and not address.is_multicast:
            raise OptionError(f"{option}: {text} is not a multicast group (224.0.0.0/4)")
        return text
    return check


def within(low: int, high: int, note: str = "") -> Callable[[int, str], int]:
    def check(value: int, option: str) -> int:
        if not low <= value <= high:
            raise OptionError(f"{option}: {value} out of range ({low}..{high}{note})")
        return value
    return check


def at_least(low: float, unit: str = "", strict: bool = False) -> Callable[[float, str], float]:
    def check(value: float, option: str) -> float:
        if value < low or strict and value == low:
            raise OptionError(f"{option}: must be {'>' if strict else '>='} {low:g}{unit}, "
                              f"got {value:g}")
        return value
    return check


def blocksize_check(value: int, option: str) -> int:
    value -= value % 4
    if not 64 <= value <= MAX_BLOCKSIZE:
        raise OptionError(f"{option}: {value} out of range (64..{MAX_BLOCKSIZE}, and at most "
                          "what the interface's MTU carries)")
    return value


def codec_check(value: str, option: str) -> str | None:
    return None if value == "none" else value  # `--compress none` is no codec


def fec_check(text: str, option: str) -> FecSpec:
    return parse_fec(text)


def hostname_check(text: str, option: str) -> str:
    """A clone's name; empty is no name at all (a node then takes none from DHCP either)."""
    if text == "":
        return text
    try:
        return check_hostname(text)
    except WishError as exc:
        raise OptionError(f"{option}: {exc.what}", exc.fix) from None


def number(value: float) -> str:
    """A number as argv text that parses back to the same value."""
    return str(int(value)) if float(value).is_integer() else repr(value)
