"""A node's Redfish BMC through sushy, OpenStack's Redfish client (what Ironic uses).

One `sushy.Sushy` per node, basic or session auth as the service offers (sushy's
default), certificates verified unless the inventory says `verify_tls = false`. sushy
retries a busy service ten times, three seconds apart, by default; deploy asks once more
after a second, so a dead BMC costs seconds, not half a minute per call.
"""

from __future__ import annotations

from agent.deploy.bmc import BmcError, scrub
from agent.deploy.inventory import Node

TIMEOUT = 15.0  # seconds per request: a BMC that answers at all answers within this


class Redfish:
    """The PowerControl of a Redfish system (agent.deploy.bmc)."""

    def __init__(self, node: Node, connector=None) -> None:
        assert node.bmc is not None and node.bmc.kind == "redfish"
        self.node, self.bmc = node, node.bmc
        self._connector = connector  # sushy's Connector; tests route it to an emulator
        self._system = None

    def _fail(self, doing: str, exc: Exception) -> BmcError:
        text = scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                     self.bmc.password)
        return BmcError(f"node {self.node.name}: Redfish {self.bmc.shown}: {doing}: {text}",
                        "check the BMC's address, user and password in the inventory")

    def system(self):
        """sushy's System resource of this node (connects on first use)."""
        if self._system is None:
            import sushy

            try:
                root = sushy.Sushy(self.bmc.base_url, username=self.bmc.username,
                                   password=self.bmc.password, verify=self.bmc.verify_tls,
                                   server_side_retries=1, server_side_retries_delay=1,
                                   read_timeout=TIMEOUT, connect_timeout=TIMEOUT,
                                   connector=self._connector)
                self._system = root.get_system(self.bmc.system)
            except Exception as exc:  # sushy's, requests' and urllib3's errors alike
                raise self._fail("connecting", exc) from None
        return self._system

    def boot_from_network_once(self) -> None:
        import sushy

        system = self.system()
        try:
            system.set_system_boot_options(sushy.BootSource.PXE,
                                           enabled=sushy.BootSourceOverrideEnabled.ONCE)
        except Exception as exc:
            raise self._fail("setting the next boot to PXE once", exc) from None

    def power_on_or_cycle(self) -> str:
        import sushy

        system = self.system()
        try:
            system.refresh()
            if system.power_state == sushy.PowerState.OFF:
                system.reset_system(sushy.ResetType.ON)
                return "Redfish: next boot PXE once, powered on"
            system.reset_system(sushy.ResetType.FORCE_RESTART)
            return "Redfish: next boot PXE once, restarted (it was on)"
        except Exception as exc:
            raise self._fail("powering on", exc) from None

    def power_state(self) -> str:
        system = self.system()
        try:
            system.refresh()
            state = system.power_state
        except Exception as exc:
            raise self._fail("reading the power state", exc) from None
        return str(getattr(state, "value", state)).lower() if state is not None else "unknown"
