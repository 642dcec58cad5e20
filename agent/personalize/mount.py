"""Mounting a partition's filesystem read-write with the kernel's own driver.

mount(2) through libc, not a mount program: the node's busybox mount and a server's
util-linux differ, and the kernel's driver is what the cloned system itself will use. A
driver missing from the running kernel is loaded first (ext4, xfs and btrfs are modules in
Debian's kernel and in herdcast's initrd).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from agent.errors import HerdcastError

# agent.image.filesystems' names -> the kernel's driver, and the options it needs: a clone
# shares its master's filesystem UUID, which xfs refuses twice unless told
KERNEL_FS = {"ext": ("ext4", ""), "xfs": ("xfs", "nouuid"), "btrfs": ("btrfs", "")}
MS_NOATIME = 1024


class MountError(HerdcastError):
    """A filesystem could not be mounted (or unmounted) to be personalised."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def kernel_has(fstype: str, proc: str = "/proc") -> bool:
    try:
        text = Path(proc, "filesystems").read_text()
    except OSError:
        return False
    return fstype in {line.split()[-1] for line in text.splitlines() if line.strip()}


def ensure_driver(fstype: str) -> None:
    """modprobe the filesystem's module when the kernel does not list it yet."""
    if kernel_has(fstype):
        return
    from agent.hw.modprobe import ModuleLoad, modprobe_command, run_loads

    run_loads([ModuleLoad(fstype)], modprobe_command())


def mount(device: str, target: str, fstype: str, data: str = "") -> None:
    rc = _libc().mount(device.encode(), target.encode(), fstype.encode(),
                       ctypes.c_ulong(MS_NOATIME), data.encode() or None)
    if rc != 0:
        err = ctypes.get_errno()
        raise MountError(f"mounting {device} ({fstype}) failed: {os.strerror(err)}",
                         "check the filesystem with its fsck on the master")


def umount(target: str) -> None:
    if _libc().umount2(target.encode(), 0) != 0:
        err = ctypes.get_errno()
        raise MountError(f"unmounting {target} failed: {os.strerror(err)}")


@contextlib.contextmanager
def mounted(device: str, fs: str) -> Iterator[Path]:
    """`device` (a filesystem of agent.image.filesystems' kind `fs`) mounted read-write on
    a temporary directory; unmounted (and so flushed) afterwards."""
    fstype, data = KERNEL_FS[fs]
    ensure_driver(fstype)
    with tempfile.TemporaryDirectory(prefix="herdcast-root-") as where:
        mount(device, where, fstype, data)
        try:
            yield Path(where)
        finally:
            os.sync()
            umount(where)
