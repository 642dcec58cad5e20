"""libvirt inside the PXE lab: Debian's libvirtd, started in the lab's network namespace, with
its own configuration and runtime directories, so the BMC emulators (sushy-tools' libvirt
driver, virtualbmc) drive real libvirt domains whose taps stay on the lab's bridge.

libvirtd run as root reads /etc/libvirt and keeps its state in /run/libvirt, /var/lib/libvirt,
/var/log/libvirt and /var/cache/libvirt; it has no option to move them. So it starts in the
mount namespace that `ip netns exec` gives it, where a tmpfs covers /run and the lab's own
directories are bound over the others: nothing of the machine's libvirt is read or written,
and every mount goes when libvirtd and its domains are gone. The lab's qemu.conf is what this
machine needs (no systemd, AppArmor or cgroup delegation): no security driver, no cgroups, no
private /dev, console files written by qemu itself. Clients reach it through its socket in
the lab's run directory (`uri`). close() destroys and undefines every domain, then stops
libvirtd by its PID, then any qemu of the lab's still alive (by the PIDs libvirt recorded).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

from builder.lab.context import LabContext
from builder.lab.vms import LAB_MTU, LabError

QEMU_CONF = """# herdcast's lab: no systemd, AppArmor or cgroup delegation on this machine
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
stdio_handler = "file"
user = "root"
group = "root"
"""
LIBVIRTD_CONF = """unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
log_outputs = "3:stderr"
"""
#: Where libvirtd keeps things -> the lab's own directory bound over it (under workdir).
BOUND = {"/etc/libvirt": "etc", "/run/libvirt": "run", "/var/lib/libvirt": "lib",
         "/var/log/libvirt": "log", "/var/cache/libvirt": "cache"}
START_TIMEOUT = 30.0


@dataclass
class Domain:
    """One lab machine defined in libvirt: its name, UUID, MAC, disk and serial console."""

    name: str
    uuid: str
    mac: str
    disk: Path | None
    console: Path

    def console_text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""


@dataclass
class Libvirtd(LabContext):
    """libvirtd in network namespace `namespace`, state under `workdir`; a context manager."""

    namespace: str
    workdir: Path
    bridge: str = "br0"
    mtu: int = LAB_MTU
    domains: list[Domain] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    _conn: object = None

    @property
    def socket(self) -> Path:
        return self.workdir / "run" / "libvirt-sock"

    @property
    def uri(self) -> str:
        """The URI a client (virsh, libvirt-python, the BMC emulators) reaches it by."""
        return f"qemu:///system?socket={self.socket}"

    def _setup(self) -> None:
        import libvirt

        self.workdir = Path(self.workdir).resolve()
        for sub in BOUND.values():
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        (self.workdir / "etc" / "qemu.conf").write_text(QEMU_CONF)
        (self.workdir / "etc" / "libvirtd.conf").write_text(LIBVIRTD_CONF)
        binds = "".join(f"mount --bind {shlex.quote(str(self.workdir / sub))} {target}\n"
                        for target, sub in BOUND.items())
        script = ("set -e\nmount -t tmpfs -o mode=0755 herdcast-lab-run /run\n"
                  "mkdir -p /run/libvirt\n" + binds +
                  f"exec libvirtd --pid-file {shlex.quote(str(self.workdir / 'run'))}"
                  "/libvirtd.pid\n")
        with open(self.workdir / "libvirtd.log", "w") as log:
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.namespace, "sh", "-c",
                                          script], stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        libvirt.registerErrorHandler(lambda *_: None, None)  # errors are raised, not printed
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise LabError(f"libvirtd exited ({self.proc.returncode}): see "
                               f"{self.workdir / 'libvirtd.log'}")
            if self.socket.exists():
                try:
                    self._conn = libvirt.open(self.uri)
                    return
                except libvirt.libvirtError:
                    pass
            if time.monotonic() > deadline:
                raise LabError(f"libvirtd did not answer within {START_TIMEOUT:g} s: see "
                               f"{self.workdir / 'libvirtd.log'}")
            time.sleep(0.2)

    @property
    def conn(self):
        """libvirt-python's connection to this libvirtd."""
        if self._conn is None:
            raise LabError("libvirtd is not running")
        return self._conn

    def define(self, name: str, mac: str, disk: Path | None, *, boot: tuple[str, ...] = ("hd",),
               link_up: bool = True, memory_mb: int = 512) -> Domain:
        """A powered-off machine: q35, SeaBIOS (iPXE's ROM on its NIC), one vCPU under TCG,
        a virtio NIC on the lab bridge (`link_up=False`: its cable pulled), a virtio disk,
        its serial console appended to workdir/NAME.console.log; `boot`: the firmware's
        boot order (libvirt's os/boot devices)."""
        dom = Domain(name, str(uuidlib.uuid4()), mac, Path(disk).resolve() if disk else None,
                     self.workdir / f"{name}.console.log")
        boots = "".join(f"<boot dev={quoteattr(b)}/>" for b in boot)
        disk_xml = "" if disk is None else (
            "<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
            f"<source file={quoteattr(str(dom.disk))}/><target dev='vda' bus='virtio'/></disk>")
        xml = f"""<domain type='qemu'>
  <name>{name}</name><uuid>{dom.uuid}</uuid>
  <memory unit='MiB'>{memory_mb}</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type>{boots}</os>
  <features><acpi/><apic/></features>
  <cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model></cpu>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <devices>
    {disk_xml}
    <interface type='bridge'><source bridge={quoteattr(self.bridge)}/>
      <mac address={quoteattr(mac)}/><model type='virtio'/><mtu size='{self.mtu}'/>
      <link state={quoteattr('up' if link_up else 'down')}/></interface>
    <serial type='file'><source path={quoteattr(str(dom.console))} append='on'/>
      <target port='0'/></serial>
    <video><model type='none'/></video>
    <controller type='usb' model='none'/><memballoon model='none'/>
  </devices>
</domain>"""
        self.conn.defineXML(xml)
        self.domains.append(dom)
        return dom

    def state(self, dom: Domain) -> str:
        """"running", "shut off", ... as libvirt says."""
        import libvirt

        names = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
                 libvirt.VIR_DOMAIN_PAUSED: "paused", libvirt.VIR_DOMAIN_SHUTDOWN:
                 "shutting down", libvirt.VIR_DOMAIN_CRASHED: "crashed"}
        code = self.conn.lookupByName(dom.name).state()[0]
        return names.get(code, f"state {code}")

    def start(self, dom: Domain) -> None:
        """Power the machine on (as a person at its button does)."""
        self.conn.lookupByName(dom.name).create()

    def _qemu_pids(self) -> list[int]:
        pids = []
        for pidfile in (self.workdir / "run" / "qemu").glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pids.append(int(pidfile.read_text().strip()))
        return pids

    def close(self) -> None:
        """Destroy and undefine every domain, stop libvirtd (by PID), then any qemu left."""
        qemus = self._qemu_pids()
        if self._conn is not None:
            for dom in self.domains:
                with contextlib.suppress(Exception):
                    handle = self._conn.lookupByName(dom.name)
                    if handle.isActive():
                        handle.destroy()
                    handle.undefine()
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for pid in qemus:  # a qemu libvirt could not destroy must not outlive the lab
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"/usr/bin/qemu"):
                    os.kill(pid, signal.SIGKILL)
