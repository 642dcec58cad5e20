"""kernel-cmdline.md is the user's contract: it and agent.boot.params.PARAMETERS must agree on the
names, the defaults, the accepted words and the exact error for each documented bad value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.boot.cmdline import BootConfig, parse_cmdline
from agent.boot.params import PARAMETERS
from agent.boot.tokens import CmdlineError

DOC = Path(__file__).resolve().parent.parent / "kernel-cmdline.md"
CODE = re.compile(r"`([^`]*)`")


def _table(heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first markdown table under `## heading`."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert len(lines) > 2, f"no table under ## {heading}"
    header, rows = lines[0], lines[2:]
    width = header.count("|") - 1
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    for row in cells:
        assert len(row) == width, f"a '|' inside a cell breaks the table: {row}"
    return cells


ROWS = {CODE.fullmatch(row[0]).group(1): row for row in _table("Parameters")}


def test_every_parameter_is_documented_and_every_documented_one_exists():
    assert sorted(ROWS) == sorted(PARAMETERS)


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_documented_default(name):
    cell, param = ROWS[name][2], PARAMETERS[name]
    if cell == "*(required)*":
        assert param.required and param.default is None
    elif cell == "*(unset)*":
        assert param.default is None and not param.required
    elif cell == "*(empty)*":
        assert param.default == ""
    else:
        assert CODE.fullmatch(cell), f"default of {name} must be `value` or *(...)*: {cell}"
        assert CODE.fullmatch(cell).group(1) == param.default


@pytest.mark.parametrize("name", sorted(n for n, p in PARAMETERS.items() if p.choices))
def test_documented_words_of_enumerated_parameters(name):
    param = PARAMETERS[name]
    listed = set(CODE.findall(ROWS[name][1]))
    assert listed == set(param.choices) | set(param.aliases)


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_documented_error_is_the_parsers(name):
    cell = ROWS[name][4]
    if PARAMETERS[name].repeatable:
        assert cell == "—"  # console= takes anything: the kernel's parameter
        return
    bad, message = CODE.findall(cell)
    assert bad.split("=", 1)[0] == name
    with pytest.raises(CmdlineError) as err:
        parse_cmdline(f"umode=rcv {bad}")
    assert str(err.value) == message


@pytest.mark.parametrize("cmdline, message",
                         [(CODE.fullmatch(a).group(1), CODE.fullmatch(b).group(1))
                          for a, b in _table("Checks across parameters")])
def test_documented_cross_checks(cmdline, message):
    with pytest.raises(CmdlineError) as err:
        parse_cmdline(cmdline)
    assert str(err.value) == message


def test_writing_every_default_out_changes_nothing():
    """The documented defaults are the effective ones, and BootConfig's own field defaults
    agree with them (a node built by hand from BootConfig behaves the same)."""
    explicit = " ".join(f'{name}="{p.default}"' for name, p in PARAMETERS.items()
                        if p.default is not None)
    assert parse_cmdline(f"umode=rcv {explicit}") == parse_cmdline("umode=rcv") == \
        BootConfig(umode="rcv")


def test_example_append_lines_parse():
    lines = [line.split("append ", 1)[1] for line in DOC.read_text().splitlines()
             if line.strip().startswith("append ")]
    assert len(lines) >= 3
    modes = {parse_cmdline(line).umode for line in lines}
    assert modes == {"snd", "rcv"}


def test_udpcparam_section_names_every_option_a_parameter_sets():
    """Each transfer option a boot parameter sets is refused in udpcparam=; the section says
    which parameter to use instead, for every one of them (agent.transfer.optiontable)."""
    from agent.transfer.optiontable import BOOT

    section = DOC.read_text(encoding="utf-8").split("\n## udpcparam\n", 1)[1].split("\n## ")[0]
    section = " ".join(section.split())
    for name, row in BOOT.items():
        assert f"`{row.name}`" in section and f"`{name}=`" in section, name
        assert PARAMETERS[name].option == row.dest
