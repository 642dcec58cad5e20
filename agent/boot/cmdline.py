"""The boot parameters of a herdcast node: kernel command line -> validated `BootConfig`.

A node has nobody at the keyboard, so every parameter is checked before anything touches
the hardware, and a bad one stops the node with ONE line naming the parameter, the value
given and what is allowed. The pieces, in reading order:

- agent.boot.tokens: the kernel's splitting rules and the CmdlineError they lead to;
- agent.boot.params: every parameter declared once (`PARAMETERS`) with its converter;
- agent.boot.addressing: ip=/netmask=/gateway= merged into one checked static address;
- agent.boot.udpcparam: udpcparam= checked against the transfer's own option declarations;
- this module: all of them together, as the BootConfig the node and `herdcast plan` use.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from agent.boot.addressing import PxeIp, mask, static_addressing
from agent.boot.params import PARAMETERS, Param, near_misses, split_cmdline
from agent.boot.tokens import BadValue, CmdlineError, consoles, shown
from agent.boot.udpcparam import option_words, parse_udpcparam
from agent.transfer.options import OptionError, ReceiveOptions, SendOptions, serve_conflict


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
    mounted: str = "refuse"
    blocks: str = "used"
    blank: str = "keep"
    verify: str = "none"
    serve: bool = False  # umode=snd: keep serving the disk until powered off (send --serve)
    udpcparam: list[str] = field(default_factory=list)  # argv words, bare words made options
    post: str = "poweroff"
    onfail: str = "wait"
    hwtimeout: int = 60
    dhcptimeout: int = 30
    bootif_mac: str | None = None
    ip_from_pxelinux: PxeIp | None = None
    console: list[str] = field(default_factory=list)
    # keys nearly ours (`diks=`): left to the kernel, named by the plan and the node's console
    warnings: list[str] = field(default_factory=list)

    @property
    def sending(self) -> bool:
        return self.umode == "snd"

    @property
    def prefixlen(self) -> int | None:
        """The static netmask as a prefix length (pyroute2 wants that)."""
        return mask(self.netmask) if self.netmask else None

    @property
    def compression(self) -> str | None:
        """compr= as the transfer options spell it: None for none."""
        return None if self.compr == "none" else self.compr

    @property
    def udpcparam_options(self) -> SendOptions | ReceiveOptions:
        """The send/receive options udpcparam= alone gives (parse_cmdline checked that it
        parses); the node sets disk=, port= and compr= on them as typed values."""
        return parse_udpcparam(self.udpcparam, self.umode)

    def as_json(self) -> dict:
        """A JSON-able dict whose keys are the parameter names (`bootif` for the MAC)."""
        d = asdict(self)
        d["enableDiskmodule"] = d.pop("enable_diskmodule")
        d["bootif"] = d.pop("bootif_mac")
        d["pxe_ip"] = d.pop("ip_from_pxelinux")
        d["prefixlen"] = self.prefixlen
        return d


def _convert(param: Param, value: str) -> object:
    try:
        return param.convert(value)
    except BadValue as exc:
        raise CmdlineError(f"{shown(param.name, value)}: {exc}") from None


# Parameters of one side only: (its umode, the value that means unused, why the other refuses)
ONE_SIDED = {
    "mounted": ("snd", "refuse", "a receiver never overwrites a mounted disk; mounted= is "
                "for umode=snd, drop it"),
    "blocks": ("snd", "used", "blocks= is what a sender sends; for umode=rcv drop it "
               "(blank= is the receiver's)"),
    "verify": ("rcv", "none", "a sender writes nothing to read back; verify= is for "
               "umode=rcv, drop it"),
    "blank": ("rcv", "keep", "blank= is what a receiver does with free space; for umode=snd "
              "drop it (blocks= is the sender's)"),
    "serve": ("snd", False, "serving is what a sender does; for umode=rcv drop it (or use "
              "umode=snd)"),
}


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

    warnings = near_misses(text)
    if "umode" not in values:
        near = [w.split(" is not", 1)[0] for w in warnings if w.endswith("umode=?")]
        also = f" ({near[0]} is not it: did you mean umode=?)" if near else ""
        raise CmdlineError(f"umode: missing{also}; add umode=snd (this node sends its disk) "
                           "or umode=rcv (this node's disk is overwritten)")
    umode = str(values["umode"])
    address, netmask, gateway = static_addressing(values, given)
    udpcparam = shown("udpcparam", given.get("udpcparam", ""))
    try:
        words = option_words(list(values["udpcparam"]), umode)  # type: ignore[call-overload]
    except BadValue as exc:
        raise CmdlineError(f"{udpcparam}: {exc}") from None
    try:
        parse_udpcparam(words, umode)
    except (OptionError, ValueError, ArithmeticError, SystemExit) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CmdlineError(f"{udpcparam}: {reason}") from None
    for name, (side, unused, why) in ONE_SIDED.items():
        if umode != side and values[name] != unused:
            raise CmdlineError(f"{shown(name, given[name])}: {why}")
    if values["serve"] and (conflict := serve_conflict(parse_udpcparam(words, umode))):
        raise CmdlineError(f"{udpcparam}: {conflict} (serve=yes is --serve)")
    ip = values.get("ip")
    return BootConfig(
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
        mounted=str(values["mounted"]),
        blocks=str(values["blocks"]),
        blank=str(values["blank"]),
        verify=str(values["verify"]),
        serve=bool(values["serve"]),
        udpcparam=words,
        post=str(values["post"]),
        onfail=str(values["onfail"]),
        hwtimeout=int(values["hwtimeout"]),  # type: ignore[call-overload]
        dhcptimeout=int(values["dhcptimeout"]),  # type: ignore[call-overload]
        bootif_mac=values.get("BOOTIF"),  # type: ignore[arg-type]
        ip_from_pxelinux=getattr(ip, "pxe", None),
        console=consoles(text),
        warnings=warnings,
    )
