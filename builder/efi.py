"""The UEFI half of the TFTP root: Microsoft-signed shim -> Debian-signed GRUB -> Debian's
signed kernel, all from Debian packages, so a node boots with Secure Boot on and no key
enrolment.

- `shimx64.efi` (shim-signed): the DHCP boot file for UEFI x86-64 clients (option 93 = 7
  or 9). Signed by Microsoft's UEFI CA, which every Secure Boot PC trusts; it carries
  Debian's CA and loads `grubx64.efi` from the same TFTP directory.
- `grubx64.efi` (grub-efi-amd64-signed's grubnetx64.efi.signed): GRUB for network boot,
  signed by Debian. Its built-in config reads `grub/grub.cfg` over TFTP (prefix `/grub`);
  builder/grub.py writes that file and the menus it chooses from.
- `grub/x86_64-efi/http.mod` (grub-efi-amd64-bin, the same GRUB build): Debian's signed
  GRUB has no HTTP built in. With Secure Boot off GRUB loads this module and fetches the
  kernel and initrd over HTTP (--http-url); with Secure Boot on GRUB refuses unsigned
  modules and those nodes load them over TFTP.
- The kernel is Debian's signed vmlinuz (linux-image-*), checked here; the initrd needs no
  signature (shim and GRUB verify only what they execute).

The packages are fetched with `apt-get download` and unpacked in the cache, never
installed (their maintainer scripts would write to /boot/efi).
"""

from __future__ import annotations

import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from builder import debs
from builder.errors import BuildError

SHIM_PACKAGE = "shim-signed"
GRUB_PACKAGE = "grub-efi-amd64-signed"
GRUB_BIN_PACKAGE = "grub-efi-amd64-bin"
SHIM_SRC = "usr/lib/shim/shimx64.efi.signed"
GRUB_SRC = "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"
GRUB_MODULES_SRC = "usr/lib/grub/x86_64-efi"
#: The DHCP boot file for UEFI x86-64 clients, and what shim loads next (its default
#: loader name, looked up beside shim on the TFTP server).
BOOT_FILE = "shimx64.efi"
GRUB_FILE = "grubx64.efi"
#: grubnetx64's built-in prefix: it sources (tftp,SERVER)/grub/grub.cfg.
PREFIX = "grub"
#: GRUB modules loaded at boot from PREFIX/x86_64-efi when Secure Boot is off.
EXTRA_MODULES = ("http",)
#: Who signs what (a name in the Authenticode certificates).
MICROSOFT = b"Microsoft Corporation UEFI CA 2011"
DEBIAN = b"Debian Secure Boot"


@dataclass(frozen=True)
class EfiBoot:
    """What install() put in the TFTP root, for the build report."""

    shim_version: str
    grub_version: str
    kernel_signed: bool


def authenticode(path: Path) -> bytes:
    """The PE image's certificate table (its Authenticode signatures), b"" when unsigned."""
    data = path.read_bytes()
    if data[:2] != b"MZ" or len(data) < 0x40:
        return b""
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    if data[pe:pe + 4] != b"PE\0\0":
        return b""
    magic = struct.unpack_from("<H", data, pe + 24)[0]
    directories = pe + 24 + (112 if magic == 0x20B else 96)
    offset, size = struct.unpack_from("<II", data, directories + 4 * 8)  # entry 4: security
    return data[offset:offset + size] if offset and size else b""


def signed_by(path: Path, signer: bytes) -> bool:
    """Whether `path` carries a signature whose certificates name `signer`. Not a
    verification (the firmware and shim do that at boot, and the lab's Secure Boot VM
    proves it); it catches an unsigned build of a file, such as a -unsigned kernel."""
    return signer in authenticode(path)


def _grub_bin_version(grub_tree: Path) -> str:
    """The grub-efi-amd64-bin version the signed image was built from (Built-Using)."""
    built = debs.control(grub_tree, "Built-Using") or ""
    match = re.search(r"grub2 \(= ([^)]+)\)", built)
    if not match:
        raise BuildError(f"{GRUB_PACKAGE}: no Built-Using grub2 version in its control file")
    return match.group(1)


def _module_closure(moddir: Path, names: tuple[str, ...]) -> list[str]:
    deps: dict[str, list[str]] = {}
    for line in (moddir / "moddep.lst").read_text().splitlines():
        name, _, rest = line.partition(":")
        deps[name.strip()] = rest.split()
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += deps.get(name, [])
    return sorted(seen)


def install(cache: Path, out: Path, vmlinuz: Path, require_signed_kernel: bool) -> EfiBoot:
    """Copy shim, GRUB and GRUB's HTTP module into the TFTP root `out`; check signatures."""
    shim_tree = debs.unpacked(cache, "efi", SHIM_PACKAGE)
    grub_tree = debs.unpacked(cache, "efi", GRUB_PACKAGE)
    bin_tree = debs.unpacked(cache, "efi", GRUB_BIN_PACKAGE, _grub_bin_version(grub_tree))
    for src, signer in ((shim_tree / SHIM_SRC, MICROSOFT), (grub_tree / GRUB_SRC, DEBIAN)):
        if not src.is_file():
            raise BuildError(f"{src} missing from its package (a new package layout?)")
        if not signed_by(src, signer):
            raise BuildError(f"{src}: not signed by {signer.decode()}")
    kernel_signed = signed_by(vmlinuz, DEBIAN)
    if require_signed_kernel and not kernel_signed:
        raise BuildError(f"{vmlinuz}: not signed by Debian, so Secure Boot nodes would refuse "
                         "it", "use Debian's linux-image package, not an -unsigned one")
    shutil.copyfile(shim_tree / SHIM_SRC, out / BOOT_FILE)
    shutil.copyfile(grub_tree / GRUB_SRC, out / GRUB_FILE)
    moddir = bin_tree / GRUB_MODULES_SRC
    target = out / PREFIX / "x86_64-efi"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in _module_closure(moddir, EXTRA_MODULES):
        shutil.copyfile(moddir / f"{name}.mod", target / f"{name}.mod")
    return EfiBoot(debs.control(shim_tree, "Version") or "?",
                   debs.control(grub_tree, "Version") or "?", kernel_signed)
