"""The node architectures one TFTP root serves: one row each, read by every step that
differs (kernel package, boot loader files, where the kernel and initrd sit, library dirs).

amd64 is the root's top level as it always was (vmlinuz, initrd.img, shimx64.efi,
grubx64.efi, pxelinux). arm64 adds `shimaa64.efi` and `grubaa64.efi` beside them (DHCP
client-arch 11 gets shimaa64.efi) and its kernel and initrd in `arm64/`; both GRUBs read
the same grub/ configs, which pick the directory by GRUB's `$grub_cpu` (builder/grub.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from builder.errors import BuildError


@dataclass(frozen=True)
class Arch:
    """What one node architecture needs from Debian and where it goes in the root."""

    name: str  # Debian's architecture name (`make initrd ARCH=`)
    grub_cpu: str  # GRUB's $grub_cpu on such a node
    triplet: str  # the multiarch directory (lib/<triplet>)
    loader: str  # the dynamic loader every program names (PT_INTERP)
    subdir: str  # where vmlinuz and initrd.img go in the TFTP root ("" = top level)
    shim_file: str  # the DHCP boot file for UEFI clients (Debian 13's shim)
    grub_file: str  # what shim loads next from its own directory
    grub_package: str  # Debian's signed GRUB for it
    client_arch: tuple[int, ...]  # DHCP option 93 values of its UEFI PXE firmware
    http_client_arch: int  # option 93 of its UEFI HTTP Boot (vendor class HTTPClient)
    console: str  # its serial console's kernel parameter (the lab's VMs, servers)
    elf_machine: int  # e_machine of its programs
    qemu_user: str = ""  # qemu-user that runs its programs on an x86 build host

    @property
    def native(self) -> bool:
        """Whether the build host runs its programs directly (no sysroot, no qemu)."""
        return not self.qemu_user

    @property
    def lib_dirs(self) -> tuple[Path, Path]:
        return Path(f"/lib/{self.triplet}"), Path(f"/usr/lib/{self.triplet}")

    @property
    def kernel_meta(self) -> str:
        """Debian's meta package that depends on the current signed kernel."""
        return f"linux-image-{self.name}"

    @property
    def shim_src(self) -> str:
        return f"usr/lib/shim/{self.shim_file}.signed"

    @property
    def grub_src(self) -> str:
        efi = self.grub_file.removeprefix("grub")  # x64.efi, aa64.efi
        return f"usr/lib/grub/{self.grub_cpu}-efi-signed/grubnet{efi}.signed"

    def path(self, name: str) -> str:
        """`name` (vmlinuz, initrd.img) as it sits in the TFTP root."""
        return f"{self.subdir}/{name}" if self.subdir else name


AMD64 = Arch("amd64", "x86_64", "x86_64-linux-gnu", "/lib64/ld-linux-x86-64.so.2", "",
             "shimx64.efi", "grubx64.efi", "grub-efi-amd64-signed", (7, 9), 16,
             "console=ttyS0,115200", 62)
ARM64 = Arch("arm64", "arm64", "aarch64-linux-gnu", "/lib/ld-linux-aarch64.so.1", "arm64",
             "shimaa64.efi", "grubaa64.efi", "grub-efi-arm64-signed", (11,), 19,
             "console=ttyAMA0,115200", 183, qemu_user="qemu-aarch64-static")
ARCHES = {a.name: a for a in (AMD64, ARM64)}


def get(name: str) -> Arch:
    """--arch's value; one line naming the choices otherwise."""
    if name in ARCHES:
        return ARCHES[name]
    raise BuildError(f"--arch {name}: not a node architecture herdcast builds",
                     f"use one of {', '.join(ARCHES)}")
