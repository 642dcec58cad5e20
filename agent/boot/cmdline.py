"""The boot parameters of a herdcast node: kernel command line -> validated `BootConfig`.

A node has nobody at the keyboard, so every parameter is checked before anything touches
the hardware, and a bad one stops the node with ONE line naming the parameter, the value
given and what is allowed. The pieces, in reading order:

- agent.boot.tokens: the kernel's splitting rules and the CmdlineError they lead to;
- agent.boot.params: every parameter declared once (`PARAMETERS`) with its converter;
- agent.boot.addressing: ip=/netmask=/gateway= merged into one checked static address;
- agent.boot.udpcparam: udpcparam= parsed once, by the transfer's own option rows and parser;
- this module: all of them together, as the BootConfig the node and `herdcast plan` use (its
  fields are the parameters; its `transfer` the options the node runs and the plan prints).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from agent.boot.addressing import PxeIp, mask, static_addressing
from agent.boot.params import PARAMETERS, Param, near_misses, split_cmdline
from agent.boot.tokens import BadValue, CmdlineError, consoles, shown
from agent.boot.udpcparam import parse_udpcparam
from agent.transfer.options import (
    OPTION_CLASSES,
    CommonOptions,
    OptionError,
    ReceiveOptions,
    SendOptions,
    serve_conflict,
)
from agent.transfer.optiontable import FIELDS


def _fields_from_parameters(cls: type) -> type:
    """Class decorator: every boot parameter in PARAMETERS becomes a field (`Param.attr`)
    whose default is its default text converted (a required one first, without default),
    ahead of the fields the class body declares itself; then a frozen dataclass."""
    own = dict(cls.__dict__.get("__annotations__", {}))
    required, optional = {}, {}
    for p in PARAMETERS.values():
        if p.attr in own:
            continue
        if p.required:
            required[p.attr] = "str"
        elif p.repeatable:
            optional[p.attr] = "list[str]"
            setattr(cls, p.attr, field(default_factory=list))
        else:
            value = None if p.default is None else p.convert(p.default)
            optional[p.attr] = "str | None" if value is None else type(value).__name__
            setattr(cls, p.attr, value)
    cls.__annotations__ = {**required, **optional, **own}
    return dataclass(frozen=True)(cls)


@_fields_from_parameters
class BootConfig:
    """What the node will do, typed and validated: one field per boot parameter (its
    `Param.attr`, typed as its converter returns it), plus what the parameters become
    together. Static addressing (`ip`, `netmask`, `gateway`) is the effective one: set only
    with dhcp=no, merged from ip=/netmask=/gateway= and pxelinux's colon-form ip=;
    `ip_from_pxelinux` (JSON `pxe_ip`) keeps what pxelinux wrote either way. `udpcparam`
    holds the transfer options udpcparam= gives, parsed once (None: none given); `transfer`
    is what the node runs."""

    udpcparam: SendOptions | ReceiveOptions | None = None
    ip_from_pxelinux: PxeIp | None = None
    # keys nearly ours (`diks=`): left to the kernel, named by the plan and the node's console
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.udpcparam is None:
            object.__setattr__(self, "udpcparam", OPTION_CLASSES[self.side]())

    @property
    def sending(self) -> bool:
        return self.umode == "snd"

    @property
    def side(self) -> str:
        """`send` or `receive`: the command the node runs."""
        return "send" if self.sending else "receive"

    @property
    def prefixlen(self) -> int | None:
        """The static netmask as a prefix length (pyroute2 wants that)."""
        return mask(self.netmask) if self.netmask else None

    @property
    def compression(self) -> str | None:
        """compr= as the transfer options spell it: None for none."""
        return FIELDS["compress"].value_of(self.compr)

    @property
    def transfer(self) -> SendOptions | ReceiveOptions:
        """The transfer options this node runs (but for the interface, which the network
        step names): udpcparam's, with every parameter that sets an option (disk=, port=,
        compr=, blocks=, ...) set as its typed value, and no keyboard. `herdcast plan`
        prints them as a command line (agent.boot.plan)."""
        extra: CommonOptions = self.udpcparam  # type: ignore[assignment]
        own = {p.option: FIELDS[p.option].value_of(getattr(self, p.attr))
               for p in PARAMETERS.values() if p.option and hasattr(extra, p.option)}
        return replace(extra, nokbd=True, **own)

    def as_json(self) -> dict:
        """A JSON-able dict whose keys are the parameter names (`bootif` for the MAC), and
        udpcparam as the option words its options are."""
        from agent.transfer.options import to_argv

        d = asdict(self)
        d["enableDiskmodule"] = d.pop("enable_diskmodule")
        d["bootif"] = d.pop("bootif_mac")
        d["pxe_ip"] = d.pop("ip_from_pxelinux")
        d["prefixlen"] = self.prefixlen
        d["udpcparam"] = to_argv(self.udpcparam)  # type: ignore[arg-type]
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
    **{name: ("rcv", unused, f"{name}= is what a receiver does to its clone; for umode=snd "
              "drop it") for name, unused in (("grow", False), ("hostname", None),
                                              ("identity", None), ("userdata", None))},
}


def parse_cmdline(text: str) -> BootConfig:
    """Parse and validate a kernel command line; raises CmdlineError for the first bad
    parameter (in command-line order), then for the first failed check across parameters."""
    given = split_cmdline(text)
    values: dict[str, object] = {}
    for name, raw in given.items():
        if name in PARAMETERS and not PARAMETERS[name].repeatable:
            values[name] = _convert(PARAMETERS[name], raw)
    for console in consoles(text):  # every one counts: none may name a disk
        _convert(PARAMETERS["console"], console)
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
        extra = parse_udpcparam(list(values["udpcparam"]), umode)  # type: ignore[call-overload]
    except BadValue as exc:
        raise CmdlineError(f"{udpcparam}: {exc}") from None
    except (OptionError, ValueError, ArithmeticError, SystemExit) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CmdlineError(f"{udpcparam}: {reason}") from None
    for name, (side, unused, why) in ONE_SIDED.items():
        if umode != side and values.get(name) != unused:
            raise CmdlineError(f"{shown(name, given[name])}: {why}")
    if values["serve"] and (conflict := serve_conflict(extra)):
        raise CmdlineError(f"{udpcparam}: {conflict} (serve=yes is --serve)")
    ip = values.get("ip")
    fields = {p.attr: values[p.name] for p in PARAMETERS.values()
              if p.name in values and not p.repeatable}
    fields.update(umode=umode, ip=address, netmask=netmask, gateway=gateway, udpcparam=extra,
                  ip_from_pxelinux=getattr(ip, "pxe", None), console=consoles(text),
                  warnings=warnings)
    return BootConfig(**fields)
