"""pyroute2's netlink socket (IPRoute) and DHCP client, without pyroute2's package __init__.

`import pyroute2` (or any `pyroute2.x`, which runs the package's __init__ first) imports
every pyroute2 feature: NDB with its sqlite3 schema, IPDB, nftables, wireguard, 802.11...
On a node that was about 5 s of boot under the lab's TCG emulation, for the two modules the
network step uses. So the package is registered here without running its __init__, the
submodules we use are imported directly, and anyone who later asks the package for a public
name (`from pyroute2 import NDB`, e.g. a test) gets the real __init__ run at that moment.

pyroute2 itself still imports ssl (its netlink probe messages and asyncio both do); sqlite3
and NDB stay out (tests/test_network.py checks that).
"""

from __future__ import annotations

import importlib.util
import sys

PACKAGE = "pyroute2"


def _register_package_without_init() -> None:
    """Put a pyroute2 package module whose __init__ has not run into sys.modules; its
    submodules import from its __path__ as usual. Nothing to do if pyroute2 is imported
    already, or not installed (the import below then fails as it would anyway)."""
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return
    package = importlib.util.module_from_spec(spec)

    def __getattr__(name: str) -> object:  # noqa: N807 - PEP 562 module __getattr__
        """A public name of the package: run the real __init__ now, once. Submodule names
        and dunders are refused, so `from pyroute2 import config` imports just that."""
        if name.startswith("__") or importlib.util.find_spec(f"{PACKAGE}.{name}") is not None:
            raise AttributeError(name)
        del package.__getattr__  # type: ignore[attr-defined]
        spec.loader.exec_module(package)  # type: ignore[union-attr]
        return getattr(package, name)

    package.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules[PACKAGE] = package


_register_package_without_init()

from pyroute2.iproute.linux import IPRoute  # noqa: E402

__all__ = ["IPRoute"]
