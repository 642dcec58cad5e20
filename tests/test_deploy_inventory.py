"""herdcast deploy's inventory: TOML into frozen nodes, each mistake one line naming the node
and the key, credentials never shown, password files that everyone can read refused."""

from __future__ import annotations

import dataclasses
import os

import pytest

from agent.deploy.inventory import InventoryError, load, parse


def write(tmp_path, text: str):
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


FLEET = """
[[node]]
name = "node01"
mac = "52:54:00:AA:00:01"
bmc = "redfish+http://10.0.0.201/redfish/v1/Systems/1"
username = "admin"
password = "s3cret-redfish"
disk = "/dev/nvme0n1"
hostname = "web01"

[[node]]
name = "node02"
mac = "52-54-00-aa-00-02"
bmc = "redfish://bmc02.lab:8443/redfish/v1/Systems/abc"
username = "root"
password_file = "PWFILE"
verify_tls = false

[[node]]
name = "node03"
mac = "52:54:00:aa:00:03"
bmc = "ipmi://10.0.0.203:6230"
username = "ADMIN"
password = "s3cret-ipmi"

[[node]]
name = "node04"
mac = "52:54:00:aa:00:04"
compr = "zstd"
"""


@pytest.fixture
def pwfile(tmp_path):
    path = tmp_path / "node02.pw"
    path.write_text("s3cret-file\n")
    path.chmod(0o600)
    return path


def test_a_fleet_parses_into_frozen_nodes(tmp_path, pwfile):
    inv = load(write(tmp_path, FLEET.replace("PWFILE", str(pwfile))))
    n1, n2, n3, n4 = inv.nodes
    assert n1.mac == "52:54:00:aa:00:01" and n2.mac == "52:54:00:aa:00:02"
    assert n1.params == (("disk", "/dev/nvme0n1"), ("hostname", "web01"))
    assert n1.assignments() == ["disk=/dev/nvme0n1", "hostname=web01"]
    assert (n1.bmc.kind, n1.bmc.scheme, n1.bmc.host, n1.bmc.port, n1.bmc.system) == (
        "redfish", "http", "10.0.0.201", 80, "/redfish/v1/Systems/1")
    assert n1.bmc.verify_tls and n1.bmc.base_url == "http://10.0.0.201:80"
    # redfish:// is https, and its certificate is verified unless the entry says otherwise
    assert (n2.bmc.scheme, n2.bmc.port, n2.bmc.verify_tls) == ("https", 8443, False)
    assert n2.bmc.password == "s3cret-file"
    assert (n3.bmc.kind, n3.bmc.host, n3.bmc.port) == ("ipmi", "10.0.0.203", 6230)
    assert n4.bmc is None and n4.params == (("compr", "zstd"),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        n1.mac = "x"


def test_each_node_is_armed_with_its_inventory_name_once_the_node_knows_hostname(
        tmp_path, pwfile, monkeypatch):
    """The armed line carries hostname=<inventory name> when the boot parameter table has
    hostname= (so each clone boots under its own name); an entry's own hostname wins;
    without the parameter nothing is added (the node would refuse an unknown one)."""
    from agent.boot import params

    inv = load(write(tmp_path, FLEET.replace("PWFILE", str(pwfile))))
    n1, _, _, n4 = inv.nodes
    monkeypatch.delitem(params.PARAMETERS, "hostname", raising=False)
    assert n4.assignments() == ["compr=zstd"]
    monkeypatch.setitem(params.PARAMETERS, "hostname", object())
    assert n4.assignments() == ["compr=zstd", "hostname=node04"]
    assert n1.assignments() == ["disk=/dev/nvme0n1", "hostname=web01"]


def test_credentials_are_never_shown(tmp_path, pwfile):
    inv = load(write(tmp_path, FLEET.replace("PWFILE", str(pwfile))))
    for node in inv.nodes[:3]:
        shown = repr(node) + repr(inv) + node.bmc.shown + str(node.bmc)
        for secret in ("s3cret-redfish", "s3cret-file", "s3cret-ipmi"):
            assert secret not in shown
    assert inv.nodes[0].bmc.shown == "redfish+http://10.0.0.201:80/redfish/v1/Systems/1"
    assert inv.nodes[2].bmc.shown == "ipmi://10.0.0.203:6230"


def test_a_password_file_everyone_can_read_is_refused(tmp_path, pwfile):
    pwfile.chmod(0o644)
    with pytest.raises(InventoryError) as err:
        load(write(tmp_path, FLEET.replace("PWFILE", str(pwfile))))
    line = str(err.value)
    assert "node 'node02'" in line and "password_file" in line and "readable by everyone" in line
    assert f"chmod o-r {pwfile}" in line and "s3cret" not in line and "\n" not in line
    pwfile.chmod(0o640)  # group-readable is the admin's choice (a herdcast group)
    assert load(write(tmp_path, FLEET.replace("PWFILE", str(pwfile)))).nodes[1].bmc


@pytest.mark.parametrize("change, words", [
    (('mac = "52:54:00:aa:00:03"', 'mac = "52:54:00:aa:00:01"'),
     ["node 'node03'", "mac 52:54:00:aa:00:01 is also node 'node01'"]),
    (('name = "node03"', 'name = "node01"'), ["name node01 is also", "own name"]),
    (('mac = "52:54:00:aa:00:03"', 'mac = "52:54:00:aa:00"'), ["node 'node03'", "key 'mac'"]),
    (('mac = "52:54:00:aa:00:03"', 'mac = "01:00:5e:00:00:01"'), ["multicast"]),
    (('bmc = "ipmi://10.0.0.203:6230"', 'bmc = "telnet://10.0.0.203"'),
     ["node 'node03'", "key 'bmc'", "ipmi://HOST[:PORT]"]),
    (('bmc = "ipmi://10.0.0.203:6230"', 'bmc = "ipmi://ADMIN:pw@10.0.0.203"'),
     ["credentials in the address", "password_file"]),
    (('username = "ADMIN"\n', ''), ["node 'node03'", "key 'username'"]),
    (('password = "s3cret-ipmi"', 'passwd = "s3cret-ipmi"'),
     ["key 'passwd'", "did you mean password?"]),
    (('password = "s3cret-ipmi"', 'password = "x"\npassword_file = "/etc/x"'),
     ["give password or password_file", "not both"]),
    (('compr = "zstd"', 'username = "admin"'), ["node 'node04'", "without a 'bmc'"]),
    (('compr = "zstd"', 'compr = ["zstd"]'), ["key 'compr'", "string or a number"]),
    (('bmc = "redfish+http://10.0.0.201/redfish/v1/Systems/1"',
      'bmc = "redfish+http://10.0.0.201/api/systems/1"'), ["not a Redfish path"]),
    (('verify_tls = false', 'verify_tls = "no"'), ["key 'verify_tls'", "verify_tls = false"]),
])
def test_each_mistake_is_one_line_naming_the_node_and_the_key(tmp_path, pwfile, change, words):
    text = FLEET.replace("PWFILE", str(pwfile))
    assert change[0] in text
    with pytest.raises(InventoryError) as err:
        load(write(tmp_path, text.replace(change[0], change[1], 1)))
    line = str(err.value)
    assert "\n" not in line and " -- " in line
    for word in words:
        assert word in line
    for secret in ("s3cret", "pw@"):
        assert secret not in line


def test_file_level_mistakes(tmp_path):
    with pytest.raises(InventoryError, match="no such file"):
        load(tmp_path / "missing.toml")
    with pytest.raises(InventoryError, match="not valid TOML"):
        load(write(tmp_path, "[[node]\nname="))
    with pytest.raises(InventoryError, match=r"no \[\[node\]\] tables"):
        load(write(tmp_path, "# empty\n"))
    with pytest.raises(InventoryError, match="unknown top-level key 'nodes'"):
        parse({"nodes": []})
    with pytest.raises(InventoryError, match="node #1: key 'name'"):
        parse({"node": [{"mac": "52:54:00:00:00:01"}]})


def test_a_missing_password_file_is_one_line(tmp_path):
    text = FLEET.replace("PWFILE", str(tmp_path / "nope"))
    with pytest.raises(InventoryError) as err:
        load(write(tmp_path, text))
    assert "node 'node02'" in str(err.value) and "No such file" in str(err.value)
    assert os.listdir(tmp_path) == ["fleet.toml"]  # nothing else written
