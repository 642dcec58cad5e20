"""The personalisation of one written disk, step by step (see agent.personalize).

Runs after the digest agreed, so the transfer's proof stands as it was. Every change is one
line of the outcome (the console lists them), every thing left as is one note. A wish that
cannot be honoured at all (hostname= with no Linux root to write it into, user-data that
cannot be fetched) is a PersonalizeError: the node must not come up as its master's twin.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import HerdcastError
from agent.image.partitions import fit_gpt
from agent.personalize.wishes import Wishes
from agent.say import say as _say

BLKRRPART = 0x125F
ROOT_MARKS = ("/etc/os-release", "/usr/lib/os-release")
BTRFS_ROOT_SUBVOLUMES = ("@", "root", "@rootfs")  # Ubuntu's, Fedora's, openSUSE-like


class PersonalizeError(HerdcastError):
    """What was asked of the clone cannot be done; the image itself is intact."""


@dataclass
class Outcome:
    """What personalising changed (`changes`) and left as it was (`notes`)."""

    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def personalize(disk: str, wishes: Wishes, say: Callable[[str], None] = _say) -> Outcome:
    """Fit, grow and personalise the disk (or disk image file) at `disk`; each line is
    said as it happens and collected in the Outcome."""
    out = Outcome()

    def changed(line: str) -> None:
        out.changes.append(line)
        say(f"changed: {line}")

    def noted(line: str) -> None:
        out.notes.append(line)
        say(f"left as is: {line}")

    userdata = None
    if wishes.userdata:  # fetched before anything is written: a bad URL changes nothing
        from agent.personalize.cloudinit import fetch_userdata

        userdata = fetch_userdata(wishes.userdata)
    fd = os.open(disk, os.O_RDWR | os.O_CLOEXEC)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        if line := fit_gpt(fd):
            changed(line)
        if wishes.grow:
            _grow(disk, fd, size, changed, noted)
        if wishes.into_root:
            os.fsync(fd)
            _into_roots(disk, fd, size, wishes, userdata, changed, noted)
        os.fsync(fd)
        _reread(fd)
    finally:
        os.close(fd)
    return out


def _grow(disk: str, fd: int, size: int, changed, noted) -> None:
    from agent.personalize.grow import grow_filesystem, grow_partition

    part, line = grow_partition(fd, size)
    moved = part is not None and "already" not in line
    (changed if moved else noted)(line)
    if not moved:  # the disk is the master's size: its filesystem fills it already
        return
    os.fsync(fd)
    grown, line = grow_filesystem(disk, fd, part)
    (changed if grown else noted)(line)


def _into_roots(disk: str, fd: int, size: int, wishes: Wishes, userdata: bytes | None,
                changed, noted) -> None:
    from agent.personalize.loop import loop_over
    from agent.personalize.mount import mounted
    from agent.personalize.roots import survey

    volumes, closed = survey(fd, size)
    for note in closed:
        noted(note)
    found = 0
    for vol in volumes:
        ext = vol.partition.extent
        with loop_over(disk, ext.offset, ext.length) as dev, mounted(dev, vol.fs) as mnt:
            root = _root_in(mnt, vol.fs, vol.root_type is not None)
            if root is None:
                continue
            found += 1
            name = _os_name(root)
            where = f"{vol.label} ({name})" + (f", subvolume {root.name}"
                                               if root != mnt else "")
            for line in _personalise_root(root, wishes, userdata, noted, where):
                changed(f"{where}: {line}")
    if not found:
        why = "; ".join(closed) or "no partition holds /etc/os-release or has a root type"
        raise PersonalizeError(f"{disk}: no Linux root found to personalise ({why})",
                               "the image was written and its digest agreed; drop hostname=,"
                               " identity= and userdata=, or personalise the clone by hand")


def _root_in(mnt: Path, fs: str, typed_root: bool) -> Path | None:
    """The root directory inside a mounted filesystem: the top, or a btrfs root subvolume."""
    from agent.personalize.rootfs import inside

    tops = [mnt] + ([mnt / s for s in BTRFS_ROOT_SUBVOLUMES] if fs == "btrfs" else [])
    for top in tops:
        if top.is_dir() and any(inside(top, m).is_file() for m in ROOT_MARKS):
            return top
    return mnt if typed_root and (mnt / "etc").is_dir() else None


def _os_name(root: Path) -> str:
    from agent.personalize.rootfs import read_text

    for mark in ROOT_MARKS:
        for line in (read_text(root, mark) or "").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.partition("=")[2].strip().strip("\"'")
    return "Linux"


def _personalise_root(root: Path, wishes: Wishes, userdata: bytes | None, noted,
                      where: str) -> list[str]:
    from agent.personalize import cloudinit, identity

    lines = []
    if wishes.hostname:
        lines += identity.set_hostname(root, wishes.hostname)
    if wishes.fresh:
        lines += identity.fresh_machine_id(root)
        lines += identity.fresh_ssh_keys(root, wishes.hostname)
    if cloudinit.has_cloud_init(root):
        lines += cloudinit.write_seed(root, wishes.hostname, userdata)
    elif userdata is not None:
        noted(f"{where}: no cloud-init in this root: userdata= not written")
    return lines


def _reread(fd: int) -> None:
    """Tell the kernel the partition table changed (a server keeps using the disk; a node
    reboots anyway). A disk in use, or a file, is simply not re-read."""
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, BLKRRPART)
