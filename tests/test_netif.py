"""Interface selection and control addresses."""

import pytest

from agent.net import netif
from builder.lab.netlab import NetLab


def test_loopback_ranks_last_and_spec_errors_name_the_option():
    nifs = netif.list_interfaces()
    assert any(n.name == "lo" for n in nifs)
    with pytest.raises(netif.InterfaceError, match="--interface nosuchif0"):
        netif.select_interface("nosuchif0")


def test_control_address_needs_broadcast():
    lo = next(n for n in netif.list_interfaces() if n.name == "lo")
    with pytest.raises(netif.InterfaceError, match="broadcast"):
        netif.control_address(lo, 1, None)
    assert netif.control_address(lo, 2, None) == "224.0.0.1"
    assert netif.control_address(lo, 1, "10.0.0.1") == "10.0.0.1"


@pytest.mark.netns
def test_select_in_namespace_prefers_eth0_with_broadcast():
    code = ("from agent.net import netif; n = netif.select_interface(); "
            "print(n.name, n.ip, n.broadcast, n.usable)")
    import sys
    with NetLab(1) as lab:
        host = lab.hosts[0]
        out = host.run(sys.executable, "-c", code).stdout.split()
        assert out == ["eth0", host.ip, host.ip.rsplit(".", 1)[0] + ".255", "True"]
        out = host.run(sys.executable, "-c", code.replace("select_interface()",
                                                          f"select_interface('{host.ip}')"))
        assert out.stdout.split()[0] == "eth0"
