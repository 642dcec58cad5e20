"""Used-block images on the wire, with the defaults a user gets: a disk with real
filesystems sent to herdcast receivers (unpacked onto disks, stored into a file on a
server), the stored file deployed again, and stock udp-receivers served the raw disk."""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import needs_loop
from peers import (
    HERDCAST,
    herdcast_receiver,
    herdcast_sender,
    logs,
    stock_receiver,
    used_extents_equal,
    wait,
)

from agent.image.store import read_info
from agent.image.usedmap import used_map
from agent.transfer.progress import human_bytes
from builder.lab.fsdisk import Part, file_digests, fsck, make_disk
from builder.lab.netlab import NetLab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240), needs_loop]

MiB = 1 << 20
DISK_MIB = 256
PARTS = [Part("vfat", 33, {"bootx64.efi": 200_000}), Part("ext4", 96, {"a": 8_000_000}),
         Part("swap", 16)]
needs_udpcast = pytest.mark.skipif(shutil.which("udp-receiver") is None,
                                   reason="Debian package udpcast not installed")


@pytest.fixture(scope="module")
def lab_disk(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The DISK_MIB disk of PARTS and its files' digests, made once for the module: the
    tests only read it (the sender's and the capture's source)."""
    src = tmp_path_factory.mktemp("lab_disk") / "src.img"
    return src, make_disk(src, DISK_MIB, PARTS)


#: The small disk: 64 MiB, one ext4 with 7 MB of random data (at the 8 Mbit/s of the
#: progress test, a transfer that lasts past the 5 s of a plain progress line).
SMALL_MIB = 64
SMALL_PARTS = [Part("ext4", 48, {"a": 7_000_000})]


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The SMALL_MIB disk of SMALL_PARTS and its files' digests, made once for the module
    (the tests only read it)."""
    src = tmp_path_factory.mktemp("small_disk") / "src.img"
    return src, make_disk(src, SMALL_MIB, SMALL_PARTS)


def junk_disk(path: Path) -> None:
    """A receiver's disk before imaging: junk everywhere, so anything not written shows."""
    block = random.Random(5).randbytes(MiB)
    with open(path, "wb") as f:
        for i in range(DISK_MIB):
            f.write(i.to_bytes(4, "big") + block[4:])


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


def test_disk_to_herdcast_receivers_sends_used_blocks_unpacked_and_stored(tmp_path, lab_disk):
    """`receive -f FILE` writes the disk, as udp-receiver does: a new file becomes a sparse
    file of the disk's size; storing the image as it came is --store."""
    src, digests = lab_disk
    fresh, junked = tmp_path / "disk1.img", tmp_path / "disk2.img"
    junk_disk(junked)
    stored = tmp_path / "lab.hcimg"
    with NetLab(4, net=106) as lab:
        rc, rcs = session(lab, tmp_path, src,
                          [(herdcast_receiver, fresh, []),
                           (herdcast_receiver, junked, ["--blank", "zero"]),
                           (herdcast_receiver, stored, ["--store"])])
    log = logs(tmp_path)
    assert (rc, rcs) == (0, [0, 0, 0]), log
    assert "herdcast image" in log  # the round sent the image stream, not the raw disk
    for d in (fresh, junked):
        assert used_extents_equal(src, d), d
    assert fresh.stat().st_size == DISK_MIB * MiB  # the disk, not the image
    assert fresh.stat().st_blocks * 512 < 32 * MiB  # sparse: free space is holes
    info = read_info(str(stored))
    assert info.disk_size == DISK_MIB * MiB
    assert info.file_bytes < 16 * MiB  # about the data (8.2 MB of files), not 256 MiB
    with open(junked, "rb") as f:  # --blank zero: free space reads back as zeros
        f.seek(used_map(str(src)).extents[-1].end)
        assert f.read(MiB).count(0) == MiB or f.tell() == DISK_MIB * MiB
    assert fsck(fresh, PARTS) == []
    assert file_digests(fresh, PARTS) == digests
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@needs_udpcast
def test_stored_image_deploys_to_herdcast_and_stock_receivers(tmp_path, small_disk):
    """A 64 MiB disk: the stock round carries every byte of it."""
    src, digests = small_disk
    parts = SMALL_PARTS
    stored = tmp_path / "lab.hcimg"
    herd, stock = tmp_path / "herd.img", tmp_path / "stock.img"
    with NetLab(3, net=107) as lab:
        rc, rcs = session(lab, tmp_path, src, [(herdcast_receiver, stored, ["--store"])],
                          "--compress", "zstd")
        assert (rc, rcs) == (0, [0]), logs(tmp_path)
        assert read_info(str(stored)).codec == "zstd"  # kept as it crossed the wire
        # deployed later, the captured node off: a stock receiver, as udpcast's tutorial
        # runs it, gets the raw disk, uncompressed (nobody asked for --compress); so does the
        # herdcast receiver in its round, which follows without being told
        rc, rcs = session(lab, tmp_path, stored,
                          [(herdcast_receiver, herd, []),
                           (stock_receiver, stock, [])])
    log = logs(tmp_path)
    assert (rc, rcs) == (0, [0, 0]), log
    assert "to stock udp-receivers: the raw disk it expands to, uncompressed" in log
    assert "the raw disk expanded from the stored image, uncompressed" in log
    assert "ignored" not in log
    assert used_extents_equal(src, herd)
    assert used_extents_equal(src, stock)  # the raw disk the image expands to
    assert stock.stat().st_size == SMALL_MIB * MiB
    assert file_digests(herd, parts) == digests


@needs_udpcast
def test_a_captured_chunked_image_is_served_as_stored(tmp_path, lab_disk):
    """`herdcast image capture` writes a chunked image; `herdcast send -f` it: receivers
    writing disks get its chunks as stored (no chunking pass), the others a round of the
    raw disk it expands to; info, list and restore read it."""
    src, digests = lab_disk
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
def test_a_round_with_a_stock_receiver_sends_the_raw_disk(tmp_path, small_disk):
    src, _ = small_disk
    outs = [tmp_path / "stock.img", tmp_path / "herd.img"]
    with NetLab(3, net=108) as lab:
        rc, rcs = session(lab, tmp_path, src, [(stock_receiver, outs[0], []),
                                               (herdcast_receiver, outs[1], [])])
    assert (rc, rcs) == (0, [0, 0]), logs(tmp_path)
    for out in outs:
        assert out.read_bytes() == src.read_bytes()


@pytest.mark.parametrize("path", ["stream", "chunks"])
def test_used_blocks_show_percent_and_eta_on_both_sides(tmp_path, small_disk, path):
    """A disk sent as its used blocks: the used map is known before the first byte, so the
    sender's line and the receiver's console show percent of the data and an ETA (plain
    lines every 5 s off a terminal; the rate is capped to last past one). On the stream
    (--chunks no) both count the disk's used bytes; on the chunk carousel (the
    default to a receiver writing in place) the sender counts the chunks' wire bytes and
    the receiver the used bytes of the chunks it lacks."""
    import re

    from peers import HERDCAST, ROOT

    src, _ = small_disk
    used = used_map(str(src)).used_bytes
    out = tmp_path / "disk.img"
    with NetLab(2, net=109) as lab:
        rlog, slog = tmp_path / "recv.log", tmp_path / "send.log"
        rcv = lab.hosts[1].popen([*HERDCAST, "receive", "--nokbd", "--interface", "eth0", "-f",
                                  str(out)], cwd=ROOT, stdin=subprocess.DEVNULL,
                                 stderr=rlog.open("wb"))
        time.sleep(0.3)
        snd = lab.hosts[0].popen([*HERDCAST, "send", "--nokbd", "--interface", "eth0",
                                  "--min-receivers", "1", "--max-bitrate", "8m", "-f",
                                  str(src), "--chunks", "yes" if path == "chunks" else "no"],
                                 cwd=ROOT, stdin=subprocess.DEVNULL, stderr=slog.open("wb"))
        assert (wait(snd, 120), wait(rcv, 60)) == (0, 0), logs(tmp_path)
    assert ("chunk carousel" in rlog.read_text()) == (path == "chunks"), logs(tmp_path)
    total = re.escape(human_bytes(used)) if path == "stream" else r"[\d.]+ [kMG]?B"
    line = re.compile(rf"{{}}: [\d.]+ [kMG]?B / {total} \((\d+)%\).*ETA \d+:\d\d")
    for side, log in (("send", slog), ("receive", rlog)):
        found = [int(m.group(1)) for m in map(re.compile(line.pattern.format(side)).search,
                                              log.read_text().splitlines()) if m]
        assert found and all(0 < p < 100 for p in found), (side, logs(tmp_path))
    assert used_extents_equal(src, out)
