"""The shared libraries a set of ELF programs needs, found with ldd, copied into a root.

PyInstaller bundles most of the agent's libraries, but not the C library and loader, nor
the libraries of the other programs we ship (kmod); and its bootloader and extension
modules find their libraries through the system search path, not the bundle (the
bootloader links libz.so.1 from the system). ldd reports exactly what the dynamic loader
would load, including the loader itself, so its answer is the list to copy.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import BuildError

if TYPE_CHECKING:
    from builder.sysroot import Sysroot

_ARROW = re.compile(r"^\s*(\S+)\s+=>\s+(\S+)\s+\(0x[0-9a-f]+\)")
_DIRECT = re.compile(r"^\s*(/\S+)\s+\(0x[0-9a-f]+\)")
_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found")


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def is_dynamic(path: Path) -> bool:
    """Whether an ELF64 file is linked dynamically (a PT_INTERP or PT_DYNAMIC segment: a
    program or a shared library); a static program is not, and the loader's --list
    crashes on one under qemu-user."""
    with open(path, "rb") as f:
        head = f.read(64)
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return any(struct.unpack_from("<I", table, i * phentsize)[0] in (2, 3)
               for i in range(phnum))


def ldd(path: Path, sysroot: Sysroot | None = None) -> list[Path]:
    """Absolute paths of the libraries `path` loads (loader included); [] for a static
    program. No LD_LIBRARY_PATH: the answer is what the loader finds on the target, where
    the only search path is the system one (and the program's own RPATH). With a
    `sysroot` (another architecture's), its loader answers under qemu-user, and the paths
    are the target's (a library of the program's own bundle keeps its path here)."""
    if sysroot is not None and not is_dynamic(path):
        return []
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    argv = ["ldd", str(path)] if sysroot is None else sysroot.ldd_argv(path)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    text = proc.stdout + proc.stderr
    if "not a dynamic executable" in text or "statically linked" in text:
        return []
    if proc.returncode:
        raise BuildError(f"ldd {path}: {text.strip()}")
    missing = [m.group(1) for line in text.splitlines() if (m := _NOT_FOUND.match(line))]
    if missing:
        raise BuildError(f"{path} needs {', '.join(missing)}, not found on this machine")
    found: list[Path] = []
    for line in text.splitlines():
        if m := _ARROW.match(line):  # the loader's own line names it as the target does
            found.append(Path(m.group(1) if m.group(1).startswith("/") else m.group(2)))
        elif m := _DIRECT.match(line):
            found.append(Path(m.group(1)))
    if sysroot is not None:  # a file qemu's -L found in the root, as the target names it
        found = [Path("/") / lib.relative_to(sysroot.root)
                 if lib.is_relative_to(sysroot.root) else lib for lib in found]
    return found


def closure(programs: Iterable[Path], bundled: Iterable[Path] = (),
            sysroot: Sysroot | None = None) -> list[Path]:
    """Every system library the ELF files in `programs` load. Libraries found inside a
    `bundled` directory (through the program's RPATH) travel with it and are left out."""
    bundled = [Path(b).resolve() for b in bundled]
    needed: set[Path] = set()
    for program in programs:
        for lib in ldd(program, sysroot):
            if not any(lib.resolve().is_relative_to(b) for b in bundled):
                needed.add(lib)
    return sorted(needed)


#: Libraries glibc opens with dlopen, which ldd cannot see: libgcc_s unwinds the stack for
#: pthread_exit and pthread_cancel. partclone's threads end through pthread_exit; without it
#: glibc aborts them ("libgcc_s.so.1 must be installed for pthread_exit to work", SIGABRT),
#: and a node then maps its filesystems as fully used.
GLIBC_DLOPEN = ("libgcc_s.so.1",)


def dlopened(found: Iterable[Path], names: Iterable[str] = GLIBC_DLOPEN,
             sysroot: Sysroot | None = None) -> list[Path]:
    """The `names` glibc may dlopen, from the directory of the libc among `found` (where
    the target's loader looks for them)."""
    libc = next((lib for lib in found if lib.name == "libc.so.6"), None)
    if libc is None:
        return []
    here = (lambda p: p) if sysroot is None else sysroot.host
    return [libc.parent / name for name in names if here(libc.parent / name).exists()]


def copy_into(root: Path, libs: Iterable[Path], sysroot: Sysroot | None = None
              ) -> list[Path]:
    """Copy each library to the same path under `root`, as a regular file even when the
    host path is a symlink (ldd names the soname link, which is what the loader opens);
    from `sysroot` when the libraries are another architecture's."""
    placed = []
    for lib in libs:
        target = root / str(lib).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copyfile(lib.resolve() if sysroot is None else sysroot.host(lib), target)
            target.chmod(0o755)
        placed.append(target)
    return placed
