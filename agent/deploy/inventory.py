"""The deploy inventory: a TOML file with one `[[node]]` table per machine.

    [[node]]
    name = "node01"
    mac = "52:54:00:aa:00:01"
    bmc = "redfish+http://10.0.0.201/redfish/v1/Systems/1"  # redfish:// is https; ipmi://h[:p]
    username = "admin"
    password_file = "/etc/herdcast/bmc/node01"              # or password = "..."
    disk = "/dev/nvme0n1"                                   # any boot parameter

Everything is checked before anything is armed or powered: a mistake is one line naming the
file, the node and the key (`InventoryError`). Credentials never appear in a message, a
repr or a report: `Bmc.password` is left out of the repr, and `Bmc.shown` is the BMC's
address without them. A password file readable by everyone is refused (anyone on the server
could power the fleet off); https certificates are verified unless `verify_tls = false`.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from agent.errors import HerdcastError

IPMI_PORT = 623
#: The keys of a node's table that are the inventory's; any other key is a boot parameter.
KEYS = ("name", "mac", "bmc", "username", "password", "password_file", "verify_tls")
SECRET_KEYS = ("password", "password_file")
#: The boot parameter that names the clone (agent.personalize: /etc/hostname, /etc/hosts):
#: every armed node gets it, set to its inventory name, once the parameter table has it.
NAMED_BY = "hostname"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_MAC = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")
_PARAM = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*$")
SCHEMES = {"redfish+http": "http", "redfish+https": "https", "redfish": "https", "ipmi": None}


class InventoryError(HerdcastError):
    """The inventory cannot be used as written; the message names the node and the key."""


@dataclass(frozen=True)
class Bmc:
    """How to reach one node's BMC. `password` never shows in a repr."""

    kind: str  # "redfish" or "ipmi"
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    scheme: str | None = None  # redfish: "http" or "https"
    system: str | None = None  # redfish: the system's path, e.g. /redfish/v1/Systems/1
    verify_tls: bool = True

    @property
    def shown(self) -> str:
        """The BMC's address as logs and reports show it: no user, no password."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.kind == "ipmi":
            return f"ipmi://{host}:{self.port}"
        return f"redfish+{self.scheme}://{host}:{self.port}{self.system or '/redfish/v1'}"

    @property
    def base_url(self) -> str:
        """Redfish: the service's address, where sushy starts (`/redfish/v1` under it)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class Node:
    """One machine of the fleet, as the inventory names it."""

    name: str
    mac: str  # lower case, colon-separated
    bmc: Bmc | None
    params: tuple[tuple[str, str], ...] = ()  # boot parameters for its per-MAC line

    def assignments(self) -> list[str]:
        """The node's boot parameters as `python -m builder node` takes them; with
        `hostname=<its name>` added when the node's boot parameters have NAMED_BY and the
        entry sets none itself, so each clone comes up under its inventory name."""
        from agent.boot.params import PARAMETERS, canonical_name

        given = [f"{k}={v}" for k, v in self.params]
        if NAMED_BY in PARAMETERS and all(canonical_name(k) != NAMED_BY
                                          for k, _ in self.params):
            given.append(f"{NAMED_BY}={self.name}")
        return given


@dataclass(frozen=True)
class Inventory:
    path: str
    nodes: tuple[Node, ...]


def load(path: str | os.PathLike) -> Inventory:
    """Read and check the inventory at `path`; raises InventoryError (one line)."""
    path = str(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise InventoryError(f"--inventory {path}: no such file",
                             "give the TOML file with one [[node]] table per machine") from None
    except OSError as exc:
        raise InventoryError(f"--inventory {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InventoryError(f"--inventory {path}: not valid TOML: {exc}",
                             "see the README's inventory format") from None
    return parse(doc, path)


def parse(doc: dict, path: str = "inventory") -> Inventory:
    """The checked inventory from a parsed TOML document."""
    extra = sorted(set(doc) - {"node"})
    if extra:
        raise InventoryError(f"{path}: unknown top-level key {extra[0]!r}",
                             "the inventory holds [[node]] tables only")
    tables = doc.get("node")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict)
                                                               for t in tables):
        raise InventoryError(f"{path}: no [[node]] tables",
                             "add one [[node]] table per machine (name, mac, bmc, ...)")
    nodes = [_node(t, i, path) for i, t in enumerate(tables)]
    for key in ("name", "mac"):
        seen: dict[str, str] = {}
        for n in nodes:
            value = getattr(n, key)
            if value in seen:
                raise InventoryError(f"{path}: node {n.name!r}: {key} {value} is also node "
                                     f"{seen[value]!r}'s", f"give each node its own {key}")
            seen[value] = n.name
    return Inventory(path, tuple(nodes))


def _node(table: dict, index: int, path: str) -> Node:
    name = table.get("name")
    where = f"{path}: node {name!r}" if isinstance(name, str) else f"{path}: node #{index + 1}"
    if not isinstance(name, str) or not _NAME.match(name):
        raise InventoryError(f"{where}: key 'name': missing or not a plain name",
                             'give name = "node01" (letters, digits, ".", "_", "-")')
    mac = table.get("mac")
    if not isinstance(mac, str) or not _MAC.match(mac.strip().lower()):
        raise InventoryError(f"{where}: key 'mac': {mac!r} is not a MAC address",
                             'give mac = "52:54:00:aa:00:01"')
    mac = mac.strip().lower().replace("-", ":")
    if int(mac[:2], 16) & 1:
        raise InventoryError(f"{where}: key 'mac': {mac} is a multicast address",
                             "give the MAC of the NIC the node PXE-boots from")
    params = []
    for key, value in table.items():
        if key in KEYS:
            continue
        near = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.75)
        if near:
            raise InventoryError(f"{where}: key {key!r}: not an inventory key",
                                 f"did you mean {near[0]}?")
        params.append((key, _param(where, key, value)))
    return Node(name, mac, _bmc(table, where), tuple(params))


def _param(where: str, key: str, value: object) -> str:
    """A boot parameter's value as the kernel command line carries it."""
    if not _PARAM.match(key):
        raise InventoryError(f"{where}: key {key!r}: not a boot parameter name",
                             "boot parameters are key = \"value\" (see kernel-cmdline.md)")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | str):
        return str(value)
    raise InventoryError(f"{where}: key {key!r}: a boot parameter is a string or a number",
                         f'write {key} = "..."')


def _bmc(table: dict, where: str) -> Bmc | None:
    url = table.get("bmc")
    given = [k for k in ("username", *SECRET_KEYS, "verify_tls") if k in table]
    if url is None:
        if given:
            raise InventoryError(f"{where}: key {given[0]!r} without a 'bmc'",
                                 'add bmc = "redfish://HOST/..." or "ipmi://HOST", or drop it')
        return None
    if not isinstance(url, str):
        raise InventoryError(f"{where}: key 'bmc': not a string", _BMC_FIX)
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES or not parts.hostname:
        raise InventoryError(f"{where}: key 'bmc': {_no_userinfo(url)!r} is not a BMC address",
                             _BMC_FIX)
    if parts.username or parts.password:
        raise InventoryError(f"{where}: key 'bmc': credentials in the address",
                             "give them as username and password_file, never in the URL")
    try:
        port = parts.port
    except ValueError:
        raise InventoryError(f"{where}: key 'bmc': bad port in {url!r}", _BMC_FIX) from None
    verify = table.get("verify_tls", True)
    if not isinstance(verify, bool):
        raise InventoryError(f"{where}: key 'verify_tls': not true or false",
                             "write verify_tls = false to skip certificate checks")
    username = table.get("username")
    if not isinstance(username, str) or not username:
        raise InventoryError(f"{where}: key 'username': missing for bmc {_no_userinfo(url)}",
                             'add username = "..."')
    password = _password(table, where)
    if scheme == "ipmi":
        if parts.path not in ("", "/"):
            raise InventoryError(f"{where}: key 'bmc': an ipmi:// address has no path",
                                 'write bmc = "ipmi://HOST[:PORT]"')
        return Bmc("ipmi", parts.hostname, port or IPMI_PORT, username, password)
    http = SCHEMES[scheme]
    system = parts.path.rstrip("/") or None
    if system and not system.startswith("/redfish/v1"):
        raise InventoryError(f"{where}: key 'bmc': {system} is not a Redfish path",
                             "give the system's path, e.g. /redfish/v1/Systems/1, or none")
    if system == "/redfish/v1":
        system = None
    return Bmc("redfish", parts.hostname, port or (443 if http == "https" else 80), username,
               password, scheme=http, system=system, verify_tls=verify)


_BMC_FIX = ('write bmc = "redfish+http://HOST/redfish/v1/Systems/ID", "redfish://HOST/..." '
            '(https) or "ipmi://HOST[:PORT]"')


def _no_userinfo(url: str) -> str:
    """A URL as an error may show it: anything before an @ dropped."""
    parts = urlsplit(url)
    return url if "@" not in parts.netloc else url.replace(parts.netloc.rsplit("@", 1)[0] + "@",
                                                           "")


def _password(table: dict, where: str) -> str:
    """The BMC password, from `password` or from `password_file` (one of the two)."""
    if ("password" in table) == ("password_file" in table):
        raise InventoryError(f"{where}: key 'password': give password or password_file",
                             "one of the two, not both (password_file keeps it out of the "
                             "inventory)")
    if "password" in table:
        if not isinstance(table["password"], str):
            raise InventoryError(f"{where}: key 'password': not a string",
                                 'write password = "..."')
        return table["password"]
    name = table["password_file"]
    if not isinstance(name, str) or not name:
        raise InventoryError(f"{where}: key 'password_file': not a path",
                             'write password_file = "/etc/herdcast/bmc/NODE"')
    file = Path(name)
    try:
        mode = file.stat().st_mode
        if mode & stat.S_IROTH:
            raise InventoryError(f"{where}: key 'password_file': {file} is readable by "
                                 "everyone", f"chmod o-r {file} (or 600)")
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise InventoryError(f"{where}: key 'password_file': {file}: "
                             f"{exc.strerror or exc}", "give a file holding the password"
                             ) from None
    password = text.rstrip("\r\n")
    if not password or "\n" in password:
        raise InventoryError(f"{where}: key 'password_file': {file} holds no password on "
                             "one line", "write the password alone in it")
    return password
