"""herdcast deploy's BMC drivers: Redfish through sushy against sushy-tools' emulator (its fake
driver, with basic auth on), IPMI through pyghmi against pyghmi's own BMC server in a network
namespace, and Wake-on-LAN's magic packet on the lab interface."""

from __future__ import annotations

import json
import sys
import textwrap
import time

import pytest
from fakebmc import connector, emulator

from agent.deploy.bmc import BmcError, WakeOnLan, magic_packet
from agent.deploy.drivers import driver_for
from agent.deploy.inventory import Bmc, Node
from builder.lab.netlab import NetLab

UUIDS = [f"0000000{i}-9e44-4fa7-8e91-f3527a1ef094" for i in range(4)]


@pytest.fixture(scope="module")
def redfish_app(tmp_path_factory):
    import bcrypt

    state = tmp_path_factory.mktemp("sushy")
    htpasswd = state / "htpasswd"
    htpasswd.write_text("admin:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode() + "\n")
    systems = [{"uuid": u, "name": f"vm{i}", "power_state": "Off", "external_notifier": False,
                "nics": [{"mac": f"52:54:00:aa:00:0{i}", "ip": f"10.0.0.{i}"}]}
               for i, u in enumerate(UUIDS)]
    return emulator(str(state), systems, str(htpasswd))


def redfish_node(uuid: str, password: str = "s3cret") -> Node:
    return Node("node01", "52:54:00:aa:00:01",
                Bmc("redfish", "bmc.test", 80, "admin", password, scheme="http",
                    system=f"/redfish/v1/Systems/{uuid}"))


def redfish(app, node: Node):
    from agent.deploy.redfish import Redfish

    conn, adapter = connector(app, node.bmc.base_url)
    return Redfish(node, connector=conn), adapter


def fake_system(app, uuid: str) -> dict:
    return app.systems._get(uuid)


def test_redfish_sets_pxe_once_and_powers_an_off_node_on(redfish_app):
    driver, adapter = redfish(redfish_app, redfish_node(UUIDS[0]))
    assert driver.power_state() == "off"
    driver.boot_from_network_once()
    assert "powered on" in driver.power_on_or_cycle()
    patches = [json.loads(r.body)["Boot"] for r in adapter.requests if r.method == "PATCH"]
    assert any(p["BootSourceOverrideTarget"] == "Pxe" and p["BootSourceOverrideEnabled"] ==
               "Once" for p in patches), patches
    posts = [(r.url, json.loads(r.body)) for r in adapter.requests if r.method == "POST"]
    assert posts[-1][0].endswith("/Actions/ComputerSystem.Reset")
    assert posts[-1][1] == {"ResetType": "On"}
    system = fake_system(redfish_app, UUIDS[0])
    assert system["boot_device"] == "Pxe" and system["pending_power"]["power_state"] == "On"
    # every request carried the inventory's credentials (basic auth is on)
    assert all(r.headers.get("Authorization", "").startswith("Basic ")
               for r in adapter.requests if r.path_url.startswith("/redfish/v1/Systems"))


def test_redfish_restarts_a_node_that_is_on(redfish_app):
    system = fake_system(redfish_app, UUIDS[1])
    system["power_state"] = "On"
    redfish_app.systems._update(system)
    driver, adapter = redfish(redfish_app, redfish_node(UUIDS[1]))
    assert driver.power_state() == "on"
    assert "restarted" in driver.power_on_or_cycle()
    post = [json.loads(r.body) for r in adapter.requests if r.method == "POST"][-1]
    assert post == {"ResetType": "ForceRestart"}


def test_redfish_refusing_the_password_is_one_line_without_it(redfish_app):
    driver, _ = redfish(redfish_app, redfish_node(UUIDS[2], password="wr0ng-pass"))
    with pytest.raises(BmcError) as err:
        driver.boot_from_network_once()
    line = str(err.value)
    assert line.startswith("node node01: Redfish redfish+http://bmc.test:80/redfish/v1/")
    assert "wr0ng-pass" not in line and "\n" not in line and " -- check the BMC" in line


def test_redfish_verifies_certificates_unless_told_not_to(monkeypatch):
    import sushy

    seen = []

    class Stop(Exception):
        pass

    def fake(base_url, **kwargs):
        seen.append((base_url, kwargs["verify"]))
        raise Stop("no BMC here")

    monkeypatch.setattr(sushy, "Sushy", fake)
    for verify in (True, False):
        node = Node("n", "52:54:00:aa:00:01", Bmc("redfish", "bmc", 443, "u", "p",
                                                  scheme="https", verify_tls=verify))
        with pytest.raises(BmcError, match="connecting: no BMC here"):
            driver_for(node).power_state()
    assert seen == [("https://bmc:443", True), ("https://bmc:443", False)]


def test_magic_packet():
    packet = magic_packet("52:54:00:aa:00:01")
    assert len(packet) == 102 and packet[:6] == b"\xff" * 6
    assert packet[6:] == bytes.fromhex("525400aa0001") * 16


IPMI_BMC = textwrap.dedent("""
    import sys
    from pyghmi.ipmi import bmc
    from pyghmi.ipmi.private import serversession
    from builder.lab.bmcs import refuse_what_it_cannot_do

    refuse_what_it_cannot_do(serversession.ServerSession)

    class Fake(bmc.Bmc):
        state = sys.argv[1]
        def log(self, what):
            print(what, flush=True)
        def get_power_state(self):
            return self.state
        def power_on(self):
            self.log("power on"); self.state = "on"
        def power_reset(self):
            self.log("power reset")
        def get_boot_device(self):
            return "default"
        def set_boot_device(self, device):
            self.log("boot " + device)

    Fake({"admin": "s3cret"}, port=6230, address="::").listen()
""")

IPMI_CLIENT = textwrap.dedent("""
    import sys
    from agent.deploy.bmc import BmcError
    from agent.deploy.inventory import Bmc, Node
    from agent.deploy.ipmi import Ipmi

    node = Node("node03", "52:54:00:aa:00:03", Bmc("ipmi", "127.0.0.1", 6230, "admin",
                                                   sys.argv[1]))
    driver = Ipmi(node)
    try:
        print("state", driver.power_state())
        driver.boot_from_network_once()
        print("did", driver.power_on_or_cycle())
        print("state", driver.power_state())
    except BmcError as exc:
        print("error", exc)
""")


@pytest.mark.netns
@pytest.mark.parametrize("before, action", [("off", "power on"), ("on", "power reset")])
def test_ipmi_sets_pxe_once_and_powers_on_or_resets(before, action):
    with NetLab(1, net=171) as lab:
        host = lab.hosts[0]
        import subprocess

        server = host.popen([sys.executable, "-c", IPMI_BMC, before], stdout=subprocess.PIPE,
                            text=True)
        time.sleep(1.0)
        out = host.run(sys.executable, "-c", IPMI_CLIENT, "s3cret", timeout=60).stdout
        assert f"state {before}" in out, out
        assert ("powered on" if before == "off" else "reset (it was on)") in out, out
        wrong = host.run(sys.executable, "-c", IPMI_CLIENT, "wr0ng-pass", timeout=90).stdout
        server.kill()
        log = server.communicate(timeout=5)[0]
    assert log.splitlines() == ["boot network", action]
    assert wrong.startswith("error node node03: IPMI ipmi://127.0.0.1:6230: logging in")
    assert "wr0ng-pass" not in wrong


@pytest.mark.netns
def test_wake_on_lan_goes_out_on_the_interface_only():
    listen = textwrap.dedent("""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", 9)); s.settimeout(10)
        print(s.recvfrom(200)[0].hex(), flush=True)
    """)
    send = textwrap.dedent("""
        import sys
        from agent.deploy.bmc import WakeOnLan
        from agent.deploy.inventory import Node
        print(WakeOnLan(Node("n4", "52:54:00:aa:00:04", None), sys.argv[1]).power_on_or_cycle())
    """)
    import subprocess

    with NetLab(2, net=172) as lab:
        rx = lab.hosts[1].popen([sys.executable, "-c", listen], stdout=subprocess.PIPE,
                                text=True)
        time.sleep(0.5)
        said = lab.hosts[0].run(sys.executable, "-c", send, "eth0").stdout
        got = rx.communicate(timeout=15)[0].strip()
        bad = lab.hosts[0].run(sys.executable, "-c", send, "nosuch0", check=False)
    assert "Wake-on-LAN sent on eth0" in said
    assert bytes.fromhex(got) == magic_packet("52:54:00:aa:00:04")
    assert "Wake-on-LAN on nosuch0" in bad.stdout + bad.stderr
    assert "by hand" in WakeOnLan(Node("n", "52:54:00:aa:00:04", None), None).power_on_or_cycle()
