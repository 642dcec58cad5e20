"""Drivers for the node's NIC and disk: modalias -> modprobe, then wait for the devices.

There is no udevd in the initramfs, so the agent does its job: every device in sysfs with a
MODALIAS gets the modules modules.alias maps it to, loaded by modprobe (kmod's or
busybox's, both resolve dependencies through modules.dep). Loading is repeated in passes
because loading a bus driver creates new devices (virtio_pci makes the virtio devices that
need virtio_net and virtio_blk). Then kernel uevents (netlink, pyudev's Monitor) are watched
until the NIC and the disk show up, bounded by a timeout.

`netmodule=`/`diskmodule=` name a module to load (with `netmodparm=`/`diskmodparm=`) when
the NIC's driver is not found by modalias (ISA cards, a driver the alias table lacks).

Every function takes the sysfs root, the modules directory, the modprobe command and the
pyudev context as parameters, so the planning runs in tests on a fake tree.
"""

from __future__ import annotations

import ctypes.util
import fnmatch
import functools
import glob
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

LIBRARY_DIRS = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
                "/lib", "/usr/lib"]


# --------------------------------------------------------------------------- pyudev import


def _find_library_fallback(original: Callable[[str], str | None]) -> Callable[[str], str | None]:
    """find_library that also looks in the frozen bundle and the usual library dirs.

    ctypes.util.find_library asks ldconfig -p or gcc; an initramfs has neither, so it returns
    None and pyudev refuses to import. A soname found on disk is what dlopen needs anyway.
    """

    def find_library(name: str) -> str | None:
        found = original(name)
        if found:
            return found
        dirs = [getattr(sys, "_MEIPASS", None), os.path.dirname(sys.executable),
                *os.environ.get("LD_LIBRARY_PATH", "").split(":"), *LIBRARY_DIRS]
        for d in dirs:
            if not d:
                continue
            hits = sorted(glob.glob(os.path.join(d, f"lib{name}.so.*")))
            if os.path.exists(os.path.join(d, f"lib{name}.so")):
                hits.insert(0, os.path.join(d, f"lib{name}.so"))
            if hits:
                return hits[0]
        return None

    find_library.herdcast_fallback = True  # type: ignore[attr-defined]
    return find_library


def import_pyudev():
    """Import pyudev so that it finds libudev even without ldconfig; None if it cannot."""
    if not getattr(ctypes.util.find_library, "herdcast_fallback", False):
        ctypes.util.find_library = _find_library_fallback(ctypes.util.find_library)
    try:
        import pyudev
        import pyudev._ctypeslib.utils as pyudev_utils

        pyudev_utils.find_library = ctypes.util.find_library  # bound at its import time
        pyudev.Context()  # loads libudev now rather than in the middle of the wait
    except (ImportError, OSError):
        return None
    return pyudev


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Device:
    """A sysfs device that asks for a driver."""

    syspath: str
    subsystem: str
    modalias: str


def _subsystem(devdir: Path) -> str:
    try:
        return os.path.basename(os.readlink(devdir / "subsystem"))
    except OSError:
        return ""


def walk_modaliases(sys_root: str = "/sys") -> list[Device]:
    """Devices with a modalias, found by walking sysfs (no libudev needed)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(Path(sys_root, "devices")):
        # sysfs has symlink loops (subsystem, driver, ...): os.walk does not follow links
        if "modalias" in filenames:
            try:
                alias = Path(dirpath, "modalias").read_text().strip()
            except OSError:
                continue
            if alias:
                found.append(Device(dirpath, _subsystem(Path(dirpath)), alias))
        dirnames.sort()
    return found


def udev_modaliases(context) -> list[Device]:
    """Devices with a MODALIAS, enumerated by pyudev (libudev reads the same sysfs)."""
    return [Device(d.sys_path, d.subsystem or "", d.properties["MODALIAS"])
            for d in context.list_devices() if d.properties.get("MODALIAS")]


@dataclass
class Alias:
    """One modules.alias line, compiled once: a literal prefix to reject most devices with
    a cheap startswith, then the shell pattern as a regex (under TCG, fnmatch over every
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
        prefix = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
        return cls(pattern, module, prefix)


def read_aliases(modules_dir: str) -> list[Alias]:
    """The compiled aliases of modules.alias; empty when there is none."""
    try:
        text = Path(modules_dir, "modules.alias").read_text()
    except OSError:
        return []
    pairs = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "alias":
            pairs.append(Alias.of(parts[1], parts[2]))
    return pairs


def modules_for(modalias: str, aliases: Iterable[Alias | tuple[str, str]]) -> list[str]:
    """The modules whose alias patterns match (shell wildcards, as kmod matches them)."""
    out = []
    for alias in aliases:
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
    network/storage devices. Without a modules.alias to consult, the modalias itself is
    handed to modprobe, which resolves it (busybox's and kmod's both do).
    """
    params = {normalize(k): v for k, v in (params or {}).items()}
    class_params = class_params or {}
    plan: list[ModuleLoad] = []
    seen = set(skip)
    for dev in devices:
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


def run_loads(loads: list[ModuleLoad], modprobe: list[str], report: HardwareReport,
              timeout: float = 60) -> None:
    """modprobe each planned module; a failure is noted, never fatal (the NIC may be fine)."""
    for load in loads:
        label = " ".join([load.name, *load.params])
        try:
            proc = subprocess.run(load.argv(modprobe), capture_output=True, text=True,
                                  timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            report.failed.append(f"{label}: {exc}")
            continue
        if proc.returncode == 0:
            report.loaded.append(label)
        elif not load.by_alias:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            report.failed.append(f"{label}: {msg[-1] if msg else f'rc={proc.returncode}'}")


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


def load_drivers(*, disk: str | None = None, mac: str | None = None,
                 netmodule: str | None = None, netmodparm: str | None = None,
                 diskmodule: str | None = None, diskmodparm: str | None = None,
                 timeout: float = 30.0, sys_root: str = "/sys", proc_root: str = "/proc",
                 modules_dir: str | None = None, modprobe: list[str] | None = None,
                 context=None, say: Callable[[str], None] = print,
                 max_passes: int = 8) -> HardwareReport:
    """Load drivers until the NIC (BOOTIF's if `mac`) and `disk` exist, or `timeout`.

    Named modules first (they may be what creates the devices), then modalias passes until
    one finds nothing new, then kernel uevents until both devices are there.
    """
    start = time.monotonic()
    deadline = start + timeout
    report = HardwareReport()
    modules_dir = modules_dir or f"/lib/modules/{platform.release()}"
    modprobe = modprobe or modprobe_command()
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
    run_loads([n for n in named if normalize(n.name) not in tried], modprobe, report)
    tried |= {normalize(n.name) for n in named}

    if context is None and sys_root == "/sys":
        pyudev = import_pyudev()
        if pyudev is not None:
            context = pyudev.Context()
        else:
            report.notes.append("libudev not loadable: walking sysfs and polling instead")

    def one_pass() -> int:
        if not by_modalias:
            return 0
        devices = udev_modaliases(context) if context is not None else walk_modaliases(sys_root)
        loads = plan_loads(devices, aliases, tried, params, class_params)
        tried.update(normalize(x.name) for x in loads)
        run_loads(loads, modprobe, report)
        report.passes += 1
        return len(loads)

    while report.passes < max_passes and time.monotonic() < deadline and one_pass():
        time.sleep(0.05)  # devices made by the new drivers register asynchronously

    monitor = None
    if context is not None:
        import pyudev

        monitor = pyudev.Monitor.from_netlink(context, source="kernel")
        monitor.start()
    nic_ok, disk_ok = wanted_found(sys_root, disk, mac)
    waited_note = False
    while not (nic_ok and disk_ok) and time.monotonic() < deadline:
        if not waited_note:
            say(f"waiting up to {timeout:.0f} s for "
                f"{'the NIC' if not nic_ok else ''}{' and ' if not (nic_ok or disk_ok) else ''}"
                f"{'disk ' + str(disk) if not disk_ok else ''}")
            waited_note = True
        if monitor is not None:
            event = monitor.poll(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            if event is not None and event.action == "add" and event.properties.get("MODALIAS"):
                one_pass()
        else:
            time.sleep(0.25)
            if report.passes < max_passes * 4:
                one_pass()
        nic_ok, disk_ok = wanted_found(sys_root, disk, mac)
    report.nics = nics(sys_root)
    report.disk = disk if disk_ok and disk else None
    report.seconds = time.monotonic() - start
    return report
