"""builder.lab.vms without VMs: what a boot asks of `ip` and qemu (the real lab runs in
test_pxe_lab.py)."""

from __future__ import annotations

from pathlib import Path

from builder.lab import vms as labmod
from builder.lab.vms import PxeLab


class _Proc:
    def poll(self):
        return 0


def test_boot_starts_from_a_fresh_console_on_the_jumbo_lan(tmp_path, monkeypatch):
    commands: list[tuple[str, ...]] = []
    started: list[list[str]] = []
    monkeypatch.setattr(labmod, "_sh", lambda *argv, check=True: commands.append(argv))
    monkeypatch.setattr(labmod.subprocess, "Popen",
                        lambda argv, **kw: started.append(argv) or _Proc())
    lab = PxeLab(Path("unused"), tmp_path, name="hctest")
    node = lab.add_node("rcv", "e1000", "sata", tmp_path / "disk.img")
    stale = tmp_path / "rcv.console.log"
    stale.write_text("herdcast: receiving /dev/sda (last run)\n")
    lab.boot(node)
    # the last run's console would otherwise count as this run's progress
    assert not stale.exists() and node.console == stale
    assert ("ip", "-n", "hctest", "link", "set", "tap0", "mtu", "9000", "master", "br0",
            "up") in commands
    (argv,) = started
    assert argv[argv.index("-cpu") + 1] == "qemu64"
    assert f"e1000,netdev=n0,mac={node.mac}" in argv


def test_first_data_is_when_data_flows_not_when_a_node_starts_waiting():
    from builder.lab.demo import _FIRST_DATA

    waiting = ["herdcast: receiving /dev/sda on port 9000", "herdcast: sending /dev/vda on port "
               "9000", "Connected as #1 to 10.99.0.168", "Listening to multicast on 233.255.0.1"]
    assert not any(_FIRST_DATA.search(line) for line in waiting)
    assert _FIRST_DATA.search("herdcast send: starting (3 receiver(s) connected): 3 receivers")
    assert _FIRST_DATA.search("Transfer started: first data from the sender")
