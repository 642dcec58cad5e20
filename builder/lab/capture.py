"""Images kept on a server, in the PXE lab (issue 12): a node's disk captured into a file on
the lab's server, then that file deployed to a fleet while the captured node is off.

1. Capture: the master VM boots `umode=snd compr=zstd` (its disk: MBR, an ext4 partition
   holding known files); on the server (the lab namespace, at the bridge's address)
   `herdcast receive -f lab.img --store` stores the image stream as it came, compressed.
2. Deploy: once the master has powered off, receiver VMs boot `umode=rcv` as usual and the
   server runs `herdcast send -f lab.img --min-receivers N`.

Then every receiver's disk must hold the master's used extents byte for byte and its files,
and the stored file is compared with the data's compressed size (`data_zstd`).
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder.lab.disks import (
    differing_extents,
    make_junk_disk,
    make_sender_disk,
    read_partition_file,
    used_extents,
)
from builder.lab.tftp import ROOT, lab_default, node_config
from builder.lab.vms import Node, PxeLab, check_tools, console_text

MIB = 1024 * 1024
_WORDS = ("node", "disk", "sector", "multicast", "slice", "receiver", "sender", "digest",
          "kernel", "initrd", "ok", "retry", "block", "zstd", "boot", "pxe", "lease", "mac")


def _log_text(seed: int, size: int) -> bytes:
    """Compressible data: log-like lines of words and numbers (zstd -3: about a third)."""
    rng = random.Random(seed)
    lines, n = [], 0
    while n < size:
        line = (f"{rng.randrange(10**9):09d} {' '.join(rng.choices(_WORDS, k=8))} "
                f"{rng.randrange(65536):04x}\n").encode()
        lines.append(line)
        n += len(line)
    return b"".join(lines)[:size]


#: The master's files: data well above the filesystem's metadata, half of it incompressible.
IMAGE_FILES = {
    "etc/hostname": b"golden-node\n",
    "srv/random.bin": random.Random(12).randbytes(4 * MIB),
    "var/log/fleet.log": _log_text(13, 4 * MIB),
    "usr/share/doc/README": b"imaged by herdcast from a stored image\n" * 2000,
}


def data_zstd(files: dict[str, bytes]) -> int:
    """The data's compressed size: the files' contents, concatenated, through zstd at the
    level herdcast compresses with on the wire (agent.codec.ZSTD_LEVEL). The
    filesystem's metadata is not counted: it is what a stored image carries on top."""
    import zstandard

    from agent.codec import ZSTD_LEVEL

    blob = b"".join(files[name] for name in sorted(files))
    return len(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(blob))


@dataclass
class CaptureResult:
    """What a capture-then-deploy run did; `ok` says whether everything held."""

    master: Node
    receivers: list[Node]
    image: Path
    disk_bytes: int
    used_bytes: int  # what the master's used-block map says a clone carries
    files_bytes: int  # the files' contents
    files_zstd: int  # data_zstd(files)
    capture_log: str = ""
    deploy_log: str = ""
    capture_rc: int | None = None
    deploy_rc: int | None = None
    capture_s: float | None = None  # master's power-on to the image stored and it off
    deploy_s: float | None = None  # receivers' power-on to all imaged and off
    image_bytes: int = 0
    info_lines: list[str] = field(default_factory=list)
    bad_extents: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    bad_files: dict[str, list[str]] = field(default_factory=dict)

    @property
    def size_ratio(self) -> float:
        """The stored file's size over the data's compressed size."""
        return self.image_bytes / self.files_zstd if self.files_zstd else float("inf")

    @property
    def ok(self) -> bool:
        return (self.capture_rc == 0 and self.deploy_rc == 0 and self.image_bytes > 0
                and not any(self.bad_extents.values()) and not any(self.bad_files.values())
                and len(self.bad_extents) == len(self.receivers))

    def summary(self) -> list[str]:
        lines = [f"master disk {self.disk_bytes} bytes, {self.used_bytes} used; files "
                 f"{self.files_bytes} bytes, {self.files_zstd} through zstd",
                 f"stored image {self.image} {self.image_bytes} bytes: "
                 f"{self.size_ratio:.3f} x the files' zstd size, "
                 f"{100 * self.image_bytes / self.disk_bytes:.1f}% of the disk",
                 *self.info_lines,
                 f"capture: {_secs(self.capture_s)}, server receive exit {self.capture_rc}",
                 f"deploy to {len(self.receivers)}: {_secs(self.deploy_s)}, server send exit "
                 f"{self.deploy_rc}"]
        for node in self.receivers:
            bad = self.bad_extents.get(node.name)
            files = self.bad_files.get(node.name)
            verdict = ("not checked" if bad is None else
                       "used extents identical, files equal" if not bad and not files else
                       f"{len(bad)} extents differ, files differing: {files}")
            lines.append(f"  {node.name}: {verdict}")
        return lines


def _secs(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "did not finish"


def _herdcast(*args: str) -> list[str]:
    """The server's herdcast: this checkout's agent, run by the builder's interpreter."""
    return [sys.executable, "-m", "agent", *args]


def _finish(lab: PxeLab, nodes: list[Node], server, timeout: float, show) -> float | None:
    """Wait until `nodes` have powered off and `server` exited; seconds taken, or None."""
    started = time.monotonic()
    deadline = started + timeout
    last: dict[str, str] = {}
    while time.monotonic() < deadline:
        for node in nodes:
            lines = [ln for ln in console_text(node).splitlines() if "herdcast" in ln.lower()]
            line = lines[-1].strip()[:100] if lines else "booting"
            if last.get(node.name) != line:
                last[node.name] = line
                show(f"[{time.monotonic() - started:6.1f}s] {node.name:8} {line}")
        if all(n.proc is not None and n.proc.poll() is not None for n in nodes) \
                and server.poll() is not None:
            return time.monotonic() - started
        time.sleep(1)
    return None


def run_capture_deploy(tftp_src: Path, workdir: Path, receivers: int = 2, size_mib: int = 64,
                       timeout: float = 300, show=print, http: bool = True,
                       files: dict[str, bytes] | None = None) -> CaptureResult:
    """Capture the master's disk into workdir/lab.img on the lab's server, then deploy it
    to `receivers` BIOS VMs with the master off; compare and return what happened."""
    check_tools()
    files = files or IMAGE_FILES
    workdir.mkdir(parents=True, exist_ok=True)
    master_disk = workdir / "master.img"
    # the partition fills the disk: the data is the files, not a patterned tail
    make_sender_disk(master_disk, size_mib, files, part_mib=size_mib - 1, tail=False)
    used = used_extents(master_disk)
    disks = []
    for i in range(receivers):
        disks.append(workdir / f"rcv{i + 1}.img")
        make_junk_disk(disks[-1], size_mib, seed=200 + i)
    image = workdir / "lab.img"
    image.unlink(missing_ok=True)
    with PxeLab(tftp_src, workdir, http=http) as lab:
        lab_default(lab.tftp, lab.http_url if http else None)
        master = lab.add_node("master", "virtio-net-pci", "virtio", master_disk)
        # BIOS receivers, two NIC models and disk buses
        kinds = [("virtio-net-pci", "virtio"), ("e1000", "sata")]
        nodes = [lab.add_node(f"rcv{i + 1}", *kinds[i % len(kinds)], disk)
                 for i, disk in enumerate(disks)]
        node_config(lab.tftp, master.mac, {
            "umode": "snd", "compr": "zstd", "disk": master.guest_disk,
            "udpcparam": "--min-receivers 1 --max-wait 120"})
        for node in nodes:
            node_config(lab.tftp, node.mac, {"disk": node.guest_disk})
        result = CaptureResult(master, nodes, image, size_mib * MIB,
                               sum(length for _, length in used),
                               sum(len(v) for v in files.values()), data_zstd(files))
        # 1. capture: the server stores what the master sends
        server = lab.serve("capture", _herdcast("receive", "-f", str(image), "--store",
                                                "-i", "br0", "--no-progress"), cwd=ROOT)
        lab.boot(master)
        result.capture_s = _finish(lab, [master], server, timeout, show)
        result.capture_rc = server.poll()
        result.capture_log = (workdir / "capture.log").read_text(errors="replace")
        if result.capture_s is None or result.capture_rc != 0 or not image.exists():
            show("capture failed: not deploying")
            return result
        result.image_bytes = image.stat().st_size
        # 2. deploy: the master is off; the server sends the stored file
        server = lab.serve("deploy", _herdcast(
            "send", "-f", str(image), "-i", "br0", "--min-receivers", str(receivers),
            "--max-wait", "240", "--nokbd", "--no-progress"), cwd=ROOT)
        for node in nodes:
            lab.boot(node)
        result.deploy_s = _finish(lab, nodes, server, timeout, show)
        result.deploy_rc = server.poll()
        result.deploy_log = (workdir / "deploy.log").read_text(errors="replace")
    from agent.image.store import read_info

    result.info_lines = read_info(str(image)).lines()
    for node in nodes:
        result.bad_extents[node.name] = differing_extents(master_disk, node.disk, used)
        result.bad_files[node.name] = [
            name for name, content in files.items()
            if _read_back(node.disk, "/" + name) != content]
    return result


def _read_back(disk: Path, name: str) -> bytes | None:
    from builder.lab.vms import LabError

    try:
        return read_partition_file(disk, name)
    except LabError:
        return None
