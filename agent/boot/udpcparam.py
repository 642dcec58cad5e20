"""`udpcparam=`: the extra udp-sender/udp-receiver options of a node, checked against the real
option declarations of `herdcast send` / `herdcast receive`.

The words are the only thing that goes through argparse: the dedicated parameters (disk=,
port=, compr=) are set on the parsed options as typed values by the node, so udpcparam may
not repeat them. Bare words become options (`broadcast` -> `--broadcast`, as the udpcast
tutorial writes them), with the declaration's own unique-prefix abbreviations.
"""

from __future__ import annotations

import argparse
import re
import shlex

from agent.boot.tokens import BadValue
from agent.transfer.options import (
    ReceiveOptions,
    SendOptions,
    parse_receive_args,
    parse_send_args,
    receive_parser,
    send_parser,
)

# Options udpcparam may not carry, because a dedicated parameter sets them.
_DEDICATED = {"file": "disk=", "file_arg": "disk=", "portbase": "port=", "compress": "compr=",
              "pipe": "compr= (herdcast compresses in-process)", "help": None}
# Options a node cannot honour, refused at boot rather than after drivers, network and disk.
_NOT_ON_A_NODE = {"ignore_lost_data": "a disk with holes must never look finished"}


def split_words(value: str) -> list[str]:
    """udpcparam's value as words, shell-quoted as the tutorial writes it; the words become
    options once umode= picks the option set (`option_words`)."""
    try:
        return shlex.split(value)
    except ValueError:
        raise BadValue('unbalanced quotes; write udpcparam="--min-receivers 4 --max-wait 60"'
                       ) from None


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


def option_words(words: list[str], umode: str) -> list[str]:
    """udpcparam's words as argv: a bare word that is not an option's value becomes `--word`.
    Refuses options that a dedicated parameter sets, help, and stray positional words."""
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
                raise BadValue(f"{word!r} is not an option of herdcast {side}; "
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
                raise BadValue(f"{option} is ambiguous ({', '.join(matches)}); write it out")
        if action is None and option.startswith("-") and len(option) > 1:
            if _lookup(other, option) is not None:
                raise BadValue(f"{option} is an option of herdcast {other_side} only; "
                               f"drop it with umode={umode}")
            raise BadValue(f"{option} is not an option of herdcast {side}; "
                           f"see herdcast {side} --help")
        if action is not None:
            dest = "help" if isinstance(action, argparse._HelpAction) else action.dest  # noqa: SLF001
            if dest in _DEDICATED:
                instead = _DEDICATED[dest]
                raise BadValue(f"{option} is not allowed in udpcparam; set {instead} instead"
                               if instead else f"{option} is not a transfer option; "
                               "give options such as --min-receivers 4")
            if dest in _NOT_ON_A_NODE:
                raise BadValue(f"{action.option_strings[-1]} cannot be honoured on a node "
                               f"({_NOT_ON_A_NODE[dest]}); drop it")
            expects_value = action.nargs not in (0, "?") and not attached
        out.append(word)
    return out


def parse_udpcparam(argv: list[str], umode: str) -> SendOptions | ReceiveOptions:
    """The transfer options udpcparam's argv (from `option_words`) gives, before the node
    sets disk=, port= and compr= on them; OptionError if a value is bad."""
    parse = parse_send_args if umode == "snd" else parse_receive_args
    return parse(argv)
