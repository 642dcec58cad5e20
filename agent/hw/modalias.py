"""Which drivers the devices on the node's buses need: modalias -> modules.alias -> module.

There is no udevd in the initramfs, so the agent does its job: every device on a bus in
sysfs with a modalias gets the modules modules.alias maps it to. Under TCG every sysfs read
costs: a scan reads only /sys/bus/*/devices/*/modalias (driver-bound devices are on a bus;
see bus_modaliases for why not pyudev's enumeration), and a device is matched against the
few alias patterns its modalias's prefixes select (AliasTable), not all of them.

Every function takes the sysfs root or the modules directory as a parameter, so the
planning runs in tests on a fake tree.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.hw.modprobe import ModuleLoad, normalize


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
