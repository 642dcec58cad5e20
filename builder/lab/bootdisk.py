"""A master disk that boots: the smallest installed system a deploy test can watch come up.

An MBR disk with syslinux's MBR code and one active ext4 partition holding Debian's kernel,
a tiny initramfs and extlinux (its boot sector and ldlinux.sys installed on the mounted
partition, as an installer does), beside /etc/hostname and /etc/os-release, so herdcast's
personalisation finds it as a Linux root. The initramfs is busybox and the modules that
reach a virtio disk's ext4 (virtio_pci, virtio_blk, ext4 and what they need); its /init
prints TINY_MARKER and the device it found, then the /etc/hostname of that disk's root,
then powers the machine off. A node whose console shows those lines booted the system it
received from its own disk: nothing on the TFTP root carries this kernel line or initramfs.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path

from builder import cpio, modules
from builder.kernel import Kernel

MiB = 1 << 20
SECTOR = 512
MBR_CODE = Path("/usr/lib/EXTLINUX/mbr.bin")  # syslinux-common: boots the active partition
BUSYBOX = Path("/bin/busybox")  # busybox-static
TINY_MARKER = "herdcast-tiny: booted from its own disk"
HOSTNAME_LINE = "herdcast-tiny: hostname"
#: The drivers that reach a virtio disk's ext4 (their dependencies come with them; ext4
#: asks the crypto API for crc32c, which no modules.dep line names).
TINY_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4")

INIT = f"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /mnt /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {' '.join(TINY_MODULES)}; do modprobe $m; done
# the root is the partition holding /etc/hostname; the disk shows up once its driver binds
i=0
while [ $i -lt 100 ]; do
    for dev in /dev/vd?1 /dev/sd?1 /dev/nvme?n1p1; do
        [ -b $dev ] || continue
        if mount -o ro -t ext4 $dev /mnt 2>/dev/null; then
            if [ -f /mnt/etc/hostname ]; then
                echo "{TINY_MARKER} ($dev, $(uname -r))"
                echo "{HOSTNAME_LINE} $(cat /mnt/etc/hostname)"
                umount /mnt
                poweroff -f
            fi
            umount /mnt
        fi
    done
    i=$((i + 1))
    sleep 0.2
done
echo "herdcast-tiny: no root with /etc/hostname found"
poweroff -f
"""

EXTLINUX_CONF = """SERIAL 0 115200
DEFAULT tiny
PROMPT 0
TIMEOUT 1
LABEL tiny
  KERNEL /boot/vmlinuz
  INITRD /boot/initrd.img
  APPEND console=ttyS0,115200 loglevel=4 panic=-1
"""


def _sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120,
                          check=True).stdout


def tiny_initramfs(kernel: Kernel) -> bytes:
    """busybox, TINY_MODULES with their dependencies (plain .ko, indexed by depmod) and
    /init, as one gzip-compressed newc archive (~1 MB)."""
    index = modules.ModuleIndex.load(kernel.modules_dir)
    chosen = index.closure(p for word in TINY_MODULES for p in index.resolve(word))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dest = root / "lib" / "modules" / kernel.version
        for rel in chosen:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(kernel.modules_dir / rel, dest / rel)
        _sh("depmod", "-b", str(root), kernel.version)
        (root / "bin").mkdir()
        shutil.copyfile(BUSYBOX, root / "bin" / "busybox")
        (root / "bin" / "busybox").chmod(0o755)
        (root / "bin" / "sh").symlink_to("busybox")
        (root / "init").write_text(INIT)
        (root / "init").chmod(0o755)
        entries = cpio.entries_from_tree(root) + [cpio.chardev("dev/console", 5, 1)]
        raw = io.BytesIO()
        cpio.write_archive(entries, raw)
    return subprocess.run(["gzip", "-9n"], input=raw.getvalue(), capture_output=True,
                          timeout=120, check=True).stdout


def make_boot_disk(path: Path, kernel: Kernel, size_mib: int = 32,
                   hostname: str = "master") -> None:
    """The master disk (see the module docstring): `size_mib` MiB, partition 1 (ext4,
    active) from 1 MiB to the end."""
    from builder.lab.fsdisk import attached, mounted

    initrd = tiny_initramfs(kernel)
    sectors = size_mib * MiB // SECTOR
    with open(path, "wb") as f:
        f.truncate(size_mib * MiB)
        f.write(_mbr(MBR_CODE.read_bytes()[:440], 2048, sectors - 2048))
    with attached(path) as dev:
        part = f"{dev}p1"
        _sh("mkfs.ext4", "-q", "-F", "-L", "tinyroot", part)
        with mounted(part, "ext4") as root:
            for d in ("boot/extlinux", "etc", "usr/lib"):
                (root / d).mkdir(parents=True)
            shutil.copyfile(kernel.vmlinuz, root / "boot" / "vmlinuz")
            (root / "boot" / "initrd.img").write_bytes(initrd)
            (root / "boot" / "extlinux" / "extlinux.conf").write_text(EXTLINUX_CONF)
            (root / "etc" / "hostname").write_text(f"{hostname}\n")
            (root / "usr/lib/os-release").write_text(
                'PRETTY_NAME="herdcast tiny system"\nID=herdcast-tiny\nVERSION_ID="1"\n')
            (root / "etc" / "os-release").symlink_to("../usr/lib/os-release")
            (root / "etc" / "hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t"
                                                f"{hostname}\n")
            _sh("extlinux", "--install", str(root / "boot" / "extlinux"))


def _mbr(code: bytes, first: int, count: int) -> bytes:
    """The MBR: syslinux's boot code, one active Linux partition."""
    from agent.image.partitions import Mbr

    empty = {"status": 0, "chs_first": bytes(3), "type": 0, "chs_last": bytes(3),
             "lba_first": 0, "sectors": 0}
    entry = dict(empty, status=0x80, type=0x83, lba_first=first, sectors=count)
    return Mbr.build({"bootstrap": code.ljust(446, b"\0"),
                      "partitions": [entry, empty, empty, empty], "signature": None})
