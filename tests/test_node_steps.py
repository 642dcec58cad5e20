"""The node's steps as functions: their one-line messages, without running a node."""

from __future__ import annotations

from agent.boot.node import nic_missing


def test_the_nic_wait_message_reads_as_english():
    assert nic_missing(None, 60) == "no NIC appeared within 60 s"
    assert nic_missing("52:54:00:12:34:56", 30) == \
        "the NIC with MAC 52:54:00:12:34:56 (BOOTIF=) did not appear within 30 s"


def _wishes(cmdline: str, dhcp_name: str | None):
    import io

    from agent.boot.cmdline import parse_cmdline
    from agent.boot.console import Console
    from agent.boot.node import run_options

    out = io.StringIO()
    opts = run_options(parse_cmdline(f"umode=rcv {cmdline}"), "eth0", dhcp_name,
                       Console(out))
    return opts.wishes, out.getvalue()


def test_the_clone_is_named_by_hostname_else_by_the_dhcp_server():
    wishes, said = _wishes("hostname=web-01 grow=yes", "from-dhcp")
    assert (wishes.hostname, wishes.grow, wishes.fresh) == ("web-01", True, True)
    assert said == ""
    wishes, said = _wishes("", "rack3-node07")  # option 12
    assert (wishes.hostname, wishes.fresh) == ("rack3-node07", True)
    assert "named rack3-node07 by the DHCP server" in said
    wishes, _ = _wishes("hostname= identity=keep", "rack3-node07")  # empty: no name at all
    assert (wishes.hostname, wishes.fresh, wishes.into_root) == (None, False, False)
    wishes, said = _wishes("", "bad_name!")  # a DHCP name that is no hostname is not written
    assert wishes.hostname is None and not wishes.fresh
    assert "'bad_name!' is no hostname: not written (set hostname=)" in said
    wishes, _ = _wishes("identity=fresh", None)  # fresh without a name
    assert wishes.fresh and wishes.hostname is None
