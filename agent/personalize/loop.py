"""Loop devices over a byte range of a disk: a partition as a block device of its own.

A node has no udev, and the kernel may not have re-read a partition table this step just
changed (it refuses while anything holds the disk); a loop device with the partition's
offset and size needs neither. Set up with LOOP_CONFIGURE (Linux 5.8+), falling back to
LOOP_SET_FD + LOOP_SET_STATUS64; the structures are declared once with construct.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator

from construct import Bytes, Int32ul, Int64ul, Padding, Struct

from agent.errors import HerdcastError

LOOP_SET_FD, LOOP_CLR_FD, LOOP_SET_STATUS64 = 0x4C00, 0x4C01, 0x4C04
LOOP_CONFIGURE, LOOP_CTL_GET_FREE = 0x4C0A, 0x4C82
LO_FLAGS_AUTOCLEAR = 4  # detached by the kernel when the last user closes it
LOOP_MAJOR = 7

LoopInfo64 = Struct(
    "device" / Int64ul,
    "inode" / Int64ul,
    "rdevice" / Int64ul,
    "offset" / Int64ul,
    "sizelimit" / Int64ul,
    "number" / Int32ul,
    "encrypt_type" / Int32ul,
    "encrypt_key_size" / Int32ul,
    "flags" / Int32ul,
    "file_name" / Bytes(64),
    "crypt_name" / Bytes(64),
    "encrypt_key" / Bytes(32),
    "init" / Bytes(16),
)
LoopConfig = Struct("fd" / Int32ul, "block_size" / Int32ul, "info" / LoopInfo64,
                    Padding(64))


class LoopError(HerdcastError):
    """A loop device could not be set up over a partition."""


def _info(offset: int, length: int, name: str) -> dict:
    return {"device": 0, "inode": 0, "rdevice": 0, "offset": offset, "sizelimit": length,
            "number": 0, "encrypt_type": 0, "encrypt_key_size": 0,
            "flags": LO_FLAGS_AUTOCLEAR, "file_name": name.encode()[:63].ljust(64, b"\0"),
            "crypt_name": bytes(64), "encrypt_key": bytes(32), "init": bytes(16)}


def _node(number: int) -> str:
    """/dev/loopN; made from its numbers where nothing made it (a /dev that is no devtmpfs)."""
    path = f"/dev/loop{number}"
    if not os.path.exists(path):
        with contextlib.suppress(FileExistsError):
            os.mknod(path, 0o600 | stat.S_IFBLK, os.makedev(LOOP_MAJOR, number))
    return path


def _configure(loop_fd: int, backing: int, offset: int, length: int, name: str) -> None:
    try:
        fcntl.ioctl(loop_fd, LOOP_CONFIGURE, LoopConfig.build(
            {"fd": backing, "block_size": 0, "info": _info(offset, length, name)}))
        return
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTTY):
            raise
    fcntl.ioctl(loop_fd, LOOP_SET_FD, backing)
    try:
        fcntl.ioctl(loop_fd, LOOP_SET_STATUS64, LoopInfo64.build(_info(offset, length, name)))
    except OSError:
        fcntl.ioctl(loop_fd, LOOP_CLR_FD, 0)
        raise


@contextlib.contextmanager
def loop_over(disk: str, offset: int, length: int) -> Iterator[str]:
    """A loop device showing bytes [offset, offset+length) of `disk`; yields its path and
    detaches it afterwards. Another process taking the same free device is retried."""
    if not os.path.exists("/dev/loop-control"):  # a node: the loop module is not loaded yet
        from agent.hw.modprobe import ModuleLoad, modprobe_command, run_loads

        run_loads([ModuleLoad("loop")], modprobe_command())
    try:
        control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise LoopError(f"/dev/loop-control: {exc.strerror}",
                        "load the loop module (it is in herdcast's initrd)") from exc
    backing = os.open(disk, os.O_RDWR | os.O_CLOEXEC)
    try:
        for _attempt in range(20):
            number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
            path = _node(number)
            loop_fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                _configure(loop_fd, backing, offset, length, disk)
            except OSError as exc:
                os.close(loop_fd)
                if exc.errno == errno.EBUSY:
                    time.sleep(0.05)
                    continue
                raise LoopError(f"loop device over {disk} at byte {offset}: "
                                f"{exc.strerror}") from exc
            break
        else:
            raise LoopError(f"no free loop device for {disk}", "detach unused loop devices")
    finally:
        os.close(backing)
        os.close(control)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            fcntl.ioctl(loop_fd, LOOP_CLR_FD, 0)
        os.close(loop_fd)
