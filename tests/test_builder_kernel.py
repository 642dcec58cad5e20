"""Kernel checks (version in the bzImage header, RD_ZSTD) and the ldd library closure."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import cached_kernel

from builder import kernel, libs
from builder.errors import BuildError


def _bzimage(path: Path, version: str) -> Path:
    """Just enough of an x86 boot sector for the version lookup: HdrS and the pointer."""
    blob = bytearray(0x1000)
    blob[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", blob, 0x20E, 0x600)
    text = f"{version} (builder@test) #1 SMP".encode() + b"\0"
    blob[0x800 : 0x800 + len(text)] = text
    path.write_bytes(bytes(blob))
    return path


def _modules(tmp_path: Path, version: str) -> Path:
    mdir = tmp_path / "lib" / "modules" / version
    (mdir / "kernel").mkdir(parents=True)
    return mdir


def test_version_is_read_from_the_setup_header(tmp_path):
    assert kernel.bzimage_version(_bzimage(tmp_path / "vmlinuz", "6.1.0-9-amd64")) \
        == "6.1.0-9-amd64"


def test_a_file_that_is_not_a_bzimage_is_refused(tmp_path):
    (tmp_path / "notakernel").write_bytes(b"\0" * 4096)
    with pytest.raises(BuildError, match="bzImage"):
        kernel.bzimage_version(tmp_path / "notakernel")


def test_host_kernel_with_matching_modules(tmp_path):
    vmlinuz = _bzimage(tmp_path / "vmlinuz-6.1.0-9-amd64", "6.1.0-9-amd64")
    (tmp_path / "config-6.1.0-9-amd64").write_text("CONFIG_RD_ZSTD=y\n")
    kern = kernel.host_kernel(vmlinuz, _modules(tmp_path, "6.1.0-9-amd64"))
    assert kern.version == "6.1.0-9-amd64"
    assert kern.config == tmp_path / "config-6.1.0-9-amd64"
    kernel.check_rd_zstd(kern)


def test_image_and_modules_of_different_versions_are_refused(tmp_path):
    vmlinuz = _bzimage(tmp_path / "vmlinuz", "6.1.0-9-amd64")
    with pytest.raises(BuildError, match="6.1.0-9-amd64.*6.1.0-10-amd64"):
        kernel.host_kernel(vmlinuz, _modules(tmp_path, "6.1.0-10-amd64"))


def test_a_kernel_without_rd_zstd_is_refused(tmp_path):
    vmlinuz = _bzimage(tmp_path / "vmlinuz-5.10", "5.10")
    (tmp_path / "config-5.10").write_text("# CONFIG_RD_ZSTD is not set\nCONFIG_RD_GZIP=y\n")
    kern = kernel.host_kernel(vmlinuz, _modules(tmp_path, "5.10"))
    with pytest.raises(BuildError, match="CONFIG_RD_ZSTD"):
        kernel.check_rd_zstd(kern)


def test_missing_modules_dir_is_named(tmp_path):
    vmlinuz = _bzimage(tmp_path / "vmlinuz", "6.1")
    with pytest.raises(BuildError, match="--modules-dir"):
        kernel.host_kernel(vmlinuz, tmp_path / "nowhere")


@pytest.mark.skipif(not Path("/usr/bin/kmod").exists(), reason="kmod not installed")
def test_ldd_closure_of_kmod_has_libc_and_the_loader():
    found = libs.closure([Path("/usr/bin/kmod")])
    names = {p.name for p in found}
    assert {"libc.so.6", "ld-linux-x86-64.so.2"} <= names
    assert all(p.is_absolute() and p.exists() for p in found)


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox not installed")
def test_a_static_program_needs_no_libraries():
    if libs.ldd(Path(shutil.which("busybox"))):
        pytest.skip("this busybox is dynamically linked (busybox-static gives a static one)")
    assert libs.closure([Path(shutil.which("busybox"))]) == []


def test_copy_into_places_libraries_at_their_path_as_files(tmp_path):
    kmod_libs = libs.closure([Path("/usr/bin/kmod")])
    placed = libs.copy_into(tmp_path, kmod_libs)
    for src, dst in zip(kmod_libs, placed, strict=True):
        assert dst == tmp_path / str(src).lstrip("/")
        assert not dst.is_symlink() and dst.read_bytes() == src.read_bytes()


@pytest.mark.skipif(shutil.which("dpkg-deb") is None or shutil.which("depmod") is None,
                    reason="needs dpkg-deb and depmod")
def test_debian_kernel_unpacks_a_cached_deb_once_and_indexes_its_modules(tmp_path):
    """No network: the .deb is already in the cache, as after a first download."""
    version = "6.1.0-99-amd64"
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        f"Package: linux-image-{version}\nVersion: 1\nArchitecture: amd64\n"
        "Maintainer: test <t@example.org>\nDescription: fake kernel\n"
    )
    (pkg / "boot").mkdir()
    _bzimage(pkg / "boot" / f"vmlinuz-{version}", version)
    (pkg / "boot" / f"config-{version}").write_text("CONFIG_RD_ZSTD=y\n")
    (pkg / "lib" / "modules" / version / "kernel").mkdir(parents=True)
    cache = tmp_path / "cache"
    (cache / "debs").mkdir(parents=True)
    deb = cache / "debs" / f"linux-image-{version}_1_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(pkg), str(deb)], check=True,
                   capture_output=True, timeout=60)
    kern = kernel.debian_kernel(cache, f"linux-image-{version}")
    assert kern.version == version and kern.vmlinuz.is_file()
    assert (kern.modules_dir / "modules.dep").is_file()
    kernel.check_rd_zstd(kern)
    deb.unlink()  # a second call must not need the .deb (nor the network)
    assert kernel.debian_kernel(cache, f"linux-image-{version}") == kern
    assert cached_kernel(cache) == kern  # the tests' helper finds what the builder left
