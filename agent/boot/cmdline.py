"""The boot parameters of a herdcast node: kernel command line -> validated `BootConfig`.

A node has nobody at the keyboard, so every parameter is checked before anything touches
the hardware, and a bad one stops the node with ONE line naming the parameter, the value
given and what is allowed. The parameters are udpcast's boot image set (so an existing
pxelinux `append` line keeps working), pxelinux's `BOOTIF=` and `ip=`, and a few herdcast
additions. `PARAMETERS` declares each one once: parsing, defaults and the agreement test
with kernel-cmdline.md (the user's contract) all read it.
"""

from __future__ import annotations

import argparse
import ipaddress
import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from agent.transfer.options import (
    OptionError,
    ReceiveOptions,
    SendOptions,
    parse_receive_args,
    parse_send_args,
    receive_parser,
    send_parser,
)

# The kernel's isspace(): ASCII only. Python's str.isspace() would also split on U+00A0 etc.
_KERNEL_SPACE = " \t\n\v\f\r"
_MODULE_RE = re.compile(r"[A-Za-z0-9_-]{1,55}")  # MODULE_NAME_LEN is 56 with the NUL
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_MODPARM_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(=.*)?", re.S)
_MAC_RE = re.compile(r"(?:01-)?([0-9a-f]{2})[-:]([0-9a-f]{2})[-:]([0-9a-f]{2})[-:]"
                     r"([0-9a-f]{2})[-:]([0-9a-f]{2})[-:]([0-9a-f]{2})")
PORT_MAX = 65534  # the transfer uses port and port+1
TIMEOUT_MAX = 86400


class CmdlineError(ValueError):
    """A bad boot parameter: one line naming the parameter, the value given and the fix."""


class _Bad(Exception):
    """Raised by a converter with "problem; fix"; `_convert` prefixes `name=value: `."""


def shown(name: str, value: str) -> str:
    """`name=value` as the user would write it on the append line: quoted if it has spaces,
    control characters escaped so the message stays one line."""
    text = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in value)
    if any(c in value for c in _KERNEL_SPACE):
        return f'{name}="{text}"'
    return f"{name}={text}"


# ---------------------------------------------------------------------------------------------
# Splitting: the kernel's own rules (lib/cmdline.c next_arg)


def _tokens(text: str) -> list[tuple[str, str | None]]:
    """Every `key=value` / bare word of a command line, in order (value None for bare words).

    As the kernel does it: words are separated by ASCII whitespace outside double quotes; a
    value starting with `"` loses that quote and a trailing one; a word starting with `"`
    (`"key=value with spaces"`) loses both; quotes elsewhere stay; `key` ends at the first `=`.
    """
    out: list[tuple[str, str | None]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in _KERNEL_SPACE:
            i += 1
        if i >= n:
            break
        quoted = text[i] == '"'
        if quoted:
            i += 1
        start, in_quote, equals = i, quoted, -1
        while i < n and (in_quote or text[i] not in _KERNEL_SPACE):
            if equals < 0 and text[i] == "=":
                equals = i
            if text[i] == '"':
                in_quote = not in_quote
            i += 1
        word = text[start:i]
        if equals < 0:
            key, value = word, None
            if quoted and key.endswith('"'):
                key = key[:-1]
        else:
            key, value = text[start:equals], text[equals + 1:i]
            if value.startswith('"'):
                value = value[1:]
                if value.endswith('"'):
                    value = value[:-1]
            elif quoted and value.endswith('"'):
                value = value[:-1]
        out.append((key, value))
    return out


def canonical_name(key: str) -> str:
    """Our parameters match case-insensitively (`enableDiskModule` as the tutorial spells
    it); the kernel's and everyone else's keys are returned unchanged."""
    return _BY_LOWER.get(key.lower(), key)


def consoles(text: str) -> list[str]:
    """Every `console=` value, in order; never raises, so a node can show a bad command
    line's error on the consoles that command line names."""
    return [v for k, v in _tokens(text) if canonical_name(k) == "console" and v]


def split_cmdline(text: str) -> dict[str, str]:
    """The command line as `{key: value}`; the last of a repeated key wins.

    Our parameters are keyed by their documented spelling. A bare word (no `=`) is kept, with
    value "", only when it names one of our parameters; other bare words (`quiet`, `ro`) and
    all unknown keys are returned as the kernel's business and ignored by `parse_cmdline`.
    """
    result: dict[str, str] = {}
    for key, value in _tokens(text):
        name = canonical_name(key)
        if value is None and name not in PARAMETERS:
            continue
        result.pop(name, None)  # re-insert so the dict's order is that of the last occurrence
        result[name] = "" if value is None else value
    return result


# ---------------------------------------------------------------------------------------------
# Converters: value text -> typed value, raising _Bad("problem; fix")


def _bool(name: str) -> Callable[[str], bool]:
    def convert(value: str) -> bool:
        v = value.lower()
        if v in ("yes", "y", "true", "on", "1"):
            return True
        if v in ("no", "n", "false", "off", "0"):
            return False
        raise _Bad(f"not yes or no; use {name}=yes or {name}=no")
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
        raise _Bad(f"not {what}; use {listed}{also}")
    return convert


def _optional_name(name: str, example: str) -> Callable[[str], str | None]:
    def convert(value: str) -> str | None:
        if value == "":
            return None
        if not _NAME_RE.fullmatch(value):
            raise _Bad(f"not a name; use letters, digits, '_', '-' or '.', e.g. {name}={example}")
        return value
    return convert


def _module(name: str, example: str) -> Callable[[str], str]:
    def convert(value: str) -> str:
        if value.upper() in ("AUTO", "NONE"):
            return value.upper()
        if not _MODULE_RE.fullmatch(value):
            raise _Bad(f"not a module name; use {name}=AUTO, {name}=NONE or a module name "
                       f"such as {name}={example}")
        return value
    return convert


def _modparm(name: str) -> Callable[[str], str]:
    def convert(value: str) -> str:
        try:
            words = shlex.split(value)
        except ValueError:
            raise _Bad(f'unbalanced quotes; write {name}="key=value key2=value2"') from None
        for word in words:
            if not _MODPARM_RE.fullmatch(word):
                raise _Bad(f"{word!r} is not a module parameter; "
                           f'write {name}="key=value key2=value2"')
        return value
    return convert


def _int_range(name: str, low: int, high: int, default: int, unit: str
               ) -> Callable[[str], int]:
    def convert(value: str) -> int:
        allowed = f"use {name}={low}..{high} (default {default})"
        if not re.fullmatch(r"[0-9]{1,9}", value):
            raise _Bad(f"not a number{unit}; {allowed}")
        number = int(value)
        if not low <= number <= high:
            raise _Bad(f"out of range; {allowed}")
        return number
    return convert


def _disk(value: str) -> str:
    if value == "":
        raise _Bad("empty; use an absolute /dev path such as disk=/dev/sda")
    if (not value.startswith("/dev/") or len(value) <= 5 or posixpath.normpath(value) != value
            or any(ord(c) < 33 or c in '"\\' for c in value)):
        raise _Bad("not a /dev path; use an absolute device path such as disk=/dev/sda "
                   "or disk=/dev/disk/by-id/...")
    return value


def _host(text: str) -> ipaddress.IPv4Address:
    """A unicast host address (no network tricks: not 0/8, loopback, multicast, broadcast)."""
    addr = ipaddress.IPv4Address(text)  # AddressValueError is a ValueError
    if (addr.is_unspecified or addr.is_loopback or addr.is_multicast
            or addr == ipaddress.IPv4Address("255.255.255.255") or int(addr) >> 24 == 0):
        raise ValueError("not a host address")
    return addr


def _mask(text: str) -> int:
    """A netmask as a prefix length: `255.255.255.0`, `24` or `/24`."""
    t = text.removeprefix("/")
    if re.fullmatch(r"[0-9]{1,2}", t):
        prefix = int(t)
    else:
        prefix = ipaddress.IPv4Network(f"0.0.0.0/{text}").prefixlen  # rejects non-contiguous
    if not 1 <= prefix <= 32:
        raise ValueError("prefix out of range")
    return prefix


def _dotted(prefix: int) -> str:
    return str(ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask)


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
class _IpValue:
    """What `ip=` said: a static address (with an optional /prefix), the colon form, or a word
    for the kernel's own autoconfiguration (ignored: herdcast configures with dhcp=)."""

    address: str | None = None
    prefix: int | None = None
    pxe: PxeIp | None = None


_IP_FIX = "use ip=10.0.0.5, ip=10.0.0.5/24 or pxelinux's ip=client:server:gateway:netmask"
_KERNEL_AUTOCONF = ("off", "none", "on", "any", "dhcp", "bootp", "rarp", "both")
_PXE_FIELDS = ("client", "server", "gateway", "netmask")


def _ip(value: str) -> _IpValue:
    if value == "" or value.lower() in _KERNEL_AUTOCONF:
        return _IpValue()
    if ":" in value:
        # pxelinux writes 0.0.0.0 for what the lease did not give (no router: gateway 0.0.0.0)
        parts = ["" if p == "0.0.0.0" else p for p in value.split(":")]
        if len(parts) < 4:
            raise _Bad(f"colon form needs at least client:server:gateway:netmask; {_IP_FIX}")
        for i, label in enumerate(_PXE_FIELDS):
            if parts[i] == "":
                continue
            try:
                _mask(parts[i]) if label == "netmask" else _host(parts[i])
            except ValueError:
                raise _Bad(f"field {i + 1} ({label}) {parts[i]!r} is not an IPv4 "
                           f"{'netmask' if label == 'netmask' else 'address'}; {_IP_FIX}"
                           ) from None
        extra = [p or None for p in parts[4:7]] + [None] * 3
        pxe = PxeIp(*[p or None for p in parts[:4]], *extra[:3])
        return _IpValue(address=pxe.client,
                        prefix=_mask(pxe.netmask) if pxe.netmask else None, pxe=pxe)
    address, slash, prefix_text = value.partition("/")
    try:
        _host(address)
        prefix = _mask(prefix_text) if slash else None
    except ValueError:
        raise _Bad(f"not an IPv4 host address; {_IP_FIX}") from None
    return _IpValue(address=address, prefix=prefix)


def _netmask(value: str) -> int | None:
    if value == "":
        return None
    try:
        return _mask(value)
    except ValueError:
        raise _Bad("not a netmask; use netmask=255.255.255.0 or netmask=24") from None


def _gateway(value: str) -> str | None:
    if value == "":
        return None
    try:
        return str(_host(value))
    except ValueError:
        raise _Bad("not an IPv4 host address; use gateway=10.0.0.1") from None


def _bootif(value: str) -> str:
    m = _MAC_RE.fullmatch(value.lower())
    if not m:
        raise _Bad("not a MAC as pxelinux writes it; use BOOTIF=01-aa-bb-cc-dd-ee-ff "
                   "(from ipappend 2)")
    return ":".join(m.groups())


def _udpcparam(value: str) -> list[str]:
    try:
        words = shlex.split(value)
    except ValueError:
        raise _Bad('unbalanced quotes; write udpcparam="--min-receivers 4 --max-wait 60"'
                   ) from None
    return words  # bare words are turned into options once umode picks the option set


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


COMPRESSIONS = ("none", "gz", "lzop", "zstd")
COMPR_ALIASES = {"gzip": "gz", "lzo": "lzop"}
UMODES = ("snd", "rcv")
POST_ACTIONS = ("poweroff", "reboot", "shell", "wait")

_PARAM_LIST = [
    Param("auto", _bool("auto"), "no", choices=("yes", "no")),
    Param("lang", _optional_name("lang", "US"), None),
    Param("kbmap", _optional_name("kbmap", "US"), None),
    Param("netmodule", _module("netmodule", "e1000e"), "AUTO"),
    Param("netmodparm", _modparm("netmodparm"), ""),
    Param("dhcp", _bool("dhcp"), "yes", choices=("yes", "no")),
    Param("ip", _ip, None),
    Param("netmask", _netmask, None),
    Param("gateway", _gateway, None),
    Param("port", _int_range("port", 1, PORT_MAX, 9000, ""), "9000"),
    Param("enableDiskmodule", _bool("enableDiskmodule"), "yes", choices=("yes", "no")),
    Param("diskmodule", _module("diskmodule", "ahci"), "AUTO"),
    Param("diskmodparm", _modparm("diskmodparm"), ""),
    Param("disk", _disk, "/dev/sda"),
    Param("compr", _choice("compr", COMPRESSIONS, COMPR_ALIASES, "a compression"), "none",
          choices=COMPRESSIONS, aliases=COMPR_ALIASES),
    Param("umode", _choice("umode", UMODES, {}, "a mode"), None, required=True,
          choices=UMODES),
    Param("udpcparam", _udpcparam, ""),
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
# The result


@dataclass(frozen=True)
class BootConfig:
    """What the node will do, typed and validated. Static addressing (`ip`, `netmask`,
    `gateway`) is the effective one: set only with dhcp=no, merged from ip=/netmask=/gateway=
    and pxelinux's colon-form ip=; `ip_from_pxelinux` (JSON `pxe_ip`) keeps what pxelinux
    wrote either way."""

    umode: str
    auto: bool = False
    lang: str | None = None
    kbmap: str | None = None
    netmodule: str = "AUTO"
    netmodparm: str = ""
    dhcp: bool = True
    ip: str | None = None
    netmask: str | None = None
    gateway: str | None = None
    port: int = 9000
    enable_diskmodule: bool = True
    diskmodule: str = "AUTO"
    diskmodparm: str = ""
    disk: str = "/dev/sda"
    compr: str = "none"
    udpcparam: list[str] = field(default_factory=list)
    post: str = "poweroff"
    onfail: str = "wait"
    hwtimeout: int = 60
    dhcptimeout: int = 30
    bootif_mac: str | None = None
    ip_from_pxelinux: PxeIp | None = None
    console: list[str] = field(default_factory=list)

    @property
    def sending(self) -> bool:
        return self.umode == "snd"

    @property
    def prefixlen(self) -> int | None:
        """The static netmask as a prefix length (pyroute2 wants that)."""
        return _mask(self.netmask) if self.netmask else None

    @property
    def netmodparm_args(self) -> list[str]:
        """netmodparm as modprobe arguments."""
        return shlex.split(self.netmodparm)

    @property
    def diskmodparm_args(self) -> list[str]:
        """diskmodparm as modprobe arguments."""
        return shlex.split(self.diskmodparm)

    def transfer_argv(self) -> list[str]:
        """argv for `parse_send_args` / `parse_receive_args` (per umode)."""
        return transfer_argv(self)

    def transfer_options(self) -> SendOptions | ReceiveOptions:
        """The parsed options of `herdcast send`/`receive` this node runs."""
        return transfer_options(self)

    def as_json(self) -> dict:
        """A JSON-able dict whose keys are the parameter names (`bootif` for the MAC)."""
        d = asdict(self)
        d["enableDiskmodule"] = d.pop("enable_diskmodule")
        d["bootif"] = d.pop("bootif_mac")
        d["pxe_ip"] = d.pop("ip_from_pxelinux")
        d["prefixlen"] = self.prefixlen
        d["transfer_argv"] = self.transfer_argv()
        return d


def transfer_argv(cfg: BootConfig) -> list[str]:
    """`--file DISK --portbase PORT --nokbd [--compress C] UDPCPARAM...`: the dedicated
    parameters first, then the user's extra options (udpcparam may not repeat them)."""
    argv = ["--file", cfg.disk, "--portbase", str(cfg.port), "--nokbd"]
    if cfg.compr != "none":
        argv += ["--compress", cfg.compr]
    return argv + list(cfg.udpcparam)


def transfer_options(cfg: BootConfig) -> SendOptions | ReceiveOptions:
    parse = parse_send_args if cfg.sending else parse_receive_args
    return parse(transfer_argv(cfg))


# ---------------------------------------------------------------------------------------------
# udpcparam: bare words and conflicts, resolved with the real option declarations

# Options udpcparam may not carry, because a dedicated parameter sets them.
_DEDICATED = {"file": "disk=", "file_arg": "disk=", "portbase": "port=", "compress": "compr=",
              "pipe": "compr= (herdcast compresses in-process)", "help": None}


def _lookup(parser: argparse.ArgumentParser, option: str) -> argparse.Action | None:
    """The action an option string selects, with argparse's unique-prefix abbreviations."""
    actions = parser._option_string_actions  # noqa: SLF001 - the declaration we validate against
    if option in actions:
        return actions[option]
    if option.startswith("--"):
        found = {id(a): a for s, a in actions.items() if s.startswith(option)}
        if len(found) == 1:
            return next(iter(found.values()))
    return None


def _option_words(words: list[str], umode: str) -> list[str]:
    """udpcparam's words as argv: a bare word that is not an option's value becomes `--word`
    (`broadcast` -> `--broadcast`, as the udpcast tutorial writes it). Refuses options that a
    dedicated parameter sets, help, and stray positional words."""
    parser = send_parser() if umode == "snd" else receive_parser()
    other = receive_parser() if umode == "snd" else send_parser()
    side, other_side = ("send", "receive") if umode == "snd" else ("receive", "send")
    out: list[str] = []
    expects_value = False
    for word in words:
        if expects_value:
            out.append(word)
            expects_value = False
            continue
        if not word.startswith("-"):
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*(=.*)?", word, re.S):
                raise _Bad(f"{word!r} is not an option of herdcast {side}; "
                           "write options such as --min-receivers 4 or broadcast")
            word = "--" + word
        if word.startswith("--"):
            option, eq, _ = word.partition("=")
            attached = bool(eq)
        else:
            option, attached = word[:2], len(word) > 2
        action = _lookup(parser, option)
        if action is None and option.startswith("--"):
            matches = sorted(s for s in parser._option_string_actions  # noqa: SLF001
                             if s.startswith(option))
            if matches:
                raise _Bad(f"{option} is ambiguous ({', '.join(matches)}); write it out")
        if action is None and option.startswith("-") and len(option) > 1:
            if _lookup(other, option) is not None:
                raise _Bad(f"{option} is an option of herdcast {other_side} only; "
                           f"drop it with umode={umode}")
            raise _Bad(f"{option} is not an option of herdcast {side}; "
                       f"see herdcast {side} --help")
        if action is not None:
            dest = "help" if isinstance(action, argparse._HelpAction) else action.dest  # noqa: SLF001
            if dest in _DEDICATED:
                instead = _DEDICATED[dest]
                raise _Bad(f"{option} is not allowed in udpcparam; set {instead} instead"
                           if instead else f"{option} is not a transfer option; "
                           "give options such as --min-receivers 4")
            expects_value = action.nargs not in (0, "?") and not attached
        out.append(word)
    return out


# ---------------------------------------------------------------------------------------------
# Parsing


def _convert(param: Param, value: str) -> object:
    try:
        return param.convert(value)
    except _Bad as exc:
        raise CmdlineError(f"{shown(param.name, value)}: {exc}") from None


def parse_cmdline(text: str) -> BootConfig:
    """Parse and validate a kernel command line; raises CmdlineError for the first bad
    parameter (in command-line order), then for the first failed check across parameters."""
    given = split_cmdline(text)
    values: dict[str, object] = {}
    for name, raw in given.items():
        if name in PARAMETERS and not PARAMETERS[name].repeatable:
            values[name] = _convert(PARAMETERS[name], raw)
    for name, param in PARAMETERS.items():
        if name not in values and param.default is not None and not param.repeatable:
            values[name] = param.convert(param.default)

    if "umode" not in values:
        raise CmdlineError("umode: missing; add umode=snd (this node sends its disk) or "
                           "umode=rcv (this node's disk is overwritten)")
    umode = str(values["umode"])
    ip = values.get("ip") or _IpValue()
    assert isinstance(ip, _IpValue)
    address = netmask = gateway = None
    if values["dhcp"]:
        for name in ("netmask", "gateway"):
            if values.get(name) is not None:
                raise CmdlineError(f"{shown(name, given[name])}: static addressing with "
                                   f"dhcp=yes; add dhcp=no to use it, or drop {name}=")
        if ip.address is not None and ip.pxe is None:
            raise CmdlineError(f"{shown('ip', given['ip'])}: static addressing with dhcp=yes; "
                               "add dhcp=no to use it, or drop ip=")
    else:
        address, netmask, gateway = _static(ip, values, given)

    words = list(values["udpcparam"])  # type: ignore[call-overload]
    try:
        words = _option_words(words, umode)
    except _Bad as exc:
        raise CmdlineError(f"{shown('udpcparam', given['udpcparam'])}: {exc}") from None

    cfg = BootConfig(
        umode=umode,
        auto=bool(values["auto"]),
        lang=values.get("lang"),  # type: ignore[arg-type]
        kbmap=values.get("kbmap"),  # type: ignore[arg-type]
        netmodule=str(values["netmodule"]),
        netmodparm=str(values["netmodparm"]),
        dhcp=bool(values["dhcp"]),
        ip=address,
        netmask=netmask,
        gateway=gateway,
        port=int(values["port"]),  # type: ignore[call-overload]
        enable_diskmodule=bool(values["enableDiskmodule"]),
        diskmodule=str(values["diskmodule"]),
        diskmodparm=str(values["diskmodparm"]),
        disk=str(values["disk"]),
        compr=str(values["compr"]),
        udpcparam=words,
        post=str(values["post"]),
        onfail=str(values["onfail"]),
        hwtimeout=int(values["hwtimeout"]),  # type: ignore[call-overload]
        dhcptimeout=int(values["dhcptimeout"]),  # type: ignore[call-overload]
        bootif_mac=values.get("BOOTIF"),  # type: ignore[arg-type]
        ip_from_pxelinux=ip.pxe,
        console=consoles(text),
    )
    try:
        transfer_options(cfg)
    except (OptionError, ValueError, ArithmeticError, SystemExit) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CmdlineError(f"{shown('udpcparam', given.get('udpcparam', ''))}: {reason}"
                           ) from None
    return cfg


def _static(ip: _IpValue, values: dict[str, object], given: dict[str, str]
            ) -> tuple[str, str, str | None]:
    """dhcp=no: the address, netmask and gateway, from ip=/netmask=/gateway= first and
    pxelinux's colon form second; checked to make one usable subnet."""
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
                           f"address with netmask {_dotted(prefix)}; use a host address")
    gateway = values.get("gateway") or (ip.pxe.gateway if ip.pxe else None)
    if gateway is not None and ipaddress.IPv4Address(gateway) not in net:
        source = (shown("gateway", given["gateway"]) if values.get("gateway")
                  else shown("ip", given["ip"]))
        raise CmdlineError(f"{source}: not in the node's subnet {net}; use a gateway on that "
                           "subnet or leave gateway out")
    return ip.address, _dotted(prefix), gateway  # type: ignore[return-value]
