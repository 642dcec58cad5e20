"""Drivers for the node's NIC and disk: modalias -> modprobe, then wait for the devices.

There is no udevd in the initramfs, so the agent does its job: every device on a bus in
sysfs with a modalias gets the modules modules.alias maps it to, loaded by modprobe (kmod's
or busybox's, both resolve dependencies through modules.dep). Loading a driver creates new
devices (virtio_pci makes the virtio devices that need virtio_net and virtio_blk; ahci makes
the SCSI disk that needs sd_mod), so the kernel's uevents are watched with pyudev (a
libudev Monitor on the kernel's netlink group) started before the first scan: each device
added with a MODALIAS gets its driver as soon as the event arrives, with no rescan of sysfs
and no sleeping. Without pyudev (libudev not loadable, a fake sysfs in tests) sysfs is
scanned again in passes instead.

Under TCG every process and every sysfs read costs: the first scan reads only
/sys/bus/*/devices/*/modalias (driver-bound devices are on a bus; see bus_modaliases for
why not pyudev's enumeration), the modules of one scan go to a single `modprobe -a`, and a
NIC is brought up as soon as its driver made it, so its carrier negotiation (about 2 s on
e1000) overlaps with the disk probing.

`netmodule=`/`diskmodule=` name a module to load (with `netmodparm=`/`diskmodparm=`) when
the NIC's driver is not found by modalias (ISA cards, a driver the alias table lacks).

Every function takes the sysfs root, the modules directory and the modprobe command as
parameters, so the planning runs in tests on a fake tree.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import functools
import glob
import os
import platform
import re
import shlex
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Device:
    """A sysfs device that asks for a driver."""

    syspath: str
    subsystem: str
    modalias: str


#: Modaliases of CPUs (cpu:type:x86,...:feature:..., x86cpu:...): they match only
#: CPU-accelerated crypto and power drivers (crc32c_intel, crct10dif_pclmul, kvm, ...). A
#: node needs none of them to clone a disk, and the kernel modprobes a crypto driver itself
#: when one is asked for (crc-t10dif under sd_mod asks for crct10dif), so they are skipped:
#: under TCG each costs a module load, and the feature list is the longest modalias to match.
CPU_MODALIASES = ("cpu:", "x86cpu:")


def is_cpu_feature(modalias: str) -> bool:
    """Whether a modalias names CPU features rather than a device (see CPU_MODALIASES)."""
    return modalias.startswith(CPU_MODALIASES)


def bus_modaliases(sys_root: str = "/sys") -> list[Device]:
    """Devices with a modalias on a bus (/sys/bus/*/devices/*), in path order.

    Drivers bind to bus devices only; the class devices a walk of /sys/devices also finds
    (input, dmi) ask for no NIC or disk driver. Under TCG this read of ~50 files took
    0.08-0.23 s where a walk of /sys/devices took 0.6 s.

    This one scan is not pyudev's (the monitor is): libudev's enumeration builds a device
    per sysfs entry and parses its whole uevent file, so even restricted to the buses
    (Enumerator.match_subsystem for each of /sys/bus/*, match_property MODALIAS) it took
    0.27-0.75 s under TCG, unrestricted 0.45-0.96 s, for the same ~50 modaliases.
    """
    found = []
    bus = Path(sys_root, "bus")
    try:
        buses = sorted(os.listdir(bus))
    except OSError:
        return []
    for name in buses:
        try:
            entries = sorted(os.listdir(bus / name / "devices"))
        except OSError:
            continue
        for entry in entries:
            path = bus / name / "devices" / entry
            try:
                alias = (path / "modalias").read_text().strip()
            except OSError:
                continue
            if alias:
                found.append(Device(str(path), name, alias))
    return found


_WILDCARD = re.compile(r"[*?\[]")


@dataclass
class Alias:
    """One modules.alias line, compiled once: a literal prefix to find the few candidate
    patterns of a device, then the shell pattern as a regex (under TCG, fnmatch over every
    pattern for every device took over a minute)."""

    pattern: str
    module: str
    prefix: str

    @functools.cached_property
    def regex(self) -> re.Pattern:
        """Compiled only for the few patterns whose prefix a device matches."""
        return re.compile(fnmatch.translate(self.pattern))

    def __iter__(self):  # unpacks as (pattern, module), like the file's columns
        return iter((self.pattern, self.module))

    @classmethod
    def of(cls, pattern: str, module: str) -> Alias:
        """Compile one alias pattern."""
        wild = _WILDCARD.search(pattern)
        return cls(pattern, module, pattern[:wild.start()] if wild else pattern)


class AliasTable(list):
    """modules.alias as a list of Alias, indexed by literal prefix.

    A device can match only the patterns whose prefix is one of its modalias's own
    prefixes, so matching looks up len(modalias) dict keys instead of trying every one of
    the ~3500 patterns (0.5 s per scan under TCG).
    """

    @functools.cached_property
    def by_prefix(self) -> dict[str, list[tuple[int, Alias]]]:
        """prefix -> (line order, alias)."""
        index: dict[str, list[tuple[int, Alias]]] = {}
        for order, alias in enumerate(self):
            index.setdefault(alias.prefix, []).append((order, alias))
        return index

    def matching(self, modalias: str) -> list[Alias]:
        """The aliases whose pattern matches, in file order (as a full scan finds them)."""
        index = self.by_prefix
        hits = [hit for k in range(len(modalias) + 1) for hit in index.get(modalias[:k], ())]
        return [alias for _, alias in sorted(hits, key=lambda hit: hit[0])
                if alias.regex.match(modalias)]


def read_aliases(modules_dir: str) -> AliasTable:
    """The compiled aliases of modules.alias; empty when there is none."""
    try:
        text = Path(modules_dir, "modules.alias").read_text()
    except OSError:
        return AliasTable()
    table = AliasTable()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "alias":
            table.append(Alias.of(parts[1], parts[2]))
    return table


def modules_for(modalias: str, aliases: Iterable[Alias | tuple[str, str]]) -> list[str]:
    """The modules whose alias patterns match (shell wildcards, as kmod matches them)."""
    if isinstance(aliases, AliasTable):
        candidates: Iterable[Alias | tuple[str, str]] = aliases.matching(modalias)
    else:
        candidates = aliases
    out = []
    for alias in candidates:
        if not isinstance(alias, Alias):
            alias = Alias.of(*alias)
        if (alias.module not in out and modalias.startswith(alias.prefix)
                and alias.regex.match(modalias)):
            out.append(alias.module)
    return out


def normalize(module: str) -> str:
    """Module names compare with '-' and '_' the same (the kernel's own rule)."""
    return module.replace("-", "_")


def loaded_modules(proc_root: str = "/proc") -> set[str]:
    """Names in /proc/modules."""
    try:
        text = Path(proc_root, "modules").read_text()
    except OSError:
        return set()
    return {line.split()[0] for line in text.splitlines() if line.strip()}


def builtin_modules(modules_dir: str) -> set[str]:
    """Modules compiled into the kernel (modules.builtin): never to be modprobed."""
    try:
        text = Path(modules_dir, "modules.builtin").read_text()
    except OSError:
        return set()
    return {normalize(os.path.basename(line.strip()).removesuffix(".ko"))
            for line in text.splitlines() if line.strip()}


@dataclass
class ModuleLoad:
    """One modprobe to run: the module (or an alias modprobe resolves) and its parameters."""

    name: str
    params: list[str] = field(default_factory=list)
    reason: str = ""
    by_alias: bool = False  # a raw modalias: most devices need no module, so no complaint

    def argv(self, modprobe: list[str]) -> list[str]:
        if self.by_alias:
            return [*modprobe, "-q", self.name]
        return [*modprobe, self.name, *self.params]


def device_class(modalias: str) -> str | None:
    """"net" or "disk" for the buses whose modalias says so (PCI class, virtio device id),
    so netmodparm=/diskmodparm= reach the driver of a NIC/disk found with AUTO."""
    if modalias.startswith("pci:"):
        cls = modalias.partition("bc")[2][:2].upper()
        return {"02": "net", "01": "disk"}.get(cls)
    if modalias.startswith("virtio:"):
        return {"d00000001": "net", "d00000002": "disk", "d00000008": "disk"}.get(
            modalias[len("virtio:"):].partition("v")[0])
    return None


def plan_loads(devices: Iterable[Device], aliases: list[tuple[str, str]],
               skip: set[str], params: dict[str, list[str]] | None = None,
               class_params: dict[str, list[str]] | None = None) -> list[ModuleLoad]:
    """What to modprobe for these devices, skipping modules already loaded or tried.

    `params` go to a module by name; `class_params` ("net"/"disk") to the modules of
    network/storage devices. CPU features are skipped (CPU_MODALIASES). Without a
    modules.alias to consult, the modalias itself is handed to modprobe, which resolves it
    (busybox's and kmod's both do).
    """
    params = {normalize(k): v for k, v in (params or {}).items()}
    class_params = class_params or {}
    plan: list[ModuleLoad] = []
    seen = set(skip)
    for dev in devices:
        if is_cpu_feature(dev.modalias):
            continue
        names = modules_for(dev.modalias, aliases) if aliases else [dev.modalias]
        for name in names:
            key = normalize(name)
            if key in seen:
                continue
            seen.add(key)
            extra = params.get(key) or class_params.get(device_class(dev.modalias) or "", [])
            plan.append(ModuleLoad(name, list(extra),
                                   f"{dev.subsystem or 'device'} {dev.modalias}",
                                   by_alias=not aliases))
    return plan


def named_loads(netmodule: str | None, netmodparm: str | None, diskmodule: str | None,
                diskmodparm: str | None) -> list[ModuleLoad]:
    """The modules netmodule=/diskmodule= name (AUTO, NONE or empty: none)."""
    loads = []
    for module, parm, what in ((netmodule, netmodparm, "netmodule="),
                               (diskmodule, diskmodparm, "diskmodule=")):
        if module and module.upper() not in ("AUTO", "NONE"):
            loads.append(ModuleLoad(module, shlex.split(parm or ""), what))
    return loads


# --------------------------------------------------------------------------- loading


@dataclass
class HardwareReport:
    """What the hardware step did, for the console."""

    loaded: list[str] = field(default_factory=list)  # "virtio_net" or "e1000 debug=3"
    failed: list[str] = field(default_factory=list)  # "name: modprobe's message"
    nics: list[tuple[str, str]] = field(default_factory=list)  # (name, mac)
    disk: str | None = None
    passes: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def modprobe_command() -> list[str]:
    """kmod's modprobe, else busybox's (an initramfs may have only busybox)."""
    for path in ("/sbin/modprobe", "/usr/sbin/modprobe", "/bin/modprobe"):
        if os.access(path, os.X_OK):
            return [path]
    return ["busybox", "modprobe"]


def _modprobe(argv: list[str], timeout: float) -> tuple[int, str]:
    """(exit status, last line of its message) of one modprobe run; -1 if it did not run."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return -1, str(exc)
    msg = (proc.stderr or proc.stdout).strip().splitlines()
    return proc.returncode, msg[-1] if msg else f"rc={proc.returncode}"


def run_loads(loads: list[ModuleLoad], modprobe: list[str], report: HardwareReport,
              proc_root: str = "/proc", timeout: float = 60) -> None:
    """modprobe the planned modules; a failure is noted, never fatal (the NIC may be fine).

    The named modules without parameters go to one `modprobe -a -q` (under TCG each modprobe
    process costs a few tenths of a second); /proc/modules then tells which loaded, and a
    module that did not is run again alone for modprobe's own message. Loads with
    parameters, and raw modaliases (no modules.alias), run one modprobe each.
    """
    batch = [load for load in loads if not load.params and not load.by_alias]
    if len(batch) < 2:
        batch = []
    if batch:
        rc, msg = _modprobe([*modprobe, "-a", "-q", *(load.name for load in batch)], timeout)
        present = {normalize(name) for name in loaded_modules(proc_root)}
        for load in batch:
            if normalize(load.name) in present:
                report.loaded.append(load.name)
            elif rc == -1:
                report.failed.append(f"{load.name}: {msg}")
            else:
                _run_one(load, modprobe, report, timeout)
    batched = {id(load) for load in batch}
    for load in loads:
        if id(load) not in batched:
            _run_one(load, modprobe, report, timeout)


def _run_one(load: ModuleLoad, modprobe: list[str], report: HardwareReport,
             timeout: float) -> None:
    label = " ".join([load.name, *load.params])
    rc, msg = _modprobe(load.argv(modprobe), timeout)
    if rc == 0:
        report.loaded.append(label)
    elif rc == -1 or not load.by_alias:
        report.failed.append(f"{label}: {msg}")


def nics(sys_root: str = "/sys") -> list[tuple[str, str]]:
    """(name, mac) of every non-loopback network interface, sorted by name."""
    out = []
    for d in sorted(Path(sys_root, "class/net").glob("*")):
        if d.name == "lo":
            continue
        try:
            mac = (d / "address").read_text().strip().lower()
        except OSError:
            mac = ""
        out.append((d.name, mac))
    return out


ARPHRD_ETHER = 1
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def set_link_up(ifname: str) -> None:
    """`ip link set IFNAME up` by ioctl: no pyroute2 import in the hardware step."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH", ifname.encode()[:15], 0)
        flags = struct.unpack_from("H", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, req), 16)[0]
        if not flags & _IFF_UP:
            fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS,
                        struct.pack("16sH", ifname.encode()[:15], flags | _IFF_UP))


def nics_to_bring_up(sys_root: str, mac: str | None) -> list[str]:
    """The NICs the network step would choose from: the BOOTIF one when `mac` is given
    (other ports stay down, as the network step leaves them), else every Ethernet NIC."""
    out = []
    for name, nic_mac in nics(sys_root):
        try:
            kind = int(Path(sys_root, "class/net", name, "type").read_text())
        except (OSError, ValueError):
            continue
        if kind == ARPHRD_ETHER and (not mac or nic_mac == mac.lower()):
            out.append(name)
    return out


def disk_present(disk: str | None, sys_root: str = "/sys") -> bool:
    """Whether disk= exists yet (devtmpfs creates /dev nodes as the driver registers)."""
    if not disk:
        return True
    return os.path.exists(disk) or Path(sys_root, "class/block", os.path.basename(disk)).exists()


def wanted_found(sys_root: str, disk: str | None, mac: str | None) -> tuple[bool, bool]:
    """(NIC found, disk found): the BOOTIF MAC's NIC if given, else any NIC."""
    found = nics(sys_root)
    nic_ok = any(m == mac.lower() for _, m in found) if mac else bool(found)
    return nic_ok, disk_present(disk, sys_root)


#: Where libudev.so.1 is looked for when ctypes.util.find_library cannot find it.
LIBRARY_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
                "/lib", "/usr/lib")


def find_library_on_disk(name: str, dirs: Iterable[str | None] | None = None) -> str | None:
    """The path of lib{name}.so (or its shortest lib{name}.so.N soname) in the frozen bundle,
    next to the executable, on LD_LIBRARY_PATH or in LIBRARY_DIRS; None if none is there.

    ctypes.util.find_library asks `ldconfig -p`, gcc or ld; an initramfs has none of them,
    so it answers None and pyudev refuses to load libudev, though dlopen would find it.
    """
    if dirs is None:
        dirs = [getattr(sys, "_MEIPASS", None), os.path.dirname(sys.executable),
                *os.environ.get("LD_LIBRARY_PATH", "").split(":"), *LIBRARY_DIRS]
    for directory in dirs:
        if not directory:
            continue
        hits = sorted(glob.glob(os.path.join(directory, f"lib{name}.so*")), key=len)
        if hits:
            return hits[0]
    return None


def import_pyudev() -> ModuleType:
    """pyudev, its lookup of libudev made to work without ldconfig (ImportError if not).

    The frozen agent's runtime hook (builder/rthook_libs.py) already fixes
    ctypes.util.find_library; this covers an agent run any other way in an initramfs. Only
    pyudev's own lookup is changed, and only to fill in where the stock one fails.
    """
    import pyudev
    import pyudev._ctypeslib.utils as pyudev_utils

    stock = pyudev_utils.find_library
    if not getattr(stock, "herdcast_fallback", False):
        def find_library(name: str) -> str | None:
            return stock(name) or find_library_on_disk(name)

        find_library.herdcast_fallback = True  # type: ignore[attr-defined]
        pyudev_utils.find_library = find_library
    return pyudev


@dataclass(frozen=True)
class Uevent:
    """What the hardware step needs of one kernel uevent (a pyudev.Device from a Monitor)."""

    action: str
    syspath: str
    subsystem: str
    modalias: str

    @classmethod
    def of(cls, device) -> Uevent:
        """From a pyudev.Device: MODALIAS and SUBSYSTEM are the event's own properties (a
        device from the monitor is not re-read from sysfs)."""
        return cls(device.action or "", device.sys_path, device.subsystem or "",
                   device.properties.get("MODALIAS", ""))


class UdevEvents:
    """The kernel's uevents, through pyudev's Monitor (libudev's netlink socket).

    source="kernel": no udevd runs in the initramfs to re-broadcast them. The monitor is
    started before the first scan, so a device added while modprobe runs is never missed:
    its event waits in the socket's buffer. Should the buffer overflow (libudev's receive
    fails with ENOBUFS), `lost` is set and the caller rescans sysfs.
    """

    def __init__(self, monitor) -> None:
        self.monitor = monitor
        self.lost = False

    @classmethod
    def open(cls) -> UdevEvents:
        """A started kernel-uevent monitor; ImportError or OSError when libudev or the
        netlink socket is not to be had."""
        pyudev = import_pyudev()
        monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
        with contextlib.suppress(OSError):  # past rmem_max needs root (SO_RCVBUFFORCE)
            monitor.set_receive_buffer_size(4 << 20)
        monitor.start()
        return cls(monitor)

    def receive(self, timeout: float) -> list[Uevent]:
        """The events that arrive within `timeout`, and once the first is there, all those
        already queued (without waiting), so they go to one modprobe."""
        events: list[Uevent] = []
        wait = max(0.0, timeout)
        while True:
            try:
                device = self.monitor.poll(timeout=wait)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.lost, wait = True, 0.0
                continue
            if device is None:
                return events
            events.append(Uevent.of(device))
            wait = 0.0

    def close(self) -> None:
        """Drop the monitor: libudev closes its socket when pyudev unrefs it, rather than
        leaving it to fill up with the events of the rest of the run."""
        self.monitor = None


def open_uevents() -> tuple[UdevEvents | None, str]:
    """The uevent monitor, or None and why (then sysfs is scanned in passes)."""
    try:
        return UdevEvents.open(), ""
    except (ImportError, OSError) as exc:
        return None, str(exc) or type(exc).__name__


def load_drivers(*, disk: str | None = None, mac: str | None = None,
                 netmodule: str | None = None, netmodparm: str | None = None,
                 diskmodule: str | None = None, diskmodparm: str | None = None,
                 timeout: float = 30.0, sys_root: str = "/sys", proc_root: str = "/proc",
                 modules_dir: str | None = None, modprobe: list[str] | None = None,
                 uevents: UdevEvents | None = None,
                 link_up: Callable[[str], None] | None = None,
                 say: Callable[[str], None] = print,
                 max_passes: int = 8) -> HardwareReport:
    """Load drivers until the NIC (BOOTIF's if `mac`) and `disk` exist, or `timeout`.

    Named modules first (they may be what creates the devices), then one pass over the
    devices on the buses, then a pass for each batch of devices the kernel announces, until
    both devices are there. Each NIC the network step may use is brought up (`link_up`) as
    soon as it exists. For the real /sys a pyudev monitor and the ioctl are the defaults;
    with another `sys_root` (a fake tree) and no `uevents`, sysfs is scanned in passes.
    """
    start = time.monotonic()
    deadline = start + timeout
    report = HardwareReport()
    modules_dir = modules_dir or f"/lib/modules/{platform.release()}"
    modprobe = modprobe or modprobe_command()
    real = sys_root == "/sys"
    own_monitor = uevents is None and real
    if own_monitor:
        uevents, why = open_uevents()
        if uevents is None:
            report.notes.append(f"no uevents from pyudev ({why}): scanning sysfs in passes")
    if link_up is None and real:
        link_up = set_link_up
    aliases = read_aliases(modules_dir)
    if not aliases:
        report.notes.append(f"no {modules_dir}/modules.alias: handing modaliases to modprobe")
    tried = loaded_modules(proc_root) | builtin_modules(modules_dir)
    named = named_loads(netmodule, netmodparm, diskmodule, diskmodparm)
    params = {normalize(load.name): load.params for load in named}
    class_params = {}
    for cls, module, parm in (("net", netmodule, netmodparm), ("disk", diskmodule, diskmodparm)):
        if (module or "AUTO").upper() == "AUTO" and parm:
            class_params[cls] = shlex.split(parm)
    by_modalias = not all((m or "").upper() == "NONE" for m in (netmodule, diskmodule))
    if not by_modalias:
        report.notes.append("netmodule=NONE and no disk module: loading nothing by modalias")
    run_loads([n for n in named if normalize(n.name) not in tried], modprobe, report,
              proc_root)
    tried |= {normalize(n.name) for n in named}
    upped: set[str] = set()

    def bring_up_nics() -> None:
        if link_up is None:
            return
        for name in nics_to_bring_up(sys_root, mac):
            if name not in upped:
                upped.add(name)
                try:
                    link_up(name)
                except OSError as exc:
                    report.notes.append(f"cannot bring {name} up yet: {exc.strerror or exc}")

    def one_pass(devices: list[Device] | None = None) -> int:
        """Load the drivers of `devices` (None: every device on a bus); how many loads."""
        if not by_modalias:
            return 0
        if devices is None:
            devices = bus_modaliases(sys_root)
        loads = plan_loads(devices, aliases, tried, params, class_params)
        if loads:
            tried.update(normalize(x.name) for x in loads)
            run_loads(loads, modprobe, report, proc_root)
            report.passes += 1
        return len(loads)

    def from_events(events: list[Uevent]) -> list[Device] | None:
        """The added devices that ask for a driver; None after lost events (rescan)."""
        if uevents is not None and uevents.lost:
            uevents.lost = False
            return None
        return [Device(e.syspath, e.subsystem, e.modalias)
                for e in events if e.action == "add" and e.modalias]

    try:
        loaded_some = one_pass()
        bring_up_nics()
        nic_ok, disk_ok = wanted_found(sys_root, disk, mac)
        waited_note = False
        while not (nic_ok and disk_ok) and time.monotonic() < deadline:
            if uevents is not None:
                events = uevents.receive(min(0.5, max(0.0, deadline - time.monotonic())))
                loaded_some = one_pass(from_events(events))
                quiet = not events
            else:
                time.sleep(0.05 if loaded_some and report.passes < max_passes else 0.25)
                loaded_some = (one_pass() if report.passes < max_passes * 4 else 0)
                quiet = not loaded_some
            bring_up_nics()
            nic_ok, disk_ok = wanted_found(sys_root, disk, mac)
            if quiet and not (nic_ok and disk_ok) and not waited_note:
                say(f"waiting up to {timeout:.0f} s for "
                    f"{'the NIC' if not nic_ok else ''}"
                    f"{' and ' if not (nic_ok or disk_ok) else ''}"
                    f"{'disk ' + str(disk) if not disk_ok else ''}")
                waited_note = True
        if uevents is not None:
            # devices already announced (a second NIC, a second disk) still get their driver
            one_pass(from_events(uevents.receive(0)))
            bring_up_nics()
    finally:
        if own_monitor and uevents is not None:
            uevents.close()
    report.nics = nics(sys_root)
    report.disk = disk if disk_ok and disk else None
    report.seconds = time.monotonic() - start
    return report
