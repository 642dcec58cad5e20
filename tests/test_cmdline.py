"""The boot parameter parser: kernel splitting rules, every parameter's values, udpcparam."""

from __future__ import annotations

import pytest

from agent.cmdline import CmdlineError, parse_cmdline, split_cmdline

TUTORIAL = ("load_ramdisk=1 initrd=initrd root=01:00 auto=yes lang=US kbmap=US netmodule=AUTO "
            "netmodparm= dhcp=yes port=9000 enableDiskmodule=yes diskmodule=AUTO diskmodparm= "
            "disk=/dev/sda compr=none umode=rcv udpcparam=")


def test_tutorial_append_line_parses():
    cfg = parse_cmdline(TUTORIAL)
    assert (cfg.auto, cfg.umode, cfg.disk, cfg.port, cfg.dhcp) == (True, "rcv", "/dev/sda", 9000,
                                                                  True)
    assert cfg.transfer_argv() == ["--file", "/dev/sda", "--portbase", "9000", "--nokbd"]


def test_quoted_value_and_last_wins():
    got = split_cmdline('umode=snd udpcparam="--min-receivers 4 --max-wait 60" umode=rcv')
    assert got == {"udpcparam": "--min-receivers 4 --max-wait 60", "umode": "rcv"}


@pytest.mark.parametrize("bad, message", [
    ("umode=xmit", "umode=xmit: not a mode; use umode=snd or umode=rcv"),
    ("port=99999", "port=99999: out of range; use port=1..65534 (default 9000)"),
])
def test_bad_value_one_line(bad, message):
    with pytest.raises(CmdlineError) as err:
        parse_cmdline(f"umode=rcv {bad}")
    assert str(err.value) == message
