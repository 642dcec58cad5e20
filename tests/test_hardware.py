"""agent.hardware: modalias -> module planning on a fake sysfs, passes, uevent waiting."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from agent.hardware import (
    Device,
    ModuleLoad,
    _find_library_fallback,
    load_drivers,
    modules_for,
    named_loads,
    plan_loads,
    read_aliases,
    walk_modaliases,
)

ALIASES = """\
# Aliases extracted from modules themselves.
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias virtio:d00000002v* virtio_blk
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias pci:v00008086d00002922sv*sd*bc01sc06i* ahci
alias pci:v*d*sv*sd*bc01sc06i01* ahci
"""

# A modprobe stand-in: logs its argv; loading a driver makes the devices it would create.
FAKE_MODPROBE = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    sysfs, log = Path(os.environ["FAKE_SYS"]), Path(os.environ["FAKE_LOG"])
    args = [a for a in sys.argv[1:] if a != "-q"]
    with log.open("a") as f:
        f.write(" ".join(args) + "\\n")
    name = args[0]
    def dev(path, alias=None, subsystem=None):
        d = sysfs / "devices" / path
        d.mkdir(parents=True, exist_ok=True)
        if alias:
            (d / "modalias").write_text(alias + "\\n")
        return d
    if name == "virtio_pci":
        dev("pci0000:00/0000:00:03.0/virtio0", "virtio:d00000001v00001AF4")
        dev("pci0000:00/0000:00:04.0/virtio1", "virtio:d00000002v00001AF4")
    elif name == "virtio_net":
        net = sysfs / "class/net/eth0"
        net.mkdir(parents=True)
        (net / "address").write_text("52:54:00:12:34:56\\n")
    elif name == "virtio_blk":
        (sysfs / "class/block/vdq").mkdir(parents=True)
    elif name == "broken":
        print("modprobe: FATAL: Module broken not found", file=sys.stderr)
        sys.exit(1)
""")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A sysfs with two virtio PCI functions and a loopback, and a modules dir."""
    sysfs = tmp_path / "sys"
    for slot in ("03", "04"):
        d = sysfs / f"devices/pci0000:00/0000:00:{slot}.0"
        d.mkdir(parents=True)
        (d / "modalias").write_text(
            f"pci:v00001AF4d0000100{int(slot) - 3}sv00001AF4sd00000001bc02sc00i00\n")
        (d / "subsystem").symlink_to("../../../bus/pci")
    (sysfs / "devices/platform/serial8250").mkdir(parents=True)
    (sysfs / "devices/platform/serial8250/modalias").write_text("platform:serial8250\n")
    (sysfs / "class/net/lo").mkdir(parents=True)
    (sysfs / "class/net/lo/address").write_text("00:00:00:00:00:00\n")
    (sysfs / "class/block").mkdir(parents=True)
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "modules.alias").write_text(ALIASES)
    (modules / "modules.builtin").write_text("kernel/drivers/tty/serial/8250/8250.ko\n")
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "modules").write_text("")
    script = tmp_path / "modprobe.py"
    script.write_text(FAKE_MODPROBE)
    log = tmp_path / "modprobe.log"
    monkeypatch.setenv("FAKE_SYS", str(sysfs))
    monkeypatch.setenv("FAKE_LOG", str(log))
    return {"sys": str(sysfs), "modules": str(modules), "proc": str(proc), "log": log,
            "modprobe": [sys.executable, str(script)]}


def test_alias_wildcards_match_like_kmod():
    aliases = [tuple(line.split()[1:]) for line in ALIASES.splitlines()
               if line.startswith("alias")]
    assert modules_for("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", aliases) \
        == ["virtio_pci"]
    assert modules_for("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01", aliases) \
        == ["ahci"]
    assert modules_for("usb:v046Dp0825", aliases) == []


def test_walk_finds_modaliases_with_subsystem(fake):
    devices = walk_modaliases(fake["sys"])
    assert [d.modalias.split("sv")[0] for d in devices] == [
        "pci:v00001AF4d00001000", "pci:v00001AF4d00001001", "platform:serial8250"]
    assert devices[0].subsystem == "pci"


def test_plan_skips_loaded_and_repeats_nothing(fake):
    devices = walk_modaliases(fake["sys"])
    aliases = read_aliases(fake["modules"])
    plan = plan_loads(devices, aliases, skip=set())
    assert [p.name for p in plan] == ["virtio_pci"], "two devices, one module, once"
    assert plan_loads(devices, aliases, skip={"virtio_pci"}) == []


def test_plan_without_alias_table_hands_modalias_to_modprobe():
    plan = plan_loads([Device("/sys/x", "pci", "pci:v1d2")], [], skip=set())
    assert plan[0].by_alias
    assert plan[0].argv(["modprobe"]) == ["modprobe", "-q", "pci:v1d2"]


def test_named_modules_carry_their_parameters():
    loads = named_loads("e1000", "debug=3 copybreak=0", "AUTO", "ignored=1")
    assert loads == [ModuleLoad("e1000", ["debug=3", "copybreak=0"], "netmodule=")]
    assert loads[0].argv(["modprobe"]) == ["modprobe", "e1000", "debug=3", "copybreak=0"]
    assert named_loads(None, None, "auto", None) == []


def test_auto_params_reach_the_driver_of_the_device_class():
    aliases = [("virtio:d00000001v*", "virtio_net"), ("virtio:d00000002v*", "virtio_blk"),
               ("pci:v00008086d*sv*sd*bc0Csc03i*", "uhci_hcd")]
    devices = [Device("/a", "virtio", "virtio:d00000001v00001AF4"),
               Device("/b", "virtio", "virtio:d00000002v00001AF4"),
               Device("/c", "pci", "pci:v00008086d00002934sv0sd0bc0Csc03i00")]
    plan = plan_loads(devices, aliases, set(), None, {"net": ["napi=1"], "disk": ["mq=2"]})
    assert [(p.name, p.params) for p in plan] == [
        ("virtio_net", ["napi=1"]), ("virtio_blk", ["mq=2"]), ("uhci_hcd", [])]


def test_none_loads_nothing_by_modalias(fake):
    report = load_drivers(disk="/dev/vdq", sys_root=fake["sys"], proc_root=fake["proc"],
                          modules_dir=fake["modules"], modprobe=fake["modprobe"],
                          netmodule="NONE", diskmodule="NONE", timeout=0.5,
                          say=lambda s: None)
    assert report.loaded == [] and not fake["log"].exists()
    assert report.disk is None


def test_params_reach_a_module_found_by_modalias():
    plan = plan_loads([Device("/sys/x", "pci", "pci:v00008086d0000100Esv0sd0bc02sc00i00")],
                      [("pci:v00008086d0000100Esv*sd*bc*sc*i*", "e1000")], set(),
                      {"e1000": ["debug=3"]})
    assert plan[0].argv(["modprobe"]) == ["modprobe", "e1000", "debug=3"]


def test_passes_until_virtio_devices_have_drivers(fake):
    said = []
    report = load_drivers(disk="/dev/vdq", sys_root=fake["sys"], proc_root=fake["proc"],
                          modules_dir=fake["modules"], modprobe=fake["modprobe"],
                          timeout=10, say=said.append)
    assert report.loaded == ["virtio_pci", "virtio_net", "virtio_blk"]
    assert report.nics == [("eth0", "52:54:00:12:34:56")]
    assert report.disk == "/dev/vdq"
    assert report.passes >= 2
    assert "serial8250" not in fake["log"].read_text(), "built-in modules are not modprobed"


def test_named_module_first_with_params_and_failures_reported(fake):
    report = load_drivers(disk="/dev/vdq", sys_root=fake["sys"], proc_root=fake["proc"],
                          modules_dir=fake["modules"], modprobe=fake["modprobe"],
                          netmodule="broken", netmodparm="io=0x300", timeout=10)
    assert fake["log"].read_text().splitlines()[0] == "broken io=0x300"
    assert report.failed == ["broken io=0x300: modprobe: FATAL: Module broken not found"]
    assert report.disk == "/dev/vdq"


def test_missing_disk_gives_up_at_the_timeout(fake):
    said = []
    report = load_drivers(disk="/dev/sdz", sys_root=fake["sys"], proc_root=fake["proc"],
                          modules_dir=fake["modules"], modprobe=fake["modprobe"],
                          timeout=1.0, say=said.append)
    assert report.disk is None
    assert 0.9 < report.seconds < 5
    assert any("disk /dev/sdz" in s for s in said)


def test_bootif_mac_must_be_the_nic_found(fake):
    report = load_drivers(mac="52:54:00:aa:bb:cc", sys_root=fake["sys"],
                          proc_root=fake["proc"], modules_dir=fake["modules"],
                          modprobe=fake["modprobe"], timeout=1.0, say=lambda s: None)
    assert report.nics == [("eth0", "52:54:00:12:34:56")]
    assert report.seconds >= 0.9, "kept waiting for the BOOTIF NIC"


def test_find_library_fallback_finds_libudev_without_ldconfig():
    find = _find_library_fallback(lambda name: None)
    path = find("udev")
    assert path is not None and "libudev.so" in path and os.path.exists(path)
    assert find("herdcast-no-such-library") is None


def test_pyudev_imports_when_find_library_fails():
    """As in an initramfs: no ldconfig, no gcc, so ctypes.util.find_library returns None."""
    code = textwrap.dedent("""
        import ctypes.util
        ctypes.util.find_library = lambda name: None
        from agent.hardware import import_pyudev
        pyudev = import_pyudev()
        assert pyudev is not None
        print(len(list(pyudev.Context().list_devices(subsystem="net"))) >= 1)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


WAIT_FOR_UEVENT = textwrap.dedent("""
    import subprocess, threading, time
    from agent.hardware import load_drivers
    def plug():
        time.sleep(1.0)
        subprocess.run(["ip", "link", "add", "v0", "address", "02:00:00:00:00:42",
                        "type", "veth", "peer", "name", "v1"], check=True)
    threading.Thread(target=plug).start()
    r = load_drivers(mac="02:00:00:00:00:42", modules_dir="/nonexistent",
                     modprobe=["true"], timeout=15, say=print)
    print("found", sorted(r.nics), round(r.seconds, 1))
""")


@pytest.mark.netns
@pytest.mark.skipif(not shutil.which("ip"), reason="needs iproute2")
def test_uevent_wait_sees_a_nic_plugged_later():
    """The kernel's add uevent, in a namespace of our own, ends the wait."""
    ns = f"hchw{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=20)
    try:
        proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                               WAIT_FOR_UEVENT], capture_output=True, text=True, timeout=60,
                              cwd=Path(__file__).resolve().parent.parent)
    finally:
        subprocess.run(["ip", "netns", "delete", ns], timeout=20, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "waiting up to 15 s for the NIC" in proc.stdout
    found = proc.stdout.strip().splitlines()[-1]
    assert "('v0', '02:00:00:00:00:42')" in found
    assert float(found.split()[-1]) < 10
