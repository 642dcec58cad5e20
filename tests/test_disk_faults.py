"""A disk that fails under the receiver fails the receive: never SUCCESS for data that did not
land. A real ext4 on a loop device, mounted errors=remount-ro (Debian's default), takes an
error while the image is in the page cache; the file system turns read-only and fsync says
EROFS. Default options: a herdcast sender reading a pipe, a herdcast receiver writing a file
on that ext4.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from conftest import needs_loop
from peers import HERDCAST, ROOT, herdcast_receiver

from builder.lab.loopdev import mounted_ext4
from builder.lab.netlab import NetLab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

SLICE = 1024 * 1456  # the default slice on a 1500-byte MTU: 1024 blocks of 1456 bytes


def _wait_size(path: Path, size: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size >= size):
        assert time.monotonic() < deadline, f"{path}: {path.stat().st_size if path.exists() else 0}"
        time.sleep(0.05)


@needs_loop
def test_fsync_saying_erofs_fails_the_receive(tmp_path):
    img = tmp_path / "fs.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    mnt = tmp_path / "mnt"
    with mounted_ext4(img, mnt) as dev, NetLab(2, net=171) as lab:
        subprocess.run(["mount", "-o", "remount,errors=remount-ro", str(mnt)], check=True,
                       timeout=20)
        h0, h1 = lab.hosts
        out, log, slog = mnt / "image.bin", tmp_path / "r.log", tmp_path / "s.log"
        rcv = herdcast_receiver(h1, out, log)
        time.sleep(0.3)
        snd = h0.popen([*HERDCAST, "send", "--nokbd", "--no-progress", "--interface", "eth0",
                        "--min-receivers", "1"], cwd=ROOT, stdin=subprocess.PIPE,
                       stdout=subprocess.DEVNULL, stderr=slog.open("wb"))
        snd.stdin.write(bytes(range(256)) * (2 * SLICE // 256))  # two whole slices
        snd.stdin.flush()
        _wait_size(out, 2 * SLICE)  # written, in the page cache, not yet synced
        time.sleep(0.3)
        name = Path(dev).name
        Path(f"/sys/fs/ext4/{name}/trigger_fs_error").write_text("herdcast test\n")
        snd.stdin.close()  # the end of the stream: the receiver flushes and syncs now
        rc = rcv.wait(timeout=40)
        src = snd.wait(timeout=40)
    text = log.read_text()
    assert rc == 1, text
    assert "flushing to disk failed: Read-only file system" in text, text
    assert "Transfer complete" not in text
    # the sender was told why (HC_FAIL): its line and table say so, and it fails too
    sent = slog.read_text()
    assert src == 1, sent
    assert "FAILED (" in sent and "flushing to disk failed: Read-only file system" in sent, sent
    assert "NO DIGEST" not in sent and "DISCONNECTED" not in sent, sent
