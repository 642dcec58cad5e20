"""tests/fixtures/regenerate makes captures our decoder reads: Debian's udpcast, run again in
namespaces, gives a pcap whose every datagram parses and that holds the sessions it ran."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import FIXTURES
from pcap import read_udp

from agent.udpcast.protocol import Op, opcode, parse

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]


def test_regenerated_sessions_parse(tmp_path):
    proc = subprocess.run([sys.executable, str(FIXTURES / "regenerate"), str(tmp_path),
                           "sessions"], capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    datagrams = read_udp(tmp_path / "udpcast-20120424" / "sessions.pcap")
    ops = [opcode(d.payload) for d in datagrams]
    for d in datagrams:
        parse(d.payload)  # raises on anything it cannot decode
    assert ops.count(Op.DISCONNECT) >= 3  # three sessions, each ended by its receivers
    assert Op.FEC in ops  # the third session ran with --fec
    assert (tmp_path / "udpcast-20120424" / "source.bin").stat().st_size == 300_000
