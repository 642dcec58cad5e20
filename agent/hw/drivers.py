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

Every function takes the sysfs root, the modules directory and the modprobe command as
parameters, so the step runs in tests on a fake tree.
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


def load_drivers(*, disk: str | None = None, mac: str | None = None,
                 netmodule: str | None = None, netmodparm: str | None = None,
                 diskmodule: str | None = None, diskmodparm: str | None = None,
                 timeout: float = 30.0, sys_root: str = "/sys", proc_root: str = "/proc",
                 modules_dir: str | None = None, modprobe: list[str] | None = None,
                 uevents: UdevEvents | None = None,
                 link_up: Callable[[str], None] | None = None,
                 say: Callable[[str], None] = print,
                 max_passes: int = 8, dev_root: str | None = None) -> HardwareReport:
    """Load drivers until the NIC (BOOTIF's if `mac`) and `disk` exist, or `timeout`.

    Named modules first (they may be what creates the devices), then one pass over the
    devices on the buses, then a pass for each batch of devices the kernel announces, until
    both devices are there. Each NIC the network step may use is brought up (`link_up`) as
    soon as it exists. For the real /sys a pyudev monitor and the ioctl are the defaults;
    with another `sys_root` (a fake tree) and no `uevents`, sysfs is scanned in passes.
    `dev_root` (the initramfs's /dev, which no udevd fills) gets /dev/disk/by-id and by-path
    links made from sysfs when `disk` is one of them.
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
    report.add(run_loads([n for n in named if normalize(n.name) not in tried], modprobe,
                         proc_root))
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
            report.add(run_loads(loads, modprobe, proc_root))
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
        nic_ok, disk_ok = wanted_found(sys_root, disk, mac, dev_root)
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
            nic_ok, disk_ok = wanted_found(sys_root, disk, mac, dev_root)
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
