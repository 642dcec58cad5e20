"""End to end, issue 12: a captured image deploys to a fleet in the PXE lab, and the stored
file is about the size of the data.

A master VM (BIOS, `umode=snd compr=zstd`) whose 64 MiB disk has an MBR and an ext4
partition filling it, holding 4 MiB of random bytes, 4 MiB of log-like text and a few small
files, is captured by `herdcast receive -f lab.img` on the lab's server (the namespace, at
the bridge's address). With the master powered off, two BIOS receivers (`umode=rcv`, junk
on their disks) are imaged by `herdcast send -f lab.img --min-receivers 2` there.

"The data's compressed size" is defined as the files' contents, concatenated, through zstd
at the level herdcast uses on the wire (3): what any archiver of those files would store.
The stored image carries on top the filesystem's metadata (superblocks, group descriptors,
bitmaps, inode table and directory blocks that are not all zero; zero runs are not stored),
its own record headers and the MBR: it must be within 10% of that figure.
"""

import pytest
from conftest import ensure_tftpboot

from builder.lab.capture import IMAGE_FILES, run_capture_deploy
from builder.lab.vms import console_text

pytestmark = [pytest.mark.slow, pytest.mark.netns]


# each of the two phases may take the lab's 200 s before pytest's own timeout: a stuck
# node then fails the test with the consoles and logs below, not a bare pytest timeout
@pytest.mark.timeout(480)
def test_captured_image_deploys_to_fleet(tmp_path):
    tftpboot = ensure_tftpboot()
    lines: list[str] = []
    r = run_capture_deploy(tftpboot, tmp_path / "lab", receivers=2, size_mib=64,
                           timeout=200, show=lines.append)
    master = console_text(r.master)
    report = "\n".join([*lines, *r.summary(), "--- capture (server)", r.capture_log,
                        "--- deploy (server)", r.deploy_log, "--- master", master[-3000:]])
    # capture: the master mapped its disk and sent used blocks, zstd on the wire
    assert r.capture_s is not None and r.capture_rc == 0, report
    assert "partition 1 (mbr:83)" in master and "(partclone.extfs)" in master, report
    assert f"to herdcast receivers: the {r.used_bytes} used bytes" in master, report
    assert "herdcast image" in master, report
    # the consoles say how many bytes crossed the wire: the stored file's, both times
    assert f"herdcast: SUCCESS: sent {r.image_bytes} bytes" in master, report
    assert "compression zstd" in " ".join(r.info_lines), report
    assert f"disk size   {64 * 1024 * 1024} bytes" in " ".join(r.info_lines), report
    # deploy: the server's table agreed with every receiver, each says SUCCESS
    assert r.deploy_s is not None and r.deploy_rc == 0, report
    rows = [line for line in r.deploy_log.splitlines()  # the final table's rows (each
            if line.startswith("  ") and line.endswith("digest agreed")]  # also logged)
    assert len(rows) == 2, report
    for node in r.receivers:
        text = console_text(node)
        # a node takes the stored image as chunks (the default between herdcast peers):
        # what crossed the wire is the compressed chunks, what it reports the used bytes
        assert "chunk carousel" in text and "herdcast: SUCCESS: received" in text, \
            f"{node.name}:\n{text[-2000:]}\n{report}"
        assert not r.bad_extents[node.name], f"{node.name} used extents differ:\n{report}"
        assert not r.bad_files[node.name], f"{node.name} files differ:\n{report}"
    # the stored file is the size of the data (compressed), not of the disk
    assert 0.9 <= r.size_ratio <= 1.1, report
    assert r.files_bytes == sum(len(v) for v in IMAGE_FILES.values())
