"""Firmware files the chosen modules ask for, copied from the build host's /lib/firmware.

Many NICs and HBAs load firmware at probe time (bnx2, tg3 on some chips, r8169 on some
revisions, qed, ice...); without the file the driver binds but the link never comes up.
Debian ships firmware in separate packages (firmware-realtek, firmware-bnx2x, ...), so we
take what the host has installed and say how much of the wanted set that is.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

_FIRMWARE = re.compile(rb"(?:^|\0)firmware=([^\0]+)")
COMPRESSED = ("", ".zst", ".xz")  # the kernel's loader tries the plain name, then these


def wanted(ko: Path) -> list[str]:
    """The `firmware=` names in a module's .modinfo section (what `modinfo -F firmware`
    prints), read from the file itself. Compressed modules are skipped: Debian 12's are
    plain, and modinfo is not needed for them."""
    if not ko.name.endswith(".ko"):
        return []
    return sorted({m.group(1).decode(errors="replace") for m in _FIRMWARE.finditer(
        ko.read_bytes())})


def install(modules_dir: Path, chosen: list[str], firmware_dir: Path | None, root: Path
            ) -> tuple[int, int]:
    """Copy every wanted firmware file the host has into root/lib/firmware; returns
    (files found, files wanted)."""
    names = sorted({name for rel in chosen for name in wanted(modules_dir / rel)})
    if firmware_dir is None or not firmware_dir.is_dir():
        return 0, len(names)
    found = 0
    for name in names:
        for suffix in COMPRESSED:
            src = firmware_dir / f"{name}{suffix}"
            if src.is_file() and src.resolve().is_relative_to(firmware_dir.resolve()):
                target = root / "lib" / "firmware" / f"{name}{suffix}"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, target)
                found += 1
                break
    return found, len(names)
