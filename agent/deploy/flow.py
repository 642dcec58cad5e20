"""One deploy: arm every node, power it on through its BMC, serve the image, disarm as it agrees.

The order matters. Every node is armed first (its per-MAC files: receive, then reboot), so
whatever boots it, BMC or person, it images itself. Then each BMC is told to boot from the
network once and to power the node on (or cycle it); a node without one gets a Wake-on-LAN
packet on the deploy's interface. The image is served with the sender's `--serve` engine,
which is told of each receiver (`Deployment` is its fleet observer): a receiver is matched
to its node by MAC, named by its inventory name in the live view and the reports, and
disarmed (its per-MAC files boot the local disk) the moment its digest agrees, so the
reboot that `post=reboot` makes comes up in the new system. A node that fails stays armed
and on, with its reason. A node that has not connected when `--wait` runs out is asked
about through its BMC (power state, or the error), and reported as never connected. The
service stops once every node is agreed, failed or never connected; exit 0 only when every
node agreed.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from agent.deploy.bmc import BmcError, PowerControl
from agent.deploy.drivers import driver_for
from agent.deploy.inventory import Inventory, Node
from agent.errors import HerdcastError
from agent.say import say
from agent.transfer.result import TransferResult
from agent.transfer.send.record import Receiver, Verdict

FINAL = ("agreed", "failed", "never connected")


class DeployError(HerdcastError):
    """The deploy cannot start (a TFTP root, an image, a node's boot line)."""


@dataclass
class NodeRun:
    """One node's deploy as it goes: what was done to it and what it did."""

    node: Node
    power: PowerControl
    state: str = "armed"  # armed, connected, agreed, failed, never connected
    armed: bool = False
    action: str | None = None  # how it was powered on
    reason: str | None = None  # why it failed or never connected
    bmc_says: str | None = None  # the BMC's power state when asked
    address: str | None = None
    bytes: int = 0
    digest: str | None = None
    agreed_at: float | None = None


@dataclass
class Deployment:
    """The fleet observer and stop condition the sender is run with (see the docstring)."""

    inventory: Inventory
    tftp_root: Path
    wait: float
    interface: str | None = None
    runs: list[NodeRun] = field(default_factory=list)
    deadline: float | None = None
    started: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if not self.runs:
            self.runs = [NodeRun(n, driver_for(n, self.interface))
                         for n in self.inventory.nodes]
        self._by_mac = {r.node.mac: r for r in self.runs}
        self._by_address: dict[str, NodeRun] = {}

    # ------------------------------------------------------------------ before serving

    def check(self) -> None:
        """Every node's armed boot line, checked as the node will read it, before any file
        is written or any machine powered: a bad parameter stops the deploy here."""
        from builder import bootcfg

        for run in self.runs:
            try:
                bootcfg.check_arm(self.tftp_root, run.node.mac, run.node.assignments())
            except HerdcastError as exc:
                raise DeployError(f"node {run.node.name}: {exc.what}", exc.fix) from None

    def arm_all(self) -> None:
        from builder import bootcfg

        for run in self.runs:
            bootcfg.arm(self.tftp_root, run.node.mac, run.node.assignments(),
                        note=f"armed by herdcast deploy for {run.node.name}")
            run.armed = True
            say(f"herdcast deploy: {run.node.name} ({run.node.mac}): armed "
                "(receive, then reboot)")

    def power_all(self) -> None:
        """Every node's BMC at once (a slow BMC delays none of the others)."""
        with ThreadPoolExecutor(max_workers=min(16, len(self.runs))) as pool:
            for run, outcome in zip(self.runs, pool.map(_power_on, self.runs), strict=True):
                if isinstance(outcome, BmcError):  # it names the node and its BMC
                    run.reason = str(outcome)
                    say(f"herdcast deploy: {outcome}")
                else:
                    run.action = outcome
                    say(f"herdcast deploy: {run.node.name}: {outcome}")
        self.deadline = time.monotonic() + self.wait

    # ------------------------------------------------------------------ the fleet's calls

    def _run_of(self, report: Receiver) -> NodeRun | None:
        if not report.mac:
            from agent.transfer.send.names import read_arp

            report.mac = read_arp().get(report.address)
        run = self._by_mac.get((report.mac or "").lower())
        if run is None:
            run = self._by_address.get(report.address)
        if run is not None:
            self._by_address[report.address] = run
        return run

    def connected(self, report: Receiver) -> None:
        run = self._run_of(report)
        if run is None:
            say(f"herdcast deploy: {report.address} ({report.mac or 'MAC unknown'}) is in no "
                "inventory entry: served, not counted")
            return
        report.hostname = run.node.name
        run.address = report.address
        if run.state not in FINAL or run.state == "never connected":
            if run.state == "never connected":
                say(f"herdcast deploy: {run.node.name} connected after --wait ran out")
            run.state, run.reason = "connected", None
            say(f"herdcast deploy: {run.node.name} connected from {report.address}")

    def verdict(self, report: Receiver) -> None:
        run = self._run_of(report)
        if run is None:
            return
        report.hostname = run.node.name
        run.bytes, run.digest = report.bytes, report.digest
        if report.verdict is Verdict.OK and report.digest:
            self._disarm(run)
            return
        from agent.transfer.send.report import describe

        run.state, run.reason = "failed", describe(report)
        say(f"herdcast deploy: {run.node.name} FAILED: {run.reason}; left armed and on "
            "(fix it, then power-cycle it: it images itself again)")

    def _disarm(self, run: NodeRun) -> None:
        from builder import bootcfg

        try:
            bootcfg.disarm(self.tftp_root, run.node.mac,
                           note=f"disarmed by herdcast deploy for {run.node.name}: its "
                           "digest agreed")
        except (HerdcastError, OSError) as exc:
            run.state, run.reason = "failed", f"agreed, but disarming failed: {exc}"
            say(f"herdcast deploy: {run.node.name}: {run.reason} (it will image again)")
            return
        run.state, run.armed, run.agreed_at, run.reason = "agreed", False, time.time(), None
        say(f"herdcast deploy: {run.node.name} agreed: disarmed, rebooting into its new "
            "system")

    # ------------------------------------------------------------------ stopping

    def should_stop(self) -> bool:
        """True once every node is agreed, failed or never connected (after --wait)."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            for run in self.runs:
                if run.state == "armed":
                    self._never_connected(run)
        return all(r.state in FINAL for r in self.runs)

    def _never_connected(self, run: NodeRun) -> None:
        try:
            run.bmc_says = run.power.power_state()
            says = f"power {run.bmc_says}"
        except BmcError as exc:
            says = str(exc)
        before = f"; {run.reason}" if run.reason else ""
        run.state = "never connected"
        run.reason = f"never connected within {self.wait:g} s{before}; BMC says {says}"
        say(f"herdcast deploy: {run.node.name}: {run.reason}")

    def finish(self, result: TransferResult) -> int:
        """After the service: a node still receiving was cut; the exit status."""
        for run in self.runs:
            if run.state == "connected":
                run.state = "failed"
                run.reason = f"not finished when the service ended ({result.error or 'stopped'})"
            elif run.state == "armed":
                self._never_connected(run)
        return 0 if all(r.state == "agreed" for r in self.runs) else 1


def _power_on(run: NodeRun) -> str | BmcError:
    """Next boot from the network, once; then on (or cycled). What it did, or the error."""
    try:
        run.power.boot_from_network_once()
        return run.power.power_on_or_cycle()
    except BmcError as exc:
        return exc
