"""`herdcast`'s dispatcher: a failure the user can act on is one line, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

import agent.cmd.send
from agent.cli import COMMANDS, main
from agent.hw.disk import DiskError


def test_bad_option_is_one_line_and_exit_2(capsys):
    assert main(["receive", "--portbase", "0"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("herdcast receive: --portbase: 0 out of range")


def test_other_failures_are_one_line_and_exit_1(capsys, monkeypatch):
    def refuse(opts):
        raise DiskError("disk /dev/sdz: busy", "unmount it")

    monkeypatch.setattr(agent.cmd.send, "send", refuse)
    assert main(["send", "--file", "/dev/sdz"]) == 1
    err = capsys.readouterr().err
    assert err == "herdcast send: disk /dev/sdz: busy -- unmount it\n"


def test_a_bug_still_shows_its_traceback(monkeypatch):
    def bug(opts):
        raise KeyError("oops")

    monkeypatch.setattr(agent.cmd.send, "send", bug)
    with pytest.raises(KeyError):
        main(["send", "--file", "/dev/sdz"])


def test_unknown_command(capsys):
    assert main(["frob"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("herdcast: unknown command 'frob'\nusage: herdcast COMMAND")


def test_every_command_is_a_module_in_agent_cmd_with_a_main_and_documented_statuses():
    """One folder holds every command (image and deploy move there with their owners), each in
    the dispatcher's exit-status table."""
    import importlib

    import agent.cli

    for name, command in COMMANDS.items():
        assert command.module.startswith("agent.cmd.") or name in ("image", "deploy"), name
        assert callable(importlib.import_module(command.module).main), name
        assert f"\n    {name} " in agent.cli.__doc__, f"{name}'s exit statuses"


def test_send_and_receive_do_not_load_the_node_s_hardware_libraries():
    """The table imports a command only when it runs: a server's `herdcast send` never
    pays for pyudev or pyroute2."""
    code = ("import sys; from agent.cli import main; main(['send', '--help'])\n"
            "import agent.cmd.receive\n"
            "print(sorted(m for m in ('pyudev', 'pyroute2', 'agent.boot.node') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"


def test_errors_keep_their_fix_and_cause_through_the_result(tmp_path):
    """receive() returns the HerdcastError itself: what, the fix, and (raise ... from) the
    error it came from."""
    from agent.transfer.options import parse_receive_args
    from agent.transfer.receive.receiver import receive

    result = receive(parse_receive_args(["--nokbd", "-f", str(tmp_path / "o"),
                                         "--trust-key", str(tmp_path / "missing.pub")]))
    assert not result.ok and result.error.fix, result.error
    assert isinstance(result.error.__cause__, OSError)


def test_usage_errors_exit_2_and_other_failures_1():
    from agent.boot.tokens import CmdlineError
    from agent.cmd import exit_status
    from agent.errors import HerdcastError, UsageError
    from agent.transfer.options import OptionError

    assert issubclass(OptionError, UsageError) and issubclass(CmdlineError, UsageError)
    assert exit_status(OptionError("--x: bad")) == exit_status(CmdlineError("x=: bad")) == 2
    assert exit_status(DiskError("disk: busy")) == exit_status(HerdcastError("no")) == 1
    assert exit_status(None) == 0 and exit_status(KeyError("bug")) == 70


def test_report_into_a_missing_directory_fails_before_the_transfer(capsys, tmp_path):
    """Checked at start, as --events is: no network opened, no receiver waited for."""
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 1000)
    report = tmp_path / "missing" / "r.json"
    assert main(["send", "--nokbd", "-f", str(src), "--report", str(report)]) == 1
    err = capsys.readouterr().err
    assert err == (f"herdcast send: --report {report}: directory {report.parent} does not "
                   "exist -- give a path in a writable directory\n")


def test_keygen_into_a_missing_directory_is_one_line(capsys, tmp_path):
    name = tmp_path / "missing" / "fleet"
    assert main(["keygen", str(name)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"herdcast keygen: {name.parent}: no such directory -- create it first")
    assert not name.parent.exists()


def test_keygen_help_names_the_makefile_variable(capsys):
    from pathlib import Path

    assert main(["keygen", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "make initrd TRUST_KEY=" in out and "SIGN_PUBKEY" not in out
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    assert "$(TRUST_KEY)" in makefile


@pytest.mark.parametrize("argv", [
    ["receive", "--nokbd", "-f", "/dev/herdcast-no-such-disk"],
    ["image", "restore", "IMAGE", "/dev/herdcast-no-such-disk"],
])
def test_server_commands_give_no_boot_parameter_hints(capsys, tmp_path, argv):
    """A server's admin typed a path: the fix names it, never a node's `disk=`."""
    from agent.image.files import capture

    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 4096)
    image = tmp_path / "i.img"
    capture(str(src), str(image), None)
    argv = [str(image) if a == "IMAGE" else a for a in argv]
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "/dev/herdcast-no-such-disk: no such device (check the path" in err, err
    assert "disk=" not in err and err.count("\n") == 1
