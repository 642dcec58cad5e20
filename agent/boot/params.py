"""The boot parameters a herdcast node reads, each declared once in `PARAMETERS`.

The parameters are udpcast's boot image set (so an existing pxelinux `append` line keeps
working), pxelinux's `BOOTIF=` and `ip=`, and a few herdcast additions. The declaration
(name, converter, default, accepted words) is what parsing, the defaults, `herdcast plan`
and the agreement test with kernel-cmdline.md (the user's contract) all read.

A converter turns a value's text into its typed value or raises BadValue("problem; fix");
every value is checked before the node touches any hardware.
"""

from __future__ import annotations

import difflib
import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.boot.addressing import convert_gateway, convert_ip, convert_netmask
from agent.boot.pid1 import POST_ACTIONS
from agent.boot.tokens import BadValue, tokens
from agent.boot.udpcparam import split_words
from agent.codec import NAMES as CODECS

_MODULE_RE = re.compile(r"[A-Za-z0-9_-]{1,55}")  # MODULE_NAME_LEN is 56 with the NUL
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_MODPARM_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(=.*)?", re.S)
_MAC_RE = re.compile(r"(?:01-)?([0-9a-f]{2})[-:]([0-9a-f]{2})[-:]([0-9a-f]{2})[-:]"
                     r"([0-9a-f]{2})[-:]([0-9a-f]{2})[-:]([0-9a-f]{2})")
PORT_MAX = 65534  # the transfer uses port and port+1
TIMEOUT_MAX = 86400

# The codec table's names (agent.codec), and "none": a codec added there is a compr= word.
COMPRESSIONS = ("none", *CODECS)
COMPR_ALIASES = {"gzip": "gz", "lzo": "lzop"}
UMODES = ("snd", "rcv")
MOUNTED = ("refuse", "warn")  # a sender's disk with a read-write mounted filesystem
BLOCKS = ("used", "all")  # what a sender sends herdcast receivers (agent.image)
BLANKS = ("keep", "zero", "discard")  # what a receiver does with free space (agent.image)
VERIFY = ("none", "readback")  # a receiver reading its disk back after the transfer


# ---------------------------------------------------------------------------------------------
# Converters: value text -> typed value, raising BadValue("problem; fix")


def _bool(name: str) -> Callable[[str], bool]:
    def convert(value: str) -> bool:
        v = value.lower()
        if v in ("yes", "y", "true", "on", "1"):
            return True
        if v in ("no", "n", "false", "off", "0"):
            return False
        raise BadValue(f"not yes or no; use {name}=yes or {name}=no")
    return convert


def _choice(name: str, choices: tuple[str, ...], aliases: dict[str, str], what: str
            ) -> Callable[[str], str]:
    def convert(value: str) -> str:
        v = value.lower()
        v = aliases.get(v, v)
        if v in choices:
            return v
        listed = ", ".join(f"{name}={c}" for c in choices[:-1]) + f" or {name}={choices[-1]}"
        also = f" ({' and '.join(aliases)} also accepted)" if aliases else ""
        raise BadValue(f"not {what}; use {listed}{also}")
    return convert


def _optional_name(name: str, example: str) -> Callable[[str], str | None]:
    def convert(value: str) -> str | None:
        if value == "":
            return None
        if not _NAME_RE.fullmatch(value):
            raise BadValue(f"not a name; use letters, digits, '_', '-' or '.', "
                           f"e.g. {name}={example}")
        return value
    return convert


def _module(name: str, example: str) -> Callable[[str], str]:
    def convert(value: str) -> str:
        if value.upper() in ("AUTO", "NONE"):
            return value.upper()
        if not _MODULE_RE.fullmatch(value):
            raise BadValue(f"not a module name; use {name}=AUTO, {name}=NONE or a module name "
                           f"such as {name}={example}")
        return value
    return convert


def _modparm(name: str) -> Callable[[str], str]:
    def convert(value: str) -> str:
        try:
            words = shlex.split(value)
        except ValueError:
            raise BadValue(f'unbalanced quotes; write {name}="key=value key2=value2"') from None
        for word in words:
            if not _MODPARM_RE.fullmatch(word):
                raise BadValue(f"{word!r} is not a module parameter; "
                               f'write {name}="key=value key2=value2"')
        return value
    return convert


def _int_range(name: str, low: int, high: int, default: int, unit: str
               ) -> Callable[[str], int]:
    def convert(value: str) -> int:
        allowed = f"use {name}={low}..{high} (default {default})"
        if not re.fullmatch(r"[0-9]{1,9}", value):
            raise BadValue(f"not a number{unit}; {allowed}")
        number = int(value)
        if not low <= number <= high:
            raise BadValue(f"out of range; {allowed}")
        return number
    return convert


def _disk(value: str) -> str:
    if value == "":
        raise BadValue("empty; use an absolute /dev path such as disk=/dev/sda")
    if (not value.startswith("/dev/") or len(value) <= 5 or posixpath.normpath(value) != value
            or any(ord(c) < 33 or c in '"\\' for c in value)):
        raise BadValue("not a /dev path; use an absolute device path such as disk=/dev/sda "
                       "or disk=/dev/disk/by-id/...")
    return value


def _bootif(value: str) -> str:
    m = _MAC_RE.fullmatch(value.lower())
    if not m:
        raise BadValue("not a MAC as pxelinux writes it; use BOOTIF=01-aa-bb-cc-dd-ee-ff "
                       "(from ipappend 2)")
    return ":".join(m.groups())


def _console(value: str) -> str:
    return value


# ---------------------------------------------------------------------------------------------
# The declaration


@dataclass(frozen=True)
class Param:
    """One boot parameter. `default` is the text used when the parameter is absent (None:
    unset); `choices`/`aliases` are the accepted words for an enumerated parameter."""

    name: str
    convert: Callable[[str], object]
    default: str | None
    required: bool = False
    choices: tuple[str, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)
    repeatable: bool = False  # every occurrence counts (console=), not just the last


_PARAM_LIST = [
    Param("auto", _bool("auto"), "no", choices=("yes", "no")),
    Param("lang", _optional_name("lang", "US"), None),
    Param("kbmap", _optional_name("kbmap", "US"), None),
    Param("netmodule", _module("netmodule", "e1000e"), "AUTO"),
    Param("netmodparm", _modparm("netmodparm"), ""),
    Param("dhcp", _bool("dhcp"), "yes", choices=("yes", "no")),
    Param("ip", convert_ip, None),
    Param("netmask", convert_netmask, None),
    Param("gateway", convert_gateway, None),
    Param("port", _int_range("port", 1, PORT_MAX, 9000, ""), "9000"),
    Param("enableDiskmodule", _bool("enableDiskmodule"), "yes", choices=("yes", "no")),
    Param("diskmodule", _module("diskmodule", "ahci"), "AUTO"),
    Param("diskmodparm", _modparm("diskmodparm"), ""),
    Param("disk", _disk, "/dev/sda"),
    Param("compr", _choice("compr", COMPRESSIONS, COMPR_ALIASES, "a compression"), "none",
          choices=COMPRESSIONS, aliases=COMPR_ALIASES),
    Param("umode", _choice("umode", UMODES, {}, "a mode"), None, required=True,
          choices=UMODES),
    Param("udpcparam", split_words, ""),
    Param("mounted", _choice("mounted", MOUNTED, {}, "a choice"), "refuse", choices=MOUNTED),
    Param("blocks", _choice("blocks", BLOCKS, {}, "a choice"), "used", choices=BLOCKS),
    Param("blank", _choice("blank", BLANKS, {}, "a choice"), "keep", choices=BLANKS),
    Param("verify", _choice("verify", VERIFY, {}, "a choice"), "none", choices=VERIFY),
    Param("serve", _bool("serve"), "no", choices=("yes", "no")),
    Param("BOOTIF", _bootif, None),
    Param("post", _choice("post", POST_ACTIONS, {}, "an action"), "poweroff",
          choices=POST_ACTIONS),
    Param("onfail", _choice("onfail", POST_ACTIONS, {}, "an action"), "wait",
          choices=POST_ACTIONS),
    Param("hwtimeout", _int_range("hwtimeout", 1, TIMEOUT_MAX, 60, " of seconds"), "60"),
    Param("dhcptimeout", _int_range("dhcptimeout", 1, TIMEOUT_MAX, 30, " of seconds"), "30"),
    Param("console", _console, None, repeatable=True),
]
PARAMETERS: dict[str, Param] = {p.name: p for p in _PARAM_LIST}
_BY_LOWER = {name.lower(): name for name in PARAMETERS}


# ---------------------------------------------------------------------------------------------
# The command line as our parameters


def canonical_name(key: str) -> str:
    """Our parameters match case-insensitively (`enableDiskModule` as the tutorial spells
    it); the kernel's and everyone else's keys are returned unchanged."""
    return _BY_LOWER.get(key.lower(), key)


def split_cmdline(text: str) -> dict[str, str]:
    """The command line as `{key: value}`; the last of a repeated key wins.

    Our parameters are keyed by their documented spelling. A bare word (no `=`) is kept, with
    value "", only when it names one of our parameters; other bare words (`quiet`, `ro`) and
    all unknown keys are returned as the kernel's business and ignored by `parse_cmdline`.
    """
    result: dict[str, str] = {}
    for key, value in tokens(text):
        name = canonical_name(key)
        if value is None and name not in PARAMETERS:
            continue
        result.pop(name, None)  # re-insert so the dict's order is that of the last occurrence
        result[name] = "" if value is None else value
    return result


def near_parameter(key: str) -> str | None:
    """The parameter an unknown `key` is nearly (`umod` -> umode), or None: for a key that
    is one of ours, or close to none of them."""
    lower = key.lower()
    if lower in _BY_LOWER:
        return None
    near = difflib.get_close_matches(lower, list(_BY_LOWER), n=1, cutoff=0.75)
    return _BY_LOWER[near[0]] if near else None


def near_misses(text: str) -> list[str]:
    """One line per key on the command line that is no parameter of ours but nearly one
    (`diks=`, `verfiy=`, `umod=`). The kernel line also carries the kernel's and the boot
    loader's keys, so an unknown key is never an error; but a misspelled one silently leaves
    its parameter at the default (`diks=/dev/sdb` images /dev/sda), so `herdcast plan` and
    the node's console name it. (builder node refuses such keys before writing them.)"""
    lines: dict[str, str] = {}
    for key, value in tokens(text):
        if key.lower() not in lines and (near := near_parameter(key)):
            given = key if value is None else f"{key}={value}"
            lines[key.lower()] = (f"{given} is not a herdcast parameter (left to the kernel; "
                                  f"{near} keeps its value): did you mean {near}=?")
    return list(lines.values())
