"""A virtual PXE lab on one machine: a namespace with a bridge, dnsmasq (DHCP + TFTP), a web
server over the same TFTP root, and qemu VMs that PXE-boot (or UEFI-HTTP-boot) the root
`make initrd` made.

Everything lives in a network namespace this module creates and deletes: the bridge, the
taps, dnsmasq and the VMs. Nothing reaches the machine's real interfaces. Used by the
end-to-end test (tests/test_pxe_lab.py), `make demo` (builder/lab/demo.py) and bench/pxe.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder.arch import ARM64
from builder.efi import BOOT_FILE as EFI_BOOT_FILE
from builder.efi import GRUB_FILE as EFI_GRUB_FILE
from builder.errors import BuildError
from builder.lab.context import LabContext

SUBNET = "10.99.0"  # inside the lab namespace only
BRIDGE_IP = f"{SUBNET}.1"
HTTP_PORT = 80
LAB_MTU = 9000  # jumbo frames on the lab LAN, announced by DHCP (option 26)


class LabError(BuildError):
    """The lab could not be set up; the message says which step and why."""


#: Per firmware kind: (OVMF code, OVMF variables template) from Debian's ovmf package
#: (qemu-efi-aarch64's AAVMF for arm64 nodes).
OVMF_DIR = Path("/usr/share/OVMF")
AAVMF_DIR = Path("/usr/share/AAVMF")
FIRMWARE = {
    "bios": None,  # SeaBIOS, qemu's default, with iPXE's PXE ROM on the NIC
    "uefi": ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"),
    # Secure Boot on, Microsoft's keys enrolled (what a PC ships with)
    "uefi-secure": ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd"),
    # the same, booting by UEFI HTTP Boot: OVMF's own HTTP client fetches shim by URL
    "uefi-http": ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd"),
    # an arm64 machine (qemu-system-aarch64 -M virt, TCG), UEFI PXE by AAVMF with Secure
    # Boot on and Microsoft's keys (DHCP client-arch 11: shimaa64.efi)
    "uefi-arm64": ("AAVMF_CODE.ms.fd", "AAVMF_VARS.ms.fd"),
}
#: Firmware kinds of arm64 machines: qemu-system-aarch64, AAVMF, a Cortex-A57.
ARM64_KINDS = ("uefi-arm64",)
#: x86 firmware kinds with Secure Boot on (SMM, a secure flash, OVMF's own NIC driver).
SECURE = ("uefi-secure", "uefi-http")


@dataclass
class Node:
    """One VM: its NIC model, disk bus and disk image, and its firmware."""

    name: str
    mac: str
    nic: str  # qemu device: virtio-net-pci | e1000 | vmxnet3 ...
    bus: str  # virtio | sata | nvme
    disk: Path
    firmware: str = "bios"  # a key of FIRMWARE
    # qemu blkdebug rules (write_eio_rules): the guest's disk fails as a bad drive does
    fault: Path | None = None
    proc: subprocess.Popen | None = None
    console: Path | None = None
    started: float = 0.0
    ended: float | None = None
    powering_off: float | None = None  # when its console said so (POWERING_OFF)

    def drive(self) -> str:
        """qemu -drive options naming the disk image (through blkdebug when `fault`)."""
        if self.fault is None:
            return f"file={self.disk},format=raw"
        return (f"format=raw,file.driver=blkdebug,file.config={self.fault},"
                f"file.image.driver=file,file.image.filename={self.disk}")

    @property
    def guest_disk(self) -> str:
        """The device name the guest kernel gives this disk."""
        return {"virtio": "/dev/vda", "nvme": "/dev/nvme0n1"}.get(self.bus, "/dev/sda")


#: The agent's last line before it powers a node off (pid1.power), and the seconds its qemu
#: then gets to exit before the lab ends it (PxeLab.wait)
POWERING_OFF, POWER_OFF_GRACE = "herdcast: powering off", 30.0

#: What the lab runs: VMs, DHCP+TFTP, namespaces, and the lab disks' file system tools.
TOOLS = ("qemu-system-x86_64", "dnsmasq", "ip", "mke2fs", "debugfs")


def check_tools() -> None:
    """Every program the lab needs is installed (before any disk is made)."""
    for tool in TOOLS:
        if not shutil.which(tool):
            raise LabError(f"{tool} is not installed", "run scripts/install-deps (as root)")


def write_eio_rules(path: Path, sector: int, event: str = "write_aio") -> Path:
    """qemu blkdebug rules: every write that covers 512-byte `sector` of the disk image fails
    with EIO (errno 5), for good (`once = off`), as a drive with a bad spot does. blkdebug's
    `write_aio` is the event the raw format driver raises for each guest write."""
    Path(path).write_text(f'[inject-error]\nevent = "{event}"\nerrno = "5"\n'
                          f'sector = "{sector}"\nonce = "off"\n')
    return Path(path)


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode:
        raise LabError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc


@dataclass
class PxeLab(LabContext):
    """The lab; use as a context manager. `tftp_src` is a built tftpboot directory."""

    tftp_src: Path
    workdir: Path
    name: str = ""
    memory_mb: int = 512
    http: bool = True  # also serve the TFTP root over HTTP (see http_url)
    mtu: int = LAB_MTU
    # qemu's default TCG model. `max` advertises ERMS and AVX2, so the guest's kernel and
    # libc copy with `rep movsb` and hash with AVX2 code, which TCG emulates far slower than
    # plain x86-64: a TCG receiver took 64 MiB at 8 MB/s with `max`, 17 MB/s with qemu64.
    # With RDRAND, as every x86-64 server since 2012 has: Debian's kernel trusts it
    # (RANDOM_TRUST_CPU) and its random pool is ready at boot. Without it the first read of
    # /dev/urandom (Python's hash seed, in the first instants of the agent) makes the
    # kernel gather jitter entropy for 256 timer ticks: 1.1-1.6 s per node no server pays.
    cpu: str = "qemu64,+rdrand"
    nodes: list[Node] = field(default_factory=list)
    servers: list[subprocess.Popen] = field(default_factory=list)
    _dnsmasq: subprocess.Popen | None = None
    _http: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.name = self.name or f"hcpxe{os.getpid() % 100000}"
        self.workdir = Path(self.workdir)
        self.tftp = self.workdir / "tftpboot"

    # -- set-up ----------------------------------------------------------------------------
    def _ns(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def _setup(self) -> None:
        check_tools()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.tftp.exists():
            shutil.rmtree(self.tftp)
        shutil.copytree(self.tftp_src, self.tftp)
        _sh("ip", "netns", "add", self.name)
        _sh("ip", "-n", self.name, "link", "set", "lo", "up")
        _sh("ip", "-n", self.name, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", self.name, "link", "set", "br0", "mtu", str(self.mtu))
        _sh("ip", "-n", self.name, "addr", "add", f"{BRIDGE_IP}/24", "brd", "+", "dev", "br0")
        # An IPv6 prefix with router advertisements stops iPXE waiting ~14 s for them.
        _sh("ip", "-n", self.name, "addr", "add", "fd00:88::254/64", "dev", "br0", "nodad")
        _sh("ip", "-n", self.name, "link", "set", "br0", "up")
        argv = self._ns(
            "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
            "--interface=br0", "--bind-interfaces",
            f"--dhcp-range={SUBNET}.100,{SUBNET}.200,255.255.255.0,1h",
            # client architecture (DHCP option 93): 7 and 9 are x86-64 UEFI. iPXE's EFI ROM
            # (option 175) gets GRUB itself: shim cannot fetch GRUB through iPXE, and iPXE
            # runs only with Secure Boot off (when it is on, the firmware refuses GRUB from
            # iPXE and falls back to its own PXE, which gets shim).
            "--dhcp-match=set:efi-x86_64,option:client-arch,7",
            "--dhcp-match=set:efi-x86_64,option:client-arch,9",
            "--dhcp-match=set:ipxe,175",
            f"--dhcp-boot=tag:efi-x86_64,tag:!ipxe,{EFI_BOOT_FILE}",
            f"--dhcp-boot=tag:efi-x86_64,tag:ipxe,{EFI_GRUB_FILE}",
            # 11: arm64 UEFI, which boots arm64's shim (and its GRUB, kernel and initrd)
            *[f"--dhcp-match=set:efi-arm64,option:client-arch,{n}" for n in ARM64.client_arch],
            f"--dhcp-boot=tag:efi-arm64,{ARM64.shim_file}",
            # UEFI HTTP Boot (option 93 = 16, vendor class HTTPClient): the boot file is a
            # URL, and the answer must say HTTPClient too or the firmware ignores it
            "--dhcp-match=set:efi-http,option:client-arch,16",
            f"--dhcp-boot=tag:efi-http,http://{BRIDGE_IP}/{EFI_BOOT_FILE}",
            "--dhcp-option-force=tag:efi-http,60,HTTPClient",
            "--dhcp-boot=tag:!efi-x86_64,tag:!efi-http,tag:!efi-arm64,pxelinux.0",
            "--enable-tftp", f"--tftp-root={self.tftp}",
            f"--dhcp-leasefile={self.workdir / 'leases'}",
            "--enable-ra", "--dhcp-range=::,constructor:br0,ra-only",
            "--dhcp-option=encap:175,176,1b", f"--dhcp-option=option:mtu,{self.mtu}",
            "--log-dhcp",
        )
        with open(self.workdir / "dnsmasq.log", "w") as log:
            self._dnsmasq = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        if self.http:
            argv = self._ns(sys.executable, "-m", "http.server", str(HTTP_PORT),
                            "--bind", BRIDGE_IP, "--directory", str(self.tftp))
            with open(self.workdir / "http.log", "w") as log:
                self._http = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(0.3)
        if self._dnsmasq.poll() is not None:
            raise LabError(f"dnsmasq exited: see {self.workdir / 'dnsmasq.log'}")
        if self._http is not None and self._http.poll() is not None:
            raise LabError(f"the web server exited: see {self.workdir / 'http.log'}")

    @property
    def http_url(self) -> str:
        """Where the VMs find the TFTP root over HTTP (for `make initrd --http-url`)."""
        if not self.http:
            raise LabError("this lab serves no HTTP (http=False)")
        return f"http://{BRIDGE_IP}:{HTTP_PORT}"

    def tftp_sent(self) -> list[str]:
        """Every file dnsmasq sent over TFTP so far (absolute paths), in order."""
        log = self.workdir / "dnsmasq.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return re.findall(r"dnsmasq-tftp(?:\[\d+\])?: sent (\S+) to ", text)

    # -- nodes -------------------------------------------------------------------------------
    def add_node(self, name: str, nic: str, bus: str, disk: Path,
                 firmware: str = "bios", fault: Path | None = None) -> Node:
        """Declare a VM; its MAC is derived from its index (52:54:00:99:00:NN). `fault`:
        blkdebug rules its disk runs through (write_eio_rules)."""
        if firmware not in FIRMWARE:
            raise LabError(f"firmware {firmware!r}: expected one of {', '.join(FIRMWARE)}")
        mac = f"52:54:00:99:00:{len(self.nodes) + 1:02x}"
        node = Node(name, mac, nic, bus, Path(disk), firmware, fault)
        self.nodes.append(node)
        return node

    def _firmware_args(self, node: Node) -> tuple[list[str], str]:
        """(qemu arguments, NIC device options) for the node's firmware. UEFI: OVMF's code
        read-only and a writable copy of its variables per VM. Secure Boot also needs SMM
        and a secure flash. The NIC keeps qemu's iPXE ROM (efi-e1000.rom, efi-virtio.rom:
        BIOS and EFI iPXE in one), except a Secure Boot node on virtio-net, which boots
        OVMF's own virtio-net driver and PXE (romfile= leaves iPXE out) as Secure Boot
        hardware boots its vendor's signed UEFI driver. The firmware refuses GRUB from
        unsigned iPXE under Secure Boot and falls back to its own PXE (and shim), which
        works but costs ~10 s; an e1000 has no OVMF driver, so it has no other way.
        `uefi-http` is `uefi-secure` without PXE boot options (OVMF's fw_cfg knobs), so its
        NIC's first boot option is OVMF's UEFI HTTPv4 (HttpBootDxe): UEFI HTTP Boot."""
        kind = FIRMWARE[node.firmware]
        if kind is None:
            return ["-machine", "q35", "-boot", "n"], ""
        code, template = kind
        arm = node.firmware in ARM64_KINDS
        where = AAVMF_DIR if arm else OVMF_DIR
        for name in kind:
            if not (where / name).is_file():
                raise LabError(f"{where / name} missing", "run scripts/install-deps "
                               "(Debian's ovmf and qemu-efi-aarch64 packages)")
        varstore = self.workdir / f"{node.name}.vars.fd"
        shutil.copyfile(where / template, varstore)
        args = ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={where / code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={varstore}"]
        if arm:  # AAVMF's own virtio-net driver and PXE (qemu's iPXE ROMs are x86 code)
            return ["-machine", "virt", "-cpu", "cortex-a57", *args], ",bootindex=1,romfile="
        if node.firmware == "uefi-http":
            # no PXE boot options: OVMF's first network option is then HTTPv4
            args += ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=n",
                     "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=n"]
        if node.firmware in SECURE:
            args = ["-machine", "q35,smm=on", "-global",
                    "driver=cfi.pflash01,property=secure,value=on", *args]
        else:
            args = ["-machine", "q35", *args]
        own_driver = node.firmware in SECURE and node.nic.startswith("virtio")
        nic = ",bootindex=1" + (",romfile=" if own_driver else "")
        return args, nic

    def boot(self, node: Node) -> None:
        """Power the VM on: PXE boot from its NIC, console to a log file."""
        tap = f"tap{self.nodes.index(node)}"
        _sh("ip", "-n", self.name, "tuntap", "add", tap, "mode", "tap")
        _sh("ip", "-n", self.name, "link", "set", tap, "mtu", str(self.mtu), "master", "br0",
            "up")
        node.console = self.workdir / f"{node.name}.console.log"
        # a console kept from the last run (build/demo/) must not be read as this one's
        node.console.unlink(missing_ok=True)
        if node.bus == "virtio":
            disk = ["-drive", f"{node.drive()},if=virtio"]  # virtio-blk-pci, also on virt
        elif node.bus == "nvme":
            disk = ["-drive", f"{node.drive()},if=none,id=d0",
                    "-device", "nvme,drive=d0,serial=herdcast0"]
        else:
            disk = ["-drive", f"{node.drive()},if=none,id=d0",
                    "-device", "ide-hd,drive=d0,bus=ide.0"]
        firmware, nic_opts = self._firmware_args(node)
        if node.firmware in ARM64_KINDS:
            qemu = ["qemu-system-aarch64", "-accel", "tcg"]
            if not shutil.which(qemu[0]):
                raise LabError(f"{qemu[0]} is not installed",
                               "run scripts/install-deps (qemu-system-arm)")
        else:
            qemu = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", self.cpu]
        argv = self._ns(
            *qemu, *firmware,
            "-m", str(self.memory_mb), "-smp", "1", "-nographic", "-no-reboot",
            "-serial", f"file:{node.console}", "-monitor", "none",
            "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
            "-device", f"{node.nic},netdev=n0,mac={node.mac}{nic_opts}",
            *disk,
        )
        node.started = time.monotonic()
        with open(self.workdir / f"{node.name}.qemu.log", "w") as qemu_log:
            node.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=qemu_log)

    def serve(self, name: str, argv: list[str], cwd: Path | None = None) -> subprocess.Popen:
        """Run a program on the lab's server (the namespace, where the bridge's address
        BRIDGE_IP is), e.g. `herdcast receive -f FILE`; its output goes to
        workdir/NAME.log. close() stops it if it is still running."""
        with open(self.workdir / f"{name}.log", "w") as log:
            proc = subprocess.Popen(self._ns(*argv), cwd=cwd, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT)
        self.servers.append(proc)
        return proc

    def wait(self, timeout: float, on_tick=None) -> bool:
        """Wait until every VM is off (qemu exits, -no-reboot); False on timeout. `on_tick(lab)`
        is called about once a second, e.g. to show progress."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = 0
            for node in self.nodes:
                if node.proc is None:
                    continue
                if node.proc.poll() is None and not self._stuck_in_power_off(node):
                    running += 1
                elif node.ended is None:
                    node.ended = time.monotonic()
            if on_tick:
                on_tick(self)
            if not running:
                return True
            time.sleep(1)
        return False

    def _stuck_in_power_off(self, node: Node) -> bool:
        """True once the node's qemu is still running POWER_OFF_GRACE s after herdcast said
        "powering off", and is then ended: under TCG, OVMF with SMM (Secure Boot) can hang
        entering ACPI S5 after a good clone. It counts as off from that line (`ended`)."""
        if node.powering_off is None:
            node.powering_off = time.monotonic() if POWERING_OFF in console_text(node) else None
            return False
        if time.monotonic() - node.powering_off < POWER_OFF_GRACE:
            return False
        node.proc.kill()
        node.proc.wait(timeout=10)
        node.ended = node.powering_off
        return True

    def close(self) -> None:
        """Stop every VM and dnsmasq this lab started, then delete the namespace."""
        procs = [n.proc for n in self.nodes if n.proc] + self.servers
        procs += [p for p in (self._dnsmasq, self._http) if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        _sh("ip", "netns", "delete", self.name, check=False)


def http_fetched(workdir: Path) -> list[tuple[str, str]]:
    """(client address, path) of every file the lab's web server sent (GET, 200), in order;
    from its log in `workdir`, so it can be read after the lab is closed."""
    log = Path(workdir) / "http.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return re.findall(r'^(\S+) - - \[[^]]*\] "GET (\S+) HTTP/[\d.]+" 200 ', text, re.M)


def tftp_clients(workdir: Path) -> list[tuple[str, str]]:
    """(client address, path) of every file dnsmasq sent over TFTP, from its log."""
    log = Path(workdir) / "dnsmasq.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return [(ip, path) for path, ip in
            re.findall(r"dnsmasq-tftp(?:\[\d+\])?: sent (\S+) to (\S+)", text)]


def leased(workdir: Path) -> dict[str, str]:
    """MAC -> the address dnsmasq leased it, from the lab's lease file."""
    leases = Path(workdir) / "leases"
    text = leases.read_text() if leases.exists() else ""
    return {f[1]: f[2] for f in (line.split() for line in text.splitlines()) if len(f) > 2}


def console_text(node: Node) -> str:
    """What the node printed on its serial console so far."""
    if node.console is None or not node.console.exists():
        return ""
    return node.console.read_text(errors="replace")
