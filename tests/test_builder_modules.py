"""Module selection: dependency closure (hard and soft), --modules, depmod on the subset."""

from __future__ import annotations

import contextlib
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import cached_kernel

from builder import kernel, modules
from builder.errors import BuildError

VERSION = "6.1.0-99-test"
DEP = """\
kernel/drivers/net/ethernet/intel/e1000/e1000.ko:
kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko: kernel/drivers/ptp/ptp.ko \
kernel/drivers/pps/pps_core.ko
kernel/drivers/ptp/ptp.ko: kernel/drivers/pps/pps_core.ko
kernel/drivers/pps/pps_core.ko:
kernel/drivers/net/ethernet/realtek/r8169.ko: kernel/drivers/net/phy/libphy.ko
kernel/drivers/net/phy/libphy.ko:
kernel/drivers/net/phy/realtek.ko: kernel/drivers/net/phy/libphy.ko
kernel/drivers/net/wireless/foo/wifi.ko:
kernel/drivers/ata/libata.ko: kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko \
kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/ata/libahci.ko: kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/scsi/scsi_mod.ko:
kernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/scsi/scsi_mod.ko
kernel/crypto/crc32c_generic.ko:
"""


@pytest.fixture()
def fake_tree(tmp_path) -> Path:
    """A modules tree with only the index files (the .ko files are empty)."""
    mdir = tmp_path / "lib" / "modules" / VERSION
    mdir.mkdir(parents=True)
    (mdir / "modules.dep").write_text(DEP)
    (mdir / "modules.softdep").write_text(
        "# Soft dependencies\nsoftdep r8169 pre: realtek\nsoftdep libcrc32c pre: crc32c\n"
    )
    (mdir / "modules.alias").write_text(
        "alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\nalias crc32c crc32c_generic\n"
    )
    (mdir / "modules.builtin").write_text("kernel/drivers/nvme/host/nvme.ko\n")
    for line in DEP.splitlines():
        ko = mdir / line.split(":")[0]
        ko.parent.mkdir(parents=True, exist_ok=True)
        ko.write_bytes(b"")
    return mdir


def _names(paths: list[str]) -> set[str]:
    return {modules.module_name(p) for p in paths}


def test_module_names_use_underscores_and_drop_the_suffix():
    assert modules.module_name("kernel/drivers/usb/storage/usb-storage.ko") == "usb_storage"
    assert modules.module_name("kernel/a/b/e1000e.ko.xz") == "e1000e"


def test_a_module_brings_its_dependencies(fake_tree):
    assert _names(modules.select(fake_tree, "e1000e")) == {"e1000e", "ptp", "pps_core"}


def test_soft_dependencies_are_followed(fake_tree):
    # r8169 needs the realtek PHY driver, which only its softdep names
    assert _names(modules.select(fake_tree, "r8169")) == {"r8169", "libphy", "realtek"}


def test_a_tree_selects_every_module_under_it(fake_tree):
    chosen = _names(modules.select(fake_tree, "drivers/ata"))
    assert chosen == {"ahci", "libahci", "libata", "scsi_mod"}


def test_plus_adds_to_a_narrow_list_and_dashes_match_underscores(fake_tree):
    chosen = _names(modules.select(fake_tree, "e1000,+usb_storage,sd-mod"))
    assert chosen == {"e1000", "usb_storage", "sd_mod", "scsi_mod"}


def test_builtin_modules_are_satisfied_without_a_file(fake_tree):
    assert modules.select(fake_tree, "nvme") == []


def test_plus_alone_keeps_the_generic_set():
    assert modules.parse_spec("+foo") == [*modules.GENERIC, "foo"]
    assert modules.parse_spec("") == list(modules.GENERIC)
    assert modules.parse_spec("a, b") == ["a", "b"]


@pytest.mark.parametrize("spec", ["nosuchmod", "drivers/nosuchdir", "e1000,+"])
def test_unknown_names_are_refused(fake_tree, spec):
    with pytest.raises(BuildError, match="--modules"):
        modules.select(fake_tree, spec)


def test_a_tree_without_modules_dep_is_refused(tmp_path):
    with pytest.raises(BuildError, match="modules.dep"):
        modules.select(tmp_path, "e1000")


def _real_kernel() -> kernel.Kernel | None:
    return cached_kernel()


@pytest.mark.skipif(_real_kernel() is None, reason="Debian kernel not in the cache yet "
                    "(python -m builder initrd downloads it)")
def test_generic_set_on_the_real_kernel_has_the_drivers_a_fleet_needs():
    kern = _real_kernel()
    chosen = _names(modules.select(kern.modules_dir))
    for name in ("e1000", "e1000e", "igb", "r8169", "realtek", "tg3", "virtio_net",
                 "virtio_pci", "ahci", "ata_piix", "nvme", "nvme_core", "virtio_blk",
                 "virtio_scsi", "sd_mod", "scsi_mod", "mpt3sas", "megaraid_sas", "hpsa",
                 "smartpqi", "sdhci_pci", "mmc_block", "usb_storage", "xhci_pci"):
        assert name in chosen, name
    assert not any(n.startswith("iwl") for n in chosen)  # wireless stays out


@pytest.mark.skipif(_real_kernel() is None, reason="Debian kernel not in the cache yet")
@pytest.mark.skipif(shutil.which("depmod") is None, reason="kmod's depmod not installed")
def test_install_copies_the_subset_and_depmod_indexes_only_it(tmp_path):
    kern = _real_kernel()
    chosen = modules.select(kern.modules_dir, "igb")
    assert _names(chosen) == {"igb", "dca", "i2c_algo_bit"}
    dest = modules.install(kern.modules_dir, kern.version, chosen, tmp_path / "root")
    for rel in chosen:
        assert not (dest / rel).exists()  # only the compressed module is shipped
        packed = (dest / f"{rel}.xz").read_bytes()
        assert lzma.decompress(packed) == (kern.modules_dir / rel).read_bytes()
        assert len(packed) < (kern.modules_dir / rel).stat().st_size / 2
    dep = (dest / "modules.dep").read_text()
    igb = next(line for line in dep.splitlines() if "/igb.ko.xz:" in line)
    assert sorted(igb.split(":")[1].split()) == [
        "kernel/drivers/dca/dca.ko.xz", "kernel/drivers/i2c/algos/i2c-algo-bit.ko.xz"]
    assert len(dep.splitlines()) == 3
    # depmod read the compressed files: the aliases below come from inside them
    aliases = (dest / "modules.alias").read_text()
    assert "pci:v00008086d000010C9" in aliases  # an igb (82576) PCI id
    assert " e1000 " not in aliases.replace("\n", " ")
    assert (dest / "modules.dep.bin").is_file() and (dest / "modules.builtin.bin").is_file()


def test_firmware_already_compressed_on_the_host_is_copied_as_is(tmp_path):
    from builder import firmware

    mdir = tmp_path / "mods"
    (mdir / "kernel").mkdir(parents=True)
    (mdir / "kernel" / "nic.ko").write_bytes(
        b"\x7fELF...\0license=GPL\0firmware=vendor/nic-a.bin\0firmware=nic-b.bin\0author=x\0"
    )
    fw = tmp_path / "firmware"
    (fw / "vendor").mkdir(parents=True)
    (fw / "vendor" / "nic-a.bin.zst").write_bytes(b"blob")
    root = tmp_path / "root"
    report = firmware.install(mdir, ["kernel/nic.ko"], str(fw), root, tmp_path / "cache")
    assert (report.carried, report.wanted) == (1, 2)
    assert (root / "lib/firmware/vendor/nic-a.bin.zst").read_bytes() == b"blob"
    report = firmware.install(mdir, ["kernel/nic.ko"], str(tmp_path), tmp_path / "r2",
                              tmp_path / "cache")
    assert report.carried == 0 and not (tmp_path / "r2").exists()


def test_compressed_modules_are_cached_by_content_and_identical_either_way(tmp_path):
    data = b"\x7fELF module" + bytes(range(256)) * 64
    cache = tmp_path / "cache"
    fresh = modules.compress_cached(data, None)
    stored = modules.compress_cached(data, cache)
    assert fresh == stored == modules.compress_cached(data, cache)
    assert lzma.decompress(fresh) == data
    assert len(list(cache.glob("*.xz"))) == 1
    # a different module gets its own entry, not the first one's bytes
    other = modules.compress_cached(data + b"!", cache)
    assert lzma.decompress(other) == data + b"!"
    assert len(list(cache.glob("*.xz"))) == 2


def test_a_cached_module_is_read_from_the_cache(tmp_path):
    data = b"\x7fELF module" * 100
    cache = tmp_path / "cache"
    modules.compress_cached(data, cache)
    (entry,) = cache.glob("*.xz")
    marker = modules.xz(b"planted")
    entry.write_bytes(marker)
    assert modules.compress_cached(data, cache) == marker


def test_prune_drops_only_entries_unused_for_a_month(tmp_path):
    import os
    import time

    cache = tmp_path / "cache"
    modules.compress_cached(b"old", cache)
    (old,) = cache.glob("*.xz")
    modules.compress_cached(b"new", cache)
    (new,) = set(cache.glob("*.xz")) - {old}
    stale = time.time() - (modules.CACHE_DAYS + 1) * 86400
    os.utime(old, (stale, stale))
    modules.prune_cache(cache)
    assert not old.exists() and new.exists()


def test_the_xz_dictionary_fits_the_module_not_preset_9s_64_mib(tmp_path):
    """liblzma on the node reserves the header's dictionary size for every module; the
    check is CRC32 (what the kernel's own module compression writes)."""
    if shutil.which("xz") is None:
        pytest.skip("xz not installed")
    packed = tmp_path / "m.ko.xz"
    packed.write_bytes(modules.xz(b"a" * 300_000))
    listing = subprocess.run(["xz", "--robot", "--list", "-vv", str(packed)],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    block = next(line.split("\t") for line in listing.splitlines() if line.startswith("block"))
    assert block[-1] == "--lzma2=dict=512KiB"
    assert "CRC32" in block


def test_install_names_plain_modules_xz_and_keeps_precompressed_ones(fake_tree, tmp_path):
    (fake_tree / "kernel/drivers/ata/ahci.ko").write_bytes(b"plain module")
    zst = "kernel/extra/vendor.ko.zst"
    (fake_tree / zst).parent.mkdir(parents=True)
    (fake_tree / zst).write_bytes(b"already compressed")
    (fake_tree / "modules.order").write_text(
        "kernel/drivers/ata/ahci.ko\nkernel/extra/vendor.ko\nkernel/crypto/crc32c_generic.ko\n")
    assert modules.installed_name("kernel/a.ko") == "kernel/a.ko.xz"
    assert modules.installed_name(zst) == zst
    root = tmp_path / "root"
    with contextlib.suppress(BuildError):  # depmod may refuse the fake (non-ELF) modules
        modules.install(fake_tree, VERSION, ["kernel/drivers/ata/ahci.ko", zst], root)
    dest = root / "lib" / "modules" / VERSION
    assert lzma.decompress((dest / "kernel/drivers/ata/ahci.ko.xz").read_bytes()) \
        == b"plain module"
    assert (dest / zst).read_bytes() == b"already compressed"
    # modules.order keeps .ko names (depmod strips the suffix to match them)
    assert (dest / "modules.order").read_text() == \
        "kernel/drivers/ata/ahci.ko\nkernel/extra/vendor.ko\n"


def test_what_the_node_always_needs_comes_whatever_modules_says(fake_tree):
    """modules.ALWAYS (loop, the root filesystems, crc32c: a clone is personalised with
    them) is added to a narrow --modules list; a name the kernel lacks is skipped."""
    chosen = _names(modules.select(fake_tree, "e1000", modules.ALWAYS))
    assert chosen == {"e1000", "crc32c_generic"}  # the fake kernel has no loop or ext4
    assert {"loop", "ext4", "xfs", "btrfs", "crc32c_generic"} <= set(modules.ALWAYS)
