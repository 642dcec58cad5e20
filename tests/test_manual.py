"""Every option of every command has help text, and the man page and the shell completions,
generated from the same parsers by `python -m builder manual`, list every one of them."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import COMMANDS, parser
from agent.transfer.optiontable import UNSUPPORTED

ROOT = Path(__file__).resolve().parent.parent
HIDDEN = {*UNSUPPORTED, "--license"}  # udpcast's, refused with their reason: not documented


def _parsers(p: argparse.ArgumentParser, name: str = "herdcast"):
    """(command name, parser) of `herdcast` and every command and subcommand under it."""
    yield name, p
    for action in p._actions:  # noqa: SLF001 - walking the declaration is the point
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for sub, child in action.choices.items():
                yield from _parsers(child, f"{name} {sub}")


def _options() -> list[tuple[str, argparse.Action]]:
    return [(name, action) for name, p in _parsers(parser()) for action in p._actions  # noqa: SLF001
            if action.option_strings and not set(action.option_strings) & HIDDEN]


@pytest.fixture(scope="module")
def manual(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("share")
    proc = subprocess.run([sys.executable, "-m", "builder", "manual", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out


def test_every_command_is_in_the_manuals_parser():
    names = {name for name, _ in _parsers(parser())}
    assert {f"herdcast {c}" for c in COMMANDS} <= names
    assert "herdcast image restore" in names


def test_every_option_of_every_command_has_help():
    options = _options()
    assert len(options) > 90  # send and receive alone have more than 70
    missing = [f"{name} {'/'.join(a.option_strings)}" for name, a in options
               if not a.help or a.help == argparse.SUPPRESS or not a.help.strip()]
    assert not missing, f"options without help: {missing}"


def test_every_positional_has_help():
    missing = [f"{name} {a.dest}" for name, p in _parsers(parser()) for a in p._actions  # noqa: SLF001
               if not a.option_strings and not isinstance(a, argparse._SubParsersAction)  # noqa: SLF001
               and not a.help]
    assert not missing


def test_the_man_page_lists_every_command_and_option(manual: Path):
    page = (manual / "man/man1/herdcast.1").read_text()
    text = page.replace("\\-", "-")  # roff's minus signs
    assert page.startswith(".TH HERDCAST 1") or ".TH HERDCAST" in page
    for name, action in _options():
        if isinstance(action, argparse._HelpAction):  # noqa: SLF001 - man pages leave -h out
            continue
        for flag in action.option_strings:
            assert flag in text, f"{name} {flag} not in the man page"
        assert action.help.split()[0].replace("\\-", "-") in text
    for command in COMMANDS:
        assert f"herdcast {command}" in text


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_the_completions_offer_every_command_and_option(manual: Path, shell: str):
    path = {"bash": "bash-completion/completions/herdcast",
            "zsh": "zsh/site-functions/_herdcast"}[shell]
    script = (manual / path).read_text()
    for command in COMMANDS:
        assert command in script
    for name, action in _options():
        for flag in action.option_strings:
            assert flag in script, f"{name} {flag} not offered by the {shell} completion"


def test_bash_loads_the_completion(manual: Path):
    """bash sources the script and then completes `herdcast se` to send."""
    script = manual / "bash-completion/completions/herdcast"
    probe = (f"source {script}; COMP_WORDS=(herdcast se); COMP_CWORD=1; "
             "COMP_LINE='herdcast se'; COMP_POINT=${#COMP_LINE}; "
             "_shtab_herdcast; echo \"${COMPREPLY[@]}\"")
    proc = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "send" in proc.stdout.split()
