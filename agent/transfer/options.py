"""Options of `herdcast send` and `herdcast receive`, with udpcast's names and meanings.

Every option is one row of agent.transfer.optiontable; this module makes from the rows the
frozen option dataclasses (their fields and defaults), the argparse parsers and their
checks across options, and the way back from options to a command line (`to_argv`). The
console command, the node (udpcparam=, agent.boot.udpcparam), `herdcast plan` and the tests
all go through `parse_send_args` / `parse_receive_args`, so an admin's udp-sender script
works by changing only the program name.
"""

from __future__ import annotations

import argparse
import dataclasses

from agent.personalize.wishes import Wishes
from agent.transfer.optionchecks import FecSpec, OptionError, parse_fec, parse_size
from agent.transfer.optiontable import (
    DEFAULT_DROP_AFTER,
    DEFAULT_PORTBASE,
    FIELDS,
    UNSUPPORTED,
    Option,
    rows,
)

__all__ = ["DEFAULT_DROP_AFTER", "DEFAULT_PORTBASE", "UNSUPPORTED", "WISHES", "CommonOptions",
           "FecSpec", "OptionError", "ReceiveOptions", "SendOptions", "add_rows", "parse_fec",
           "parse_receive_args", "parse_send_args", "parse_size", "receive_parser",
           "send_parser", "serve_conflict", "to_argv", "wishes_of"]


def _fields_from_rows(sides: tuple[str, ...]):
    """Class decorator: the rows of exactly `sides` become the class's fields, with their
    types and defaults, ahead of any the class body declares itself; then a frozen
    dataclass."""
    def build(cls: type) -> type:
        own = dict(cls.__dict__.get("__annotations__", {}))
        annotations = {}
        for dest, row in FIELDS.items():
            if row.sides == sides and dest not in own:
                annotations[dest] = row.annotation
                setattr(cls, dest, row.default)
        cls.__annotations__ = {**annotations, **own}
        return dataclasses.dataclass(frozen=True)(cls)
    return build


@_fields_from_rows(("send", "receive"))
class CommonOptions:
    """Options both sides share (udpcast's `net_config` and `disk_config`).

    Frozen: the options are what the user asked for, fixed once parsed. What a run finds out
    (the interface it picked, the block size the MTU allows, the image size) lives in the
    run's own objects (the sender's `SendSession`, the receiver's `Session`); a changed copy
    is `dataclasses.replace(opts, ...)`.
    """


@_fields_from_rows(("send",))
class SendOptions(CommonOptions):
    """What `udp-sender` takes, and herdcast's own."""

    live: bool | None = None  # not an option: the rich fleet table; None: stderr is a terminal


@_fields_from_rows(("receive",))
class ReceiveOptions(CommonOptions):
    """What `udp-receiver` takes, and herdcast's own."""

    @property
    def wishes(self) -> Wishes:
        """What the clone becomes after its digest agreed (agent.personalize): --grow,
        --hostname (empty: none), --identity, --userdata."""
        return Wishes(grow=self.grow, hostname=self.hostname or None,
                      identity=self.identity, userdata=self.userdata)


OPTION_CLASSES: dict[str, type] = {"send": SendOptions, "receive": ReceiveOptions}
DESCRIPTIONS = {
    "send": "Send a file or disk by multicast (udp-sender's options).",
    "receive": "Receive a file or disk by multicast (udp-receiver's options).",
}


class _Parser(argparse.ArgumentParser):
    """argparse that raises OptionError instead of exiting, so callers choose how to fail."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise OptionError(message)


def _add(p: argparse.ArgumentParser, row: Option, side: str) -> None:
    kw: dict = {"dest": row.dest, "default": FIELDS[row.dest].default}
    if row.repeat:
        kw.update(action="append", default=None, type=row.argtype, metavar=row.metavar,
                  help=row.help)
    elif row.takes_value:
        kw.update(type=row.argtype, metavar=row.metavar)
        if row.choices:
            kw.update(choices=row.choices, metavar=None)
        shown = FIELDS[row.dest].default
        kw["help"] = row.help + (f" (default: {shown})" if shown not in (None, False) else "")
    else:
        kw.update(action="store_const", const=row.const, help=row.help)
    p.add_argument(*row.flags_on(side), **kw)


def parser(side: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The argparse declaration of `herdcast send` or `herdcast receive`, from the rows."""
    p = _Parser(prog=prog or f"herdcast {side}", description=DESCRIPTIONS[side],
                allow_abbrev=True)
    p.add_argument("file_arg", nargs="?", metavar="FILE", help="the same as --file FILE")
    for row in rows(side):
        _add(p, row, side)
    p.add_argument("--license", action="store_true", help=argparse.SUPPRESS)
    for opt in UNSUPPORTED:
        p.add_argument(opt, nargs="?", const=True, default=None, help=argparse.SUPPRESS)
    return p


def send_parser(prog: str = "herdcast send") -> argparse.ArgumentParser:
    """The argparse declaration of `herdcast send` (udp-sender's options)."""
    return parser("send", prog)


def receive_parser(prog: str = "herdcast receive") -> argparse.ArgumentParser:
    """The argparse declaration of `herdcast receive` (udp-receiver's options)."""
    return parser("receive", prog)


def _parse(side: str, argv: list[str]) -> argparse.Namespace:
    """Parsed, every row's value checked, the positional FILE merged into --file."""
    ns = parser(side).parse_args(argv)
    for opt, why in UNSUPPORTED.items():
        if getattr(ns, opt.lstrip("-").replace("-", "_"), None) is not None:
            raise OptionError(f"{opt} is not supported by herdcast: {why}")
    for row in rows(side):
        if row.takes_value:
            setattr(ns, row.dest, row.value_of(getattr(ns, row.dest)))
    if ns.file_arg is not None:
        if ns.file is not None:
            raise OptionError(f"give the file once: --file {ns.file} and {ns.file_arg}")
        ns.file = ns.file_arg
    return ns


def _fill(side: str, ns: argparse.Namespace):
    cls = OPTION_CLASSES[side]
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)
                  if f.name in FIELDS})


def parse_send_args(argv: list[str]) -> SendOptions:
    """Parse udp-sender style arguments; raises OptionError with a one-line reason."""
    ns = _parse("send", argv)
    if ns.async_ and ns.max_bitrate is None:
        raise OptionError("--async needs --max-bitrate (there is no return channel to pace by)")
    if not 1 <= ns.min_slice_size <= ns.max_slice_size <= 1024:
        raise OptionError("--min-slice-size/--max-slice-size: need 1 <= min <= max <= 1024")
    if ns.serve:
        _check_serve(ns)
    return _fill("send", ns)


def _check_serve(ns: argparse.Namespace) -> None:
    """--serve reads the input again for every round and waits for receivers forever."""
    if ns.file is None or ns.pipe:
        raise OptionError("--serve reads the image again for every round: give it as -f FILE "
                          "(a file, disk or stored image), not stdin or --pipe")
    conflict = serve_conflict(ns)
    if conflict:
        raise OptionError(conflict)


def serve_conflict(opts) -> str | None:
    """Why options (a namespace or SendOptions) cannot go with --serve, or None."""
    for given, name in ((opts.async_, "--async"), (not opts.late_join, "--no-late-join"),
                        (opts.start_timeout, "--start-timeout"),
                        (opts.autostart, "--autostart"),
                        (opts.min_receivers is not None, "--min-receivers"),
                        (opts.min_wait is not None, "--min-wait"),
                        (opts.max_wait is not None, "--max-wait")):
        if given:
            return (f"--serve and {name} do not go together: --serve starts a round whenever "
                    f"receivers wait and keeps going until stopped; drop {name}")
    return None


def parse_receive_args(argv: list[str]) -> ReceiveOptions:
    """Parse udp-receiver style arguments; raises OptionError with a one-line reason."""
    ns = _parse("receive", argv)
    if ns.verify == "readback" and (ns.file is None or ns.pipe):
        raise OptionError("--verify readback: needs --file (a disk or file) and no --pipe, "
                          "to read back what was written")
    return _fill("receive", ns)


#: The rows of what a clone becomes (ReceiveOptions.wishes), which `herdcast image restore`
#: takes too.
WISHES = ("grow", "hostname", "identity", "userdata")


def add_rows(p: argparse.ArgumentParser, dests: tuple[str, ...], side: str = "receive") -> None:
    """The rows of `side` setting `dests` on another command's parser, as `side` has them."""
    for row in rows(side):
        if row.dest in dests:
            _add(p, row, side)


def wishes_of(ns: argparse.Namespace) -> Wishes:
    """The clone's wishes from a namespace holding the WISHES rows, checked as they are."""
    return ReceiveOptions(**{d: FIELDS[d].value_of(getattr(ns, d)) for d in WISHES}).wishes


def side_of(opts: CommonOptions) -> str:
    return "send" if isinstance(opts, SendOptions) else "receive"


def to_argv(opts: CommonOptions, first: tuple[str, ...] = ()) -> list[str]:
    """The options as the command line that parses back to them: the fields named in
    `first` (dests) always and in that order, then every other field that differs from its
    default, in the rows' order. Fields that are not options (`live`) are left out."""
    side = side_of(opts)
    out: list[str] = []
    dests = [*first, *(d for d in FIELDS if d not in first)]
    for dest in dests:
        if not hasattr(opts, dest):
            continue
        value = getattr(opts, dest)
        if dest not in first and value == FIELDS[dest].default:
            continue
        for row in rows(side):
            if row.dest != dest:
                continue
            if row.repeat:
                out += [text for v in value for text in (row.name, row.render(v))]
                break
            if row.takes_value and value is not None:
                out += [row.name, row.render(value)]
                break
            if not row.takes_value and row.const == value:
                out.append(row.name)
                break
    return out
