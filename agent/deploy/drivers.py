"""A node's power control from its inventory entry: its BMC's driver, or Wake-on-LAN."""

from __future__ import annotations

from agent.deploy.bmc import PowerControl, WakeOnLan
from agent.deploy.inventory import Node


def driver_for(node: Node, interface: str | None = None) -> PowerControl:
    """Redfish (sushy) or IPMI (pyghmi) by the node's `bmc` scheme; without one, a
    Wake-on-LAN packet on `interface` (the deploy's --interface)."""
    if node.bmc is None:
        return WakeOnLan(node, interface)
    if node.bmc.kind == "redfish":
        from agent.deploy.redfish import Redfish

        return Redfish(node)
    from agent.deploy.ipmi import Ipmi

    return Ipmi(node)
