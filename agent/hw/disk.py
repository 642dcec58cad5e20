"""The node's disk (`disk=`): what may be overwritten, and how big it is.

A receiver overwrites a whole disk with nobody watching, so every refusal happens before the
first byte is written: a disk that is mounted (itself, a partition of it, or through a loop
device backed by it), used as swap, held by device-mapper/md, or smaller than the image.
The sender reads the whole device, so its size comes from the kernel (BLKGETSIZE64), not
from a partition table.

Everything takes `proc` and `sys` roots so tests can run on regular files and loop devices.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from agent.errors import HerdcastError

BLKGETSIZE64 = 0x80081272


class DiskError(HerdcastError, RuntimeError):
    """The disk cannot be used: the message names the disk, the reason and what to change."""


@dataclass(frozen=True)
class Disk:
    """A disk (or a file standing in for one) as the node sees it."""

    path: str
    size: int  # bytes; for a regular file its current length
    is_block: bool
    dev: tuple[int, int] | None  # (major, minor) of a block device


def _unescape(field: str) -> str:
    """mountinfo/mounts escape space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit() and i + 3 < len(field):
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo."""

    dev: tuple[int, int]
    mountpoint: str
    source: str
    read_only: bool = False  # the mount or its filesystem is read-only


def mounts(proc: str = "/proc") -> list[Mount]:
    """The mounts the kernel reports, with device numbers (mountinfo) and sources."""
    result = []
    try:
        text = Path(proc, "self/mountinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        f = left.split()
        r = right.split()
        if len(f) < 5 or len(r) < 2:
            continue
        major, _, minor = f[2].partition(":")
        ro = "ro" in f[5].split(",") if len(f) > 5 else False
        ro = ro or (len(r) > 2 and "ro" in r[2].split(","))
        result.append(Mount((int(major), int(minor)), _unescape(f[4]), _unescape(r[1]), ro))
    if not result:  # no mountinfo (very old kernels, odd test roots): sources only
        try:
            for line in Path(proc, "mounts").read_text().splitlines():
                f = line.split()
                if len(f) >= 2:
                    ro = len(f) > 3 and "ro" in f[3].split(",")
                    result.append(Mount((0, 0), _unescape(f[1]), _unescape(f[0]), ro))
        except OSError:
            pass
    return result


def swaps(proc: str = "/proc") -> list[str]:
    """Device paths of active swap areas."""
    try:
        lines = Path(proc, "swaps").read_text().splitlines()[1:]
    except OSError:
        return []
    return [_unescape(line.split()[0]) for line in lines if line.split()]


def _sys_dir(dev: tuple[int, int], sys: str) -> Path | None:
    p = Path(sys, "dev/block", f"{dev[0]}:{dev[1]}")
    try:
        return p.resolve(strict=True)
    except OSError:
        return None


def _family(dev: tuple[int, int], sys: str) -> dict[tuple[int, int], str]:
    """The device and its partitions: {(major, minor): kernel name}."""
    base = _sys_dir(dev, sys)
    if base is None:
        return {dev: f"{dev[0]}:{dev[1]}"}
    found = {dev: base.name}
    for child in base.iterdir():
        try:
            if (child / "partition").exists():
                major, _, minor = (child / "dev").read_text().strip().partition(":")
                found[(int(major), int(minor))] = child.name
        except OSError:
            continue
    return found


def _holders(dev: tuple[int, int], sys: str) -> list[str]:
    """Kernel devices stacked on this one or its partitions (dm, md, bcache)."""
    base = _sys_dir(dev, sys)
    if base is None:
        return []
    dirs = [base] + [c for c in base.iterdir() if (c / "partition").exists()]
    held = []
    for d in dirs:
        try:
            held += [f"{d.name} is held by {h.name}" for h in (d / "holders").iterdir()]
        except OSError:
            continue
    return held


def loop_devices_backed_by(path: str, sys: str = "/sys") -> list[tuple[str, tuple[int, int]]]:
    """Loop devices whose backing file is `path`: a mounted loop means the file is in use."""
    real = os.path.realpath(path)
    found = []
    for loop in sorted(Path(sys, "block").glob("loop*")):
        try:
            backing = (loop / "loop/backing_file").read_text().strip()
        except OSError:
            continue
        if backing.removesuffix(" (deleted)") == real:
            major, _, minor = (loop / "dev").read_text().strip().partition(":")
            found.append((loop.name, (int(major), int(minor))))
    return found


def _size_of(fd: int, st: os.stat_result) -> int:
    if stat.S_ISBLK(st.st_mode):
        buf = fcntl.ioctl(fd, BLKGETSIZE64, b"\0" * 8)
        return struct.unpack("Q", buf)[0]
    if stat.S_ISREG(st.st_mode):
        return st.st_size
    return os.lseek(fd, 0, os.SEEK_END)


def _set(node: bool, node_fix: str, server_fix: str) -> str:
    """A fix in the words of who gave the path: the node's boot parameter (`disk=`) or a
    server command's argument (--file, DISK): a server's admin has no disk= to check."""
    return node_fix if node else server_fix


def probe(path: str, node: bool = False) -> Disk:
    """Stat and measure `path` without writing; DiskError if it is not there. `node`: the
    path is the node's disk= (the fixes then name boot parameters)."""
    if not path:
        raise DiskError("disk: no disk given (set disk=/dev/sda or the node's disk)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise DiskError(f"disk {path}: no such device " + _set(
            node, "(check disk=, and that the disk driver is loaded: diskmodule=)",
            "(check the path: lsblk lists the disks)")) from exc
    except OSError as exc:
        raise DiskError(f"disk {path}: cannot open: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        size = _size_of(fd, st)
    finally:
        os.close(fd)
    is_block = stat.S_ISBLK(st.st_mode)
    dev = (os.major(st.st_rdev), os.minor(st.st_rdev)) if is_block else None
    return Disk(path, size, is_block, dev)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISREG, "a regular file"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a pipe"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a device"


def check_is_disk(path: str) -> None:
    """Refuse a `disk=` that exists and is not a block device (/dev/null, /dev/zero,
    /dev/kmsg...): a receiver would "clone" into it and report SUCCESS, a sender would send
    nothing or forever. A path that does not exist yet passes: its driver may still load."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DiskError(f"disk {path}: cannot stat: {exc.strerror}") from exc
    if not stat.S_ISBLK(mode):
        raise DiskError(f"disk {path}: {_kind(mode)}, not a block device; set disk= to the "
                        "node's disk, e.g. disk=/dev/sda or disk=/dev/disk/by-id/...")


def _stacked(dev: tuple[int, int], sys: str, depth: int = 0) -> dict[tuple[int, int], str]:
    """Devices built on this one or its partitions, and on those in turn (dm, md, bcache):
    {(major, minor): "name (on sda1)"}. A filesystem mounted from them reads this disk."""
    base = _sys_dir(dev, sys)
    if base is None or depth > 8:
        return {}
    found: dict[tuple[int, int], str] = {}
    for d in [base] + [c for c in base.iterdir() if (c / "partition").exists()]:
        try:
            holders = list((d / "holders").iterdir())
        except OSError:
            continue
        for h in holders:
            try:
                major, _, minor = (h / "dev").read_text().strip().partition(":")
            except OSError:
                continue
            hdev = (int(major), int(minor))
            found[hdev] = f"{h.name} (on {d.name})"
            found.update(_stacked(hdev, sys, depth + 1))
    return found


def _targets(disk: Disk, sys: str) -> tuple[dict[tuple[int, int], str], set[str], list[str]]:
    """The device numbers that are this disk (itself, its partitions, a loop device on a
    file) with their names, the paths naming them, and the devices holding them."""
    targets: dict[tuple[int, int], str] = {}
    names = {os.path.realpath(disk.path)}
    holders: list[str] = []
    if disk.dev is not None:
        targets.update(_family(disk.dev, sys))
        holders += _holders(disk.dev, sys)
    else:
        for name, dev in loop_devices_backed_by(disk.path, sys):
            targets.update({d: f"{n} (loop on {disk.path})" for d, n in _family(dev, sys).items()})
            names.add(f"/dev/{name}")
            holders += _holders(dev, sys)
    names |= {f"/dev/{n.split()[0]}" for n in targets.values()}
    return targets, names, holders


def _mounts_on(targets: dict[tuple[int, int], str], names: set[str], proc: str
               ) -> list[tuple[str, Mount]]:
    """(what is mounted, the mount) for every mount of one of `targets`."""
    found = []
    for m in mounts(proc):
        if m.dev in targets and m.dev != (0, 0):
            found.append((targets[m.dev], m))
        elif os.path.realpath(m.source) in names or m.source in names:
            found.append((m.source, m))
    return found


def in_use(disk: Disk, proc: str = "/proc", sys: str = "/sys") -> list[str]:
    """Why writing over `disk` would destroy something live; empty when it is free."""
    targets, names, reasons = _targets(disk, sys)
    reasons += [f"{what} is mounted on {m.mountpoint}"
                for what, m in _mounts_on(targets, names, proc)]
    for s in swaps(proc):
        if os.path.realpath(s) in names or s in names:
            reasons.append(f"{s} is in use as swap")
    return list(dict.fromkeys(reasons))


def mounted_read_write(disk: Disk, proc: str = "/proc", sys: str = "/sys") -> list[str]:
    """The read-write filesystems on `disk` (directly, on a partition, through a loop
    device, or on a dm/md device built on it): while they are mounted, files change as the
    disk is read, and the image of them may be inconsistent. Empty when there are none."""
    targets, names, _ = _targets(disk, sys)
    if disk.dev is not None:
        targets.update(_stacked(disk.dev, sys))
    return list(dict.fromkeys(f"{what} is mounted read-write on {m.mountpoint}"
                              for what, m in _mounts_on(targets, names, proc)
                              if not m.read_only))


def send_source_warnings(path: str, proc: str = "/proc", sys: str = "/sys") -> list[str]:
    """What `herdcast send -f PATH` should warn about before reading PATH: at most one
    line, for a disk with a read-write mounted filesystem. A path that cannot be probed
    gives none (the sender reports that itself)."""
    try:
        disk = probe(path)
    except (DiskError, OSError):
        return []
    rw = mounted_read_write(disk, proc, sys)
    if not rw:
        return []
    return [f"warning: {path}: {'; '.join(rw)}: the image may be inconsistent (unmount it "
            "or remount it read-only first)"]


def check_receive_target(path: str, image_size: int | None = None, *, file_is_disk: bool = False,
                         block_only: bool = False, node: bool = False, proc: str = "/proc",
                         sys: str = "/sys") -> Disk:
    """Refuse, before anything is written, a target that is in use or too small.

    A regular file that does not exist yet is fine (it is created); a block device must
    exist. With `file_is_disk` (the node: `disk=` names a disk, a file only stands in for
    one in tests) an existing regular file is a disk of its current size. `block_only`
    (the node's disk=) refuses anything but a block device. `node`: fixes name disk=.
    Returns the probed Disk.
    """
    if block_only:
        check_is_disk(path)
    if not os.path.exists(path) and not names_a_device(path):
        return Disk(path, 0, False, None)
    disk = probe(path, node)
    busy = in_use(disk, proc, sys)
    if busy:
        raise DiskError(f"disk {path}: refusing to overwrite a disk in use: {'; '.join(busy)} "
                        + _set(node, "(unmount it, or set disk= to the disk to image)",
                               "(unmount it, or give the disk to image)"))
    if image_size is not None and (disk.is_block or file_is_disk):
        check_size(disk, image_size)
    if disk.is_block:
        _check_exclusive(path, node)
    return disk


def names_a_device(path: str) -> bool:
    """Whether a path that does not exist is a missing device (/dev/sdb, /dev/disk/by-id/..)
    rather than a new file to create (/dev/shm/image.bin is a file on tmpfs)."""
    parent = os.path.dirname(os.path.normpath(path))
    return parent == "/dev" or parent.startswith(("/dev/disk/", "/dev/mapper"))


def check_size(disk: Disk, image_size: int) -> None:
    """Refuse a block device, or a fixed-size file, too small for the image."""
    if disk.size < image_size:
        raise DiskError(f"disk {disk.path}: {disk.size} bytes is smaller than the image "
                        f"({image_size} bytes); use a disk at least that big")


def _check_exclusive(path: str, node: bool = False) -> None:
    """The kernel's own in-use test: O_EXCL on a block device fails if anything holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise DiskError(f"disk {path}: busy (mounted, swap, or held by another device); "
                            + _set(node, "unmount it or set disk= to another disk",
                                   "unmount it or give another disk")) from exc
        raise DiskError(f"disk {path}: cannot open: {exc.strerror}") from exc
    os.close(fd)


def check_send_source(path: str, *, block_only: bool = False, mounted: str = "refuse",
                      node: bool = False, proc: str = "/proc", sys: str = "/sys") -> Disk:
    """The sender reads the whole device; it must exist and not be empty. `block_only` (the
    node's disk=) refuses anything but a block device. `mounted` (the node's mounted=):
    "refuse" raises DiskError for a disk with a read-write mounted filesystem, "warn" lets
    it through (the caller says send_source_warnings' line)."""
    if block_only:
        check_is_disk(path)
    disk = probe(path, node)
    if disk.size == 0:
        raise DiskError(f"disk {path}: is empty (0 bytes); "
                        + _set(node, "set disk= to the disk to send", "give the disk to send"))
    if mounted == "refuse":
        rw = mounted_read_write(disk, proc, sys)
        if rw:
            raise DiskError(f"disk {path}: refusing to send a disk with a read-write "
                            f"mounted filesystem: {'; '.join(rw)} (the image may be "
                            "inconsistent)", "unmount it, or set mounted=warn to send it "
                            "anyway")
    return disk
