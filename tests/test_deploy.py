"""`herdcast deploy` end to end in network namespaces, herdcast receivers standing in for
the nodes (the VM lab, tests/test_pxe_deploy.py, boots real ones): the server arms every
node, powers them through Redfish (sushy-tools' emulator, fake driver, basic auth on) or
Wake-on-LAN, serves the image, disarms each node as its digest agrees, reports a node whose
BMC answers but which never connects, and exits non-zero for it; exit 0 when all agree."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from peers import HERDCAST, herdcast_receiver, make_source, sha

from builder import pxelinux
from builder.lab.netlab import NetLab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]
UUIDS = ["11111111-9e44-4fa7-8e91-f3527a1ef094", "22222222-9e44-4fa7-8e91-f3527a1ef094"]


def mac_of(host) -> str:
    return host.run("cat", "/sys/class/net/eth0/address").stdout.strip()


def tftp_root(tmp_path: Path) -> Path:
    root = tmp_path / "tftpboot"
    (root / "pxelinux.cfg").mkdir(parents=True)
    (root / "grub").mkdir()
    (root / "pxelinux.cfg" / "default").write_text(pxelinux.default_config())
    return root


def start_redfish(host, tmp_path: Path) -> subprocess.Popen:
    """sushy-emulator (fake driver) on host:8000, user admin, password s3cret."""
    import bcrypt

    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("admin:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode() + "\n")
    config = tmp_path / "sushy.conf"
    systems = [{"uuid": u, "name": f"vm{i}", "power_state": "Off", "external_notifier": False,
                "nics": []} for i, u in enumerate(UUIDS)]
    config.write_text(textwrap.dedent(f"""
        SUSHY_EMULATOR_FAKE_SYSTEMS = {systems!r}
        SUSHY_EMULATOR_STATE_DIR = {str(tmp_path / "sushy-state")!r}
        SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}
    """))
    log = open(tmp_path / "sushy.log", "w")  # noqa: SIM115 - the lab's process holds it
    proc = host.popen([sys.executable, "-c", "from sushy_tools.emulator.main import main; "
                       "main()", "--fake", "--config", str(config), "-i", host.ip, "-p", "8000"],
                      stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        probe = host.run("python3", "-c", "import socket; socket.create_connection("
                         f"('{host.ip}', 8000), 1)", check=False)
        if probe.returncode == 0:
            return proc
        time.sleep(0.3)
    raise AssertionError("sushy-emulator did not start: " + (tmp_path / "sushy.log").read_text())


def run_deploy(server, image: Path, inventory: Path, root: Path, report: Path, wait: float,
               log: Path) -> subprocess.Popen:
    return server.popen([*HERDCAST, "deploy", str(image), "--inventory", str(inventory),
                         "--tftp-root", str(root), "--wait", str(wait), "--interface", "eth0",
                         "--report", str(report)], stdout=log.open("w"),
                        stderr=subprocess.STDOUT)


def test_deploy_arms_powers_serves_disarms_and_names_the_silent_node(tmp_path):
    image = make_source(tmp_path, 3 * 1024 * 1024 + 17)
    root = tftp_root(tmp_path)
    with NetLab(4, net=173) as lab:
        server, bmc = lab.hosts[0], lab.hosts[3]
        start_redfish(bmc, tmp_path)
        macs = [mac_of(h) for h in lab.hosts[1:3]]
        pwfile = tmp_path / "bmc.pw"
        pwfile.write_text("s3cret\n")
        pwfile.chmod(0o600)
        inventory = tmp_path / "fleet.toml"
        inventory.write_text(textwrap.dedent(f"""
            [[node]]
            name = "alpha"
            mac = "{macs[0]}"
            disk = "/dev/vda"

            [[node]]
            name = "bravo"
            mac = "{macs[1]}"
            bmc = "redfish+http://{bmc.ip}:8000/redfish/v1/Systems/{UUIDS[0]}"
            username = "admin"
            password_file = "{pwfile}"

            [[node]]
            name = "charlie"
            mac = "52:54:00:dd:00:03"
            bmc = "redfish+http://{bmc.ip}:8000/redfish/v1/Systems/{UUIDS[1]}"
            username = "admin"
            password = "s3cret"
        """))
        outs = [tmp_path / "alpha.out", tmp_path / "bravo.out"]
        receivers = [herdcast_receiver(h, out, tmp_path / f"{h.ns}.log")
                     for h, out in zip(lab.hosts[1:3], outs, strict=True)]
        report = tmp_path / "deploy.json"
        log = tmp_path / "deploy.log"
        started = time.monotonic()
        # --wait is what the silent node is given (the two others connect within a
        # second or two of the start, and a later connection still counts)
        deploy = run_deploy(server, image, inventory, root, report, 6, log)
        status = deploy.wait(timeout=120)
        took = time.monotonic() - started
        for r in receivers:
            r.wait(timeout=30)
    said = log.read_text()
    assert status == 1, said
    assert [sha(o) for o in outs] == [sha(image)] * 2
    assert "s3cret" not in said and "s3cret" not in report.read_text()
    assert "alpha: no BMC: Wake-on-LAN sent on eth0" in said
    assert "bravo: Redfish: next boot PXE once, powered on" in said
    doc = json.loads(report.read_text())
    nodes = {n["name"]: n for n in doc["nodes"]}
    assert nodes["alpha"]["state"] == nodes["bravo"]["state"] == "agreed", said
    assert not nodes["alpha"]["armed"] and nodes["bravo"]["next_boot"] == "local disk"
    assert nodes["bravo"]["bmc"] == f"redfish+http://{bmc.ip}:8000/redfish/v1/Systems/{UUIDS[0]}"
    charlie = nodes["charlie"]
    assert charlie["state"] == "never connected" and charlie["armed"]
    assert "never connected within 6 s" in charlie["reason"]
    assert "BMC says power" in charlie["reason"] and charlie["bmc_power"] in ("on", "off")
    assert not doc["ok"] and doc["sha256"]
    # the sender's own report names the receivers by inventory name
    assert sorted(r["hostname"] for r in doc["send"]["receivers"]) == ["alpha", "bravo"]
    # per-MAC files: the two that agreed boot their disk, the silent one is still armed
    for mac in macs:
        assert "LOCALBOOT 0" in (root / "pxelinux.cfg" / pxelinux.mac_file_name(mac)).read_text()
    armed = (root / "pxelinux.cfg" / "01-52-54-00-dd-00-03").read_text()
    assert "post=reboot" in pxelinux.boot_append_line(armed)
    assert "disk=/dev/vda" not in armed
    assert 6 <= took < 60, said  # it stopped once --wait ran out, not later


def test_deploy_exits_0_when_every_node_agreed(tmp_path):
    image = make_source(tmp_path, 1024 * 1024 + 3)
    root = tftp_root(tmp_path)
    with NetLab(2, net=174) as lab:
        node = lab.hosts[1]
        inventory = tmp_path / "fleet.toml"
        inventory.write_text(f'[[node]]\nname = "solo"\nmac = "{mac_of(node)}"\n')
        receiver = herdcast_receiver(node, tmp_path / "solo.out", tmp_path / "solo.log")
        log = tmp_path / "deploy.log"
        deploy = run_deploy(lab.hosts[0], image, inventory, root, tmp_path / "r.json", 600,
                            log)
        status = deploy.wait(timeout=60)
        receiver.wait(timeout=30)
    said = log.read_text()
    assert status == 0, said
    assert "all 1 node(s) agreed" in said and "solo agreed: disarmed" in said
    assert sha(tmp_path / "solo.out") == sha(image)
