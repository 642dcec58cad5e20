"""`herdcast deploy` closes the loop on real machines (builder/lab/deploylab.py): four
powered-off libvirt domains in the PXE lab's namespace, Debian's libvirtd running there with
the lab's own directories; one behind sushy-tools' Redfish emulator, one behind virtualbmc
(IPMI), one with neither (Wake-on-LAN), and one whose BMC answers but whose NIC's cable is
pulled. The deploy powers each on, images the three it reaches with a master disk holding
a tiny bootable system, disarms each as its digest agrees, and each reboots into the system
it received: its console shows that system booting from its own disk and printing its
/etc/hostname (the node's inventory name once the node takes hostname=, the master's name
before). The fourth is reported never connected, with its BMC's word, and the exit is 1.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ensure_tftpboot

from agent.boot.params import PARAMETERS
from builder.lab.deploylab import BMC_PASSWORD, FLEET, run_deploy_lab
from builder.pxelinux import mac_file_name

pytestmark = [pytest.mark.slow, pytest.mark.netns, pytest.mark.timeout(900)]


def test_deploy_powers_on_images_and_boots_every_node_into_its_new_system(tmp_path):
    tftpboot = ensure_tftpboot()
    lines: list[str] = []
    run = run_deploy_lab(tftpboot, tmp_path / "deploy", wait=150, timeout=480,
                         show=lines.append)
    said = "\n".join(lines) + "\n" + run.output
    assert run.status == 1, said  # node-unplugged never connected
    reached = [name for name, _, plugged in FLEET if plugged]
    assert run.report is not None, said
    nodes = {n["name"]: n for n in run.report["nodes"]}
    # each node was powered on its own way
    assert "node-redfish: Redfish: next boot PXE once, powered on" in run.output, said
    assert "node-ipmi: IPMI: next boot PXE once, powered on" in run.output, said
    assert "node-wol: no BMC: Wake-on-LAN sent on br0" in run.output, said
    assert "magic packet for node-wol: powered on" in run.logs["wol"], run.logs
    for name in reached:
        node = nodes[name]
        assert node["state"] == "agreed" and node["digest"], said
        assert not node["armed"] and node["next_boot"] == "local disk", said
        # its per-MAC file now boots the disk, and the disk booted the system it received
        mac = node["mac"]
        menu = (tmp_path / "deploy" / "lab" / "tftpboot" / "pxelinux.cfg" /
                mac_file_name(mac)).read_text()
        assert "LOCALBOOT 0" in menu, menu
        console = run.console(name)
        assert "herdcast: SUCCESS: received" in console, console[-3000:]
        after = console.split("herdcast: rebooting", 1)[-1]
        expected = name if "hostname" in PARAMETERS else "master"
        assert run.booted_hostname(name) == expected, after[-3000:]
        assert "herdcast-tiny: booted from its own disk (/dev/vda1" in after, after[-3000:]
        assert run.states[name] == "shut off", said  # the tiny system powered it off
    silent = nodes["node-unplugged"]
    assert silent["state"] == "never connected" and silent["armed"], said
    assert silent["bmc_power"] == "on" and "BMC says power on" in silent["reason"], said
    assert "never connected within 150 s" in silent["reason"], said
    assert run.report["ok"] is False and "1 of 4 node(s) not agreed" in run.report["error"]
    # the BMC password is in no output, log or report
    everything = said + str(run.report) + "".join(run.logs.values())
    assert BMC_PASSWORD not in everything
    # libvirtd, its qemus and the BMC emulators are gone with the lab
    left = [p for p in Path("/proc").glob("[0-9]*") if _mentions(p, str(tmp_path))]
    assert not left, [(p.name, (p / "cmdline").read_bytes()[:200]) for p in left]
    print(f"deploy lab: {run.seconds:.0f} s")


def _mentions(proc: Path, text: str) -> bool:
    try:
        return text.encode() in (proc / "cmdline").read_bytes()
    except OSError:
        return False
