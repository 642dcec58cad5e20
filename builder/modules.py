"""Which kernel modules go into the initrd: a generic driver set, closed over dependencies.

One initrd should boot most machines, so the default set is every Ethernet driver plus the
common disk controllers. Dependencies come from the full tree's modules.dep (hard) and
modules.softdep (e.g. r8169 needs the `realtek` PHY driver, which nothing links against);
depmod then regenerates modules.dep/modules.alias for the subset we copy, so modprobe by
modalias inside the initrd sees only what is there.

Modules go in xz-compressed (`.ko.xz`): the kernel unpacks the whole initramfs into tmpfs at
every boot, and the plain .ko files were 46 of its 76 MB; kmod (+XZ) decompresses in user
space the few a node loads. xz rather than zstd: 1.1 MB less to send over TFTP per node
(9.7 MB against 10.8 MB for the generic set) for ~50 ms more decompression on the host per
boot. The compressed files are cached by content, so only a new kernel pays the ~30 s.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import hashlib
import lzma
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import BuildError

#: The generic driver set: every wired NIC and every local-disk controller the kernel has.
#: A word with a slash is a tree under kernel/; otherwise a module.
GENERIC: tuple[str, ...] = (
    # Ethernet: PCI and SoC NICs, USB adapters (r8152, ax88179_178a, cdc_ether ...), the PHY
    # drivers they load by modalias, and the virtual NICs of KVM, VMware, Hyper-V and Xen
    "drivers/net/ethernet", "drivers/net/usb", "drivers/net/phy", "virtio_net", "virtio_pci",
    "drivers/net/vmxnet3", "drivers/net/hyperv", "xen-netfront",
    # SATA/PATA (ahci and every libata driver), every SCSI/SAS/RAID HBA (see HARDWARE_ONLY),
    # LSI Fusion (mptspi, mptsas), NVMe (also behind Intel VMD), Micron PCIe SSDs, the
    # virtual disks of KVM, Hyper-V (hv_storvsc, in drivers/scsi) and Xen
    "drivers/ata", "drivers/scsi", "mptspi", "mptsas", "nvme", "vmd", "mtip32xx",
    "virtio_blk", "virtio_scsi", "xen-blkfront", "sd_mod",
    # SD/eMMC
    "drivers/mmc/host", "mmc_block",
    # USB sticks and disks, with the host controllers that reach them
    "usb_storage", "uas", "xhci_pci", "ehci_pci", "ohci_pci", "uhci_hcd",
)
#: What the node itself needs whatever --modules says: a clone is personalised through a
#: loop device over its root partition, mounted with the kernel's ext4, xfs or btrfs
#: (agent.personalize). Their checksums need crc32c: crc32c-intel on CPUs with SSE4.2, else
#: the generic one (the soft dependency's alias names only one of them).
ALWAYS: tuple[str, ...] = ("loop", "ext4", "xfs", "btrfs", "crc32c_generic", "crc32c-intel")
#: Trees whose modules count only when they drive a device (a pci/usb/vmbus/xen/... alias):
#: drivers/scsi also holds tape, changer and CD drivers, scsi_debug and software initiators.
HARDWARE_ONLY: tuple[str, ...] = ("drivers/scsi",)
DEVICE_BUSES = ("pci", "usb", "vmbus", "xen", "virtio", "pcmcia", "mdio", "acpi", "of",
                "platform")
#: Left out of the trees above. Cellular modems are wireless. SAN HBAs (Fibre Channel,
#: FCoE, iSCSI offload) reach LUNs on a storage network, not a node's own disks, and cost
#: 2 MiB of the 24 MiB initrd budget (--modules +lpfc adds one back).
LEFT_OUT: frozenset[str] = frozenset({
    "qmi_wwan", "cdc_mbim", "hso", "sierra_net", "kalmia", "lg_vl600", "huawei_cdc_ncm",
    "cdc_phonet", "ipheth",
    "lpfc", "qla2xxx", "bfa", "qla4xxx", "csiostor", "qedf", "qedi", "be2iscsi", "fnic",
    "snic", "bnx2fc", "bnx2i", "cxgb3i", "cxgb4i", "fcoe", "mptfc", "tcm_qla2xxx",
})
_SUFFIX = re.compile(r"\.ko(\.xz|\.zst|\.gz)?$")
#: What install() appends to a plain .ko.
COMPRESSED_SUFFIX = ".xz"
#: xz -9 without BCJ (the x86 filter makes relocatable modules 6% larger) and CRC32, the
#: check the kernel's own module compression uses; the dictionary is sized per file.
XZ_PRESET = 9
#: Cache files unused this long are dropped (a kernel two updates old).
CACHE_DAYS = 30


def module_name(relpath: str) -> str:
    """kernel/drivers/usb/storage/usb-storage.ko -> usb_storage (modprobe's spelling)."""
    return _SUFFIX.sub("", relpath.rsplit("/", 1)[-1]).replace("-", "_")


@dataclass
class ModuleIndex:
    """The full tree's dependency graph, keyed by path relative to lib/modules/VERSION."""

    deps: dict[str, list[str]]
    by_name: dict[str, str]
    soft: dict[str, list[str]]
    aliases: dict[str, str]
    builtin: set[str]
    drives: set[str] = field(default_factory=set)  # modules with a DEVICE_BUSES alias

    @classmethod
    def load(cls, modules_dir: Path) -> ModuleIndex:
        dep_file = modules_dir / "modules.dep"
        if not dep_file.is_file():
            raise BuildError(f"{dep_file} missing: run `depmod -b ROOT VERSION` on the tree")
        deps: dict[str, list[str]] = {}
        for line in dep_file.read_text().splitlines():
            mod, _, rest = line.partition(":")
            if mod:
                deps[mod] = rest.split()
        by_name = {module_name(path): path for path in deps}
        soft: dict[str, list[str]] = {}
        softdep = modules_dir / "modules.softdep"
        if softdep.is_file():
            for line in softdep.read_text().splitlines():
                words = line.split()
                if len(words) > 2 and words[0] == "softdep":
                    soft.setdefault(words[1].replace("-", "_"), []).extend(
                        w for w in words[2:] if not w.endswith(":")
                    )
        aliases: dict[str, str] = {}
        drives: set[str] = set()
        alias_file = modules_dir / "modules.alias"
        if alias_file.is_file():
            for line in alias_file.read_text().splitlines():
                words = line.split()
                if len(words) != 3 or words[0] != "alias":
                    continue
                if words[1].partition(":")[0] in DEVICE_BUSES:
                    drives.add(words[2].replace("-", "_"))
                if not set("*?[") & set(words[1]):
                    aliases.setdefault(words[1], words[2].replace("-", "_"))
        builtin_file = modules_dir / "modules.builtin"
        builtin = {module_name(p) for p in builtin_file.read_text().split()} \
            if builtin_file.is_file() else set()
        return cls(deps, by_name, soft, aliases, builtin, drives)

    def resolve(self, word: str) -> list[str]:
        """The module paths a --modules word names; [] for a built-in module."""
        word = word.strip().strip("/")
        if "/" in word:
            prefix = word if word.startswith("kernel/") else f"kernel/{word}"
            found = [p for p in self.deps if p.startswith(prefix + "/")
                     and module_name(p) not in LEFT_OUT]
            if prefix.removeprefix("kernel/") in HARDWARE_ONLY:
                found = [p for p in found if module_name(p) in self.drives]
        else:
            name = word.replace("-", "_")
            if name in self.builtin:
                return []
            name = self.aliases.get(word, name)
            found = [self.by_name[name]] if name in self.by_name else []
        if not found:
            raise BuildError(
                f"--modules: no module or kernel/ tree named {word!r} in this kernel"
            )
        return found

    def closure(self, roots: Iterable[str]) -> list[str]:
        """`roots` plus everything they need, hard and soft dependencies, sorted."""
        todo = list(roots)
        seen: set[str] = set()
        while todo:
            path = todo.pop()
            if path in seen:
                continue
            seen.add(path)
            todo.extend(self.deps.get(path, []))
            for soft in self.soft.get(module_name(path), []):
                target = self.aliases.get(soft, soft.replace("-", "_"))
                if target in self.by_name:
                    todo.append(self.by_name[target])
        return sorted(seen)


def parse_spec(spec: str) -> list[str]:
    """--modules: `+a,+b` adds to GENERIC; `a,b` narrows to just a and b (may mix: `a,+b`)."""
    words = [w.strip() for w in spec.split(",") if w.strip()]
    narrow = [w for w in words if not w.startswith("+")]
    extra = [w[1:] for w in words if w.startswith("+")]
    if any(not w for w in extra):
        raise BuildError("--modules: '+' must be followed by a module name")
    return (narrow or list(GENERIC)) + extra


def select(modules_dir: Path, spec: str = "", always: tuple[str, ...] = ()) -> list[str]:
    """Module paths (relative to modules_dir) the initrd gets for a --modules spec, plus
    `always` (the initrd's ALWAYS) where the kernel has them as modules. A GENERIC word
    this kernel lacks is skipped (vmd is x86's only); any other unknown word fails."""
    index = ModuleIndex.load(modules_dir)
    roots: list[str] = []
    for word in parse_spec(spec):
        try:
            roots += index.resolve(word)
        except BuildError:
            if word not in GENERIC:  # a word of the generic set another architecture
                raise  # lacks (vmd, Intel's NVMe remapping, is x86 only) is not an error
    for word in always:  # built in (or, crc32c-intel, absent) elsewhere: nothing to add
        with contextlib.suppress(BuildError):
            roots += index.resolve(word)
    return index.closure(roots)


@functools.cache
def _liblzma_version() -> str:
    """liblzma's version, part of the cache key: another encoder may give other bytes, and a
    cached build must equal a build from scratch."""
    name = ctypes.util.find_library("lzma")
    if name is None:
        return "unknown"
    lib = ctypes.CDLL(name)
    lib.lzma_version_string.restype = ctypes.c_char_p
    return lib.lzma_version_string().decode()


def xz(data: bytes) -> bytes:
    """One module as .ko.xz. The dictionary is the smallest power of two holding the file
    (preset 9's 64 MiB would gain nothing and makes liblzma reserve 64 MiB on the node)."""
    dict_size = min(64 << 20, max(4096, 1 << (len(data) - 1).bit_length()))
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, filters=[
        {"id": lzma.FILTER_LZMA2, "preset": XZ_PRESET, "dict_size": dict_size}])


def compress_cached(data: bytes, cache: Path | None) -> bytes:
    """xz(data), memoised in `cache` by the content's hash (the generic set takes ~30 s of
    CPU; a rebuild for an agent edit must not pay it again)."""
    if cache is None:
        return xz(data)
    key = f"{hashlib.sha256(data).hexdigest()}-xz{XZ_PRESET}-{_liblzma_version()}.xz"
    path = cache / key
    if path.is_file():
        os.utime(path)  # recently used: kept by prune_cache
        return path.read_bytes()
    blob = xz(data)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f"{key}.tmp{os.getpid()}.{id(data)}"
    tmp.write_bytes(blob)
    os.replace(tmp, path)
    return blob


def prune_cache(cache: Path, days: float = CACHE_DAYS) -> None:
    """Drop compressed modules no build used for `days` (another kernel's)."""
    if cache.is_dir():
        limit = time.time() - days * 86400
        for path in cache.glob("*.xz"):
            if path.stat().st_mtime < limit:
                path.unlink(missing_ok=True)


def installed_name(rel: str) -> str:
    """Where a module of the source tree lands in the initrd: plain .ko gets .xz, a module
    the tree already ships compressed (.ko.zst, .ko.xz) keeps its name and bytes."""
    return rel + COMPRESSED_SUFFIX if rel.endswith(".ko") else rel


def _copy_module(src: Path, target: Path, cache: Path | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if src.name.endswith(".ko"):
        target.write_bytes(compress_cached(src.read_bytes(), cache))
    else:
        shutil.copyfile(src, target)


def install(modules_dir: Path, version: str, chosen: list[str], root: Path,
            cache: Path | None = None) -> Path:
    """Copy `chosen` (xz-compressed, see installed_name) into root/lib/modules/VERSION and
    regenerate its indexes with depmod, which reads compressed modules and lists them by
    their .ko.xz names in modules.dep. Two threads (lzma releases the GIL; the build
    machine has two cores); each file's bytes do not depend on the order."""
    dest = root / "lib" / "modules" / version
    dest.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        for done in [pool.submit(_copy_module, modules_dir / rel, dest / installed_name(rel),
                                 cache) for rel in chosen]:
            done.result()
    # modules.order keeps the .ko names: depmod matches them with the suffix stripped
    wanted = {_SUFFIX.sub(".ko", rel) for rel in chosen}
    order = modules_dir / "modules.order"
    if order.is_file():
        kept = [line for line in order.read_text().splitlines()
                if _SUFFIX.sub(".ko", line) in wanted]
        (dest / "modules.order").write_text("".join(f"{line}\n" for line in kept))
    for name in ("modules.builtin", "modules.builtin.modinfo"):
        if (modules_dir / name).is_file():
            shutil.copyfile(modules_dir / name, dest / name)
    proc = subprocess.run(["depmod", "-b", str(root), version], capture_output=True, text=True,
                          timeout=300)
    if proc.returncode:
        raise BuildError(f"depmod -b {root} {version}: {proc.stderr.strip()}")
    return dest
