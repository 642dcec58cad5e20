"""A lab of network namespaces on one bridge, for tests that cross a network.

Every host is a namespace with one veth `eth0` on a bridge that lives in its own namespace,
addressed `10.<net>.0.<10+i>/24` with a broadcast address (udpcast receivers find the sender
through it). Nothing touches the machine's real interfaces; `close()` deletes every
namespace it made (which deletes the veths and the bridge with them).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field

from builder.lab.context import LabContext

_counter = itertools.count()


def have_netns() -> bool:
    """Whether this process may create network namespaces (root with `ip`)."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


def sh(*argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    """Run a short command, raising with its stderr when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: rc={proc.returncode}: {proc.stderr.strip()}")
    return proc


@dataclass
class Host:
    """One namespace on the lab bridge."""

    ns: str
    ip: str
    lab: NetLab

    def argv(self, *argv: str) -> list[str]:
        """argv that runs a command inside this host's namespace."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(self, *argv: str, check: bool = True, timeout: float = 20):
        """Run a short command in this host and wait for it."""
        return sh(*self.argv(*argv), check=check, timeout=timeout)

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start a long command in this host; the lab kills it at close() if still running."""
        proc = subprocess.Popen(self.argv(*argv), **kwargs)
        self.lab.procs.append(proc)
        return proc

    def drop_udp(self, percent: int, dport: int = 9000) -> None:
        """Drop `percent`% of incoming UDP to `dport` (this kernel has no netem)."""
        self._input_rule("hcloss", f"udp dport {dport} numgen random mod 100 < {percent} drop")

    def drop_first(self, opcode: int, dport: int = 9000) -> None:
        """Drop the first incoming UDP datagram to `dport` whose udpcast opcode (its first
        two bytes) is `opcode`, and no other: one lost reply, exactly where a test wants it."""
        self._input_rule("hcfirst", f"udp dport {dport} @th,64,16 {opcode} "
                                    "numgen inc mod 1000000 0 drop")

    def _input_rule(self, table: str, rule: str) -> None:
        """`rule` on incoming packets, in an nftables table of its own."""
        self.run("nft", f"add table inet {table}")
        self.run("nft", f"add chain inet {table} input {{ type filter hook input priority 0 ; }}")
        self.run("nft", f"add rule inet {table} input {rule}")

    def shape(self, rate: str = "1gbit", burst: str = "256kb", latency: str = "20ms") -> None:
        """Limit this host's outgoing rate with a token bucket."""
        self.run("tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", rate,
                 "burst", burst, "latency", latency)


@dataclass
class NetLab(LabContext):
    """Namespaces on a bridge; use as a context manager."""

    hosts_count: int
    net: int = 77
    mtu: int = 1500  # 9000: jumbo frames on every veth and the bridge
    prefix: str = ""
    hosts: list[Host] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.prefix:
            self.prefix = f"hc{os.getpid() % 100000}x{next(_counter)}"

    def _setup(self) -> None:
        bridge_ns = f"{self.prefix}-br"
        sh("ip", "netns", "add", bridge_ns)
        self.namespaces.append(bridge_ns)
        sh("ip", "-n", bridge_ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", bridge_ns, "link", "set", "br0", "up")
        sh("ip", "-n", bridge_ns, "link", "set", "lo", "up")
        for i in range(self.hosts_count):
            ns = f"{self.prefix}-h{i}"
            sh("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name",
               f"p{i}", "netns", bridge_ns)
            sh("ip", "-n", bridge_ns, "link", "set", f"p{i}", "mtu", str(self.mtu))
            sh("ip", "-n", ns, "link", "set", "eth0", "mtu", str(self.mtu))
            sh("ip", "-n", bridge_ns, "link", "set", f"p{i}", "master", "br0", "up")
            ip = f"10.{self.net}.0.{10 + i}"
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "brd", "+", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            self.hosts.append(Host(ns, ip, self))
        self._wait_links()

    def _wait_links(self, timeout: float = 10) -> None:
        """Wait until every veth has left the bridge's learning states (no lost HELLO)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = sh("ip", "-n", f"{self.prefix}-br", "-br", "link", "show", "master",
                     "br0").stdout
            if out and all(" UP " in f" {line} " for line in out.splitlines()):
                return
            time.sleep(0.05)

    def close(self) -> None:
        """Kill what the lab started, then delete its namespaces."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "delete", ns, check=False)
        self.namespaces.clear()
