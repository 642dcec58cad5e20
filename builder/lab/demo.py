"""`make demo`: the whole mission on one machine, for a person to watch.

Four VMs PXE-boot the TFTP root `make initrd` made, one of each firmware kind a fleet has:
BIOS (SeaBIOS, iPXE, pxelinux), UEFI (OVMF, iPXE's EFI ROM, GRUB) and UEFI with Secure Boot
on (OVMF with Microsoft's keys: shim, Debian's signed GRUB and kernel). One sender, chosen
by its own `pxelinux.cfg/01-<mac>` (as the udpcast tutorial does it), whose disk holds an
MBR, an ext4 partition with known files and data after it (so it sends herdcast receivers
its used blocks: the partition table, what ext4 uses, the data after the partition); three
receivers with junk on their disks, mixing NIC models and disk buses so that
netmodule=AUTO and diskmodule=AUTO do real work. Every node has its own per-MAC file
(`python -m builder node`: pxelinux's and GRUB's twin) naming its disk. Every node powers
off at the end. The run shows each node's progress, ends with a table, keeps the consoles
in build/demo/ and removes its namespace. `--capture` runs builder/lab/capture.py instead:
a disk captured into an image file on the lab's server, then deployed from it. `--deploy`
(`make demo-deploy`) runs builder/lab/deploylab.py: `herdcast deploy` powering libvirt
machines on through Redfish, IPMI and Wake-on-LAN, imaging them, and each booting the
system it received from its own disk.
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder.initrd import MARKER
from builder.lab.disks import (
    make_junk_disk,
    make_sender_disk,
    read_partition_file,
    used_digest,
    used_extents,
)
from builder.lab.tftp import ROOT, lab_default, node_config
from builder.lab.vms import LAB_MTU, LabError, Node, PxeLab, check_tools, console_text
from builder.pxelinux import mac_file_name

GOLDEN_FILES = {
    "etc/hostname": b"golden-node\n",
    "etc/herdcast-demo.txt": b"cloned by herdcast\n" * 100,
}
# (name, NIC model, disk bus, role, firmware); every node gets its own 01-<mac>
FLEET = [
    ("sender", "virtio-net-pci", "virtio", "snd", "bios"),
    ("rcv-bios", "vmxnet3", "nvme", "rcv", "bios"),  # VMware's NIC, an NVMe disk
    ("rcv-uefi", "e1000", "virtio", "rcv", "uefi"),
    ("rcv-secure", "virtio-net-pci", "sata", "rcv", "uefi-secure"),
]
#: The BIOS lab (issue 22's boot-to-cloned figure): the sender and two BIOS receivers.
BIOS_FLEET = [
    ("sender", "virtio-net-pci", "virtio", "snd", "bios"),
    ("rcv-bios", "vmxnet3", "nvme", "rcv", "bios"),
    ("rcv-bios2", "e1000", "sata", "rcv", "bios"),
]
#: What the kernel logs about Secure Boot (arch/x86/kernel/setup.c), "enabled" or "disabled".
_SECURE_BOOT = re.compile(r"secureboot: Secure boot (enabled|disabled)")
# What the node agent prints; the demo shows the latest such line per node.
_STATUS = re.compile(r"herdcast[^\n]*", re.IGNORECASE)
# The moment data flows: the sender's start line, a receiver's first-data line; with the
# chunk carousel (which runs from its start line on) its start, and a receiver joining it.
_FIRST_DATA = re.compile(r"herdcast send: starting \(|Transfer started: first data|"
                         r"herdcast send: chunk carousel to |Connected to \S+: chunk carousel")
# The bytes that crossed the wire, from the node's result line (a used-block image, and
# compressed with compr=, is fewer than the disk's).
_WIRE = re.compile(r"herdcast: SUCCESS: (?:sent|received) (\d+) bytes")


@dataclass
class NodeResult:
    """One row of the final table."""

    node: Node
    seconds: float | None
    first_data: float | None
    sha256: str  # of the sender's used extents as this node's disk holds them
    ok: bool
    secure_boot: bool | None = None  # what the kernel said; None: it said nothing
    menu: str | None = None  # the node's own boot menu file it was served, if any
    kernel: float | None = None  # power-on to the kernel's first line
    agent: float | None = None  # power-on to the agent's start
    wire: int | None = None  # bytes on the wire, as the node's SUCCESS line says
    #: (seconds from power-on, line) for each console line, as the lab first saw it (to
    #: within the lab's polling, about a second)
    timeline: list[tuple[float, str]] = field(default_factory=list)


def prepare(workdir: Path, size_mib: int, nodes: list[tuple[str, str, str, str, str]] = FLEET
            ) -> list[tuple[str, str, str, str, str, Path]]:
    """Make the disk images; returns the fleet (`nodes`, the sender first) with each node's
    disk path."""
    workdir.mkdir(parents=True, exist_ok=True)
    fleet = []
    for i, (name, nic, bus, role, firmware) in enumerate(nodes):
        disk = workdir / f"{name}.img"
        if role == "snd":
            make_sender_disk(disk, size_mib, GOLDEN_FILES)
        else:
            make_junk_disk(disk, size_mib, seed=100 + i)
        fleet.append((name, nic, bus, role, firmware, disk))
    return fleet


def own_menu(node: Node, served: list[str]) -> str | None:
    """The node's per-MAC file among the TFTP files dnsmasq sent (pxelinux's for BIOS,
    GRUB's for UEFI), or None when it booted a default."""
    name = mac_file_name(node.mac)
    for path in served:
        if path.endswith((f"/pxelinux.cfg/{name}", f"/grub.cfg-{name}")):
            return path.split("/tftpboot/", 1)[-1]
    return None


def run_lab(tftp_src: Path, workdir: Path, size_mib: int = 64, timeout: float = 300,
            show=print, http: bool = True, mtu: int = LAB_MTU,
            nodes: list[tuple[str, str, str, str, str]] = FLEET, urls: bool | None = None
            ) -> list[NodeResult]:
    """Boot the fleet (`nodes`: FLEET's rows), wait for every node to power off, and compare
    the disks: each must hold the sender's used extents (what a used-block clone carries;
    the receivers' free space keeps its junk, blank=keep) byte for byte. `http`: a web
    server over the root, and (unless `urls` is False) the menus name kernel and initrd by
    URL (pxelinux.0 and its configs always come over TFTP; a UEFI HTTP Boot node reads
    everything from the web server either way); `mtu`: the lab LAN's, which DHCP hands the
    nodes (9000: jumbo frames, 8956-byte blocks)."""
    check_tools()
    fleet = prepare(workdir, size_mib, nodes)
    used = used_extents(fleet[0][-1])
    receivers = sum(1 for f in fleet if f[3] == "rcv")
    first_data: dict[str, float] = {}
    kernel_at: dict[str, float] = {}
    agent_at: dict[str, float] = {}
    timelines: dict[str, list[tuple[float, str]]] = {}
    with PxeLab(tftp_src, workdir, http=http, mtu=mtu) as lab:
        lab_default(lab.tftp, lab.http_url if http and urls is not False else None)
        vms = [lab.add_node(name, nic, bus, disk, firmware)
                 for name, nic, bus, _, firmware, disk in fleet]
        for node, (_, _, _, role, _, _) in zip(vms, fleet, strict=True):
            if role == "snd":
                node_config(lab.tftp, node.mac, {
                    "umode": "snd", "disk": node.guest_disk,
                    "udpcparam": f"--min-receivers {receivers} --max-wait 180"})
            else:
                node_config(lab.tftp, node.mac, {"disk": node.guest_disk})
        for node in vms:
            lab.boot(node)
        last: dict[str, str] = {}

        def tick(lab: PxeLab) -> None:
            for node in lab.nodes:
                text = console_text(node)
                now = time.monotonic() - node.started
                seen = timelines.setdefault(node.name, [])
                complete = text.splitlines()[:-1] if not text.endswith("\n") else \
                    text.splitlines()
                seen += [(now, line) for line in complete[len(seen):]]
                if node.name not in first_data and _FIRST_DATA.search(text):
                    first_data[node.name] = now
                if node.name not in kernel_at and "Linux version" in text:
                    kernel_at[node.name] = now
                if node.name not in agent_at and MARKER in text:
                    agent_at[node.name] = now
                lines = _STATUS.findall(text)
                line = lines[-1].strip()[:100] if lines else "booting"
                if node.ended is not None:
                    line = f"powered off ({line})"
                if last.get(node.name) != line:
                    last[node.name] = line
                    show(f"[{time.monotonic() - node.started:6.1f}s] {node.name:18} {line}")

        finished = lab.wait(timeout, on_tick=tick)
        if not finished:
            show(f"timeout: not every node powered off within {timeout:.0f} s")
        served = lab.tftp_sent()
    golden = used_digest(fleet[0][-1], used)
    results = []
    for node in vms:
        digest = used_digest(node.disk, used)
        seconds = node.ended - node.started if node.ended else None
        text = console_text(node)
        said = _SECURE_BOOT.search(text)
        wire = _WIRE.search(text)
        results.append(NodeResult(node, seconds, first_data.get(node.name), digest,
                                  digest == golden and seconds is not None,
                                  said.group(1) == "enabled" if said else None,
                                  own_menu(node, served), kernel_at.get(node.name),
                                  agent_at.get(node.name),
                                  int(wire.group(1)) if wire else None,
                                  timelines.get(node.name, [])))
    return results


def table(results: list[NodeResult], size_mib: int) -> str:
    """The final table: node, MAC, NIC model, disk bus, disk bytes, time, digest of the
    sender's used extents on this disk, OK."""
    rows = [("node", "firmware", "MAC", "NIC", "disk bus", "disk bytes", "on the wire", "time",
             "first data", "used sha256", "OK")]
    for r in results:
        firmware = r.node.firmware + (" (SB on)" if r.secure_boot else "")
        rows.append((r.node.name, firmware, r.node.mac, r.node.nic, r.node.bus,
                     str(size_mib * 1024 * 1024),
                     str(r.wire) if r.wire is not None else "-",
                     f"{r.seconds:.1f}s" if r.seconds is not None else "-",
                     f"{r.first_data:.1f}s" if r.first_data is not None else "-",
                     r.sha256[:16], "yes" if r.ok else "NO"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
                     for row in rows)


def main(argv: list[str] | None = None) -> int:
    """`python -m builder demo`."""
    p = argparse.ArgumentParser(prog="python -m builder demo", description=__doc__)
    p.add_argument("--tftpboot", type=Path, default=ROOT / "build" / "tftpboot")
    p.add_argument("--workdir", type=Path, default=ROOT / "build" / "demo")
    p.add_argument("--size-mib", type=int, default=64)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--tftp-only", action="store_true",
                   help="fetch the kernel and initrd over TFTP too, as without --http-url")
    p.add_argument("--mtu", type=int, default=LAB_MTU,
                   help="the lab LAN's MTU, handed out by DHCP (default: %(default)s, jumbo "
                   "frames; 1500 for plain Ethernet)")
    p.add_argument("--capture", action="store_true",
                   help="capture a node's disk into an image file on the lab's server, then "
                   "deploy that file to two receivers with the node off (issue 12)")
    p.add_argument("--deploy", action="store_true",
                   help="herdcast deploy: libvirt machines behind Redfish, IPMI and "
                   "Wake-on-LAN powered on, imaged and booted into their new system "
                   "(issue 19)")
    args = p.parse_args(argv)
    if not (args.tftpboot / "initrd.img").exists():
        raise LabError(f"{args.tftpboot}/initrd.img is missing", "run `make initrd` first")
    started = time.monotonic()
    if args.deploy:
        return _deploy(args, started)
    if args.capture:
        from builder.lab.capture import run_capture_deploy

        done = run_capture_deploy(args.tftpboot, args.workdir, size_mib=args.size_mib,
                                  timeout=args.timeout, http=not args.tftp_only)
        print()
        print("\n".join(done.summary()))
        print(f"total {time.monotonic() - started:.1f} s; consoles and server logs in "
              f"{args.workdir}")
        return 0 if done.ok else 1
    results = run_lab(args.tftpboot, args.workdir, args.size_mib, args.timeout,
                      http=not args.tftp_only, mtu=args.mtu)
    print()
    print(table(results, args.size_mib))
    if results[1].ok:
        hostname = read_partition_file(results[1].node.disk, "/etc/hostname")
        print(f"\n{results[1].node.name}: /etc/hostname on its ext4 partition reads "
              f"{hostname!r}")
    print(f"total {time.monotonic() - started:.1f} s; consoles in {args.workdir}")
    return 0 if all(r.ok for r in results) else 1


def _deploy(args, started: float) -> int:
    """`--deploy`: the deploy lab, its table and what each node booted. The demo succeeds
    when every reachable node booted its clone and the unplugged one was reported."""
    from builder.lab.deploylab import FLEET, run_deploy_lab

    run = run_deploy_lab(args.tftpboot, args.workdir / "deploy", timeout=args.timeout + 180)
    table = re.search(r"(?m)^node +mac .*", run.output, re.S)
    print()
    print(table.group(0) if table else run.output[-3000:])
    ok = True
    for name, power, plugged in FLEET:
        booted = run.booted_hostname(name)
        if plugged:
            ok &= booted is not None
            print(f"{name:15} ({power}): " + (f"booted its clone from its own disk, "
                  f"/etc/hostname {booted!r}" if booted is not None else "did NOT boot its "
                  "clone"))
        else:
            print(f"{name:15} ({power}, cable pulled): still armed, as the report says")
    print(f"total {time.monotonic() - started:.1f} s; consoles in {args.workdir / 'deploy'}"
          "/libvirt, the deploy's report in deploy.json")
    return 0 if ok and run.status == 1 else 1
