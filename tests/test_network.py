"""agent.net.network in namespaces of our own: static, DHCP (dnsmasq), BOOTIF, no carrier."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from agent.net.network import NetworkError, broadcast_of, prefixlen_of

ROOT = Path(__file__).resolve().parent.parent


def _in_a_fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_the_network_step_imports_only_the_pyroute2_it_uses():
    """`import pyroute2` runs an __init__ that imports NDB and sqlite3 (seconds of a node's
    boot under emulation); the network step's imports must not."""
    proc = _in_a_fresh_python("""
        import sys
        import agent.net.network
        from pyroute2.dhcp.client import AsyncDHCPClient
        from pyroute2.dhcp.enums.dhcp import Option
        from pyroute2.dhcp.fsm import State
        from pyroute2.dhcp.leases import Lease
        print(sorted(m for m in ("sqlite3", "pyroute2.ndb", "pyroute2.ipdb")
                     if m in sys.modules))
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_pyroute2s_public_names_still_work_after_the_network_step():
    proc = _in_a_fresh_python("""
        import agent.net.network
        import pyroute2
        from pyroute2 import NDB, IPRoute
        from pyroute2.iproute.linux import IPRoute as LinuxIPRoute
        print(NDB.__name__, IPRoute is LinuxIPRoute, pyroute2.IPRoute is IPRoute)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["NDB", "True", "True"]


def test_broadcast_and_prefix():
    assert broadcast_of("192.168.1.20", 24) == "192.168.1.255"
    assert broadcast_of("10.0.5.1", 16) == "10.0.255.255"
    assert prefixlen_of("255.255.255.0", "10.0.0.1") == 24
    assert prefixlen_of("20", "10.0.0.1") == 20
    assert prefixlen_of(None, "10.1.2.3") == 8
    assert prefixlen_of(None, "192.168.0.3") == 24
    with pytest.raises(NetworkError, match="netmask=255.0.255.0"):
        prefixlen_of("255.0.255.0", "10.0.0.1")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=check)


@contextlib.contextmanager
def pair(server_ip: str = "10.66.0.1/24", client_mac: str = "02:00:00:00:66:02",
         peer_up: bool = True):
    """Namespace `node` (eth0 and eth1, unconfigured and down) cabled to `srv`."""
    tag = uuid.uuid4().hex[:6]
    node, srv = f"hcnode{tag}", f"hcsrv{tag}"
    sh("ip", "netns", "add", node)
    try:
        sh("ip", "netns", "add", srv)
        sh("ip", "-n", node, "link", "add", "eth0", "address", client_mac, "type", "veth",
           "peer", "name", "eth0", "netns", srv)
        # a second NIC, its cable end down: no carrier
        sh("ip", "-n", node, "link", "add", "eth1", "address", "02:00:00:00:66:03", "type",
           "veth", "peer", "name", "eth9", "netns", srv)
        sh("ip", "-n", srv, "addr", "add", server_ip, "brd", "+", "dev", "eth0")
        if peer_up:
            sh("ip", "-n", srv, "link", "set", "eth0", "up")
        sh("ip", "-n", srv, "link", "set", "lo", "up")
        yield node, srv
    finally:
        sh("ip", "netns", "delete", srv, check=False)
        sh("ip", "netns", "delete", node, check=False)


def run_in(ns: str, code: str, timeout: float = 60) -> dict:
    """Run agent.net.network code in namespace `ns`; it prints one JSON object."""
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                           textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


SETUP = """
    import dataclasses, json
    from agent.net.network import NetworkError, setup_network
    try:
        cfg = setup_network(say=lambda s: None, {args})
        print(json.dumps(dataclasses.asdict(cfg)))
    except NetworkError as exc:
        print(json.dumps({{"error": str(exc)}}))
"""


def addr_show(ns: str) -> str:
    return sh("ip", "-n", ns, "-4", "addr", "show", "dev", "eth0").stdout


@pytest.mark.netns
def test_static_address_gets_broadcast_and_gateway():
    with pair() as (node, srv):
        cfg = run_in(node, SETUP.format(args="dhcp=False, ip='10.66.0.7', "
                                             "netmask='255.255.255.0', gateway='10.66.0.1'"))
        assert cfg["ifname"] == "eth0" and cfg["method"] == "static"
        assert "inet 10.66.0.7/24 brd 10.66.0.255" in addr_show(node)
        routes = sh("ip", "-n", node, "route", "show", "default").stdout
        assert "default via 10.66.0.1 dev eth0" in routes
        assert sh("ip", "netns", "exec", node, "ping", "-c1", "-W2", "10.66.0.1",
                  check=False).returncode == 0


@pytest.mark.netns
def test_bootif_picks_the_nic_by_mac():
    with pair() as (node, srv):
        sh("ip", "-n", srv, "link", "set", "eth9", "up")  # eth1 has carrier too
        cfg = run_in(node, SETUP.format(args="dhcp=False, ip='10.66.0.8', netmask='24', "
                                             "mac='02:00:00:00:66:03', carrier_timeout=5"))
        assert cfg["ifname"] == "eth1", "BOOTIF wins over the first NIC with carrier"
        missing = run_in(node, SETUP.format(args="dhcp=False, ip='10.66.0.8', "
                                                 "mac='02:aa:bb:cc:dd:ee'"))
        assert "BOOTIF MAC 02:aa:bb:cc:dd:ee" in missing["error"]


@pytest.mark.netns
def test_no_carrier_fails_within_the_timeout():
    with pair(peer_up=False) as (node, srv):
        sh("ip", "-n", node, "link", "del", "eth1")
        start = time.monotonic()
        out = run_in(node, SETUP.format(args="dhcp=False, ip='10.66.0.9', "
                                             "carrier_timeout=1.5"))
        assert "no carrier on eth0" in out["error"]
        assert time.monotonic() - start < 20


@pytest.mark.netns
def test_dhcp_needs_a_static_address_otherwise():
    with pair() as (node, srv):
        out = run_in(node, SETUP.format(args="dhcp=False"))
        assert "ip=" in out["error"]


@pytest.mark.netns
@pytest.mark.skipif(not shutil.which("dnsmasq"), reason="needs dnsmasq (dnsmasq-base)")
def test_dhcp_lease_from_dnsmasq(tmp_path):
    with pair() as (node, srv):
        dnsmasq = subprocess.Popen(
            ["ip", "netns", "exec", srv, "dnsmasq", "--no-daemon", "--port=0",
             "--conf-file=/dev/null", "--bind-interfaces", "--interface=eth0",
             "--dhcp-range=10.66.0.50,10.66.0.60,255.255.255.0,1h",
             "--dhcp-option=option:router,10.66.0.1", "--dhcp-option=option:mtu,9000",
             "--dhcp-host=02:00:00:00:66:02,rack3-node07",  # option 12: the clone's name
             f"--dhcp-leasefile={tmp_path / 'leases'}", f"--pid-file={tmp_path / 'pid'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            cfg = run_in(node, SETUP.format(args="dhcp=True, dhcp_timeout=20"), timeout=60)
        finally:
            dnsmasq.kill()
            dnsmasq.wait(timeout=10)
        assert cfg.get("method") == "dhcp", cfg
        assert cfg["ip"].startswith("10.66.0.5") or cfg["ip"] == "10.66.0.60"
        assert cfg["broadcast"] == "10.66.0.255"
        assert cfg["gateway"] == "10.66.0.1"
        assert cfg["server"] == "10.66.0.1"
        assert f"inet {cfg['ip']}/24 brd 10.66.0.255" in addr_show(node)
        # the jumbo-frame MTU of option 26 is on the NIC, so the sender fills it
        assert cfg["mtu"] == 9000 and cfg["note"] is None
        assert " mtu 9000 " in addr_show(node)
        # the name dnsmasq gives this MAC (option 12) is the clone's when hostname= is unset
        assert cfg["hostname"] == "rack3-node07"


def _node(ns: str, cmdline: str, disk: Path) -> subprocess.CompletedProcess:
    """`herdcast node` up to the go-ahead (auto=no with no console input stops it there)."""
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "agent", "node",
                           "--cmdline", cmdline, "--no-hardware", "--disk", str(disk)],
                          capture_output=True, text=True, timeout=90, cwd=ROOT,
                          stdin=subprocess.DEVNULL)


@pytest.mark.netns
def test_node_configures_static_network_from_the_cmdline(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 4096)
    with pair() as (node, srv):
        proc = _node(node, "umode=rcv auto=no dhcp=no ip=10.66.0.7 netmask=255.255.255.0 "
                           "BOOTIF=01-02-00-00-00-66-02 hwtimeout=5", disk)
        assert "network: eth0 (02:00:00:00:66:02) 10.66.0.7/24 broadcast 10.66.0.255 by " \
               "static" in proc.stdout, proc.stdout + proc.stderr
        assert "inet 10.66.0.7/24 brd 10.66.0.255" in addr_show(node)
        assert "set auto=yes" in proc.stdout  # stopped at the go-ahead, nothing sent


@pytest.mark.netns
def test_node_without_carrier_says_what_to_check(tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\0" * 4096)
    with pair(peer_up=False) as (node, srv):
        proc = _node(node, "umode=rcv auto=yes dhcp=no ip=10.66.0.7/24 hwtimeout=1", disk)
        failed = [line for line in proc.stdout.splitlines() if "FAILED" in line]
        assert proc.returncode != 0
        assert len(failed) == 1 and "no carrier" in failed[0] and "cable" in failed[0]


class _FakeIpr:
    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse
        self.calls: list[dict] = []

    def link(self, cmd: str, **kw) -> None:
        if self.refuse:
            raise OSError("Invalid argument")
        self.calls.append(kw)


class _Lease:
    def __init__(self, mtu) -> None:
        self._mtu = mtu

    @property
    def mtu(self):
        if self._mtu is None:
            raise LookupError("no option 26")
        return self._mtu


def test_dhcp_mtu_is_applied_or_explained():
    from agent.net.network import Link, _apply_mtu

    link = Link(3, "eth0", "02:00:00:00:00:01", True, True, 1)
    ok = _FakeIpr(refuse=False)
    assert _apply_mtu(ok, link, _Lease(9000)) == (9000, None)
    assert ok.calls == [{"index": 3, "mtu": 9000}]
    assert _apply_mtu(ok, link, _Lease(None)) == (None, None)
    mtu, note = _apply_mtu(ok, link, _Lease(100))
    assert mtu is None and "MTU 100" in note
    mtu, note = _apply_mtu(_FakeIpr(refuse=True), link, _Lease(9000))
    assert mtu is None and "eth0 refused" in note and "9000" in note
    assert len(ok.calls) == 1  # nothing set for a missing or absurd MTU
