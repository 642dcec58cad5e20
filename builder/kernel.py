"""Where the kernel comes from: Debian's current linux-image package, or the host's files.

Debian's package is fetched with `apt-get download` and unpacked with `dpkg-deb -x` into a
cache outside the git tree: no root, nothing installed into /boot, and the 70 MB download
happens once. Either way we check that the image and the modules are the same version
(a mismatch boots, then loads no driver) and that the kernel can unpack a zstd initramfs.
"""

from __future__ import annotations

import re
import shutil
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from builder import debs
from builder.arch import AMD64, Arch
from builder.errors import BuildError

META_PACKAGE = AMD64.kernel_meta


@dataclass(frozen=True)
class Kernel:
    """A kernel image and its full modules tree (lib/modules/VERSION, with modules.dep)."""

    version: str
    vmlinuz: Path
    modules_dir: Path
    config: Path | None


def bzimage_version(vmlinuz: Path) -> str:
    """The release string (`uname -r`) an x86 bzImage carries in its setup header."""
    with open(vmlinuz, "rb") as f:
        head = f.read(0x10000)
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        raise BuildError(f"{vmlinuz}: not an x86 bzImage kernel (no HdrS setup header)")
    offset = struct.unpack_from("<H", head, 0x20E)[0] + 0x200
    raw = head[offset : offset + 256].split(b"\0", 1)[0]
    if not raw:
        raise BuildError(f"{vmlinuz}: setup header has no kernel version string")
    return raw.decode(errors="replace").split()[0]


def check_rd_zstd(kernel: Kernel) -> None:
    """Refuse to build an initrd the kernel cannot unpack (it would panic at boot)."""
    if kernel.config is None:
        return
    text = kernel.config.read_text(errors="replace")
    if not re.search(r"^CONFIG_RD_ZSTD=y$", text, re.MULTILINE):
        raise BuildError(
            f"{kernel.config}: CONFIG_RD_ZSTD is not set, so this kernel cannot unpack a zstd "
            "initramfs; use a kernel built with it (Debian's has it)"
        )


def image_version(vmlinuz: Path) -> str:
    """The release string of an x86 bzImage, or of an arm64 Image (Debian's signed arm64
    vmlinuz is an uncompressed EFI-stub Image holding the `Linux version V` banner)."""
    with open(vmlinuz, "rb") as f:
        head = f.read(0x210)
    if head[0x202:0x206] == b"HdrS":
        return bzimage_version(vmlinuz)
    if head[0x38:0x3C] == b"ARM\x64":
        match = re.search(rb"Linux version (\S+) ", vmlinuz.read_bytes())
        if match:
            return match.group(1).decode(errors="replace")
    raise BuildError(f"{vmlinuz}: not an x86 bzImage nor an uncompressed arm64 Image")


def check_versions(kernel: Kernel) -> None:
    image = image_version(kernel.vmlinuz)
    if image != kernel.version:
        raise BuildError(
            f"kernel {kernel.vmlinuz} is {image} but modules {kernel.modules_dir} are "
            f"{kernel.version}; pass the modules directory of the same version"
        )


def host_kernel(vmlinuz: Path, modules_dir: Path) -> Kernel:
    """--kernel/--modules-dir: files already on this machine (e.g. /boot, /lib/modules/V)."""
    if not vmlinuz.is_file():
        raise BuildError(f"--kernel {vmlinuz}: no such file")
    if not (modules_dir / "kernel").is_dir():
        raise BuildError(f"--modules-dir {modules_dir}: no kernel/ subdirectory; expected "
                         "/lib/modules/VERSION")
    version = modules_dir.resolve().name
    config = next((p for p in (vmlinuz.parent / f"config-{version}",
                               modules_dir / "build" / ".config") if p.is_file()), None)
    kernel = Kernel(version, vmlinuz, modules_dir, config)
    check_versions(kernel)
    return kernel


def debian_package_name(arch: Arch = AMD64, apt: Sequence[str] = ()) -> str:
    """linux-image-6.1.0-NN-amd64: what the linux-image-amd64 meta package (the arch's)
    depends on now (`apt`: a private apt state's options, for another architecture)."""
    meta = arch.kernel_meta
    out = debs.run(["apt-cache", *apt, "depends", meta],
                   f"looking up {meta} (run apt-get update, or pass --kernel/--modules-dir)")
    match = re.search(r"Depends:\s*(linux-image-\S+)", out)
    if not match:
        raise BuildError(f"apt-cache depends {meta}: no linux-image dependency listed")
    return match.group(1)


def debian_kernel(cache: Path, package: str | None = None, arch: Arch = AMD64,
                  apt: Sequence[str] = ()) -> Kernel:
    """Download (once) and unpack (once) Debian's kernel package into `cache` (another
    architecture's in CACHE/<arch>/kernel); run depmod on the full tree (the package
    ships no modules.dep) so module dependencies can be read."""
    package = package or debian_package_name(arch, apt)
    version = package.removeprefix("linux-image-")
    kind = "kernel" if arch.native else f"{arch.name}/kernel"
    tree = debs.unpacked(cache, kind, package, apt=apt, finish=lambda root: debs.run(
        ["depmod", "-b", str(root), version], f"depmod for {version}"))
    for old in (cache / kind).glob("linux-image-*"):  # 400 MB unpacked each
        if old.name != package and not old.name.endswith(".partial"):
            shutil.rmtree(old, ignore_errors=True)
    for deb in (cache / "debs" / ("" if arch.native else kind)).glob("linux-image-*.deb"):
        if not deb.name.startswith(f"{package}_"):
            deb.unlink(missing_ok=True)
    config = tree / "boot" / f"config-{version}"
    kernel = Kernel(version, tree / "boot" / f"vmlinuz-{version}",
                    tree / "lib" / "modules" / version, config if config.is_file() else None)
    check_versions(kernel)
    return kernel
