"""PyInstaller runtime hook, run before the agent: make ctypes.util.find_library work in an
initramfs.

find_library asks `ldconfig -p`, gcc or ld, none of which an initramfs has, so it returns
None and pyudev ("No library named udev") cannot import. The builder bundles libudev.so.1
in the frozen tree; this hook answers find_library from that tree and the usual library
directories. It only fills in when the stock lookup fails, so a frozen agent run on a full
system behaves as before.
"""

import ctypes.util
import glob
import os
import sys

_DIRS = [getattr(sys, "_MEIPASS", ""), "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu",
         "/usr/lib64", "/lib64", "/usr/lib", "/lib"]


def _install() -> None:
    original = ctypes.util.find_library

    def find_library(name: str):
        found = original(name)
        if found:
            return found
        for directory in filter(None, _DIRS):
            candidates = sorted(glob.glob(os.path.join(directory, f"lib{name}.so*")))
            # libudev.so.1 rather than libudev.so.1.7.5: the soname is what dlopen wants
            candidates.sort(key=len)
            if candidates:
                return candidates[0]
        return None

    find_library.herdcast_rthook = True
    ctypes.util.find_library = find_library


_install()
