"""A node's IPMI BMC through pyghmi (IPMI 2.0 over LAN, RMCP+), as Ironic and xCAT use it.

pyghmi logs in when the `Command` is made and gives up on a BMC that does not answer within
seconds; `keepalive=False`, because deploy asks three things and is gone.
"""

from __future__ import annotations

from agent.deploy.bmc import BmcError, scrub
from agent.deploy.inventory import Node


class Ipmi:
    """The PowerControl of an IPMI BMC (agent.deploy.bmc)."""

    def __init__(self, node: Node) -> None:
        assert node.bmc is not None and node.bmc.kind == "ipmi"
        self.node, self.bmc = node, node.bmc
        self._cmd = None

    def _fail(self, doing: str, exc: Exception) -> BmcError:
        text = scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                     self.bmc.password)
        return BmcError(f"node {self.node.name}: IPMI {self.bmc.shown}: {doing}: {text}",
                        "check the BMC's address, user and password in the inventory")

    def command(self):
        """pyghmi's session with this BMC (logs in on first use)."""
        if self._cmd is None:
            from pyghmi.ipmi import command

            try:
                self._cmd = command.Command(bmc=self.bmc.host, userid=self.bmc.username,
                                            password=self.bmc.password, port=self.bmc.port,
                                            keepalive=False)
            except Exception as exc:  # pyghmi's IpmiException, socket errors
                raise self._fail("logging in", exc) from None
        return self._cmd

    def _call(self, doing: str, fn, *args, **kwargs) -> dict:
        try:
            response = fn(*args, **kwargs)
        except Exception as exc:
            raise self._fail(doing, exc) from None
        if isinstance(response, dict) and response.get("error"):
            raise self._fail(doing, RuntimeError(str(response["error"])))
        return response if isinstance(response, dict) else {}

    def boot_from_network_once(self) -> None:
        cmd = self.command()
        self._call("setting the next boot to PXE once", cmd.set_bootdev, "network",
                   persist=False)

    def power_on_or_cycle(self) -> str:
        cmd = self.command()
        before = self._call("reading the power state", cmd.get_power).get("powerstate")
        if before == "off":
            self._call("powering on", cmd.set_power, "on")
            return "IPMI: next boot PXE once, powered on"
        self._call("resetting", cmd.set_power, "reset")
        return "IPMI: next boot PXE once, reset (it was on)"

    def power_state(self) -> str:
        cmd = self.command()
        return str(self._call("reading the power state", cmd.get_power)
                   .get("powerstate", "unknown"))
