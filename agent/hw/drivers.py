"""Drivers for the node's NIC and disk: modalias -> modprobe, then wait for the devices.

There is no udevd in the initramfs, so the agent does its job: every device on a bus in
sysfs with a modalias gets the modules modules.alias maps it to (agent.hw.modalias), loaded by
modprobe (agent.hw.modprobe). Loading a driver creates new devices, so the kernel's uevents
are watched with pyudev (agent.hw.uevents) started before the first scan: each device added
with a MODALIAS gets its driver as soon as the event arrives, with no rescan of sysfs and no
sleeping. Without pyudev (libudev not loadable, a fake sysfs in tests) sysfs is scanned
again in passes instead.

Under TCG every process and every sysfs read costs, so a NIC is brought up as soon as its
driver made it: its carrier negotiation (about 2 s on e1000) overlaps with the disk probing.

The step is a DriverLoader: what is `Wanted` (the NIC, the disk, the named modules) on a
`Host` (the sysfs root, the modules directory, the modprobe command), so it runs in tests
on a fake tree.
"""

from __future__ import annotations

import os
import platform
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.hw.disklinks import make_disk_links
from agent.hw.modalias import Device, bus_modaliases, plan_loads, read_aliases
from agent.hw.modprobe import (
    LoadResult,
    builtin_modules,
    loaded_modules,
    modprobe_command,
    named_loads,
    normalize,
    run_loads,
)
from agent.hw.uevents import UdevEvents, Uevent, open_uevents
from agent.net.netif import ARPHRD_ETHER, set_link_up


@dataclass
class HardwareReport(LoadResult):
    """What the hardware step did, for the console: the modprobes (`loaded`, `failed`) and
    what they made appear."""

    nics: list[tuple[str, str]] = field(default_factory=list)  # (name, mac)
    disk: str | None = None
    passes: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def add(self, result: LoadResult) -> None:
        """Count in one batch of modprobes."""
        self.loaded += result.loaded
        self.failed += result.failed


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


def disk_present(disk: str | None, sys_root: str = "/sys", dev_root: str | None = None
                 ) -> bool:
    """Whether disk= exists yet (devtmpfs creates /dev nodes as the driver registers). With
    `dev_root` (no udevd: the initramfs) a missing DEV_ROOT/disk/by-id|by-path name is made
    from sysfs first, as udev would have made it."""
    if not disk:
        return True
    if dev_root is not None and disk.startswith(os.path.join(dev_root, "disk", "")) \
            and not os.path.exists(disk):
        make_disk_links(sys_root, dev_root)
    return os.path.exists(disk) or Path(sys_root, "class/block", os.path.basename(disk)).exists()


def wanted_found(sys_root: str, disk: str | None, mac: str | None,
                 dev_root: str | None = None) -> tuple[bool, bool]:
    """(NIC found, disk found): the BOOTIF MAC's NIC if given, else any NIC."""
    found = nics(sys_root)
    nic_ok = any(m == mac.lower() for _, m in found) if mac else bool(found)
    return nic_ok, disk_present(disk, sys_root, dev_root)


@dataclass(frozen=True)
class Wanted:
    """What the hardware step waits for (the NIC, BOOTIF's if `mac`, and `disk`) and the
    drivers the admin named (netmodule=, diskmodule= and their parameters)."""

    disk: str | None = None
    mac: str | None = None
    netmodule: str | None = None
    netmodparm: str | None = None
    diskmodule: str | None = None
    diskmodparm: str | None = None

    def class_params(self) -> dict[str, list[str]]:
        """netmodparm=/diskmodparm= with an AUTO module: for each module loaded for a
        device of that class."""
        out = {}
        for cls, module, parm in (("net", self.netmodule, self.netmodparm),
                                  ("disk", self.diskmodule, self.diskmodparm)):
            if (module or "AUTO").upper() == "AUTO" and parm:
                out[cls] = shlex.split(parm)
        return out

    @property
    def by_modalias(self) -> bool:
        """Whether devices get drivers by modalias at all (not with both modules NONE)."""
        return not all((m or "").upper() == "NONE" for m in (self.netmodule, self.diskmodule))


@dataclass(frozen=True)
class Host:
    """Where drivers come from: the running system by default, a fake tree in tests.
    `dev_root` (the initramfs's /dev, which no udevd fills) gets /dev/disk/by-id and
    by-path links made from sysfs when disk= is one of them."""

    sys_root: str = "/sys"
    proc_root: str = "/proc"
    modules_dir: str = field(default_factory=lambda: f"/lib/modules/{platform.release()}")
    modprobe: list[str] = field(default_factory=modprobe_command)
    dev_root: str | None = None

    @property
    def real(self) -> bool:
        return self.sys_root == "/sys"


class DriverLoader:
    """One hardware step: the modules tried so far, the NICs brought up, and the report.

    Each method is one thing the step does (load the named modules, load the drivers of some
    devices, bring up the NICs that appeared, look for what is wanted); `wait` runs them
    until the NIC and the disk are there or the time is up.
    """

    def __init__(self, wanted: Wanted, host: Host,
                 link_up: Callable[[str], None] | None = None,
                 say: Callable[[str], None] = print) -> None:
        self.wanted, self.host, self.link_up, self.say = wanted, host, link_up, say
        self.report = HardwareReport()
        self.aliases = read_aliases(host.modules_dir)
        if not self.aliases:
            self.report.notes.append(f"no {host.modules_dir}/modules.alias: handing "
                                     "modaliases to modprobe")
        self.tried = loaded_modules(host.proc_root) | builtin_modules(host.modules_dir)
        self.named = named_loads(wanted.netmodule, wanted.netmodparm, wanted.diskmodule,
                                 wanted.diskmodparm)
        self.params = {normalize(load.name): load.params for load in self.named}
        self.class_params = wanted.class_params()
        if not wanted.by_modalias:
            self.report.notes.append("netmodule=NONE and no disk module: loading nothing by "
                                     "modalias")
        self.upped: set[str] = set()

    def load_named(self) -> None:
        """netmodule=/diskmodule= by name first: they may be what creates the devices."""
        todo = [n for n in self.named if normalize(n.name) not in self.tried]
        self.report.add(run_loads(todo, self.host.modprobe, self.host.proc_root))
        self.tried |= {normalize(n.name) for n in self.named}

    def load_for(self, devices: list[Device] | None = None) -> int:
        """Load the drivers of `devices` (None: every device on a bus); how many loads."""
        if not self.wanted.by_modalias:
            return 0
        if devices is None:
            devices = bus_modaliases(self.host.sys_root)
        loads = plan_loads(devices, self.aliases, self.tried, self.params, self.class_params)
        if loads:
            self.tried.update(normalize(x.name) for x in loads)
            self.report.add(run_loads(loads, self.host.modprobe, self.host.proc_root))
            self.report.passes += 1
        return len(loads)

    def bring_up_nics(self) -> None:
        """Each NIC the network step may use, up as soon as it exists (carrier overlaps)."""
        if self.link_up is None:
            return
        for name in nics_to_bring_up(self.host.sys_root, self.wanted.mac):
            if name not in self.upped:
                self.upped.add(name)
                try:
                    self.link_up(name)
                except OSError as exc:
                    self.report.notes.append(f"cannot bring {name} up yet: "
                                             f"{exc.strerror or exc}")

    def found(self) -> tuple[bool, bool]:
        """(NIC found, disk found)."""
        return wanted_found(self.host.sys_root, self.wanted.disk, self.wanted.mac,
                            self.host.dev_root)

    def wait(self, timeout: float, uevents: UdevEvents | None = None,
             max_passes: int = 8) -> HardwareReport:
        """Load drivers until the NIC and the disk exist, or `timeout`: after the named
        modules and one pass over the buses, a pass for each batch of devices the kernel
        announces (`uevents`), or without them a rescan of sysfs every so often."""
        start = time.monotonic()
        deadline = start + timeout
        self.load_named()
        loaded_some = self.load_for()
        self.bring_up_nics()
        nic_ok, disk_ok = self.found()
        waited_note = False
        while not (nic_ok and disk_ok) and time.monotonic() < deadline:
            if uevents is not None:
                events = uevents.receive(min(0.5, max(0.0, deadline - time.monotonic())))
                loaded_some = self.load_for(_added(events, uevents))
                quiet = not events
            else:
                time.sleep(0.05 if loaded_some and self.report.passes < max_passes else 0.25)
                loaded_some = self.load_for() if self.report.passes < max_passes * 4 else 0
                quiet = not loaded_some
            self.bring_up_nics()
            nic_ok, disk_ok = self.found()
            if quiet and not (nic_ok and disk_ok) and not waited_note:
                self.say(_waiting_line(timeout, nic_ok, disk_ok, self.wanted.disk))
                waited_note = True
        if uevents is not None:
            # devices already announced (a second NIC, a second disk) still get their driver
            self.load_for(_added(uevents.receive(0), uevents))
            self.bring_up_nics()
        self.report.nics = nics(self.host.sys_root)
        self.report.disk = self.wanted.disk if disk_ok and self.wanted.disk else None
        self.report.seconds = time.monotonic() - start
        return self.report


def _added(events: list[Uevent], uevents: UdevEvents) -> list[Device] | None:
    """The added devices that ask for a driver; None after lost events (rescan)."""
    if uevents.lost:
        uevents.lost = False
        return None
    return [Device(e.syspath, e.subsystem, e.modalias)
            for e in events if e.action == "add" and e.modalias]


def _waiting_line(timeout: float, nic_ok: bool, disk_ok: bool, disk: str | None) -> str:
    return (f"waiting up to {timeout:.0f} s for "
            f"{'the NIC' if not nic_ok else ''}"
            f"{' and ' if not (nic_ok or disk_ok) else ''}"
            f"{'disk ' + str(disk) if not disk_ok else ''}")


def load_drivers(wanted: Wanted, host: Host | None = None, *, timeout: float = 30.0,
                 uevents: UdevEvents | None = None,
                 link_up: Callable[[str], None] | None = None,
                 say: Callable[[str], None] = print, max_passes: int = 8) -> HardwareReport:
    """Load drivers until what is `wanted` exists, or `timeout` (DriverLoader.wait).

    On the real /sys a pyudev monitor and the link-up ioctl are the defaults (the monitor
    opened before the first scan, so no device is missed between them); with another
    `sys_root` (a fake tree) and no `uevents`, sysfs is scanned in passes.
    """
    host = host or Host()
    notes = []
    own_monitor = uevents is None and host.real
    if own_monitor:
        uevents, why = open_uevents()
        if uevents is None:
            notes.append(f"no uevents from pyudev ({why}): scanning sysfs in passes")
    if link_up is None and host.real:
        link_up = set_link_up
    loader = DriverLoader(wanted, host, link_up, say)
    loader.report.notes[:0] = notes
    try:
        return loader.wait(timeout, uevents, max_passes)
    finally:
        if own_monitor and uevents is not None:
            uevents.close()
