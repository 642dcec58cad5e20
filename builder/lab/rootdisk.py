"""Master disks holding a Linux root, for the personalisation tests (agent.personalize).

`make_master` lays out a GPT or MBR disk in a sparse file (an ESP-like vfat partition, then
the root filesystem filling the rest), makes the root with the real mkfs and fills it as an
installed system leaves its identity: /etc/os-release (a link into /usr/lib, as Debian
has it), /etc/hostname and the 127.0.1.1 line of /etc/hosts, /etc/machine-id and D-Bus's
copy, SSH host keys made by ssh-keygen, optionally cloud-init's configuration, and some
data. `tree` records every file of a root (type, mode, owner, content digest) so a test
can tell exactly which ones changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import stat
import subprocess
from pathlib import Path

from builder.lab.fsdisk import mounted

MiB = 1 << 20
ROOT_FS = {"ext4": ["mkfs.ext4", "-q", "-F"], "xfs": ["mkfs.xfs", "-q", "-f"],
           "btrfs": ["mkfs.btrfs", "-q", "-f"]}
# mkfs.xfs refuses filesystems under 300 MB unless told it is making one for tests
SMALL_XFS = {"TEST_DIR": "1", "TEST_DEV": "1", "QA_CHECK_FS": "1"}
KEYS = (("ed25519", []), ("ecdsa", ["-b", "384"]), ("rsa", ["-b", "2048"]))
FSCK = {"ext4": ["e2fsck", "-fn"], "xfs": ["xfs_repair", "-n"],
        "btrfs": ["btrfs", "check", "--readonly"]}


def _sh(*argv: str, env: dict | None = None) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True,
                          env={**os.environ, **(env or {})}).stdout


def _mbr(parts: list[tuple[int, int, int]]) -> bytes:
    from agent.image.partitions import Mbr

    empty = {"status": 0, "chs_first": bytes(3), "type": 0, "chs_last": bytes(3),
             "lba_first": 0, "sectors": 0}
    entries = [dict(empty, type=t, lba_first=first, sectors=n) for t, first, n in parts]
    return Mbr.build({"bootstrap": bytes(446), "partitions": entries + [empty] *
                      (4 - len(entries)), "signature": None})


def make_master(path: Path, *, table: str = "gpt", fs: str = "ext4", mib: int = 64,
                root_type: str = "8304", cloud_init: bool = False, seed: int = 3) -> None:
    """A disk of `mib` MiB: partition 1 vfat (8 MiB), partition 2 the root (`fs`) to the
    end. GPT root_type 8304 is sgdisk's "Linux x86-64 root", 8300 a plain Linux partition
    (then only /etc/os-release says it is a root)."""
    with open(path, "wb") as f:
        f.truncate(mib * MiB)
    if table == "gpt":
        _sh("sgdisk", "-n1:0:+8M", "-t1:ef00", "-n2:0:0", f"-t2:{root_type}", str(path))
    else:
        sectors = mib * MiB // 512
        with open(path, "r+b") as f:
            f.write(_mbr([(0x0C, 2048, 8 * 2048), (0x83, 9 * 2048, sectors - 9 * 2048)]))
    with partition(path, 1) as dev:
        _sh("mkfs.vfat", dev)
    with partition(path, 2) as dev:
        _sh(*ROOT_FS[fs], dev, env=SMALL_XFS if fs == "xfs" else None)
        with mounted(dev, fs) as root:
            fill_root(root, random.Random(seed), cloud_init)


@contextlib.contextmanager
def partition(disk: Path, number: int):
    """Partition `number` of `disk` as a loop device over its extent (no partition scan
    to wait for, no nodes to make)."""
    from agent.image.partitions import read_partitions
    from agent.personalize.loop import loop_over

    fd = os.open(disk, os.O_RDONLY)
    try:
        part = next(p for p in read_partitions(fd, os.lseek(fd, 0, os.SEEK_END))[1]
                    if p.number == number)
    finally:
        os.close(fd)
    with loop_over(str(disk), part.extent.offset, part.extent.length) as dev:
        yield dev


def fill_root(root: Path, rng: random.Random, cloud_init: bool = False) -> None:
    """What an installed system keeps of its identity, and some data beside it."""
    for d in ("etc/ssh", "usr/lib", "var/lib/dbus", "usr/share/data", "home/user"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "usr/lib/os-release").write_text(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n')
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    (root / "etc/hostname").write_text("master\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tmaster.lab.example "
                                    "master\n\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    machine_id = rng.randbytes(16).hex() + "\n"
    (root / "etc/machine-id").write_text(machine_id)
    (root / "etc/machine-id").chmod(0o444)
    (root / "var/lib/dbus/machine-id").write_text(machine_id)
    for kind, extra in KEYS:
        _sh("ssh-keygen", "-q", "-t", kind, *extra, "-N", "", "-C", "root@master", "-f",
            str(root / f"etc/ssh/ssh_host_{kind}_key"))
    (root / "etc/ssh/sshd_config").write_text("PermitRootLogin no\n")
    if cloud_init:
        (root / "etc/cloud").mkdir()
        (root / "etc/cloud/cloud.cfg").write_text("datasource_list: [ NoCloud, None ]\n")
    for i in range(6):
        (root / f"usr/share/data/blob{i}").write_bytes(rng.randbytes(rng.randint(1, 900_000)))
    (root / "home/user/.profile").write_text("export PATH\n")
    (root / "home/user/link").symlink_to("/usr/share/data/blob0")
    os.mkfifo(root / "home/user/fifo")


def tree(root: Path) -> dict[str, tuple]:
    """Every entry under `root`: path -> (kind, mode, uid, gid, sha256 or link target)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath, name)
            st = path.lstat()
            rel = "/" + str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                what = None
            out[rel] = (stat.S_IFMT(st.st_mode), st.st_mode & 0o7777, st.st_uid, st.st_gid,
                        what)
    return out


@contextlib.contextmanager
def root_of(disk: Path, fs: str, readonly: bool = True):
    """The root partition (2) of a disk made by make_master, mounted."""
    with partition(disk, 2) as dev, mounted(dev, fs, readonly=readonly) as root:
        yield root


def fsck(disk: Path, fs: str) -> str | None:
    """The root filesystem's checker's complaint, or None when it is clean."""
    with partition(disk, 2) as dev:
        proc = subprocess.run([*FSCK[fs], dev], capture_output=True, text=True,
                              timeout=300)
    return None if proc.returncode == 0 else (proc.stdout + proc.stderr)[-500:]
