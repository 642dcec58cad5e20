"""The programs a node carries besides the agent, and the libraries all of them load:
busybox (static) with its applets, kmod as modprobe & co., partclone's filesystem mappers,
and the filesystem tools that grow a clone (GROW_TOOLS).

They come from the build host for an x86 node (scripts/install-deps installs them), and
from the sysroot of Debian's packages for another architecture (builder/sysroot.py), whose
programs are asked under qemu-user what they are (busybox's applet list, ldd).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from builder import libs
from builder.errors import BuildError
from builder.sysroot import Sysroot

BUSYBOX = Path("/bin/busybox")
KMOD = Path("/usr/bin/kmod")
KMOD_TOOLS = ("modprobe", "insmod", "rmmod", "lsmod", "modinfo", "depmod")
#: Debian's tools that grow a clone's filesystem to a larger disk (agent.personalize.grow,
#: grow=yes), from e2fsprogs, xfsprogs, btrfs-progs and ntfs-3g (sysroot.ROOTS has them).
GROW_TOOLS = ("e2fsck", "resize2fs", "xfs_growfs", "btrfs", "ntfsresize")
SBIN_PATH = "/usr/sbin:/sbin:/usr/bin:/bin"


def here(path: Path, sysroot: Sysroot | None) -> Path:
    """Where the node's `path` is read on this machine."""
    return path if sysroot is None else sysroot.host(path)


def which(name: str, sysroot: Sysroot | None = None) -> Path | None:
    """The program `name` in the host's (or sysroot's) SBIN_PATH, as read here."""
    search = SBIN_PATH if sysroot is None else ":".join(
        str(sysroot.host(d)) for d in SBIN_PATH.split(":"))
    found = shutil.which(name, path=search)
    return None if found is None else Path(found)


def _copy_program(path: Path, root: Path) -> None:
    target = root / "usr/sbin" / path.name
    target.unlink(missing_ok=True)  # never through a busybox applet's link
    shutil.copyfile(path, target)
    target.chmod(0o755)


def install_partclone(root: Path, sysroot: Sysroot | None = None) -> list[Path]:
    """partclone's filesystem mappers (agent.image reads their used-block maps), those the
    host (or sysroot) has; a node whose filesystem has none sends that partition whole.
    Returns them as the node sees them (for ldd)."""
    from agent.image.filesystems import PARTCLONE

    found = []
    for name in sorted(set(PARTCLONE.values())):
        path = which(name, sysroot)
        if path:
            _copy_program(path, root)
            found.append(path)
    return found


def install_grow_tools(root: Path, sysroot: Sysroot | None = None) -> list[Path]:
    """GROW_TOOLS into /usr/sbin, from the host (initrd.check_tools made sure it has them)
    or the sysroot; returns them as read here (for ldd)."""
    found = []
    for name in GROW_TOOLS:
        path = which(name, sysroot)
        if path is None:
            raise BuildError(f"{name} missing (grow=yes runs it on the nodes)",
                             "run scripts/install-deps (as root)" if sysroot is None else
                             f"add its Debian package to ROOTS in {Sysroot.__module__}")
        _copy_program(path, root)
        found.append(path)
    return found


def install_busybox(root: Path, sysroot: Sysroot | None = None) -> None:
    busybox = here(BUSYBOX, sysroot)
    if not busybox.is_file():
        raise BuildError(f"{busybox} missing", "run scripts/install-deps (busybox-static)")
    if libs.ldd(busybox, sysroot):
        raise BuildError(f"{busybox} is not static: install busybox-static (scripts/install-deps)")
    shutil.copyfile(busybox, root / "usr/bin/busybox")
    (root / "usr/bin/busybox").chmod(0o755)
    argv = [str(busybox), "--list-full"] if sysroot is None else sysroot.argv(busybox,
                                                                              "--list-full")
    listing = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                             check=True).stdout.split()
    for applet in listing:
        name = applet.rsplit("/", 1)[-1]
        if name in KMOD_TOOLS or name == "busybox":
            continue
        rel = applet if applet.startswith("usr/") else f"usr/{applet}"
        link = root / rel
        if not link.exists() and not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to("/usr/bin/busybox")


def install_kmod(root: Path, sysroot: Sysroot | None = None) -> Path:
    """kmod and its tool names; returns the copy (for ldd)."""
    shutil.copyfile(here(KMOD, sysroot), root / "usr/bin/kmod")
    (root / "usr/bin/kmod").chmod(0o755)
    for tool in KMOD_TOOLS:
        (root / "usr/sbin" / tool).symlink_to("/usr/bin/kmod")
    return root / "usr/bin/kmod"


def strip_debug(tree: Path, strip: str = "strip") -> None:
    """Some wheels ship unstripped extensions (zstandard's is 11 MB with debug info)."""
    for path in sorted(tree.rglob("*")):
        if path.is_file() and not path.is_symlink() and libs.is_elf(path) \
                and b".debug_info" in path.read_bytes():
            subprocess.run([strip, "--strip-debug", str(path)], check=True, timeout=120)


def dedupe(agent: Path, root: Path, lib_dirs: tuple[str, ...]) -> None:
    """A library both in the frozen tree and copied for another program (libcrypto for
    kmod) is kept once: the frozen copy becomes a link to the system one."""
    for path in sorted(agent.rglob("*.so*")):
        if path.is_symlink() or not path.is_file():
            continue
        for libdir in lib_dirs:
            twin = root / libdir / path.name
            if twin.is_file() and twin.read_bytes() == path.read_bytes():
                path.unlink()
                path.symlink_to(f"/{libdir}/{path.name}")
                break


def install_libraries(root: Path, agent: Path, programs: list[Path],
                      sysroot: Sysroot | None = None) -> None:
    """Every library the programs and the frozen agent load, with what glibc dlopens,
    then the frozen tree's duplicates of them linked."""
    elves = programs + [p for p in sorted(agent.rglob("*"))
                        if p.is_file() and not p.is_symlink() and libs.is_elf(p)]
    needed = libs.closure(elves, bundled=[agent], sysroot=sysroot)
    libs.copy_into(root, needed + libs.dlopened(needed, sysroot=sysroot), sysroot)
