"""A foreign architecture's root made of Debian packages, and its programs run under qemu-user.

An arm64 initrd is built on an x86 host without a chroot, debootstrap or binfmt_misc
(registering a binfmt handler changes the whole machine's kernel): the packages the node
and the freeze need (Python, kmod, partclone, busybox-static, the grow tools, libudev and
what they depend on) are fetched with `apt-get download` through a private apt state of
that architecture (CACHE/apt-<arch>, the host's Debian suites; the host's sources
untouched) and unpacked
with `dpkg-deb -x` into one merged-/usr tree, CACHE/<arch>/sysroot. No maintainer script
runs. Its programs run as `qemu-aarch64-static -L SYSROOT PROGRAM`: qemu looks every path
the program opens up in SYSROOT first, so the loader, libc and Python's stdlib are the
arm64 ones while the build's own files (outside it) are reached as they are.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from builder import debs
from builder.arch import Arch
from builder.errors import BuildError
from builder.firmware_debian import PrivateApt, host_suites
from builder.lock import locked

#: What the node carries (busybox, kmod, partclone, the grow tools of programs.GROW_TOOLS)
#: and what freezes the agent (Python); their dependencies come with them.
#: libpython3.11 too: PyInstaller bundles the shared libpython (Debian's python3.11 links
#: it statically), and without it qemu's -L fell back to the host's x86 one.
ROOTS = ("busybox-static", "kmod", "partclone", "e2fsprogs", "xfsprogs", "btrfs-progs",
         "ntfs-3g", "libudev1", "libgcc-s1", "python3.11", "libpython3.11",
         "libpython3.11-stdlib", "libssl3", "libffi8", "zlib1g", "libc-bin")
#: Dependencies never needed to run these programs (package tools, perl for mime-support;
#: adduser, passwd and debconf's front end with PAM and SELinux policy for fuse3's scripts).
SKIP = re.compile(r"^(perl|perl-base|perl-modules-.*|libperl.*|dpkg|tar|install-info|"
                  r"mailcap|mime-support|media-types|debconf|readline-common|adduser|passwd|"
                  r"cdebconf|libdebian-installer.*|libnewt.*|libslang.*|libtextwrap.*|"
                  r"libpam.*|libsemanage.*|libsepol.*|libaudit.*|libcap-ng.*)$")
#: Top-level directories of a package that merged-/usr moves under usr/.
MERGED = ("bin", "sbin", "lib")


def arch_apt(cache: Path, arch: Arch) -> PrivateApt:
    """apt for `arch`'s packages in the host's Debian release (main, -updates, -security),
    in CACHE/apt-<arch>; updated here (an offline build uses the lists it has)."""
    suites = [s for s in host_suites() if not s[1].endswith("-backports")]
    apt = PrivateApt(cache / f"apt-{arch.name}", suites, component="main", contents=False,
                     architecture=arch.name)
    apt.update()
    return apt


def _closure(apt: Sequence[str], roots: Sequence[str]) -> list[str]:
    out = debs.run(["apt-cache", *apt, "depends", "--recurse", "--no-recommends",
                    "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces",
                    "--no-enhances", *roots], "resolving the sysroot's packages")
    names = {line.strip() for line in out.splitlines()
             if line and not line.startswith((" ", "<"))}
    return sorted(n for n in names if not SKIP.match(n))


def candidates(apt: Sequence[str], packages: Sequence[str]) -> dict[str, str]:
    """package -> the version apt-get download would fetch, in one apt-cache call."""
    out = debs.run(["apt-cache", *apt, "policy", *packages], "looking up versions")
    found = dict(re.findall(r"^(\S+?)(?::\w+)?:\n\s+Installed:.*\n\s+Candidate:\s*(\S+)",
                            out, re.MULTILINE))
    missing = [p for p in packages if found.get(p, "(none)") == "(none)"]
    if missing:
        raise BuildError(f"no candidate version for {', '.join(missing)}",
                         "check the network (apt-get update of CACHE/apt-*)")
    return found


def _merge(tree: Path, root: Path) -> None:
    """Copy one unpacked package into the merged-/usr root (lib/ -> usr/lib/ & co.)."""
    for top in sorted(tree.iterdir()):
        if top.name.startswith(".herdcast"):
            continue
        target = root / "usr" / top.name if top.name in MERGED else root / top.name
        if top.is_dir() and not top.is_symlink():
            shutil.copytree(top, target, symlinks=True, dirs_exist_ok=True)


@dataclass(frozen=True)
class Sysroot:
    """An unpacked root of `arch` packages and the way to run its programs here."""

    root: Path
    arch: Arch
    versions: str  # "package=version" lines: what the root is made of (cache keys)
    apt: tuple[str, ...] = ()  # options of the arch's private apt (for its kernel too)

    @property
    def runner(self) -> list[str]:
        """What runs one of the root's programs here: qemu-user with the root first."""
        return [self.arch.qemu_user, "-L", str(self.root)]

    def argv(self, program: str | Path, *args: str) -> list[str]:
        """Run `program` (a path in the root, or any host path) under qemu-user."""
        return [*self.runner, str(program), *args]

    def run(self, program: str | Path, *args: str, timeout: int = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(program, *args), capture_output=True, text=True,
                              timeout=timeout, env=env)

    def host(self, guest: Path | str) -> Path:
        """Where a path the target sees lies here, following its symlinks inside the root
        (an absolute link means the root's file, never the host's)."""
        path = os.path.normpath("/" + str(guest).lstrip("/"))
        for _ in range(40):
            parts = Path(path).parts[1:]
            for i in range(1, len(parts) + 1):
                here = self.root.joinpath(*parts[:i])
                if here.is_symlink():
                    link = os.readlink(here)
                    parent = "/" + "/".join(parts[:i - 1])
                    target = link if link.startswith("/") else os.path.join(parent, link)
                    path = os.path.normpath(os.path.join(target, *parts[i:]))
                    break
            else:
                return self.root.joinpath(*parts)
        raise BuildError(f"{guest}: a symlink loop in {self.root}")

    def check_elves(self, *trees: Path) -> None:
        """Every ELF file under `trees` is this architecture's: qemu's -L falls back to the
        host's file for a path missing from the root, so a library the root lacks could
        slip in as an x86 one (and the node would fail to start)."""
        for path in sorted(p for tree in trees for p in tree.rglob("*")):
            if path.is_file() and not path.is_symlink():
                with open(path, "rb") as f:
                    head = f.read(20)
                if head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") \
                        != self.arch.elf_machine:
                    raise BuildError(f"{path}: not an {self.arch.name} program or library",
                                     f"add its Debian package to ROOTS in {__name__}")

    def ldconfig(self, tree: Path) -> None:
        """/etc/ld.so.cache of `tree` (this architecture's), by the root's own ldconfig."""
        proc = self.run(self.host("/sbin/ldconfig"), "-r", str(tree))
        if proc.returncode:
            raise BuildError(f"ldconfig -r {tree} under {self.arch.qemu_user}: "
                             f"{(proc.stderr.strip().splitlines() or ['failed'])[-1]}")

    def ldd_argv(self, program: Path) -> list[str]:
        """What ldd is for a program of this architecture: its loader's --list."""
        return self.argv(self.host(self.arch.loader), "--list", str(program))


def sysroot(cache: Path, arch: Arch, roots: Sequence[str] = ROOTS) -> Sysroot:
    """CACHE/<arch>/sysroot, made again when apt's candidates changed (a security update
    of libc or Python is on the next build's nodes)."""
    apt = arch_apt(cache, arch).options
    packages = _closure(apt, roots)
    versions = candidates(apt, packages)
    listing = "".join(f"{p}={versions[p]}\n" for p in packages)
    root = cache / arch.name / "sysroot"
    stamp = root / ".herdcast-packages"
    with locked(cache / f".lock-{arch.name}-sysroot"):
        if stamp.is_file() and stamp.read_text() == listing:
            return Sysroot(root, arch, listing, tuple(apt))
        scratch = root.with_name("sysroot.partial")
        shutil.rmtree(scratch, ignore_errors=True)
        for name in MERGED:
            (scratch / "usr" / name).mkdir(parents=True, exist_ok=True)
            (scratch / name).symlink_to(f"usr/{name}")
        for package in packages:
            tree = debs.unpacked(cache, f"{arch.name}/packages", package, versions[package],
                                 apt=apt)
            _merge(tree, scratch)
        # its own ld.so.cache: PyInstaller reads `ldconfig -p`, and qemu would hand the
        # programs the host's cache for a root without one
        Sysroot(scratch, arch, listing).ldconfig(scratch)
        (scratch / ".herdcast-packages").write_text(listing)
        shutil.rmtree(root, ignore_errors=True)
        scratch.rename(root)
    return Sysroot(root, arch, listing, tuple(apt))


def digest(*parts: str | bytes) -> str:
    """A short cache key of the inputs."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]
