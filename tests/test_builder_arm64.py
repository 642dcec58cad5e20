"""The pieces of `make initrd ARCH=arm64` that run without a VM: the sysroot's path
mapping (qemu -L must never hand a node the host's x86 file), static programs told by
their ELF headers (the loader's --list crashes on them under qemu-user), the arm64 kernel's
version, and --arch refused in one line. tests/test_pxe_arm64.py boots the result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from builder import arch, kernel, libs
from builder.config import BuildConfig
from builder.errors import BuildError
from builder.sysroot import Sysroot


def test_the_sysroot_resolves_links_inside_itself(tmp_path):
    root = tmp_path / "root"
    (root / "usr/lib/aarch64-linux-gnu").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    real = root / "usr/lib/aarch64-linux-gnu/libz.so.1.2.13"
    real.write_bytes(b"arm64 libz")
    (root / "usr/lib/aarch64-linux-gnu/libz.so.1").symlink_to("libz.so.1.2.13")
    # an absolute link means the root's file: followed inside the root, not on the host
    (root / "usr/lib/aarch64-linux-gnu/libc.so.6").symlink_to("/lib/aarch64-linux-gnu/libz.so.1")
    sr = Sysroot(root, arch.ARM64, "")
    assert sr.host("/lib/aarch64-linux-gnu/libz.so.1") == real
    assert sr.host("/usr/lib/aarch64-linux-gnu/libc.so.6") == real
    (root / "loop").symlink_to("/loop")
    with pytest.raises(BuildError, match="symlink loop"):
        sr.host("/loop/x")


def test_elf_headers_tell_static_programs_from_dynamic_ones():
    assert not libs.is_dynamic(Path("/bin/busybox"))  # busybox-static
    assert libs.is_dynamic(Path("/usr/bin/kmod"))
    assert libs.is_dynamic(Path(os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6")))


def test_an_arm64_image_gives_its_version(tmp_path):
    image = bytearray(0x400)
    image[0x38:0x3C] = b"ARM\x64"
    image += b"\0Linux version 6.1.0-57-arm64 (debian-kernel@lists.debian.org) #1 SMP\0"
    (tmp_path / "vmlinuz").write_bytes(bytes(image))
    assert kernel.image_version(tmp_path / "vmlinuz") == "6.1.0-57-arm64"
    (tmp_path / "other").write_bytes(b"\0" * 0x400)
    with pytest.raises(BuildError, match="not an x86 bzImage nor"):
        kernel.image_version(tmp_path / "other")


def test_one_root_two_architectures_apart():
    """arm64's files never take x86's names in the shared root."""
    assert arch.AMD64.path("vmlinuz") == "vmlinuz"
    assert arch.ARM64.path("initrd.img") == "arm64/initrd.img"
    names = [(a.shim_file, a.grub_file) for a in arch.ARCHES.values()]
    assert len({n for pair in names for n in pair}) == 4
    assert arch.ARM64.grub_src == "usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed"
    assert arch.AMD64.grub_src == "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"


def test_an_unknown_architecture_is_refused_before_any_work(tmp_path):
    with pytest.raises(BuildError, match="--arch sparc64: not a node architecture"):
        BuildConfig(out=tmp_path / "out", work=tmp_path / "work", arch="sparc64")
    proc = subprocess.run([sys.executable, "-m", "builder", "initrd", "--arch", "sparc64",
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "--arch" in proc.stderr
    assert not (tmp_path / "out").exists()
