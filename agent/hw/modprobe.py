"""modprobe for the modules a node needs: kmod's or busybox's, both resolve dependencies
through modules.dep.

Under TCG every process costs a few tenths of a second, so the modules of one scan go to a
single `modprobe -a` (run_loads). `netmodule=`/`diskmodule=` name a module to load (with
`netmodparm=`/`diskmodparm=`) when the NIC's driver is not found by modalias (ISA cards, a
driver the alias table lacks): named_loads.

Every function takes the modprobe command, the modules directory or /proc as a parameter,
so loading runs in tests with a stand-in modprobe.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


def normalize(module: str) -> str:
    """Module names compare with '-' and '_' the same (the kernel's own rule)."""
    return module.replace("-", "_")


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


@dataclass
class LoadResult:
    """What a batch of modprobes did, for the hardware step's report."""

    loaded: list[str] = field(default_factory=list)  # "virtio_net" or "e1000 debug=3"
    failed: list[str] = field(default_factory=list)  # "name: modprobe's message"


def named_loads(netmodule: str | None, netmodparm: str | None, diskmodule: str | None,
                diskmodparm: str | None) -> list[ModuleLoad]:
    """The modules netmodule=/diskmodule= name (AUTO, NONE or empty: none)."""
    loads = []
    for module, parm, what in ((netmodule, netmodparm, "netmodule="),
                               (diskmodule, diskmodparm, "diskmodule=")):
        if module and module.upper() not in ("AUTO", "NONE"):
            loads.append(ModuleLoad(module, shlex.split(parm or ""), what))
    return loads


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


def run_loads(loads: list[ModuleLoad], modprobe: list[str], proc_root: str = "/proc",
              timeout: float = 60) -> LoadResult:
    """modprobe the planned modules; a failure is noted, never fatal (the NIC may be fine).

    The named modules without parameters go to one `modprobe -a -q` (under TCG each modprobe
    process costs a few tenths of a second); /proc/modules then tells which loaded, and a
    module that did not is run again alone for modprobe's own message. Loads with
    parameters, and raw modaliases (no modules.alias), run one modprobe each.
    """
    report = LoadResult()
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
    return report


def _run_one(load: ModuleLoad, modprobe: list[str], report: LoadResult,
             timeout: float) -> None:
    label = " ".join([load.name, *load.params])
    rc, msg = _modprobe(load.argv(modprobe), timeout)
    if rc == 0:
        report.loaded.append(label)
    elif rc == -1 or not load.by_alias:
        report.failed.append(f"{label}: {msg}")
