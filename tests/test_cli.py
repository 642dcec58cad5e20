"""`herdcast`'s dispatcher: a failure the user can act on is one line, never a traceback."""

from __future__ import annotations

import pytest

import agent.transfer.send.sender
from agent.cli import main
from agent.hw.disk import DiskError


def test_bad_option_is_one_line_and_exit_2(capsys):
    assert main(["receive", "--portbase", "0"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("herdcast receive: --portbase: 0 out of range")


def test_other_failures_are_one_line_and_exit_1(capsys, monkeypatch):
    def refuse(opts):
        raise DiskError("disk /dev/sdz: busy", "unmount it")

    monkeypatch.setattr(agent.transfer.send.sender, "run_sender", refuse)
    assert main(["send", "--file", "/dev/sdz"]) == 1
    err = capsys.readouterr().err
    assert err == "herdcast send: disk /dev/sdz: busy -- unmount it\n"


def test_a_bug_still_shows_its_traceback(monkeypatch):
    def bug(opts):
        raise KeyError("oops")

    monkeypatch.setattr(agent.transfer.send.sender, "run_sender", bug)
    with pytest.raises(KeyError):
        main(["send", "--file", "/dev/sdz"])


def test_unknown_command(capsys):
    assert main(["frob"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("herdcast: unknown command 'frob'\nusage: herdcast COMMAND")
