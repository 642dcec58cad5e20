"""Loop devices for the tests and benches that need a real block device (size checks,
mounted disks)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path


def can_loop() -> bool:
    """Whether this process may attach loop devices."""
    return os.geteuid() == 0 and shutil.which("losetup") is not None and \
        os.path.exists("/dev/loop-control")


@contextlib.contextmanager
def loop_device(backing: Path):
    """Attach `backing` to a free loop device, detach it afterwards."""
    dev = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True,
                         text=True, timeout=20, check=True).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], timeout=20, check=False)


@contextlib.contextmanager
def mounted_ext4(image: Path, mountpoint: Path):
    """An ext4 file system on `image` (its size as it is), mounted read-write through a loop
    device at `mountpoint` (made here); yields the device."""
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, timeout=60,
                   capture_output=True)
    mountpoint.mkdir()
    with loop_device(image) as dev:
        subprocess.run(["mount", dev, str(mountpoint)], check=True, timeout=20)
        try:
            yield dev
        finally:
            subprocess.run(["umount", str(mountpoint)], timeout=20, check=False)
