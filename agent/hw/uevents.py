"""The kernel's uevents through pyudev: a libudev Monitor on the kernel's netlink group.

Loading a driver creates new devices (virtio_pci makes the virtio devices that need
virtio_net and virtio_blk; ahci makes the SCSI disk that needs sd_mod). With the monitor
started before the first scan, each device added with a MODALIAS gets its driver as soon as
the event arrives, with no rescan of sysfs and no sleeping. pyudev looks for libudev with
ctypes.util.find_library, which fails in an initramfs: import_pyudev fills that lookup in.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType

#: Where libudev.so.1 is looked for when ctypes.util.find_library cannot find it.
LIBRARY_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
                "/lib", "/usr/lib")


def find_library_on_disk(name: str, dirs: Iterable[str | None] | None = None) -> str | None:
    """The path of lib{name}.so (or its shortest lib{name}.so.N soname) in the frozen bundle,
    next to the executable, on LD_LIBRARY_PATH or in LIBRARY_DIRS; None if none is there.

    ctypes.util.find_library asks `ldconfig -p`, gcc or ld; an initramfs has none of them,
    so it answers None and pyudev refuses to load libudev, though dlopen would find it.
    """
    if dirs is None:
        dirs = [getattr(sys, "_MEIPASS", None), os.path.dirname(sys.executable),
                *os.environ.get("LD_LIBRARY_PATH", "").split(":"), *LIBRARY_DIRS]
    for directory in dirs:
        if not directory:
            continue
        hits = sorted(glob.glob(os.path.join(directory, f"lib{name}.so*")), key=len)
        if hits:
            return hits[0]
    return None


def import_pyudev() -> ModuleType:
    """pyudev, its lookup of libudev made to work without ldconfig (ImportError if not).

    The frozen agent's runtime hook (builder/rthook_libs.py) already fixes
    ctypes.util.find_library; this covers an agent run any other way in an initramfs. Only
    pyudev's own lookup is changed, and only to fill in where the stock one fails.
    """
    import pyudev
    import pyudev._ctypeslib.utils as pyudev_utils

    stock = pyudev_utils.find_library
    if not getattr(stock, "herdcast_fallback", False):
        def find_library(name: str) -> str | None:
            return stock(name) or find_library_on_disk(name)

        find_library.herdcast_fallback = True  # type: ignore[attr-defined]
        pyudev_utils.find_library = find_library
    return pyudev


@dataclass(frozen=True)
class Uevent:
    """What the hardware step needs of one kernel uevent (a pyudev.Device from a Monitor)."""

    action: str
    syspath: str
    subsystem: str
    modalias: str

    @classmethod
    def of(cls, device) -> Uevent:
        """From a pyudev.Device: MODALIAS and SUBSYSTEM are the event's own properties (a
        device from the monitor is not re-read from sysfs)."""
        return cls(device.action or "", device.sys_path, device.subsystem or "",
                   device.properties.get("MODALIAS", ""))


class UdevEvents:
    """The kernel's uevents, through pyudev's Monitor (libudev's netlink socket).

    source="kernel": no udevd runs in the initramfs to re-broadcast them. The monitor is
    started before the first scan, so a device added while modprobe runs is never missed:
    its event waits in the socket's buffer. Should the buffer overflow (libudev's receive
    fails with ENOBUFS), `lost` is set and the caller rescans sysfs.
    """

    def __init__(self, monitor) -> None:
        self.monitor = monitor
        self.lost = False

    @classmethod
    def open(cls) -> UdevEvents:
        """A started kernel-uevent monitor; ImportError or OSError when libudev or the
        netlink socket is not to be had."""
        pyudev = import_pyudev()
        monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
        with contextlib.suppress(OSError):  # past rmem_max needs root (SO_RCVBUFFORCE)
            monitor.set_receive_buffer_size(4 << 20)
        monitor.start()
        return cls(monitor)

    def receive(self, timeout: float) -> list[Uevent]:
        """The events that arrive within `timeout`, and once the first is there, all those
        already queued (without waiting), so they go to one modprobe."""
        events: list[Uevent] = []
        wait = max(0.0, timeout)
        while True:
            try:
                device = self.monitor.poll(timeout=wait)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.lost, wait = True, 0.0
                continue
            if device is None:
                return events
            events.append(Uevent.of(device))
            wait = 0.0

    def close(self) -> None:
        """Drop the monitor: libudev closes its socket when pyudev unrefs it, rather than
        leaving it to fill up with the events of the rest of the run."""
        self.monitor = None


def open_uevents() -> tuple[UdevEvents | None, str]:
    """The uevent monitor, or None and why (then sysfs is scanned in passes)."""
    try:
        return UdevEvents.open(), ""
    except (ImportError, OSError) as exc:
        return None, str(exc) or type(exc).__name__
