"""Issue 20 on real filesystems: a 64 MiB master restored with `herdcast image restore`
onto a 128 MiB disk (a loop device) is fitted (a valid GPT at the end), grown when asked,
and made its own machine (hostname, hosts, machine-id, SSH host keys), fsck clean, every
other file unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_loop
from cryptography.hazmat.primitives import serialization

from agent.image.partitions import read_gpt, read_partitions
from builder.lab.loopdev import loop_device
from builder.lab.rootdisk import fsck, make_master, root_of, tree

pytestmark = needs_loop
MiB = 1 << 20
IDENTITY = {"/etc/hostname", "/etc/hosts", "/etc/machine-id", "/var/lib/dbus/machine-id"} | {
    f"/etc/ssh/ssh_host_{k}_key{s}" for k in ("ed25519", "ecdsa", "rsa") for s in ("", ".pub")}


def herdcast(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True,
                          text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def clone(tmp: Path, master: Path, target_mib: int, *flags: str, name: str = "node",
          ok: bool = True) -> tuple[Path, subprocess.CompletedProcess]:
    """master captured into an image file, restored onto a loop device of target_mib."""
    image = tmp / "master.hcimg"
    if not image.exists():
        herdcast("image", "capture", str(master), str(image))
    disk = tmp / f"{name}.disk"
    with open(disk, "wb") as f:
        f.truncate(target_mib * MiB)
    with loop_device(disk) as dev:
        proc = herdcast("image", "restore", str(image), dev, *flags, ok=ok)
    return disk, proc


def sgdisk_ok(disk: Path) -> bool:
    out = subprocess.run(["sgdisk", "-v", str(disk)], capture_output=True, text=True,
                         timeout=30).stdout
    return "No problems found" in out


def fs_bytes(disk: Path, fs: str) -> int:
    with root_of(disk, fs) as root:
        st = os.statvfs(root)
    return st.f_blocks * st.f_frsize


def last_partition(disk: Path):
    fd = os.open(disk, os.O_RDONLY)
    try:
        return read_partitions(fd, disk.stat().st_size)[1][-1]
    finally:
        os.close(fd)


def test_a_plain_clone_is_fitted_and_stays_byte_faithful(tmp_path):
    master = tmp_path / "master.disk"
    make_master(master)
    with root_of(master, "ext4") as root:
        before = tree(root)
    disk, proc = clone(tmp_path, master, 128)
    assert "GPT fitted to the disk: backup header moved from sector 131071 to 262143" \
        in proc.stderr
    assert sgdisk_ok(disk)
    assert last_partition(disk) == last_partition(master)  # not grown unless asked
    with root_of(disk, "ext4") as root:
        assert tree(root) == before
    assert fsck(disk, "ext4") is None


@pytest.mark.parametrize("table,fs,mib,root_type", [
    ("gpt", "ext4", 64, "8304"),  # a root by its GPT type
    ("gpt", "xfs", 64, "8300"),  # a root by its /etc/os-release
    ("gpt", "btrfs", 160, "8300"),  # btrfs makes nothing under 109 MiB, grows to >= 256
    ("mbr", "ext4", 64, None),
    ("mbr", "xfs", 64, None),
])
def test_grow_and_hostname_make_the_clone_its_own_machine(tmp_path, table, fs, mib,
                                                          root_type):
    master = tmp_path / "master.disk"
    make_master(master, table=table, fs=fs, mib=mib, root_type=root_type or "8300")
    with root_of(master, fs) as root:
        before = tree(root)
        old_keys = {p: (root / p.lstrip("/")).read_bytes() for p in IDENTITY
                    if p.startswith("/etc/ssh")}
    old_size = fs_bytes(master, fs)
    disk, proc = clone(tmp_path, master, 2 * mib, "--grow", "--hostname", "node07")

    if table == "gpt":
        assert sgdisk_ok(disk), proc.stderr
        fd = os.open(disk, os.O_RDONLY)
        gpt = read_gpt(fd, disk.stat().st_size)
        os.close(fd)
        assert gpt.header["backup_lba"] == 2 * mib * MiB // 512 - 1
        assert last_partition(disk).extent.end == (gpt.header["last_usable"] + 1) * 512
    else:
        assert last_partition(disk).extent.end == 2 * mib * MiB
    grown = fs_bytes(disk, fs)
    assert grown > old_size + 0.8 * mib * MiB, (old_size, grown, proc.stderr)
    assert f"{fs[:3]}" in proc.stderr and "filesystem grown" in proc.stderr
    assert fsck(disk, fs) is None

    with root_of(disk, fs) as root:
        after = tree(root)
        assert (root / "etc/hostname").read_text() == "node07\n"
        hosts = (root / "etc/hosts").read_text().splitlines()
        assert "127.0.1.1\tnode07.lab.example node07" in hosts
        assert "::1\tlocalhost ip6-localhost ip6-loopback" in hosts  # the rest kept
        assert (root / "etc/machine-id").read_bytes() == b""
        assert os.stat(root / "etc/machine-id").st_mode & 0o777 == 0o444
        assert os.readlink(root / "var/lib/dbus/machine-id") == "/etc/machine-id"
        for kind in ("ed25519", "ecdsa", "rsa"):
            private = root / f"etc/ssh/ssh_host_{kind}_key"
            public = root / f"etc/ssh/ssh_host_{kind}_key.pub"
            assert private.stat().st_mode & 0o777 == 0o600
            assert public.stat().st_mode & 0o777 == 0o644
            assert private.read_bytes() != old_keys[f"/etc/ssh/ssh_host_{kind}_key"]
            key = serialization.load_ssh_private_key(private.read_bytes(), None)
            line = public.read_text().split()
            assert line[2] == "root@node07"
            assert key.public_key().public_bytes(
                serialization.Encoding.OpenSSH,
                serialization.PublicFormat.OpenSSH).decode() == " ".join(line[:2])
            old = serialization.load_ssh_public_key(
                old_keys[f"/etc/ssh/ssh_host_{kind}_key.pub"])
            if kind != "ed25519":  # the master's size and curve are kept
                assert key.key_size == old.key_size
            check = subprocess.run(["ssh-keygen", "-l", "-f", str(private)],
                                   capture_output=True, text=True, timeout=30)
            assert check.returncode == 0, check.stderr
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    assert changed == IDENTITY, changed ^ IDENTITY


def test_two_clones_share_no_host_key_and_keep_says_keep(tmp_path):
    master = tmp_path / "master.disk"
    make_master(master)
    keys = []
    for name in ("a", "b"):
        disk, _ = clone(tmp_path, master, 64, "--hostname", f"node-{name}", name=name)
        with root_of(disk, "ext4") as root:
            keys.append({(root / f"etc/ssh/ssh_host_{k}_key.pub").read_text().split()[1]
                         for k in ("ed25519", "ecdsa", "rsa")})
    assert not keys[0] & keys[1]

    with root_of(master, "ext4") as root:
        before = tree(root)
    disk, _ = clone(tmp_path, master, 64, "--hostname", "node-c", "--identity", "keep",
                    name="c")
    with root_of(disk, "ext4") as root:
        after = tree(root)
    changed = {p for p in before if before[p] != after.get(p)}
    assert changed == {"/etc/hostname", "/etc/hosts"}


def test_cloud_init_gets_a_nocloud_seed(tmp_path):
    master = tmp_path / "master.disk"
    make_master(master, cloud_init=True)
    userdata = tmp_path / "user-data"
    userdata.write_text("#cloud-config\npackages: [htop]\n")
    disk, proc = clone(tmp_path, master, 64, "--hostname", "node3", "--userdata",
                       str(userdata))
    with root_of(disk, "ext4") as root:
        seed = root / "var/lib/cloud/seed/nocloud"
        meta = (seed / "meta-data").read_text().splitlines()
        assert meta[0].startswith("instance-id: herdcast-node3-")
        assert meta[1] == "local-hostname: node3"
        assert (seed / "user-data").read_text() == userdata.read_text()


def test_a_root_it_cannot_open_is_reported_never_guessed(tmp_path):
    """A LUKS root: the hostname cannot be written, which is one line and a failure; a
    bad hostname is refused before anything is written."""
    master = tmp_path / "master.disk"
    make_master(master)
    fd = os.open(master, os.O_RDWR)
    part = last_partition(master)
    os.pwrite(fd, b"LUKS\xba\xbe\x00\x02", part.extent.offset)
    os.close(fd)
    disk, proc = clone(tmp_path, master, 64, "--hostname", "node4", ok=False)
    assert proc.returncode == 1
    assert "partition 2: LUKS, cannot be opened here" in proc.stderr
    assert "no Linux root found" in proc.stderr and "Traceback" not in proc.stderr

    bad, proc = clone(tmp_path, master, 64, "--hostname", "no_underscores", name="bad",
                      ok=False)
    assert proc.returncode != 0 and "is not a hostname" in proc.stderr
    assert bad.read_bytes().count(0) == bad.stat().st_size  # nothing was written
