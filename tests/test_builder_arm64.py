"""The pieces of `make initrd ARCH=arm64` that run without a VM: the sysroot's path
mapping (qemu -L must never hand a node the host's x86 file), static programs told by
their ELF headers (the loader's --list crashes on them under qemu-user), the arm64 kernel's
version, --arch refused in one line, and the arm64 initrd's own grow tools growing a
filesystem under qemu-user. tests/test_pxe_arm64.py boots the result."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, ensure_arm64_tftpboot
from test_builder_initrd import _extract

from builder import arch, initrd, kernel, libs
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


@pytest.mark.slow
def test_the_arm64_initrd_grows_a_clone_with_its_own_tools(tmp_path):
    """grow=yes on an arm64 node: the GROW_TOOLS are the sysroot's arm64 programs and run
    with only the initrd's libraries (qemu -L the unpacked root); its e2fsck and resize2fs
    grow an ext4 image to its file's new size; the modules a clone is mounted with are in."""
    tftp = ensure_arm64_tftpboot()
    dest = tmp_path / "root"
    dest.mkdir()
    _extract(initrd.unpack((tftp / "arm64" / "initrd.img").read_bytes()), dest)
    sr = Sysroot(dest, arch.ARM64, "")
    sr.check_elves(dest / "usr/sbin")
    for tool, flag in (("xfs_growfs", "-V"), ("btrfs", "--version"),
                       ("ntfsresize", "--version")):
        proc = sr.run(dest / "usr/sbin" / tool, flag, timeout=60)
        assert proc.returncode == 0, (tool, proc.stderr)
    image = tmp_path / "ext4.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image), "8M"], check=True, timeout=60)
    os.truncate(image, 24 << 20)
    fsck = sr.run(dest / "usr/sbin/e2fsck", "-f", "-p", str(image), timeout=120)
    assert fsck.returncode == 0, fsck.stderr
    grow = sr.run(dest / "usr/sbin/resize2fs", str(image), timeout=120)
    assert grow.returncode == 0, grow.stderr
    info = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True,
                          timeout=60, check=True).stdout
    blocks, size = (int(x) for x in re.search(
        r"Block count:\s+(\d+).*?Block size:\s+(\d+)", info, re.S).groups())
    assert blocks * size == 24 << 20
    dep = next(dest.glob("usr/lib/modules/*/modules.dep")).read_text()
    for module in ("loop", "ext4", "xfs", "btrfs"):
        assert f"/{module}.ko.xz:" in dep, module
