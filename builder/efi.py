"""The UEFI half of the TFTP root: Microsoft-signed shim -> Debian-signed GRUB -> Debian's
signed kernel, all from Debian packages, so a node boots with Secure Boot on and no key
enrolment, over PXE (TFTP) or UEFI HTTP Boot.

- `shimx64.efi` (shim-signed): the DHCP boot file for UEFI x86-64 clients (option 93 = 7
  or 9 over TFTP; 16 with vendor class HTTPClient, as `http://SERVER/shimx64.efi`). Signed
  by Microsoft's UEFI CA, which every Secure Boot PC trusts; it carries Debian's CA and
  loads `grubx64.efi` from the same directory, over TFTP or HTTP as it was itself loaded.
- `grubx64.efi` (grub-efi-amd64-signed's grubnetx64.efi.signed): GRUB for network boot,
  signed by Debian. Its built-in prefix is `/grub` on the device it was loaded from:
  (tftp,SERVER) after PXE, (http,SERVER) after HTTP Boot (Debian's GRUB takes the server
  from the DHCP answer's HTTPClient URL); builder/grub.py writes grub/grub.cfg and the
  menus it chooses from, which name files relative to that device.
- Both come from Debian 13 (EFI_RELEASE) whatever the host runs: Debian 12's signed netboot
  GRUB (2.06) has tftp but no http built in, and Secure Boot forbids loading modules, so
  after HTTP Boot it could not read even its grub.cfg; Debian 13's (2.12) has http built
  in, so HTTP Boot and --http-url work with Secure Boot on. shim is taken from the same
  release (its SBAT policy and GRUB's are made to match). The build keeps its own apt
  state for that release in CACHE/apt-efi (the host's mirrors; its sources untouched).
- The kernel is Debian's signed vmlinuz (linux-image-*), checked here; the initrd needs no
  signature (shim and GRUB verify only what they execute).

The packages are fetched with `apt-get download` and unpacked in the cache, never
installed (their maintainer scripts would write to /boot/efi).
"""

from __future__ import annotations

import contextlib
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from builder import debs
from builder.arch import AMD64, Arch
from builder.errors import BuildError
from builder.firmware_debian import PrivateApt, host_suites

SHIM_PACKAGE = "shim-signed"
GRUB_PACKAGE = AMD64.grub_package
SHIM_SRC = AMD64.shim_src
GRUB_SRC = AMD64.grub_src
#: The DHCP boot file for UEFI x86-64 clients, and what shim loads next (its default
#: loader name, looked up beside shim on the TFTP or web server). arm64's are
#: shimaa64.efi and grubaa64.efi (builder/arch.py), beside them in the same root.
BOOT_FILE = AMD64.shim_file
GRUB_FILE = AMD64.grub_file
#: grubnetx64's built-in prefix: it sources (tftp,SERVER)/grub/grub.cfg, or
#: (http,SERVER)/grub/grub.cfg after UEFI HTTP Boot.
PREFIX = "grub"
#: The Debian release shim and GRUB come from: the first whose signed netboot GRUB has
#: http built in (Debian 13; see the module's docstring).
EFI_RELEASE = "trixie"
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


def grub_modules(path: Path) -> set[str]:
    """The modules built into a GRUB EFI image: each is an ELF object in the image whose
    `.modname` section holds its name (Secure Boot lets GRUB use no others)."""
    data = path.read_bytes()
    names: set[str] = set()
    start = data.find(b"\x7fELF\x02\x01")
    while start >= 0:
        with contextlib.suppress(struct.error, IndexError):
            shoff = struct.unpack_from("<Q", data, start + 0x28)[0]
            size, count, strndx = struct.unpack_from("<HHH", data, start + 0x3A)
            sections = [struct.unpack_from("<IIQQQQ", data, start + shoff + i * size)
                        for i in range(count)]
            strtab = start + sections[strndx][4]
            for name, _, _, _, offset, length in sections:
                if data[strtab + name:strtab + name + 9] == b".modname\0":
                    raw = data[start + offset:start + offset + length]
                    names.add(raw.rstrip(b"\0").decode(errors="replace"))
        start = data.find(b"\x7fELF\x02\x01", start + 4)
    return names


def efi_apt(cache: Path, arch: Arch = AMD64) -> PrivateApt:
    """apt for EFI_RELEASE's `main` (and its -updates and -security), on the mirrors the
    host uses, in CACHE/apt-efi (CACHE/apt-efi-arm64 for arm64's packages); updated here
    (an offline build uses the lists it has)."""
    host = [(uri, suite) for uri, suite in host_suites() if not suite.endswith("-backports")]
    release = host[0][1]
    suites = [(uri, EFI_RELEASE + suite.removeprefix(release)) for uri, suite in host]
    apt = PrivateApt(cache / ("apt-efi" if arch.native else f"apt-efi-{arch.name}"), suites,
                     component="main", contents=False,
                     architecture=None if arch.native else arch.name)
    apt.update()
    return apt


def install(cache: Path, out: Path, vmlinuz: Path, require_signed_kernel: bool,
            arch: Arch = AMD64) -> EfiBoot:
    """Copy shim and GRUB of `arch` into the root `out` (TFTP and HTTP); check signatures."""
    apt = efi_apt(cache, arch).options
    kind = f"efi/{EFI_RELEASE}" if arch.native else f"efi/{EFI_RELEASE}-{arch.name}"
    shim_tree = debs.unpacked(cache, kind, SHIM_PACKAGE, apt=apt)
    grub_tree = debs.unpacked(cache, kind, arch.grub_package, apt=apt)
    shim_src, grub_src = shim_tree / arch.shim_src, grub_tree / arch.grub_src
    for src, signer in ((shim_src, MICROSOFT), (grub_src, DEBIAN)):
        if not src.is_file():
            raise BuildError(f"{src} missing from its package (a new package layout?)")
        if not signed_by(src, signer):
            raise BuildError(f"{src}: not signed by {signer.decode()}")
    if not {"tftp", "http"} <= grub_modules(grub_src):
        raise BuildError(f"{grub_src}: GRUB without tftp and http built in "
                         "(Secure Boot nodes could not read their config over both)",
                         f"report it: EFI_RELEASE ({EFI_RELEASE}) may need a newer release")
    kernel_signed = signed_by(vmlinuz, DEBIAN)
    if require_signed_kernel and not kernel_signed:
        raise BuildError(f"{vmlinuz}: not signed by Debian, so Secure Boot nodes would refuse "
                         "it", "use Debian's linux-image package, not an -unsigned one")
    shutil.copyfile(shim_src, out / arch.shim_file)
    shutil.copyfile(grub_src, out / arch.grub_file)
    (out / PREFIX).mkdir(exist_ok=True)  # grub.cfg & co.: builder/bootcfg.py
    stale = out / PREFIX / "x86_64-efi"  # Debian 12's http.mod, loaded by older builds
    if stale.exists():
        shutil.rmtree(stale)
    return EfiBoot(debs.control(shim_tree, "Version") or "?",
                   debs.control(grub_tree, "Version") or "?", kernel_signed)
