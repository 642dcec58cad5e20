"""The partition table of a disk: MBR and GPT, declared once with construct.

A used-block map needs only where each partition starts and ends; the regions outside
partitions (boot code, the GPT headers and entries at both ends, gaps where a boot loader may
hide its core) are always sent whole. Anything this module cannot read with confidence (a
bad GPT checksum, an extended partition's chain) is reported as one opaque region, which the
caller sends whole: a map may send too much, never too little.
"""

from __future__ import annotations

import binascii
import os
import uuid
from dataclasses import dataclass

from construct import Array, Bytes, Const, Int8ul, Int32ul, Int64ul, Struct

from agent.image.extents import Extent

MbrEntry = Struct(
    "status" / Int8ul,  # 0x80 = bootable
    "chs_first" / Bytes(3),
    "type" / Int8ul,  # 0x83 Linux, 0x07 NTFS/exFAT, 0x0c FAT32, 0xee GPT protective, ...
    "chs_last" / Bytes(3),
    "lba_first" / Int32ul,
    "sectors" / Int32ul,
)

Mbr = Struct(
    "bootstrap" / Bytes(446),
    "partitions" / Array(4, MbrEntry),
    "signature" / Const(b"\x55\xaa"),
)

GptHeader = Struct(
    "signature" / Const(b"EFI PART"),
    "revision" / Int32ul,
    "header_size" / Int32ul,
    "header_crc" / Int32ul,
    "reserved" / Int32ul,
    "current_lba" / Int64ul,
    "backup_lba" / Int64ul,
    "first_usable" / Int64ul,
    "last_usable" / Int64ul,
    "disk_guid" / Bytes(16),
    "entries_lba" / Int64ul,
    "entry_count" / Int32ul,
    "entry_size" / Int32ul,
    "entries_crc" / Int32ul,
)

GptEntry = Struct(
    "type_guid" / Bytes(16),
    "unique_guid" / Bytes(16),
    "first_lba" / Int64ul,
    "last_lba" / Int64ul,  # inclusive
    "attributes" / Int64ul,
    "name" / Bytes(72),  # UTF-16LE
)

# The names partitioning tools show (sgdisk -L, fdisk's l), for the types a fleet has.
GPT_TYPES = {
    "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "EFI System",
    "21686148-6449-6e6f-744e-656564454649": "BIOS boot",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
    "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
    "a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
    "b921b045-1df0-41c3-af44-4c6f280d3fae": "Linux root (ARM64)",
    "933ac7e1-2eb4-4f13-b844-0e14e2aef915": "Linux /home",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
    "ca7d7ccb-63ed-4c53-861c-1742536059cc": "Linux LUKS",
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "Microsoft basic data",
    "e3c9e316-0b5c-4db8-817d-f92df00215ae": "Microsoft reserved",
    "de94bba4-06d1-4d40-a16a-bfd50179d6ac": "Windows recovery",
}
MBR_TYPES = {0x83: "Linux", 0x82: "Linux swap", 0x8E: "Linux LVM", 0xFD: "Linux RAID",
             0x07: "HPFS/NTFS/exFAT", 0x0B: "W95 FAT32", 0x0C: "W95 FAT32 (LBA)",
             0x0E: "W95 FAT16 (LBA)", 0x06: "FAT16", 0xEF: "EFI System", 0x05: "Extended",
             0x0F: "W95 Extended (LBA)", 0x85: "Linux extended", 0xEE: "GPT protective"}
MBR_EXTENDED = (0x05, 0x0F, 0x85)
MBR_PROTECTIVE = 0xEE
MAX_GPT_ENTRIES = 1024  # far above the 128 every tool writes; bounds what a bad header costs


@dataclass(frozen=True)
class Partition:
    """One partition: `number` as Linux names it (sda1 = 1), its byte range, its type."""

    number: int
    extent: Extent
    kind: str  # "mbr:83", "gpt:<type guid>"
    opaque: bool = False  # not to be looked into (an extended partition's chain)

    @property
    def type_name(self) -> str:
        """The type as partitioning tools name it ("Linux filesystem", "EFI System")."""
        return type_name(self.kind)


def type_name(kind: str) -> str:
    """The name of a partition `kind` ("mbr:83", "gpt:<guid>"); the raw kind if unknown."""
    scheme, _, code = kind.partition(":")
    if scheme == "gpt":
        return GPT_TYPES.get(code.lower(), kind)
    if scheme == "mbr":
        try:
            return MBR_TYPES.get(int(code, 16), kind)
        except ValueError:
            return kind
    return kind


class _Disk:
    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset) if offset < self.size else b""


def read_partitions(fd: int, size: int) -> tuple[str, list[Partition]]:
    """("gpt" | "mbr" | "none", partitions) of the disk open on `fd` (`size` bytes)."""
    disk = _Disk(fd, size)
    head = disk.read(0, 512)
    if len(head) < 512 or head[510:512] != b"\x55\xaa":
        return "none", []
    mbr = Mbr.parse(head)
    if any(p.type == MBR_PROTECTIVE for p in mbr.partitions):
        for sector in (512, 4096):
            parts = _gpt(disk, sector)
            if parts is not None:
                return "gpt", parts
        # a protective MBR without a readable GPT: nothing to trust but the whole disk
        return "none", []
    return "mbr", [
        Partition(i + 1, Extent(p.lba_first * 512, p.sectors * 512), f"mbr:{p.type:02x}",
                  opaque=p.type in MBR_EXTENDED)
        for i, p in enumerate(mbr.partitions) if p.type and p.sectors
    ]


def _gpt(disk: _Disk, sector: int) -> list[Partition] | None:
    raw = disk.read(sector, sector)
    if raw[:8] != b"EFI PART":
        return None
    header = GptHeader.parse(raw)
    if not 92 <= header.header_size <= sector:
        return None
    body = bytearray(raw[:header.header_size])
    body[16:20] = bytes(4)
    if binascii.crc32(body) != header.header_crc:
        return None
    if not 128 <= header.entry_size <= 4096 or header.entry_count > MAX_GPT_ENTRIES:
        return None
    table = disk.read(header.entries_lba * sector, header.entry_count * header.entry_size)
    if len(table) < header.entry_count * header.entry_size or \
            binascii.crc32(table) != header.entries_crc:
        return None
    out = []
    for i in range(header.entry_count):
        entry = GptEntry.parse(table[i * header.entry_size:(i + 1) * header.entry_size])
        if entry.type_guid == bytes(16) or entry.last_lba < entry.first_lba:
            continue
        start = entry.first_lba * sector
        length = (entry.last_lba + 1 - entry.first_lba) * sector
        out.append(Partition(i + 1, Extent(start, length),
                             f"gpt:{uuid.UUID(bytes_le=entry.type_guid)}"))
    return out


# ---------------------------------------------------------------------------------------------
# Writing: a GPT fitted to the disk it was written onto


@dataclass
class Gpt:
    """A disk's GPT as read from its primary header: the header fields, the raw entry
    table, and the sector size it was found with (512, or 4096 on 4Kn disks)."""

    sector: int
    header: dict
    table: bytearray

    @property
    def table_sectors(self) -> int:
        return -(-self.header["entry_count"] * self.header["entry_size"] // self.sector)

    def entry(self, index: int) -> dict:
        size = self.header["entry_size"]
        return dict(GptEntry.parse(self.table[index * size:(index + 1) * size]))

    def set_entry(self, index: int, entry: dict) -> None:
        size = self.header["entry_size"]
        raw = GptEntry.build(entry)
        self.table[index * size:index * size + len(raw)] = raw


def read_gpt(fd: int, size: int) -> Gpt | None:
    """The GPT behind a protective MBR on the disk open on `fd`, or None (no GPT, or one
    whose primary header or entries fail their checksums: nothing is rewritten then)."""
    disk = _Disk(fd, size)
    head = disk.read(0, 512)
    if len(head) < 512 or head[510:512] != b"\x55\xaa" or \
            not any(p.type == MBR_PROTECTIVE for p in Mbr.parse(head).partitions):
        return None
    for sector in (512, 4096):
        if _gpt(disk, sector) is None:
            continue
        header = GptHeader.parse(disk.read(sector, sector))
        table = disk.read(header.entries_lba * sector, header.entry_count * header.entry_size)
        fields = {k: v for k, v in header.items() if not k.startswith("_")}
        return Gpt(sector, fields, bytearray(table))
    return None


def _header_bytes(fields: dict, table: bytes, sector: int) -> bytes:
    fields = dict(fields, entries_crc=binascii.crc32(table), header_crc=0)
    raw = bytearray(GptHeader.build(fields))
    raw[16:20] = binascii.crc32(raw).to_bytes(4, "little")
    return bytes(raw) + bytes(sector - len(raw))


def write_gpt(fd: int, size: int, gpt: Gpt) -> None:
    """Write `gpt` (header fields and entries, as changed by the caller) as both copies,
    the backup at the disk's end, and the protective MBR sized to the disk. The last
    usable sector is where the backup entries begin; partitions are the caller's."""
    sector = gpt.sector
    last = size // sector - 1
    backup_entries = last - gpt.table_sectors
    primary = dict(gpt.header, current_lba=1, backup_lba=last,
                   last_usable=backup_entries - 1)
    backup = dict(primary, current_lba=last, backup_lba=1, entries_lba=backup_entries)
    table = bytes(gpt.table)
    _pwrite(fd, backup_entries * sector, table)
    _pwrite(fd, last * sector, _header_bytes(backup, table, sector))
    _pwrite(fd, primary["entries_lba"] * sector, table)
    _pwrite(fd, sector, _header_bytes(primary, table, sector))
    mbr = bytearray(os.pread(fd, 512, 0))
    for i in range(4):
        at = 446 + 16 * i
        entry = MbrEntry.parse(mbr[at:at + 16])
        if entry.type == MBR_PROTECTIVE and entry.lba_first == 1:
            sectors = min(size // 512 - 1, 0xFFFFFFFF)
            mbr[at:at + 16] = MbrEntry.build(dict(entry, chs_last=b"\xff\xff\xff",
                                                  sectors=sectors))
    _pwrite(fd, 0, bytes(mbr))
    gpt.header = primary


def fit_gpt(fd: int) -> str | None:
    """Move a GPT's backup header and entries to the end of the disk open on `fd` and size
    its protective MBR to it, when the disk is larger than the one the image came from
    (the backup is not in the last sector). Returns what it did, or None."""
    size = os.lseek(fd, 0, os.SEEK_END)
    gpt = read_gpt(fd, size)
    if gpt is None:
        return None
    old = gpt.header["backup_lba"]
    last = size // gpt.sector - 1
    if old == last or old > last:  # fitted already; a smaller disk was refused before
        return None
    write_gpt(fd, size, gpt)
    stale = os.pread(fd, 8, old * gpt.sector)
    if stale == b"EFI PART":  # the old backup, now in free space, must not be found
        _pwrite(fd, old * gpt.sector, bytes(gpt.sector))
    return (f"GPT fitted to the disk: backup header moved from sector {old} to {last}, "
            f"last usable sector {gpt.header['last_usable']}")


def _pwrite(fd: int, offset: int, data: bytes) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)
