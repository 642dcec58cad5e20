"""The namespace lab itself: hosts reach each other and vanish afterwards."""

import pytest

from builder.lab.netlab import NetLab, sh

pytestmark = pytest.mark.netns


def test_hosts_ping_and_cleanup():
    with NetLab(2) as lab:
        a, b = lab.hosts
        a.run("ping", "-c", "1", "-W", "2", b.ip)
        names = list(lab.namespaces)
    listed = sh("ip", "netns", "list").stdout
    assert not any(n in listed for n in names)
