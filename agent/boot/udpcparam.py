"""`udpcparam=`: the extra udp-sender/udp-receiver options of a node, parsed once into the
transfer options the node runs.

The words go through the rows of agent.transfer.optiontable: a bare word becomes an option
(`broadcast` -> `--broadcast`, as the udpcast tutorial writes them), abbreviations resolve
as argparse resolves them, and options that a dedicated boot parameter sets (disk=, port=,
compr=, blocks=, ...: the row's `boot`) or that a node cannot honour (the row's `node`) are
refused, naming the parameter to use. The argv that results is parsed once, by the very
parser of `herdcast send` / `herdcast receive`.
"""

from __future__ import annotations

import re
import shlex

from agent.boot.tokens import BadValue
from agent.transfer.options import ReceiveOptions, SendOptions, parse_receive_args, parse_send_args
from agent.transfer.optiontable import UNSUPPORTED, Option, rows

_HELP = "help"  # what -h/--help select: not a transfer option
_HIDDEN = "hidden"  # udpcast's options herdcast refuses with their reason (the parser's job)


def split_words(value: str) -> list[str]:
    """udpcparam's value as words, shell-quoted as the tutorial writes it; the words become
    options once umode= picks the option set (`option_words`)."""
    try:
        return shlex.split(value)
    except ValueError:
        raise BadValue('unbalanced quotes; write udpcparam="--min-receivers 4 --max-wait 60"'
                       ) from None


def _flags(side: str) -> dict[str, Option | str]:
    """Every flag of `side`, to its row (or to _HELP / _HIDDEN)."""
    table: dict[str, Option | str] = {"-h": _HELP, "--help": _HELP}
    table.update({flag: _HIDDEN for flag in (*UNSUPPORTED, "--license")})
    for row in rows(side):
        table.update({flag: row for flag in row.flags_on(side)})
    return table


def _lookup(table: dict[str, Option | str], option: str) -> tuple[Option | str | None, list[str]]:
    """What `option` selects, with argparse's rule for abbreviations (a unique prefix of a
    long flag); and the flags it could mean when that prefix is not unique."""
    if option in table:
        return table[option], []
    if not option.startswith("--"):
        return None, []
    matches = sorted(flag for flag in table if flag.startswith(option))
    return (table[matches[0]], []) if len(matches) == 1 else (None, matches)


def option_words(words: list[str], umode: str) -> list[str]:
    """udpcparam's words as argv: a bare word that is not an option's value becomes `--word`.
    Refuses options that a dedicated parameter sets, help, and stray positional words."""
    side, other = ("send", "receive") if umode == "snd" else ("receive", "send")
    table, other_table = _flags(side), _flags(other)
    out: list[str] = []
    expects_value = False
    for word in words:
        if expects_value:
            out.append(word)
            expects_value = False
            continue
        if not word.startswith("-"):
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*(=.*)?", word, re.S):
                raise BadValue(f"{word!r} is not an option of herdcast {side}; "
                               "write options such as --min-receivers 4 or broadcast")
            word = "--" + word
        if word.startswith("--"):
            option, eq, _ = word.partition("=")
            attached = bool(eq)
        else:
            option, attached = word[:2], len(word) > 2
        found, matches = _lookup(table, option)
        if matches:
            raise BadValue(f"{option} is ambiguous ({', '.join(matches)}); write it out")
        if found is None:
            if len(option) > 1 and _lookup(other_table, option)[0] not in (None, _HELP):
                raise BadValue(f"{option} is an option of herdcast {other} only; "
                               f"drop it with umode={umode}")
            raise BadValue(f"{option} is not an option of herdcast {side}; "
                           f"see herdcast {side} --help")
        if found == _HELP:
            raise BadValue(f"{option} is not a transfer option; give options such as "
                           "--min-receivers 4")
        if isinstance(found, Option):
            if found.boot:
                raise BadValue(f"{option} is not allowed in udpcparam; set {found.boot}= "
                               "instead")
            if found.node:
                raise BadValue(f"{found.name} {found.node}")
            expects_value = found.takes_value and not attached
        out.append(word)
    return out


def parse_udpcparam(words: list[str], umode: str) -> SendOptions | ReceiveOptions:
    """The transfer options udpcparam's words give, before the node sets disk=, port=,
    compr= (and the other parameters with an option) on them: BadValue for a word that
    cannot be an option here, OptionError for a bad option value."""
    parse = parse_send_args if umode == "snd" else parse_receive_args
    return parse(option_words(words, umode))
