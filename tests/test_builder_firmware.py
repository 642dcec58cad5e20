"""Firmware in the initrd: the files the chosen modules name, from Debian's packages by
default (or the host's /lib/firmware, a directory, none), xz-compressed as the kernel's
loader takes them, and a build line that says what is carried and why the rest is not."""

from __future__ import annotations

import lzma
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cached_kernel
from test_boot import tftpboot  # noqa: F401  (module fixture: build/tftpboot, or skip)

from builder import cpio, firmware, initrd, kernel, modules
from builder.config import BuildConfig, default_cache
from builder.errors import BuildError

ROOT = Path(__file__).resolve().parent.parent
XZ_CONFIG = "CONFIG_FW_LOADER_COMPRESS=y\nCONFIG_FW_LOADER_COMPRESS_XZ=y\n"


def _modules(tmp_path: Path) -> tuple[Path, list[str]]:
    mdir = tmp_path / "mods"
    (mdir / "kernel").mkdir(parents=True)
    (mdir / "kernel" / "nic.ko").write_bytes(
        b"\x7fELF...\0license=GPL\0firmware=vendor/nic-a.bin\0firmware=nic-b.bin\0author=x\0")
    (mdir / "kernel" / "plain.ko").write_bytes(b"\x7fELF\0license=GPL\0")
    return mdir, ["kernel/nic.ko", "kernel/plain.ko"]


def test_a_directory_source_gives_the_named_files_compressed_as_the_kernel_takes_them(tmp_path):
    mdir, chosen = _modules(tmp_path)
    assert firmware.wanted(mdir / "kernel" / "nic.ko") == ["nic-b.bin", "vendor/nic-a.bin"]
    fw = tmp_path / "firmware"
    (fw / "vendor").mkdir(parents=True)
    (fw / "vendor" / "nic-a.bin").write_bytes(b"blob" * 100)
    (fw / "unrelated.bin").write_bytes(b"x")
    config = tmp_path / "config"
    config.write_text(XZ_CONFIG)
    root = tmp_path / "root"
    report = firmware.install(mdir, chosen, str(fw), root, tmp_path / "cache", config)
    assert (report.carried, report.wanted) == (1, 2)
    assert report.missing == {"nic-b.bin": f"not in {fw}"}
    shipped = root / "lib/firmware/vendor/nic-a.bin.xz"
    # CRC32: the kernel's xz decoder checks no other
    assert lzma.decompress(shipped.read_bytes()) == b"blob" * 100
    assert shipped.read_bytes()[7] == lzma.CHECK_CRC32
    assert not (root / "lib/firmware/unrelated.bin").exists()
    assert report.missing_lines() == [f"firmware missing (not in {fw}): nic-b.bin"]
    firmware.install(mdir, chosen, str(fw), tmp_path / "r2", tmp_path / "cache", None)
    assert (tmp_path / "r2/lib/firmware/vendor/nic-a.bin").read_bytes() == b"blob" * 100


def test_one_firmware_under_two_names_is_shipped_once(tmp_path):
    mdir, chosen = _modules(tmp_path)
    fw = tmp_path / "firmware"
    (fw / "vendor").mkdir(parents=True)
    (fw / "vendor" / "nic-a.bin").write_bytes(b"same" * 50)
    (fw / "nic-b.bin").write_bytes(b"same" * 50)
    config = tmp_path / "config"
    config.write_text(XZ_CONFIG)
    root = tmp_path / "root"
    report = firmware.install(mdir, chosen, str(fw), root, tmp_path / "cache", config)
    assert report.carried == 2 and not report.missing
    link = root / "lib/firmware/vendor/nic-a.bin.xz"
    assert link.is_symlink() and lzma.decompress(link.read_bytes()) == b"same" * 50
    assert not (root / "lib/firmware/nic-b.bin.xz").is_symlink()


def test_firmware_none_carries_nothing_and_says_so(tmp_path):
    mdir, chosen = _modules(tmp_path)
    report = firmware.install(mdir, chosen, "none", tmp_path / "root", tmp_path / "c")
    assert (report.carried, report.wanted) == (0, 2)
    assert not (tmp_path / "root").exists()
    assert report.summary() == "firmware 0 of 2 files (none)"


def test_a_bad_firmware_source_is_one_line_before_any_work(tmp_path):
    with pytest.raises(BuildError, match="--firmware /nonexistent: not a directory"):
        BuildConfig(out=Path("x"), work=Path("w"), firmware="/nonexistent")
    assert BuildConfig(out=Path("x"), work=Path("w")).firmware == "debian"
    proc = subprocess.run([sys.executable, "-m", "builder", "initrd", "--firmware", "nope",
                           "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--firmware nope" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "w").exists()


def test_debians_reason_for_leaving_a_file_out_is_read_from_its_copyright_file():
    from builder.firmware_debian import excluded

    text = ("Format: x\nFiles-Excluded:\n# Undistributable because:\n"
            "# - licence is unknown\n acenic/tg?.bin\n sun/cassini.bin\n"
            "# No Debian release references this version\n bnx2x/bnx2x-e*-7.13.11.0.fw\n"
            "Comment: done\n bogus\n")
    assert excluded(text) == [
        ("acenic/tg?.bin", "licence is unknown"), ("sun/cassini.bin", "licence is unknown"),
        ("bnx2x/bnx2x-e*-7.13.11.0.fw", "No Debian release references this version")]


def _debian_kernel() -> kernel.Kernel:
    kern = cached_kernel()
    if kern is None:
        pytest.skip("Debian's kernel is not in the cache (make initrd)")
    return kern


def test_debian_12_kernels_take_xz_firmware():
    assert firmware.kernel_suffix(_debian_kernel().config) == ".xz"


# ----------------------------------------------------------------------------- the real build


@pytest.fixture(scope="module")
def unpacked(tftpboot, tmp_path_factory) -> Path:  # noqa: F811
    """The built initrd, unpacked into a directory (modinfo reads the modules there)."""
    dest = tmp_path_factory.mktemp("initrd")
    raw = initrd.unpack((tftpboot / "initrd.img").read_bytes())
    for hdr, name, data in cpio.read_archive(raw):
        path = dest / name
        mode = hdr["mode"] & 0o170000
        if mode == 0o040000:
            path.mkdir(parents=True, exist_ok=True)
        elif mode == 0o120000:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.symlink_to(data.decode())
        elif mode == 0o100000:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return dest


def _loadable(root: Path, name: str) -> Path | None:
    """Where the kernel's loader finds `name` in the initrd: /lib/firmware/NAME, or the
    compressed NAME.xz (the loader's second try)."""
    for suffix in ("", ".xz"):
        path = root / "usr/lib/firmware" / f"{name}{suffix}"
        if path.is_file():
            return path
    return None


@pytest.mark.slow
@pytest.mark.parametrize("module, some", [("bnx2", "bnx2/bnx2-mips-09-6.2.1b.fw"),
                                          ("r8169", "rtl_nic/rtl8168g-2.fw"),
                                          ("tg3", "tigon/tg3_tso5.bin")])
def test_a_module_that_needs_firmware_finds_it_in_the_initrd(unpacked, module, some):
    ko = next(unpacked.glob(f"usr/lib/modules/*/kernel/**/{module}.ko.xz"))
    names = subprocess.run(["modinfo", "-F", "firmware", str(ko)], capture_output=True,
                           text=True, timeout=30, check=True).stdout.split()
    assert some in names
    for name in names:
        path = _loadable(unpacked, name)
        assert path is not None, f"{module} asks for {name}: not in the initrd"
        data = lzma.decompress(path.read_bytes()) if path.suffix == ".xz" else path.read_bytes()
        debian = [p.read_bytes() for p in (default_cache() / "firmware").glob(
            f"*/firmware-*/lib/firmware/{name}")]
        assert data in debian, f"{name}: not the bytes of Debian's package"
    ice = _loadable(unpacked, "intel/ice/ddp/ice.pkg")  # Intel E810: its DDP package
    assert ice is not None and ice.name == "ice.pkg.xz"


@pytest.mark.slow
def test_the_default_build_carries_nine_tenths_of_the_wanted_firmware(unpacked):
    kern = _debian_kernel()
    names = firmware.wanted_names(kern.modules_dir, modules.select(kern.modules_dir))
    assert len(names) > 100
    carried = [n for n in names if _loadable(unpacked, n)]
    assert len(carried) >= 0.9 * len(names), sorted(set(names) - set(carried))
    shipped = [p for p in (unpacked / "usr/lib/firmware").rglob("*") if p.is_file()]
    assert len(shipped) == len(carried)  # only the files the modules ask for
