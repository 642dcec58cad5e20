"""The node's steps as functions: their one-line messages, without running a node."""

from __future__ import annotations

from agent.boot.node import nic_missing


def test_the_nic_wait_message_reads_as_english():
    assert nic_missing(None, 60) == "no NIC appeared within 60 s"
    assert nic_missing("52:54:00:12:34:56", 30) == \
        "the NIC with MAC 52:54:00:12:34:56 (BOOTIF=) did not appear within 30 s"
