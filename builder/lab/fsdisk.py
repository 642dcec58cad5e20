"""Disk images with real filesystems, made by the real tools, for used-block tests.

`make_disk` lays out a GPT disk in a sparse file (sgdisk), attaches it with partition nodes
(`losetup -P`), makes each filesystem with its own mkfs and fills it through a mount, so the
maps partclone reads are those of filesystems as an installer leaves them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20

MKFS = {
    "ext4": ["mkfs.ext4", "-q", "-F"],
    "vfat": ["mkfs.vfat"],
    "swap": ["mkswap"],
    "ntfs": ["mkfs.ntfs", "-Q", "-F", "-q"],
    "xfs": ["mkfs.xfs", "-q", "-f"],
    "btrfs": ["mkfs.btrfs", "-q", "-f"],
    "exfat": ["mkfs.exfat"],
}
TYPECODE = {"ext4": "8300", "vfat": "ef00", "swap": "8200", "ntfs": "0700", "xfs": "8300",
            "btrfs": "8300", "exfat": "0700", "raw": "8300"}


@dataclass(frozen=True)
class Part:
    """One partition to make: filesystem (or "raw": random bytes), size, files to write."""

    fs: str
    mib: int
    files: dict[str, int] | None = None  # name -> size in bytes of random content


def _sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300,
                          check=True).stdout


def partition_nodes(dev: str, wait: float = 2) -> list[Path]:
    """Make sure the kernel knows `dev`'s partitions and /dev has their nodes; returns the
    nodes made here (the caller removes them). The kernel's scan (`losetup -P`) may be
    skipped, here it always is: partx adds them at once when sysfs has none (one the
    kernel added meanwhile is only refused), updates them, and they are waited for up to
    `wait` s; without udev (containers) nothing creates their nodes, so they are made from
    sysfs."""
    name = Path(dev).name

    def partitions() -> list[Path]:
        return sorted(Path("/sys/class/block", name).glob(f"{name}p*"))

    if not partitions():
        subprocess.run(["partx", "-a", dev], capture_output=True, timeout=30)
    subprocess.run(["partx", "-u", dev], capture_output=True, timeout=30)
    deadline = time.monotonic() + wait
    while not partitions() and time.monotonic() < deadline:
        time.sleep(0.05)
    made = []
    for part in partitions():
        node = Path("/dev", part.name)
        if not node.exists():
            major, minor = (int(x) for x in (part / "dev").read_text().split(":"))
            with contextlib.suppress(FileExistsError):
                os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(major, minor))
                made.append(node)
    return made


@contextlib.contextmanager
def attached(path: Path):
    """The disk image on a loop device with partition nodes (/dev/loopNpM)."""
    dev = _sh("losetup", "-f", "--show", "-P", str(path)).strip()
    made: list[Path] = []
    try:
        made += partition_nodes(dev)
        yield dev
    finally:
        for node in made:
            node.unlink(missing_ok=True)
        subprocess.run(["losetup", "-d", dev], timeout=30, check=False)


def make_disk(path: Path, disk_mib: int, parts: list[Part], seed: int = 7) -> dict[str, str]:
    """A GPT disk of `disk_mib` (sparse) with `parts`; returns {"<n>:<name>": sha256} of
    every file written, partitions numbered from 1."""
    rng = random.Random(seed)
    with open(path, "wb") as f:  # all zeros: nothing to zap, a new GPT (-o) and its parts
        f.truncate(disk_mib * MiB)  # in one sgdisk (each run waits a second at its end)
    args = ["sgdisk", "-o"]
    for n, part in enumerate(parts, 1):
        args += [f"-n{n}:0:+{part.mib}M", f"-t{n}:{TYPECODE[part.fs]}"]
    _sh(*args, str(path))
    digests: dict[str, str] = {}
    with attached(path) as dev:
        for n, part in enumerate(parts, 1):
            node = f"{dev}p{n}"
            if part.fs == "raw":
                with open(node, "r+b") as f:
                    f.write(rng.randbytes(part.mib * MiB))
                continue
            _sh(*MKFS[part.fs], node)
            if part.files:
                digests.update({f"{n}:{k}": v for k, v in
                                _fill(node, part.fs, part.files, rng).items()})
    return digests


# How a filesystem is mounted here: FAT, exFAT and NTFS through userspace (mtools and FUSE),
# which every kernel can run, and the rest by the kernel.
MOUNT = {"ntfs": ["ntfs-3g"], "exfat": ["mount.exfat-fuse"]}


@contextlib.contextmanager
def mounted(node: str, fs: str, readonly: bool = False):
    with tempfile.TemporaryDirectory() as mnt:
        opts = ["-o", "ro"] if readonly else []
        _sh(*MOUNT.get(fs, ["mount"]), *opts, node, mnt)
        try:
            yield Path(mnt)
        finally:
            _sh("umount", mnt)


def _fill(node: str, fs: str, files: dict[str, int], rng: random.Random) -> dict[str, str]:
    digests = {}
    contents = {name: rng.randbytes(size) for name, size in files.items()}
    if fs == "vfat":
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in contents.items():
                Path(tmp, name).write_bytes(data)
                _sh("mcopy", "-i", node, str(Path(tmp, name)), f"::/{name}")
    else:
        with mounted(node, fs) as mnt:
            for name, data in contents.items():
                Path(mnt, name).write_bytes(data)
    for name, data in contents.items():
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def file_digests(path: Path, parts: list[Part]) -> dict[str, str]:
    """sha256 of every file the parts name, read back from the disk at `path`."""
    out = {}
    with attached(path) as dev:
        for n, part in enumerate(parts, 1):
            if not part.files:
                continue
            node = f"{dev}p{n}"
            for name in part.files:
                out[f"{n}:{name}"] = hashlib.sha256(_read(node, part.fs, name)).hexdigest()
    return out


def _read(node: str, fs: str, name: str) -> bytes:
    if fs == "vfat":
        return subprocess.run(["mtype", "-i", node, f"::/{name}"], capture_output=True,
                              timeout=60, check=True).stdout
    with mounted(node, fs, readonly=True) as mnt:
        return Path(mnt, name).read_bytes()


def fsck(path: Path, parts: list[Part]) -> list[str]:
    """Problems `fsck -fn` (or the filesystem's checker) reports, one line per partition."""
    checkers = {"ext4": ["e2fsck", "-fn"], "vfat": ["fsck.vfat", "-n"],
                "xfs": ["xfs_repair", "-n"], "btrfs": ["btrfs", "check", "--readonly"],
                "ntfs": ["ntfsfix", "-n"], "exfat": ["fsck.exfat", "-n"]}
    problems = []
    with attached(path) as dev:
        for n, part in enumerate(parts, 1):
            if part.fs not in checkers:
                continue
            proc = subprocess.run([*checkers[part.fs], f"{dev}p{n}"], capture_output=True,
                                  text=True, timeout=300)
            if proc.returncode != 0:
                problems.append(f"partition {n} ({part.fs}): exit {proc.returncode}: "
                                f"{(proc.stdout + proc.stderr).strip()[-300:]}")
    return problems
