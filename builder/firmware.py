"""Firmware files the chosen modules ask for, in the initrd's /lib/firmware.

Many NICs and HBAs load firmware at probe time (bnx2, bnx2x, tg3 on some chips, r8169 on
some revisions, qed, ice, cxgb4...); without the file the driver binds but the link never
comes up. A module names its files in .modinfo (`modinfo -F firmware`). By default they
come from Debian's firmware packages (builder/firmware_debian.py: the same files Debian's
installer carries since bookworm); `--firmware host` takes the build host's /lib/firmware,
`--firmware DIR` another tree, `--firmware none` none. Only the named files go in,
compressed as the kernel's loader accepts them (CONFIG_FW_LOADER_COMPRESS_XZ: `NAME.xz`,
CRC32 as the kernel's xz decoder wants; the kernel tries NAME, then NAME.zst/.xz), and the
build line says how many of the wanted files the initrd carries and why the rest are not.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import BuildError

_FIRMWARE = re.compile(rb"(?:^|\0)firmware=([^\0]+)")
COMPRESSED = ("", ".zst", ".xz")  # the kernel's loader tries the plain name, then these
#: --firmware words; anything else is a directory laid out like /lib/firmware.
SOURCES = ("debian", "host", "none")
HOST_DIR = Path("/lib/firmware")


@dataclass
class FirmwareReport:
    """What the build line says about firmware."""

    source: str  # "debian", "none", or the directory taken from
    wanted: int = 0
    carried: int = 0
    missing: dict[str, str] = field(default_factory=dict)  # name -> why it is not there

    def summary(self) -> str:
        return f"firmware {self.carried} of {self.wanted} files ({self.source})"

    def missing_lines(self) -> list[str]:
        """One line per reason: `missing (why): a, b, c`."""
        by_reason: dict[str, list[str]] = {}
        for name, why in sorted(self.missing.items()):
            by_reason.setdefault(why, []).append(name)
        return [f"firmware missing ({why}): {', '.join(names)}"
                for why, names in by_reason.items()]


def check_source(word: str) -> str:
    """--firmware's value, refused in one line when it is neither a word nor a directory."""
    if word in SOURCES or Path(word).is_dir():
        return word
    raise BuildError(f"--firmware {word}: not a directory",
                     f"use one of {', '.join(SOURCES)} or a directory laid out like "
                     "/lib/firmware")


def wanted(ko: Path) -> list[str]:
    """The `firmware=` names in a module's .modinfo section (what `modinfo -F firmware`
    prints), read from the file itself. Compressed modules are skipped: Debian 12's are
    plain, and modinfo is not needed for them."""
    if not ko.name.endswith(".ko"):
        return []
    return sorted({m.group(1).decode(errors="replace") for m in _FIRMWARE.finditer(
        ko.read_bytes())})


def wanted_names(modules_dir: Path, chosen: list[str]) -> list[str]:
    return sorted({name for rel in chosen for name in wanted(modules_dir / rel)})


def kernel_suffix(config: Path | None) -> str:
    """How the kernel's firmware loader takes a compressed file: ".xz", ".zst" or "" (plain
    only, or no config to tell)."""
    text = config.read_text(errors="replace") if config is not None and config.is_file() \
        else ""
    for option, suffix in (("XZ", ".xz"), ("ZSTD", ".zst")):
        if re.search(rf"^CONFIG_FW_LOADER_COMPRESS_{option}=y$", text, re.MULTILINE):
            return suffix
    return ""


def _encode(data: bytes, suffix: str, cache: Path | None) -> bytes:
    if suffix == ".xz":
        from builder.modules import compress_cached  # the modules' xz (CRC32), memoised

        return compress_cached(data, cache)
    if suffix == ".zst":
        import zstandard

        return zstandard.ZstdCompressor(level=19, write_checksum=True).compress(data)
    return data


def _from_dir(firmware_dir: Path, names: list[str]) -> tuple[dict[str, Path], dict[str, str]]:
    """A tree laid out like /lib/firmware: each name as is or already compressed."""
    found: dict[str, Path] = {}
    missing: dict[str, str] = {}
    base = firmware_dir.resolve()
    for name in names:
        for suffix in COMPRESSED:
            src = firmware_dir / f"{name}{suffix}"
            if src.is_file() and src.resolve().is_relative_to(base):
                found[name] = src
                break
        else:
            missing[name] = f"not in {firmware_dir}"
    return found, missing


def install(modules_dir: Path, chosen: list[str], source: str, root: Path, cache: Path,
            config: Path | None = None, xz_cache: Path | None = None) -> FirmwareReport:
    """Put every wanted firmware file that `source` has into root/lib/firmware, compressed
    as the kernel (`config`) accepts; `cache` is where Debian packages are kept."""
    names = wanted_names(modules_dir, chosen)
    if source == "none":
        return FirmwareReport("none", len(names), 0, dict.fromkeys(names, "--firmware none"))
    if source == "debian":
        from builder import firmware_debian

        debian, missing = firmware_debian.fetch(cache, names)
        found = {name: f.path for name, f in debian.items()}
        label = "Debian's packages"
    else:
        firmware_dir = HOST_DIR if source == "host" else Path(source)
        found, missing = _from_dir(firmware_dir, names)
        label = str(firmware_dir)
    suffix = kernel_suffix(config)
    shipped: dict[str, Path] = {}  # content hash -> first file with it
    for name, src in sorted(found.items()):
        already = next((s for s in COMPRESSED[1:] if src.name.endswith(s)), "")
        target = root / "lib" / "firmware" / (name + (already or suffix))
        target.parent.mkdir(parents=True, exist_ok=True)
        data = src.read_bytes()
        digest = hashlib.sha256(data).hexdigest() + (already or suffix)
        if digest in shipped:  # one card's firmware under two names (liquidio): a link
            target.symlink_to(os.path.relpath(shipped[digest], target.parent))
            continue
        shipped[digest] = target
        if already or not suffix:
            shutil.copyfile(src, target)
        else:
            target.write_bytes(_encode(data, suffix, xz_cache))
    return FirmwareReport(label, len(names), len(found), missing)
