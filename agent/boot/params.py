"""The boot parameters a herdcast node reads, each declared once in `PARAMETERS`.

The parameters are udpcast's boot image set (so an existing pxelinux `append` line keeps
working), pxelinux's `BOOTIF=` and `ip=`, and a few herdcast additions. The declaration
(name, converter, default, accepted words) is what parsing, the defaults, `herdcast plan`
and the agreement test with kernel-cmdline.md (the user's contract) all read.

A parameter that sets a transfer option (disk=, port=, compr=, blocks=, blank=, verify=,
serve=, and the clone's grow=, hostname=, identity=, userdata=) takes its words and default
from that option's row (agent.transfer.optiontable), so a word added there is accepted here
(and tests/test_cmdline_doc.py asks kernel-cmdline.md to list it).

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
from agent.transfer.optiontable import BOOT, DEFAULT_PORTBASE

_MODULE_RE = re.compile(r"[A-Za-z0-9_-]{1,55}")  # MODULE_NAME_LEN is 56 with the NUL
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_MODPARM_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(=.*)?", re.S)
_MAC_RE = re.compile(r"(?:01-)?([0-9a-f]{2})[-:]([0-9a-f]{2})[-:]([0-9a-f]{2})[-:]"
                     r"([0-9a-f]{2})[-:]([0-9a-f]{2})[-:]([0-9a-f]{2})")
PORT_MAX = 65534  # the transfer uses port and port+1
TIMEOUT_MAX = 86400

COMPR_ALIASES = {"gzip": "gz", "lzo": "lzop"}  # udpcast's names of two codecs
UMODES = ("snd", "rcv")
MOUNTED = ("refuse", "warn")  # a sender's disk with a read-write mounted filesystem


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


# Block devices as the kernel names them: a console= naming one would have herdcast's lines
# written onto a disk (the one being cloned, after its digest agreed)
_DISK_NAME = re.compile(r"(/dev/)?(sd[a-z]+|hd[a-z]+|vd[a-z]+|xvd[a-z]+|nvme\d+n\d+"
                        r"|mmcblk\d+|loop\d+|md\d+|dm-\d+|sr\d+|nbd\d+)(p?\d+)?(,.*)?")


def _console(value: str) -> str:
    if _DISK_NAME.fullmatch(value) or value.startswith("/dev/disk/"):
        raise BadValue("names a disk, not a console; use console=ttyS0,115200 or "
                       "console=tty0")
    return value


def _hostname(value: str) -> str:
    """hostname=NAME; hostname= (empty) is no name at all, not even the DHCP server's."""
    from agent.personalize.wishes import WishError, check_hostname

    if value == "":
        return value
    try:
        return check_hostname(value)
    except WishError:
        raise BadValue("not a hostname; use letters, digits and '-' (labels of up to 63, "
                       "dots between), e.g. hostname=node07 or hostname=node07.lab.example"
                       ) from None


def _userdata(value: str) -> str:
    from agent.personalize.wishes import USERDATA_SCHEMES

    if not value.startswith(USERDATA_SCHEMES) or len(value) > 1024 \
            or any(ord(c) < 33 for c in value):
        raise BadValue("not a URL the node can fetch; use userdata=http://SERVER/PATH or "
                       "userdata=tftp://SERVER/PATH")
    return value


# ---------------------------------------------------------------------------------------------
# The declaration


@dataclass(frozen=True)
class Param:
    """One boot parameter. `default` is the text used when the parameter is absent (None:
    unset); `choices`/`aliases` are the accepted words for an enumerated parameter. `attr`
    is its BootConfig field (default: its name); `option` the transfer option it sets (the
    dest of agent.transfer.optiontable's row whose `boot` it is)."""

    name: str
    convert: Callable[[str], object]
    default: str | None
    required: bool = False
    choices: tuple[str, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)
    repeatable: bool = False  # every occurrence counts (console=), not just the last
    attr: str = ""
    option: str | None = None

    def __post_init__(self) -> None:
        if not self.attr:
            object.__setattr__(self, "attr", self.name)


def _for_option(name: str, convert: Callable[[str], object] | None = None,
                default: str | None = None, what: str = "a choice",
                aliases: dict[str, str] | None = None, unset: bool = False) -> Param:
    """The boot parameter that sets a transfer option: its words and default are the option
    row's (a yes/no switch for a store_true one); `convert`/`default` only where the node's
    differ (disk= is a /dev path and defaults to /dev/sda; port= a checked number). `unset`:
    absent is None, not the first word (identity= unset is decided by the clone's name)."""
    row = BOOT[name]
    aliases = aliases or {}
    if row.annotation == "bool":
        choices: tuple[str, ...] = ("yes", "no")
        text = "yes" if row.default else "no"
        convert = convert or _bool(name)
    else:
        choices = row.choices
        text = choices[0] if row.default is None and choices else (
            None if row.default is None else str(row.default))
        if choices:
            convert = convert or _choice(name, choices, aliases, what)
    assert convert is not None, f"{name}= needs a converter"
    text = None if unset else text
    return Param(name, convert, default if default is not None else text, choices=choices,
                 aliases=aliases, option=row.dest)


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
    _for_option("port", _int_range("port", 1, PORT_MAX, DEFAULT_PORTBASE, "")),
    Param("enableDiskmodule", _bool("enableDiskmodule"), "yes", choices=("yes", "no"),
          attr="enable_diskmodule"),
    Param("diskmodule", _module("diskmodule", "ahci"), "AUTO"),
    Param("diskmodparm", _modparm("diskmodparm"), ""),
    _for_option("disk", _disk, "/dev/sda"),
    _for_option("compr", what="a compression", aliases=COMPR_ALIASES),
    Param("umode", _choice("umode", UMODES, {}, "a mode"), None, required=True,
          choices=UMODES),
    Param("udpcparam", split_words, ""),
    Param("mounted", _choice("mounted", MOUNTED, {}, "a choice"), "refuse", choices=MOUNTED),
    _for_option("blocks"),
    _for_option("blank"),
    _for_option("verify"),
    _for_option("serve"),
    _for_option("grow"),
    _for_option("hostname", _hostname),
    _for_option("identity", unset=True),
    _for_option("userdata", _userdata),
    Param("BOOTIF", _bootif, None, attr="bootif_mac"),
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
