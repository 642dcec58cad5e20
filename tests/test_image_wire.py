"""Used-block images on the wire, with the defaults a user gets: a disk with real
filesystems sent to herdcast receivers (unpacked onto disks, stored into a file on a
server), the stored file deployed again, and stock udp-receivers served the raw disk."""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import needs_loop
from peers import HERDCAST, herdcast_receiver, herdcast_sender, logs, stock_receiver, wait

from agent.image.store import read_info
from agent.image.usedmap import used_map
from builder.lab.fsdisk import Part, file_digests, fsck, make_disk
from builder.lab.netlab import NetLab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240), needs_loop]

MiB = 1 << 20
DISK_MIB = 256
PARTS = [Part("vfat", 33, {"bootx64.efi": 200_000}), Part("ext4", 96, {"a": 8_000_000}),
         Part("swap", 16)]
needs_udpcast = pytest.mark.skipif(shutil.which("udp-receiver") is None,
                                   reason="Debian package udpcast not installed")


def junk_disk(path: Path) -> None:
    """A receiver's disk before imaging: junk everywhere, so anything not written shows."""
    block = random.Random(5).randbytes(MiB)
    with open(path, "wb") as f:
        for i in range(DISK_MIB):
            f.write(i.to_bytes(4, "big") + block[4:])


def used_extents_equal(src: Path, dst: Path) -> bool:
    with open(src, "rb") as a, open(dst, "rb") as b:
        for e in used_map(str(src)).extents:
            a.seek(e.offset)
            b.seek(e.offset)
            if hashlib.sha256(a.read(e.length)).digest() != \
                    hashlib.sha256(b.read(e.length)).digest():
                return False
    return True




def run_image(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*HERDCAST, "image", *argv], capture_output=True, text=True,
                          timeout=120)


def session(lab, tmp_path: Path, src: Path, receivers: list, *send_args: str):
    """receivers: (start function, output, extra args) on hosts 1..; returns sender rc and
    the receivers' rcs."""
    procs = []
    for i, (start, out, extra) in enumerate(receivers, start=1):
        procs.append(start(lab.hosts[i], out, tmp_path / f"recv{i}-{out.name}.log", *extra))
    time.sleep(0.3)
    snd = herdcast_sender(lab.hosts[0], tmp_path / f"send-{src.name}.log", "--min-receivers",
                          str(len(receivers)), "-f", str(src), *send_args)
    return wait(snd, 120), [wait(p, 60) for p in procs]


def test_disk_to_herdcast_receivers_sends_used_blocks_unpacked_and_stored(tmp_path):
    src = tmp_path / "src.img"
    digests = make_disk(src, DISK_MIB, PARTS)
    disks = [tmp_path / "disk1.img", tmp_path / "disk2.img"]
    for d in disks:
        junk_disk(d)
    stored = tmp_path / "lab.hcimg"
    with NetLab(4, net=106) as lab:
        rc, rcs = session(lab, tmp_path, src,
                          [(herdcast_receiver, disks[0], ["--unpack"]),
                           (herdcast_receiver, disks[1], ["--unpack", "--blank", "zero"]),
                           (herdcast_receiver, stored, [])])
    log = logs(tmp_path)
    assert (rc, rcs) == (0, [0, 0, 0]), log
    assert "herdcast image" in log  # the round sent the image stream, not the raw disk
    for d in disks:
        assert used_extents_equal(src, d), d
    info = read_info(str(stored))
    assert info.disk_size == DISK_MIB * MiB
    assert info.file_bytes < 16 * MiB  # about the data (8.2 MB of files), not 256 MiB
    with open(disks[1], "rb") as f:  # --blank zero: free space reads back as zeros
        f.seek(used_map(str(src)).extents[-1].end)
        assert f.read(MiB).count(0) == MiB or f.tell() == DISK_MIB * MiB
    assert fsck(disks[0], PARTS) == []
    assert file_digests(disks[0], PARTS) == digests


@needs_udpcast
def test_stored_image_deploys_to_herdcast_and_stock_receivers(tmp_path):
    src = tmp_path / "src.img"
    digests = make_disk(src, DISK_MIB, PARTS)
    stored = tmp_path / "lab.hcimg"
    herd, stock = tmp_path / "herd.img", tmp_path / "stock.img"
    junk_disk(herd)
    with NetLab(3, net=107) as lab:
        rc, rcs = session(lab, tmp_path, src, [(herdcast_receiver, stored, [])],
                          "--compress", "zstd")
        assert (rc, rcs) == (0, [0]), logs(tmp_path)
        assert read_info(str(stored)).codec == "zstd"  # kept as it crossed the wire
        # deployed later, the captured node off: a herdcast receiver with no compression
        # configured follows the sender; a stock one is told with --pipe, as with udpcast
        rc, rcs = session(lab, tmp_path, stored,
                          [(herdcast_receiver, herd, ["--unpack"]),
                           (stock_receiver, stock, ["--pipe", "zstd -dc"])])
    log = logs(tmp_path)
    assert (rc, rcs) == (0, [0, 0]), log
    assert used_extents_equal(src, herd)
    assert used_extents_equal(src, stock)  # the raw disk the image expands to
    assert stock.stat().st_size == DISK_MIB * MiB
    assert file_digests(herd, PARTS) == digests


@needs_udpcast
def test_a_captured_chunked_image_is_served_as_stored(tmp_path):
    """`herdcast image capture` writes a chunked image; `herdcast send -f` it: receivers
    writing disks get its chunks as stored (no chunking pass), the others a round of the
    raw disk it expands to; info, list and restore read it."""
    src = tmp_path / "src.img"
    digests = make_disk(src, DISK_MIB, PARTS)
    stored = tmp_path / "lab.chunks"
    assert run_image("capture", str(src), str(stored)).returncode == 0
    info = read_info(str(stored))
    assert info.chunks and info.disk_size == DISK_MIB * MiB
    assert "lab.chunks: from" in run_image("list", str(tmp_path)).stdout
    herd, stream, stock = tmp_path / "herd.img", tmp_path / "stream.hcimg", tmp_path / "stock.img"
    junk_disk(herd)
    with NetLab(4, net=198) as lab:
        rc, rcs = session(lab, tmp_path, stored, [(herdcast_receiver, herd, ["--unpack"]),
                                                  (herdcast_receiver, stream, []),
                                                  (stock_receiver, stock, [])])
    log = logs(tmp_path)
    assert (rc, rcs) == (0, [0, 0, 0]), log
    assert "serving the stored chunks" in log and "chunked the image" not in log, log
    assert "chunk carousel" in (tmp_path / "recv1-herd.img.log").read_text()
    # the slice round had a stock receiver: the raw disk, expanded from the chunks
    for out in (herd, stream, stock):
        assert used_extents_equal(src, out), out
    assert file_digests(herd, PARTS) == digests
    back = tmp_path / "back.img"
    assert run_image("restore", str(stored), str(back)).returncode == 0
    assert used_extents_equal(src, back)


@needs_udpcast
def test_a_round_with_a_stock_receiver_sends_the_raw_disk(tmp_path):
    src = tmp_path / "src.img"
    make_disk(src, 64, [Part("ext4", 32, {"a": 1_000_000})])
    outs = [tmp_path / "stock.img", tmp_path / "herd.img"]
    with NetLab(3, net=108) as lab:
        rc, rcs = session(lab, tmp_path, src, [(stock_receiver, outs[0], []),
                                               (herdcast_receiver, outs[1], [])])
    assert (rc, rcs) == (0, [0, 0]), logs(tmp_path)
    for out in outs:
        assert out.read_bytes() == src.read_bytes()
