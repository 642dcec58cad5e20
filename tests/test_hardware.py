"""agent.hw.drivers and what it uses: modalias -> module planning on a fake sysfs
(agent.hw.modalias), modprobe runs (agent.hw.modprobe), passes, uevents through pyudev's monitor
(agent.hw.uevents)."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.hw.drivers import DriverLoader, Host, Wanted, load_drivers
from agent.hw.modalias import (
    AliasTable,
    Device,
    bus_modaliases,
    modules_for,
    plan_loads,
    read_aliases,
)
from agent.hw.modprobe import ModuleLoad, named_loads, run_loads
from agent.hw.uevents import UdevEvents, Uevent, find_library_on_disk, import_pyudev, open_uevents

ALIASES = """\
# Aliases extracted from modules themselves.
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000001v* virtio_net
alias virtio:d00000002v* virtio_blk
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias pci:v00008086d00002922sv*sd*bc01sc06i* ahci
alias pci:v*d*sv*sd*bc01sc06i01* ahci
alias cpu:type:x86,ven*fam*mod*:feature:*0094* crc32c_intel
"""

# A modprobe stand-in, one name or several with -a: logs its argv (without -q), lists what
# it loads in the fake /proc/modules, makes the devices the driver would create, and, when
# FAKE_EVENTS is set, writes their add uevents there as the kernel would send them.
FAKE_MODPROBE = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    sysfs, log = Path(os.environ["FAKE_SYS"]), Path(os.environ["FAKE_LOG"])
    args = [a for a in sys.argv[1:] if a != "-q"]
    with log.open("a") as f:
        f.write(" ".join(args) + "\\n")
    names = args[1:] if args[0] == "-a" else args[:1]
    def event(devpath, subsystem, alias=None):
        if os.environ.get("FAKE_EVENTS"):
            props = {"ACTION": "add", "DEVPATH": devpath, "SUBSYSTEM": subsystem}
            if alias:
                props["MODALIAS"] = alias
            with open(os.environ["FAKE_EVENTS"], "a") as f:
                f.write(json.dumps(["add@" + devpath, props]) + "\\n")
    def dev(path, bus, alias):
        d = sysfs / "devices" / path
        d.mkdir(parents=True, exist_ok=True)
        (d / "modalias").write_text(alias + "\\n")
        (sysfs / "bus" / bus / "devices").mkdir(parents=True, exist_ok=True)
        (sysfs / "bus" / bus / "devices" / d.name).symlink_to(d)
        event("/devices/" + path, bus, alias)
    def nic(name, mac):
        net = sysfs / "class/net" / name
        net.mkdir(parents=True)
        (net / "address").write_text(mac + "\\n")
        (net / "type").write_text("1\\n")
        event("/devices/virtual/net/" + name, "net")
    failed = False
    for name in names:
        if name == "virtio_pci":
            dev("pci0000:00/0000:00:03.0/virtio0", "virtio", "virtio:d00000001v00001AF4")
            dev("pci0000:00/0000:00:04.0/virtio1", "virtio", "virtio:d00000002v00001AF4")
        elif name == "virtio_net":
            nic("eth0", "52:54:00:12:34:56")
        elif name == "virtio_blk":
            (sysfs / "class/block/vdq").mkdir(parents=True)
            event("/devices/virtual/block/vdq", "block")
        elif name in ("broken", "e1000"):
            if len(names) == 1:
                print(f"modprobe: FATAL: Module {name} not found", file=sys.stderr)
            failed = True
            continue
        with Path(os.environ["FAKE_PROC"], "modules").open("a") as f:
            f.write(f"{name} 16384 0 - Live 0x0\\n")
    sys.exit(1 if failed else 0)
""")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A sysfs with two virtio PCI functions, a platform device and a loopback, and a
    modules dir."""
    sysfs = tmp_path / "sys"
    (sysfs / "bus/pci/devices").mkdir(parents=True)
    for slot in ("03", "04"):
        d = sysfs / f"devices/pci0000:00/0000:00:{slot}.0"
        d.mkdir(parents=True)
        (d / "modalias").write_text(
            f"pci:v00001AF4d0000100{int(slot) - 3}sv00001AF4sd00000001bc02sc00i00\n")
        (sysfs / "bus/pci/devices" / d.name).symlink_to(d)
    (sysfs / "devices/platform/serial8250").mkdir(parents=True)
    (sysfs / "devices/platform/serial8250/modalias").write_text("platform:serial8250\n")
    (sysfs / "bus/platform/devices").mkdir(parents=True)
    (sysfs / "bus/platform/devices/serial8250").symlink_to(sysfs / "devices/platform/serial8250")
    (sysfs / "devices/system/cpu").mkdir(parents=True)
    (sysfs / "devices/system/cpu/modalias").write_text(
        "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0094\n")
    (sysfs / "bus/cpu/devices").mkdir(parents=True)
    (sysfs / "bus/cpu/devices/cpu0").symlink_to(sysfs / "devices/system/cpu")
    (sysfs / "class/net/lo").mkdir(parents=True)
    (sysfs / "class/net/lo/address").write_text("00:00:00:00:00:00\n")
    (sysfs / "class/net/lo/type").write_text("772\n")
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
    monkeypatch.setenv("FAKE_PROC", str(proc))
    monkeypatch.delenv("FAKE_EVENTS", raising=False)
    return {"sys": str(sysfs), "modules": str(modules), "proc": str(proc), "log": log,
            "modprobe": [sys.executable, str(script)], "tmp": tmp_path}


def run(fake, **kw):
    """load_drivers on the fake tree (no uevent socket unless `uevents` is given); the
    keywords of Wanted go there, the others to load_drivers."""
    kw.setdefault("say", lambda s: None)
    wanted = Wanted(**{k: kw.pop(k) for k in list(kw) if k in Wanted.__dataclass_fields__})
    host = Host(sys_root=fake["sys"], proc_root=fake["proc"], modules_dir=fake["modules"],
                modprobe=fake["modprobe"])
    return load_drivers(wanted, host, **kw)


def test_alias_wildcards_match_like_kmod():
    aliases = [tuple(line.split()[1:]) for line in ALIASES.splitlines()
               if line.startswith("alias")]
    assert modules_for("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", aliases) \
        == ["virtio_pci"]
    assert modules_for("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01", aliases) \
        == ["ahci"]
    assert modules_for("usb:v046Dp0825", aliases) == []


def test_alias_table_matches_what_a_scan_of_every_pattern_matches(fake):
    """The prefix index finds exactly the modules, in file order, that trying every
    pattern finds, including patterns whose wildcard comes early (pci:v*...)."""
    table = read_aliases(fake["modules"])
    assert isinstance(table, AliasTable)
    plain = [tuple(alias) for alias in table]
    for modalias in ("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01",
                     "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
                     "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc06i01",
                     "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",
                     "virtio:d00000002v00001AF4", "virtio:d00000003v00001AF4", "", "p"):
        assert modules_for(modalias, table) == modules_for(modalias, plain), modalias
    assert modules_for("pci:v00001B36d00000010sv00001AF4sd00001100bc01sc06i01", table) \
        == ["ahci"]


def test_bus_scan_finds_modaliases_with_subsystem(fake):
    devices = bus_modaliases(fake["sys"])
    assert [(d.subsystem, d.modalias.split("sv")[0]) for d in devices] == [
        ("cpu", "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0094"),
        ("pci", "pci:v00001AF4d00001000"), ("pci", "pci:v00001AF4d00001001"),
        ("platform", "platform:serial8250")]
    assert bus_modaliases(str(fake["tmp"] / "nosys")) == []


def test_plan_skips_loaded_and_repeats_nothing(fake):
    devices = bus_modaliases(fake["sys"])
    aliases = read_aliases(fake["modules"])
    plan = plan_loads(devices, aliases, skip=set())
    assert [p.name for p in plan] == ["virtio_pci"], \
        "two devices, one module, once; no CPU-feature module"
    assert plan_loads(devices, aliases, skip={"virtio_pci"}) == []


def test_cpu_features_ask_for_no_module():
    aliases = [("cpu:type:x86,ven*fam*mod*:feature:*0094*", "crc32c_intel"),
               ("x86cpu:vendor:*:family:*:model:*:feature:*0094*", "crc32c_intel")]
    devices = [Device("/sys/devices/system/cpu", "cpu",
                      "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0094"),
               Device("/sys/devices/system/cpu/cpu0", "cpu",
                      "x86cpu:vendor:0000:family:0006:model:003F:feature:,0094")]
    assert plan_loads(devices, aliases, skip=set()) == []
    assert plan_loads(devices, [], skip=set()) == [], "not handed to modprobe either"


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
    report = run(fake, disk="/dev/vdq", netmodule="NONE", diskmodule="NONE", timeout=0.5)
    assert report.loaded == [] and not fake["log"].exists()
    assert report.disk is None


def test_params_reach_a_module_found_by_modalias():
    plan = plan_loads([Device("/sys/x", "pci", "pci:v00008086d0000100Esv0sd0bc02sc00i00")],
                      [("pci:v00008086d0000100Esv*sd*bc*sc*i*", "e1000")], set(),
                      {"e1000": ["debug=3"]})
    assert plan[0].argv(["modprobe"]) == ["modprobe", "e1000", "debug=3"]


def test_the_loader_step_by_step(fake):
    """DriverLoader's steps one at a time on the fake tree: a pass loads what the buses ask
    for once (a module tried is never tried again), the NIC it made comes up, and `found`
    sees the NIC and then the disk its second pass made."""
    host = Host(sys_root=fake["sys"], proc_root=fake["proc"], modules_dir=fake["modules"],
                modprobe=fake["modprobe"])
    upped: list[str] = []
    loader = DriverLoader(Wanted(disk="/dev/vdq"), host, link_up=upped.append,
                          say=lambda s: None)
    assert loader.found() == (False, False)
    assert loader.load_for([]) == 0  # no device, nothing to load
    assert loader.load_for() == 1 and loader.report.loaded == ["virtio_pci"]
    assert loader.load_for() == 2  # virtio_pci made the virtio devices
    assert loader.load_for() == 0  # all tried
    loader.bring_up_nics()
    loader.bring_up_nics()
    assert upped == ["eth0"]
    assert loader.found() == (True, True)


def test_passes_until_virtio_devices_have_drivers(fake):
    upped = []
    report = run(fake, disk="/dev/vdq", timeout=10, link_up=upped.append)
    assert report.loaded == ["virtio_pci", "virtio_net", "virtio_blk"]
    assert report.nics == [("eth0", "52:54:00:12:34:56")]
    assert report.disk == "/dev/vdq"
    assert report.passes == 2
    log = fake["log"].read_text()
    assert log.splitlines() == ["virtio_pci", "-a virtio_net virtio_blk"], \
        "the modules of one pass go to one modprobe"
    assert "serial8250" not in log, "built-in modules are not modprobed"
    assert upped == ["eth0"], "the NIC is brought up by the hardware step"


def test_a_failure_in_a_batch_is_run_alone_for_its_message(fake):
    devices = [Device("/a", "pci", "pci:v00008086d0000100Esv0sd0bc02sc00i00"),
               Device("/b", "pci", "pci:v00001AF4d00001000sv0sd0bc02sc00i00")]
    report = run_loads(plan_loads(devices, read_aliases(fake["modules"]), set()),
                       fake["modprobe"], fake["proc"])
    assert fake["log"].read_text().splitlines() == ["-a e1000 virtio_pci", "e1000"]
    assert report.loaded == ["virtio_pci"]
    assert report.failed == ["e1000: modprobe: FATAL: Module e1000 not found"]


def test_named_module_first_with_params_and_failures_reported(fake):
    report = run(fake, disk="/dev/vdq", netmodule="broken", netmodparm="io=0x300", timeout=10)
    assert fake["log"].read_text().splitlines()[0] == "broken io=0x300"
    assert report.failed == ["broken io=0x300: modprobe: FATAL: Module broken not found"]
    assert report.disk == "/dev/vdq"


def test_missing_disk_gives_up_at_the_timeout(fake):
    said = []
    report = run(fake, disk="/dev/sdz", timeout=1.0, say=said.append)
    assert report.disk is None
    assert 0.9 < report.seconds < 5
    assert any("disk /dev/sdz" in s for s in said)


def test_bootif_mac_must_be_the_nic_found(fake):
    upped = []
    report = run(fake, mac="52:54:00:aa:bb:cc", timeout=1.0, link_up=upped.append)
    assert report.nics == [("eth0", "52:54:00:12:34:56")]
    assert report.seconds >= 0.9, "kept waiting for the BOOTIF NIC"
    assert upped == [], "a NIC other than BOOTIF's stays down"


def test_bootif_nic_is_brought_up(fake):
    upped = []
    report = run(fake, mac="52:54:00:12:34:56", disk="/dev/vdq", timeout=10,
                 link_up=upped.append)
    assert report.nics == [("eth0", "52:54:00:12:34:56")] and upped == ["eth0"]


def test_link_up_failure_is_a_note_not_fatal(fake):
    def refuse(name: str) -> None:
        raise PermissionError(1, "Operation not permitted")

    report = run(fake, disk="/dev/vdq", timeout=10, link_up=refuse)
    assert report.disk == "/dev/vdq"
    assert report.notes == ["cannot bring eth0 up yet: Operation not permitted"]


def udev_device(action: str, devpath: str, props: dict[str, str]) -> SimpleNamespace:
    """What pyudev's Monitor.poll returns, as far as the hardware step reads it."""
    return SimpleNamespace(action=action, sys_path="/sys" + devpath,
                           subsystem=props.get("SUBSYSTEM"), properties=props)


class FileMonitor:
    """pyudev's kernel Monitor stand-in: the fake modprobe writes the kernel's events to a
    file, handed out one per poll as pyudev does; `timeouts` records each poll's."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen, self.timeouts = path, 0, []

    def poll(self, timeout: float | None = None):
        self.timeouts.append(timeout)
        lines = self.path.read_text().splitlines() if self.path.exists() else []
        if self.seen == len(lines):
            return None
        header, props = json.loads(lines[self.seen])
        self.seen += 1
        action, _, devpath = header.partition("@")
        return udev_device(action, devpath, props)


def test_uevents_load_the_drivers_of_announced_devices_without_rescanning(fake, monkeypatch):
    events = fake["tmp"] / "events"
    monkeypatch.setenv("FAKE_EVENTS", str(events))

    class Unannounced(FileMonitor):
        """After the first scan, a device appears without an event: only a rescan of
        sysfs would find it."""

        def poll(self, timeout: float | None = None):
            d = Path(fake["sys"], "devices/unannounced")
            if not d.exists():
                d.mkdir()
                (d / "modalias").write_text("pci:v00008086d00002922sv0sd0bc01sc06i01\n")
                (Path(fake["sys"]) / "bus/pci/devices/unannounced").symlink_to(d)
            return super().poll(timeout)

    report = run(fake, disk="/dev/vdq", timeout=10, uevents=UdevEvents(Unannounced(events)),
                 link_up=lambda n: None)
    assert report.loaded == ["virtio_pci", "virtio_net", "virtio_blk"]
    assert report.passes == 2 and report.disk == "/dev/vdq"
    assert fake["log"].read_text().splitlines() == ["virtio_pci", "-a virtio_net virtio_blk"], \
        "the two virtio devices announced together go to one modprobe"
    assert "ahci" not in fake["log"].read_text()


def test_lost_uevents_mean_a_rescan(fake):
    class Overflowed(FileMonitor):
        def poll(self, timeout: float | None = None):
            if len(self.timeouts) < 3:  # as libudev after ENOBUFS: virtio_pci's events gone
                self.timeouts.append(timeout)
                raise OSError(errno.ENOBUFS, "No buffer space available")
            return super().poll(timeout)

    report = run(fake, disk="/dev/vdq", timeout=10,
                 uevents=UdevEvents(Overflowed(fake["tmp"] / "none")), link_up=lambda n: None)
    assert report.loaded == ["virtio_pci", "virtio_net", "virtio_blk"]
    assert report.disk == "/dev/vdq"


def test_receive_waits_for_the_first_event_then_takes_the_queued_ones(tmp_path):
    events = tmp_path / "events"
    events.write_text("".join(json.dumps([f"add@/devices/d{i}", {
        "ACTION": "add", "SUBSYSTEM": "virtio", "MODALIAS": f"virtio:d0000000{i}v00001AF4"}])
        + "\n" for i in (1, 2)))
    monitor = FileMonitor(events)
    got = UdevEvents(monitor).receive(0.5)
    assert got == [Uevent("add", "/sys/devices/d1", "virtio", "virtio:d00000001v00001AF4"),
                   Uevent("add", "/sys/devices/d2", "virtio", "virtio:d00000002v00001AF4")]
    assert monitor.timeouts == [0.5, 0.0, 0.0], "only the first poll waits"
    assert UdevEvents(FileMonitor(tmp_path / "none")).receive(0.3) == []


def test_a_device_without_modalias_is_an_event_without_one():
    event = Uevent.of(udev_device("add", "/devices/virtual/net/eth0", {"SUBSYSTEM": "net"}))
    assert event == Uevent("add", "/sys/devices/virtual/net/eth0", "net", "")


def test_a_monitor_error_other_than_overflow_is_raised():
    class Broken:
        def poll(self, timeout: float | None = None):
            raise OSError(errno.EBADF, "Bad file descriptor")

    events = UdevEvents(Broken())
    with pytest.raises(OSError):
        events.receive(0.1)
    assert not events.lost


def test_library_found_on_disk_prefers_the_soname(tmp_path):
    (tmp_path / "libudev.so.1.7.5").write_bytes(b"")
    (tmp_path / "libudev.so.1").symlink_to("libudev.so.1.7.5")
    assert find_library_on_disk("udev", [None, str(tmp_path / "no"), str(tmp_path)]) \
        == str(tmp_path / "libudev.so.1")
    assert find_library_on_disk("udevx", [str(tmp_path)]) is None


@pytest.mark.skipif(find_library_on_disk("udev") is None, reason="needs libudev1")
def test_pyudev_finds_libudev_without_ldconfig(monkeypatch):
    """In an initramfs ctypes.util.find_library finds nothing; pyudev's lookup then falls
    back to the library directories, and without libudev there the agent polls sysfs."""
    pyudev_utils = pytest.importorskip("pyudev._ctypeslib.utils")
    monkeypatch.setattr(pyudev_utils, "find_library", lambda name: None)
    assert import_pyudev().Context() is not None
    monkeypatch.setattr(pyudev_utils, "find_library", lambda name: None)
    monkeypatch.setattr("agent.hw.uevents.LIBRARY_DIRS", ())
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    assert open_uevents() == (None, "No library named udev")


WAIT_FOR_UEVENT = textwrap.dedent("""
    import subprocess, threading, time
    from agent.hw.drivers import Host, Wanted, load_drivers
    def plug():
        time.sleep(1.0)
        subprocess.run(["ip", "link", "add", "v0", "address", "02:00:00:00:00:42",
                        "type", "veth", "peer", "name", "v1"], check=True)
    threading.Thread(target=plug).start()
    r = load_drivers(Wanted(mac="02:00:00:00:00:42"),
                     Host(modules_dir="/nonexistent", modprobe=["true"]), timeout=15, say=print)
    print("notes", r.notes)
    print("found", sorted(r.nics), round(r.seconds, 1))
""")


@pytest.mark.netns
@pytest.mark.skipif(not shutil.which("ip"), reason="needs iproute2")
def test_uevent_wait_sees_a_nic_plugged_later():
    """The kernel's add uevent, from pyudev's monitor in a namespace of our own, ends the
    wait (no fallback to polling sysfs)."""
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
    assert "notes [" in proc.stdout and "pyudev" not in proc.stdout, \
        "the monitor opened: no fallback to polling passes"
    found = proc.stdout.strip().splitlines()[-1]
    assert "('v0', '02:00:00:00:00:42')" in found
    assert float(found.split()[-1]) < 10
