"""herdcast deploy's flow without a network: arming, powering, disarming as digests agree, a
failed node left armed, a silent node reported with what its BMC says; the arm/disarm
files themselves (pxelinux and GRUB) and `python -m builder node MAC arm|disarm|local`."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from agent.deploy import report
from agent.deploy.bmc import BmcError
from agent.deploy.flow import DeployError, Deployment, NodeRun
from agent.deploy.inventory import Bmc, Inventory, Node
from agent.transfer.result import TransferResult
from agent.transfer.send.record import Receiver, Verdict
from builder import bootcfg, pxelinux
from builder.__main__ import main as builder_main

MACS = ["52:54:00:aa:00:01", "52:54:00:aa:00:02", "52:54:00:aa:00:03"]


@pytest.fixture
def root(tmp_path):
    (tmp_path / "pxelinux.cfg").mkdir()
    (tmp_path / "grub").mkdir()
    (tmp_path / "pxelinux.cfg" / "default").write_text(pxelinux.default_config())
    return tmp_path


def files(root, mac):
    name = pxelinux.mac_file_name(mac)
    return ((root / "pxelinux.cfg" / name).read_text(),
            (root / "grub" / f"grub.cfg-{name}").read_text())


class FakePower:
    def __init__(self, state="off", fail=None):
        self.state, self.fail, self.calls = state, fail, []

    def boot_from_network_once(self):
        self.calls.append("pxe once")
        if self.fail:
            raise BmcError(self.fail)

    def power_on_or_cycle(self):
        self.calls.append("on")
        self.state = "on"
        return "fake: powered on"

    def power_state(self):
        self.calls.append("state?")
        return self.state


def deployment(root, wait=60.0, powers=None, params=((), (), ())):
    bmc = Bmc("ipmi", "10.0.0.9", 623, "admin", "s3cret")
    nodes = tuple(Node(f"node0{i + 1}", mac, bmc, tuple(params[i]))
                  for i, mac in enumerate(MACS))
    powers = powers or [FakePower() for _ in nodes]
    runs = [NodeRun(n, p) for n, p in zip(nodes, powers, strict=True)]
    return Deployment(Inventory("fleet.toml", nodes), root, wait, runs=runs), powers


def test_arm_then_disarm_as_each_digest_agrees(root):
    deploy, powers = deployment(root, params=([("disk", "/dev/vda")], (), ()))
    deploy.check()
    deploy.arm_all()
    pxe, grub = files(root, MACS[0])
    line = pxelinux.boot_append_line(pxe)
    assert "umode=rcv" in line and "post=reboot" in line and "disk=/dev/vda" in line
    assert "armed by herdcast deploy for node01" in pxe and "post=reboot" in grub
    deploy.power_all()
    assert all(p.calls == ["pxe once", "on"] for p in powers)
    assert not deploy.should_stop()

    ok = Receiver("10.0.0.21", digest="ab" * 32, herdcast=True, mac=MACS[0], bytes=9,
                  verdict=Verdict.OK)
    bad = Receiver("10.0.0.22", verdict=Verdict.DIGEST_MISMATCH, herdcast=True, mac=MACS[1])
    for r in (ok, bad):
        deploy.connected(r)
    assert (ok.hostname, bad.hostname) == ("node01", "node02")  # the live view's names
    deploy.verdict(ok)
    deploy.verdict(bad)
    pxe, grub = files(root, MACS[0])
    assert "LOCALBOOT 0" in pxe and "exit" in grub and "umode=rcv" not in pxe
    assert "post=reboot" in files(root, MACS[1])[0]  # the failed node stays armed
    runs = deploy.runs
    assert [r.state for r in runs] == ["agreed", "failed", "armed"]
    assert runs[1].armed and "digest" in runs[1].reason.lower()
    assert not deploy.should_stop()  # node03 may still come


def test_a_node_that_never_connects_is_reported_with_its_bmcs_word(root):
    powers = [FakePower(), FakePower(), FakePower(fail="node03: IPMI: no answer")]
    deploy, _ = deployment(root, wait=0.01, powers=powers)
    deploy.arm_all()
    deploy.power_all()
    for i in (0, 1):
        r = Receiver(f"10.0.0.2{i}", digest="cd" * 32, herdcast=True, mac=MACS[i],
                     verdict=Verdict.OK)
        deploy.connected(r)
        deploy.verdict(r)
    time.sleep(0.05)
    assert deploy.should_stop()
    silent = deploy.runs[2]
    assert silent.state == "never connected" and silent.armed
    assert "never connected within 0.01 s" in silent.reason
    assert "IPMI: no answer" in silent.reason and "BMC says power off" in silent.reason
    status = deploy.finish(TransferResult(ok=True))
    assert status == 1
    doc = report.build(deploy, TransferResult(ok=True, sha256="cd" * 32), "img", status, None)
    json.dumps(doc)
    assert [(n["name"], n["state"], n["next_boot"]) for n in doc["nodes"]] == [
        ("node01", "agreed", "local disk"), ("node02", "agreed", "local disk"),
        ("node03", "never connected", "network: armed, images itself again")]
    assert doc["nodes"][0]["bmc"] == "ipmi://10.0.0.9:623" and "s3cret" not in json.dumps(doc)
    assert not doc["ok"] and "node03 never connected" in doc["error"]
    table = report.table(deploy)
    assert table.splitlines()[1].startswith("node01") and "never connected" in table


def test_every_node_agreed_is_exit_0(root):
    deploy, _ = deployment(root)
    deploy.arm_all()
    deploy.power_all()
    for i, mac in enumerate(MACS):
        r = Receiver(f"10.0.0.2{i}", digest="ef" * 32, herdcast=True, mac=mac, verdict=Verdict.OK)
        deploy.connected(r)
        deploy.verdict(r)
    assert deploy.should_stop() and deploy.finish(TransferResult(ok=True)) == 0
    assert "all 3 node(s) agreed" in report.summary(deploy)


def test_a_stock_receiver_without_a_digest_is_not_agreed(root):
    deploy, _ = deployment(root)
    deploy.arm_all()
    r = Receiver("10.0.0.20", mac=MACS[0], verdict=Verdict.OK)  # ok, but nothing to agree on
    deploy.verdict(r)
    assert deploy.runs[0].state == "failed" and deploy.runs[0].armed


def test_a_bad_boot_parameter_stops_before_anything_is_armed(root):
    deploy, powers = deployment(root, params=((), [("compr", "rar")], ()))
    with pytest.raises(DeployError) as err:
        deploy.check()
    assert str(err.value).startswith("node node02: ") and "compr" in str(err.value)
    assert sorted(p.name for p in (root / "pxelinux.cfg").iterdir()) == ["default"]
    deploy, _ = deployment(root, params=([("post", "poweroff")], (), ()))
    with pytest.raises(DeployError, match="node node01: parameter post=poweroff"):
        deploy.check()


def test_builder_node_arm_disarm_local(root, capsys):
    mac = "52:54:00:12:34:56"
    assert builder_main(["node", mac, "arm", "disk=/dev/nvme0n1", "--tftp-root", str(root)]) == 0
    pxe, grub = files(root, mac)
    line = pxelinux.boot_append_line(pxe)
    for word in ("umode=rcv", "auto=yes", "post=reboot", "disk=/dev/nvme0n1"):
        assert word in line
    assert "post=reboot" in grub and "menuentry receiver" in grub
    assert builder_main(["node", mac, "disarm", "--tftp-root", str(root)]) == 0
    pxe, grub = files(root, mac)
    menu = pxelinux.parse_menu(pxe)
    assert menu.booting().name == "local" and menu.booting().localboot == 0
    assert "\n    exit\n" in grub and "\n    linux " not in grub
    assert builder_main(["node", mac, "arm", "umode=snd", "--tftp-root", str(root)]) == 2
    assert "an armed node is umode=rcv auto=yes post=reboot" in capsys.readouterr().err
    assert "LOCALBOOT" in files(root, mac)[0]  # the refused arm wrote nothing
    assert builder_main(["node", mac, "local", "x=1", "--tftp-root", str(root)]) == 2
    assert builder_main(["node", mac, "local", "--tftp-root", str(root)]) == 0
    # sync keeps the twin of a disarmed file
    bootcfg.sync(root)
    assert "exit" in files(root, mac)[1]


def test_deploy_refuses_bad_input_in_one_line(tmp_path):
    inv = tmp_path / "fleet.toml"
    inv.write_text('[[node]]\nname = "n1"\nmac = "52:54:00:aa:00:01"\n')
    cases = [
        (["deploy", str(tmp_path / "no.img"), "--inventory", str(inv)], "no such file"),
        (["deploy", str(inv), "--inventory", str(tmp_path / "none.toml")], "--inventory"),
        (["deploy", str(inv), "--inventory", str(inv), "--wait", "0"], "--wait 0"),
        (["deploy", str(inv), "--inventory", str(inv), "--tftp-root", str(tmp_path)],
         "pxelinux.cfg/default not found"),
    ]
    for argv, words in cases:
        proc = subprocess.run([sys.executable, "-m", "agent", *argv], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2, (argv, proc.stdout, proc.stderr)
        err = proc.stderr.strip()
        assert len(err.splitlines()) == 1 and err.startswith("herdcast deploy: ")
        assert words in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fleet.toml"]
