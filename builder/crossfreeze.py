"""Freeze the agent for another architecture (arm64) on this one, without binfmt_misc.

PyInstaller cannot cross-freeze: it must run on the target's Python, which analyses the
target's extension modules and copies the target's bootloader. So it runs on the arm64
Python of the sysroot (builder/sysroot.py) under qemu-user:
- the agent's dependencies and PyInstaller are the arm64 wheels of the versions the
  builder's own venv has (the node runs what an x86 node runs), fetched by the host's pip
  (`--platform manylinux_2_17..36_aarch64 --only-binary=:all:`) into CACHE/<arch>/site-KEY;
- `python3` is a wrapper that runs the sysroot's python3.11 under `qemu-aarch64-static -L
  SYSROOT`, with itself as argv[0], so the subprocesses PyInstaller starts with
  sys.executable come back through qemu; `ldd` is the sysroot loader's --list under qemu,
  `ldconfig -p` the sysroot's (the host's would offer PyInstaller its x86 libpython);
  `objcopy` is binutils-aarch64-linux-gnu's; all first on PATH.
The tree is cached in CACHE/<arch>/freeze/KEY by a hash of the agent, the sysroot's
package versions and the wheels: an unchanged agent is not frozen again (2 min on 2 cores).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from builder import freeze
from builder.errors import BuildError
from builder.sysroot import Sysroot, digest

#: What the node's agent imports, and the freezer; at the venv's versions.
WHEELS = ("construct", "pyudev", "pyroute2", "zstandard", "cryptography", "pyinstaller",
          "pyinstaller-hooks-contrib")
#: Wheel tags a Debian 12 arm64 node runs (glibc 2.36); pip takes only those named.
PLATFORMS = {"arm64": tuple(f"manylinux_2_{v}_aarch64" for v in (17, 28, 34, 35, 36))
             + ("manylinux2014_aarch64",)}
OBJCOPY = {"arm64": "aarch64-linux-gnu-objcopy"}
PYTHON = "usr/bin/python3.11"
KEEP = 3  # frozen trees kept in the cache (one per agent version built lately)


def requirements(python: Path) -> list[str]:
    """name==version of WHEELS as the builder's venv has them (unpinned when absent)."""
    have = dict(line.lower().split("==", 1) for line in freeze.installed(python).splitlines()
                if "==" in line)
    return [f"{name}=={have[name]}" if name in have else name for name in WHEELS]


def site(sr: Sysroot, python: Path, cache: Path) -> Path:
    """CACHE/<arch>/site-KEY: the arm64 wheels, installed by the host's pip (`python`)."""
    reqs = requirements(python)
    target = cache / sr.arch.name / f"site-{digest(*reqs)}"
    if (target / ".herdcast-done").is_file():
        return target
    scratch = target.with_name(target.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-compile",
                           "--target", str(scratch),
                           *[x for tag in PLATFORMS[sr.arch.name] for x in ("--platform", tag)],
                           "--python-version", "3.11", "--implementation", "cp",
                           "--only-binary=:all:", *reqs],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BuildError(f"pip could not fetch the {sr.arch.name} wheels: {last}",
                         "check that PyPI is reachable")
    (scratch / ".herdcast-done").write_text("\n".join(reqs))
    for old in target.parent.glob("site-*"):
        if old != scratch:
            shutil.rmtree(old, ignore_errors=True)
    scratch.rename(target)
    return target


def _wrappers(sr: Sysroot, bindir: Path) -> None:
    """python3, ldd and objcopy for the target, first on PyInstaller's PATH."""
    bindir.mkdir(parents=True, exist_ok=True)
    qemu, root = sr.arch.qemu_user, sr.root
    python = (f'#!/bin/sh\nexec {qemu} -L {root} -0 "$0" {root / PYTHON} "$@"\n')
    ldd = f'#!/bin/sh\nexec {qemu} -L {root} {sr.host(sr.arch.loader)} --list "$@"\n'
    ldconfig = f'#!/bin/sh\nexec {qemu} -L {root} {sr.host("/sbin/ldconfig")} "$@"\n'
    for name, text in (("python3", python), ("python", python), ("ldd", ldd),
                       ("ldconfig", ldconfig)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    objcopy = shutil.which(OBJCOPY[sr.arch.name])
    if objcopy is None:
        raise BuildError(f"{OBJCOPY[sr.arch.name]} not found",
                         "run scripts/install-deps (binutils-aarch64-linux-gnu)")
    (bindir / "objcopy").symlink_to(objcopy)


def freeze_for(sr: Sysroot, python: Path, cache: Path) -> Path:
    """The onedir tree of the agent for `sr`'s architecture (dist/herdcast), from the
    cache when its inputs are unchanged."""
    for tool in (sr.arch.qemu_user,):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} not found", "run scripts/install-deps (qemu-user-static)")
    packages = site(sr, python, cache)
    key = digest(freeze.sources_hash([Path(__file__)]), sr.versions,
                 (packages / ".herdcast-done").read_text())
    base = cache / sr.arch.name / "freeze"
    work = base / key
    dist = work / "dist" / freeze.NAME
    if (work / "stamp").is_file():
        os.utime(work)
        return dist
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    _wrappers(sr, work / "bin")
    entry = work / "herdcast_entry.py"
    entry.write_text(freeze.ENTRY)
    lib_dirs = [sr.host(d) for d in sr.arch.lib_dirs]
    argv = freeze.pyinstaller_argv(work / "bin" / "python3", work, entry, lib_dirs)
    # the repository too: --collect-submodules imports the agent in PyInstaller's helper
    # processes, which see PYTHONPATH but not --paths (the x86 venv has it installed)
    env = dict(freeze._reproducible_env(), PYTHONPATH=f"{packages}:{freeze.REPO}",
               PATH=f"{work / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    try:
        proc = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=1800,
                              env=env)
    except subprocess.TimeoutExpired:
        raise BuildError(f"PyInstaller for {sr.arch.name} took over 30 minutes") from None
    if proc.returncode or not (dist / freeze.NAME).is_file():
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise BuildError(f"PyInstaller under {sr.arch.qemu_user} failed:\n{tail}")
    sr.check_elves(dist)
    check(sr, dist / freeze.NAME)
    (work / "stamp").write_text(key)
    old = sorted((p for p in base.iterdir() if p != work), key=lambda p: p.stat().st_mtime)
    for path in old[:max(0, len(old) - KEEP + 1)]:
        shutil.rmtree(path, ignore_errors=True)
    return dist


def check(sr: Sysroot, executable: Path) -> None:
    """The freeze check (freeze.check_frozen) under qemu-user. PyInstaller's bootloader
    starts by re-executing itself (a parent that waits, a child that runs Python), and
    without binfmt_misc the kernel cannot exec an arm64 file: so the check runs as that
    child directly, told so by the variables the parent would have set."""
    internal = executable.parent / "_internal"
    env = {"_PYI_PARENT_PROCESS_LEVEL": "1", "_PYI_APPLICATION_HOME_DIR": str(internal),
           "_PYI_ARCHIVE_FILE": str(executable)}
    freeze.check_frozen(executable, sr.runner, timeout=600, env=env)
