"""`herdcast deploy` on real machines: the loop from power-on to each node's new system.

The PXE lab (builder/lab/vms.py: namespace, bridge, dnsmasq, the TFTP root `make initrd`
made, served over HTTP too) with Debian's libvirtd inside its namespace (builder/lab/virt.py)
holding four powered-off machines, and the BMCs a fleet has:

- node-redfish behind sushy-tools' Redfish emulator (its libvirt driver, basic auth);
- node-ipmi behind virtualbmc (IPMI over LAN);
- node-wol with neither: its boot order is the network, then its disk (as an admin sets a
  machine without a BMC), and it wakes on a magic packet (builder.lab.bmcs wol);
- node-unplugged behind the same Redfish emulator, its NIC's cable pulled: the BMC answers,
  the machine powers on, it never PXE-boots.

The master disk is builder/lab/bootdisk.py's tiny bootable system; the three others start
as junk. `herdcast deploy` runs on the lab's server with an inventory of the four (every
node `disk=/dev/vda`, the BMC password in a file only root reads): it arms each, sets PXE
once and powers it on, serves the master disk, disarms each node as its digest agrees; each
node reboots (post=reboot), its per-MAC file sends it to its own disk, and the cloned tiny
system prints TINY_MARKER and its /etc/hostname, then powers off. node-unplugged is reported
as never connected, so the deploy exits 1. Used by tests/test_pxe_deploy.py and `make
demo-deploy` (`python -m builder demo --deploy`).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder.lab.bmcs import htpasswd, sushy_libvirt_config
from builder.lab.bootdisk import HOSTNAME_LINE, TINY_MARKER, make_boot_disk
from builder.lab.disks import make_junk_disk
from builder.lab.tftp import ROOT, lab_default
from builder.lab.virt import Domain, Libvirtd
from builder.lab.vms import LabError, PxeLab, check_tools

#: (name, power: redfish | ipmi | wol, NIC cable plugged)
FLEET = (
    ("node-redfish", "redfish", True),
    ("node-ipmi", "ipmi", True),
    ("node-wol", "wol", True),
    ("node-unplugged", "redfish", False),
)
BMC_USER = "admin"
BMC_PASSWORD = "lab-bmc-pw-7f3c"  # a test looks for it in every output: it must not appear
REDFISH = ("127.0.0.1", 8000)  # the BMCs listen on the lab server's loopback
IPMI = ("127.0.0.1", 6230)
DISK_MIB = 32
_HOSTNAME = re.compile(re.escape(HOSTNAME_LINE) + r" (\S*)")
_STATUS = re.compile(r"herdcast[^\n]*", re.IGNORECASE)


@dataclass
class DeployRun:
    """What a deploy lab run leaves: the command's exit, output and report, each machine's
    console and its libvirt state at the end."""

    status: int | None
    output: str
    report: dict | None
    domains: list[Domain]
    states: dict[str, str]
    seconds: float
    logs: dict[str, str] = field(default_factory=dict)  # the BMC emulators' output

    def console(self, name: str) -> str:
        return next(d for d in self.domains if d.name == name).console_text()

    def booted_hostname(self, name: str) -> str | None:
        """The /etc/hostname the cloned system printed, or None when it did not boot."""
        text = self.console(name)
        if TINY_MARKER not in text:
            return None
        found = _HOSTNAME.findall(text)
        return found[-1] if found else ""


def _wait_for(path: Path, text: str, proc, timeout: float = 30) -> None:
    """Until a lab server's log says `text` (it is listening)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        said = path.read_text(errors="replace") if path.exists() else ""
        if text in said:
            return
        if proc.poll() is not None:
            raise LabError(f"{path.stem} exited: {said[-1500:]}")
        time.sleep(0.2)
    raise LabError(f"{path.stem} did not start within {timeout:g} s: see {path}")


def _inventory(domains: dict[str, Domain], powers: dict[str, str], pwfile: Path) -> str:
    blocks = []
    for name, dom in domains.items():
        lines = ["[[node]]", f'name = "{name}"', f'mac = "{dom.mac}"']
        if powers[name] == "redfish":
            lines += [f'bmc = "redfish+http://{REDFISH[0]}:{REDFISH[1]}/redfish/v1/Systems/'
                      f'{dom.uuid}"']
        elif powers[name] == "ipmi":
            lines += [f'bmc = "ipmi://{IPMI[0]}:{IPMI[1]}"']
        if powers[name] != "wol":
            lines += [f'username = "{BMC_USER}"', f'password_file = "{pwfile}"']
        lines += ['disk = "/dev/vda"']
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def run_deploy_lab(tftp_src: Path, workdir: Path, wait: float = 150, timeout: float = 420,
                   show=print, kernel=None) -> DeployRun:
    """Run the scenario of the module docstring; returns when the deploy has ended and the
    three reachable machines have powered off (or `timeout` seconds after the start)."""
    from builder.config import default_cache
    from builder.kernel import debian_kernel

    check_tools()
    if not shutil.which("libvirtd") or not shutil.which("extlinux"):
        raise LabError("libvirtd or extlinux is not installed", "run scripts/install-deps "
                       "(libvirt-daemon-system, extlinux)")
    started = time.monotonic()
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    master = workdir / "master.img"
    make_boot_disk(master, kernel or debian_kernel(default_cache()), DISK_MIB)
    pwfile = workdir / "bmc.password"
    pwfile.write_text(BMC_PASSWORD + "\n")
    pwfile.chmod(0o600)
    report_path = workdir / "deploy.json"
    report_path.unlink(missing_ok=True)
    with PxeLab(tftp_src, workdir / "lab") as lab:
        lab_default(lab.tftp, lab.http_url)
        with Libvirtd(lab.name, workdir / "libvirt") as virt:
            domains: dict[str, Domain] = {}
            powers = {name: power for name, power, _ in FLEET}
            for i, (name, power, plugged) in enumerate(FLEET):
                disk = None
                if plugged:
                    disk = workdir / f"{name}.img"
                    make_junk_disk(disk, DISK_MIB, seed=40 + i)
                boot = ("network", "hd") if power == "wol" else ("hd",)
                domains[name] = virt.define(name, f"52:54:00:99:10:{i + 1:02x}", disk,
                                            boot=boot, link_up=plugged,
                                            memory_mb=512 if plugged else 96)
            _start_bmcs(lab, virt, domains, powers, pwfile, workdir)
            inventory = workdir / "fleet.toml"
            inventory.write_text(_inventory(domains, powers, pwfile))
            show(f"[{time.monotonic() - started:6.1f}s] lab up: libvirtd, sushy-emulator, "
                 "virtualbmc, Wake-on-LAN; herdcast deploy starts")
            deploy = lab.serve("deploy", [
                sys.executable, "-m", "agent", "deploy", str(master),
                "--inventory", str(inventory), "--tftp-root", str(lab.tftp),
                "--wait", f"{wait:g}", "--interface", "br0", "--report", str(report_path)],
                cwd=ROOT)
            reachable = [domains[name] for name, _, plugged in FLEET if plugged]
            last: dict[str, str] = {}
            deadline = started + timeout
            while time.monotonic() < deadline:
                states = {d.name: virt.state(d) for d in domains.values()}
                for dom in domains.values():
                    lines = _STATUS.findall(dom.console_text())
                    line = lines[-1].strip()[:90] if lines else ""
                    line = f"{states[dom.name]:9} {line}"
                    if last.get(dom.name) != line:
                        last[dom.name] = line
                        show(f"[{time.monotonic() - started:6.1f}s] {dom.name:15} {line}")
                if deploy.poll() is not None and all(
                        states[d.name] == "shut off" and TINY_MARKER in d.console_text()
                        for d in reachable):
                    break
                time.sleep(1)
            status = deploy.poll()
            if status is None:
                show(f"timeout: the deploy and its nodes were not done within {timeout:g} s")
            states = {d.name: virt.state(d) for d in domains.values()}
        logs = {p.stem: p.read_text(errors="replace")
                for p in (lab.workdir / n for n in ("sushy.log", "vbmc.log", "wol.log"))
                if p.exists()}
    output = (lab.workdir / "deploy.log").read_text(errors="replace")
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    return DeployRun(status, output, report, list(domains.values()), states,
                     time.monotonic() - started, logs)


def _start_bmcs(lab: PxeLab, virt: Libvirtd, domains: dict[str, Domain],
                powers: dict[str, str], pwfile: Path, workdir: Path) -> None:
    """sushy-emulator for the Redfish nodes, one virtualbmc per IPMI node, the WoL NIC."""
    auth = workdir / "htpasswd"
    htpasswd(auth, BMC_USER, BMC_PASSWORD)
    config = workdir / "sushy.conf"
    sushy_libvirt_config(config, virt.uri, auth,
                         [d.uuid for n, d in domains.items() if powers[n] == "redfish"],
                         workdir / "sushy-state")
    waits = [(lab.serve("sushy", [
        sys.executable, "-c", "import sys; from sushy_tools.emulator.main import main; "
        "sys.exit(main())", "--config", str(config), "-i", REDFISH[0], "-p", str(REDFISH[1])]),
        "sushy", "Running on")]
    for name in (n for n in domains if powers[n] == "ipmi"):
        waits.append((lab.serve("vbmc", [
            sys.executable, "-m", "builder.lab.bmcs", "vbmc", name, "--address", IPMI[0],
            "--port", str(IPMI[1]), "--username", BMC_USER, "--password-file", str(pwfile),
            "--libvirt-uri", virt.uri], cwd=ROOT), "vbmc", "vbmc:"))
    wol = [f"{d.mac}={n}" for n, d in domains.items() if powers[n] == "wol"]
    if wol:
        waits.append((lab.serve("wol", [
            sys.executable, "-m", "builder.lab.bmcs", "wol", *wol, "--interface", "br0",
            "--libvirt-uri", virt.uri], cwd=ROOT), "wol", "wol: watching"))
    for proc, name, text in waits:
        _wait_for(lab.workdir / f"{name}.log", text, proc)
