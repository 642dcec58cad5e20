"""`herdcast plan` through the real console entry point: text, JSON, and one-line errors."""

from __future__ import annotations

import json

import pytest

from agent.cli import main

RECEIVER = ("initrd=initrd.img auto=yes umode=rcv disk=/dev/nvme0n1 compr=gzip port=9002 "
            "BOOTIF=01-52-54-00-12-34-56 ip=10.0.0.5:10.0.0.1:10.0.0.1:255.255.255.0 "
            'netmodule=e1000e netmodparm="copybreak=0" console=ttyS0,115200 console=tty0 '
            "post=reboot")
SENDER = ('auto=yes umode=snd udpcparam="--min-receivers 4 broadcast" dhcp=no ip=10.0.0.2/24 '
          "gateway=10.0.0.1 enableDiskmodule=no")


def _plan(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["plan", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_plan_text_receiver(capsys):
    rc, out, err = _plan(capsys, "--cmdline", RECEIVER)
    assert rc == 0 and err == ""
    assert "receive: /dev/nvme0n1 is overwritten" in out
    assert "unattended (auto=yes)" in out
    assert "the NIC with MAC 52:54:00:12:34:56 (BOOTIF)" in out
    assert "modprobe e1000e with copybreak=0" in out
    assert "DHCP, waiting up to 30 s" in out
    assert "server 10.0.0.1" in out and "(not used: dhcp=yes)" in out
    assert ("herdcast receive --file /dev/nvme0n1 --portbase 9002 --nokbd --compress gz"
            in out)
    assert "UDP 9002 (receivers) and 9003 (sender)" in out
    assert "reboot on success, wait on failure" in out
    assert "ttyS0,115200, tty0" in out
    assert "mounted" not in out, "mounted= is the sender's"


def test_plan_text_sender(capsys):
    rc, out, _ = _plan(capsys, "--cmdline", SENDER)
    assert rc == 0
    assert "send: /dev/sda is read whole" in out
    assert "the first interface with carrier (no BOOTIF)" in out
    assert "static 10.0.0.2/24 (netmask 255.255.255.0), gateway 10.0.0.1" in out
    assert "none loaded (enableDiskmodule=no)" in out
    assert "herdcast send --file /dev/sda --portbase 9000 --nokbd --broadcast --min-receivers 4" \
        in out
    assert "poweroff on success" in out
    assert "read-write mounted filesystem on the disk stops the node (mounted=refuse)" in out
    _, out, _ = _plan(capsys, "--cmdline", f"{SENDER} mounted=WARN")
    assert "is sent with a warning (mounted=warn)" in out


def test_plan_asks_for_enter_without_auto(capsys):
    _, out, _ = _plan(capsys, "--cmdline", "umode=rcv")
    assert "after Enter on the console (auto=no)" in out


def test_plan_json_is_typed(capsys):
    rc, out, err = _plan(capsys, "--cmdline", RECEIVER, "--json")
    assert rc == 0 and err == ""
    plan = json.loads(out)
    assert plan["umode"] == "rcv" and plan["mode"] == "receive"
    assert plan["port"] == 9002 and plan["auto"] is True and plan["dhcp"] is True
    assert plan["disk"] == "/dev/nvme0n1" and plan["compr"] == "gz"
    assert plan["bootif"] == "52:54:00:12:34:56"
    assert plan["udpcparam"] == [] and plan["netmodule"] == "e1000e"
    assert plan["diskmodule"] == "AUTO" and plan["enableDiskmodule"] is True
    assert plan["post"] == "reboot" and plan["onfail"] == "wait"
    assert plan["console"] == ["ttyS0,115200", "tty0"]
    assert plan["pxe_ip"]["server"] == "10.0.0.1" and plan["ip"] is None
    assert plan["transfer"][:2] == ["herdcast", "receive"]
    assert plan["transfer_argv"] == ["--file", "/dev/nvme0n1", "--portbase", "9002", "--nokbd",
                                     "--compress", "gz"]


def test_plan_json_static_and_udpcparam_list(capsys):
    _, out, _ = _plan(capsys, "--cmdline", SENDER, "--json")
    plan = json.loads(out)
    assert plan["udpcparam"] == ["--broadcast", "--min-receivers", "4"]
    assert (plan["ip"], plan["netmask"], plan["prefixlen"], plan["gateway"]) == \
        ("10.0.0.2", "255.255.255.0", 24, "10.0.0.1")
    assert plan["dhcp"] is False and plan["bootif"] is None


@pytest.mark.parametrize("bad, message", [
    ("umode=xmit", "umode=xmit: not a mode; use umode=snd or umode=rcv"),
    ("umode=rcv compr=rar", "compr=rar: not a compression"),
    ("umode=rcv port=99999", "port=99999: out of range; use port=1..65534 (default 9000)"),
    ("umode=rcv port=abc", "port=abc: not a number"),
    ("umode=rcv disk=", "disk=: empty"),
    ("umode=rcv dhcp=maybe", "dhcp=maybe: not yes or no"),
    ("auto=yes", "umode: missing"),
    ('umode=snd serve=yes udpcparam="--min-receivers 4"',
     'udpcparam="--min-receivers 4": --serve and --min-receivers do not go together'),
])
@pytest.mark.parametrize("as_json", [False, True])
def test_plan_bad_parameter_exits_2_with_one_line(capsys, bad, message, as_json):
    rc, out, err = _plan(capsys, "--cmdline", bad, *(["--json"] if as_json else []))
    assert rc == 2 and out == ""
    assert err.endswith("\n") and err.count("\n") == 1
    assert err.startswith(f"herdcast plan: {message}")


def test_plan_reads_a_cmdline_file(capsys, tmp_path):
    path = tmp_path / "cmdline"
    path.write_text("BOOT_IMAGE=/vmlinuz root=/dev/ram0 umode=snd compr=zstd\n")
    rc, out, _ = _plan(capsys, "--cmdline-file", str(path), "--json")
    assert rc == 0 and json.loads(out)["compr"] == "zstd"


def test_plan_unreadable_cmdline_file(capsys, tmp_path):
    rc, out, err = _plan(capsys, "--cmdline-file", str(tmp_path / "missing"))
    assert rc == 2 and out == ""
    assert err.startswith("herdcast plan: cannot read ") and err.count("\n") == 1


def test_plan_defaults_to_proc_cmdline(capsys, monkeypatch, tmp_path):
    import agent.cmd.plan

    assert agent.cmd.plan.PROC_CMDLINE == "/proc/cmdline"
    fake = tmp_path / "proc_cmdline"
    fake.write_text("quiet umode=rcv disk=/dev/vdb\n")
    monkeypatch.setattr(agent.cmd.plan, "PROC_CMDLINE", str(fake))
    rc, out, _ = _plan(capsys, "--json")
    assert rc == 0 and json.loads(out)["disk"] == "/dev/vdb"


def test_plan_usage_error_returns_2(capsys):
    rc, _, err = _plan(capsys, "--bogus")
    assert rc == 2 and "usage: herdcast plan" in err


def test_plan_refuses_a_console_naming_a_disk(capsys):
    """Issue 17 item 11: console= naming the disk being cloned is a bad parameter before
    anything is touched (its lines would land on the disk after the digest)."""
    for console in ("sda", "/dev/nvme0n1p1", "vda,115200", "/dev/disk/by-id/ata-X"):
        rc, out, err = _plan(capsys, "--cmdline", f"umode=rcv disk=/dev/sda "
                                                  f"console=ttyS0,115200 console={console}")
        assert rc == 2 and out == "", err
        assert err.startswith(f"herdcast plan: console={console}: names a disk"), err
    rc, _, _ = _plan(capsys, "--cmdline", "umode=rcv console=ttyS0,115200n8 console=tty0")
    assert rc == 0


def test_plan_names_misspelled_parameters(capsys):
    """A key the kernel would keep but that is nearly ours is named with the parameter it
    leaves at its default; the kernel's own keys (quiet, root=) are not."""
    rc, out, err = _plan(capsys, "--cmdline",
                         "quiet root=/dev/ram0 umode=rcv diks=/dev/sdb verfiy=readback")
    assert rc == 0 and err == ""
    warnings = [line for line in out.splitlines() if "WARNING" in line]
    assert len(warnings) == 2, out
    assert "diks=/dev/sdb is not a herdcast parameter" in warnings[0]
    assert "did you mean disk=?" in warnings[0]
    assert "verfiy=readback" in warnings[1] and "did you mean verify=?" in warnings[1]
    _, out, _ = _plan(capsys, "--cmdline", "umode=rcv diks=/dev/sdb", "--json")
    assert json.loads(out)["warnings"] == [
        "diks=/dev/sdb is not a herdcast parameter (left to the kernel; disk keeps its "
        "value): did you mean disk=?"]
    _, out, _ = _plan(capsys, "--cmdline", "quiet umode=rcv", "--json")
    assert json.loads(out)["warnings"] == []


def test_plan_missing_umode_names_the_near_key(capsys):
    rc, _, err = _plan(capsys, "--cmdline", "umod=rcv auto=yes")
    assert rc == 2
    assert err.startswith("herdcast plan: umode: missing (umod=rcv is not it: did you mean "
                          "umode=?)")


def test_plan_of_a_serving_node_never_reboots(capsys):
    _, out, _ = _plan(capsys, "--cmdline", "umode=snd serve=yes post=reboot")
    after = next(line for line in out.splitlines() if line.strip().startswith("after"))
    assert "serves until powered off" in after and "never reached" in after
    assert "reboot on success" not in after
