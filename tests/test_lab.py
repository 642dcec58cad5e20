"""builder.lab.vms without VMs: what a boot asks of `ip` and qemu (the real lab runs in
test_pxe_lab.py)."""

from __future__ import annotations

from pathlib import Path

from builder.lab import vms as labmod
from builder.lab.vms import PxeLab


class _Proc:
    def poll(self):
        return 0


def test_boot_starts_from_a_fresh_console_on_the_jumbo_lan(tmp_path, monkeypatch):
    commands: list[tuple[str, ...]] = []
    started: list[list[str]] = []
    monkeypatch.setattr(labmod, "_sh", lambda *argv, check=True: commands.append(argv))
    monkeypatch.setattr(labmod.subprocess, "Popen",
                        lambda argv, **kw: started.append(argv) or _Proc())
    lab = PxeLab(Path("unused"), tmp_path, name="hctest")
    node = lab.add_node("rcv", "e1000", "sata", tmp_path / "disk.img")
    stale = tmp_path / "rcv.console.log"
    stale.write_text("herdcast: receiving /dev/sda (last run)\n")
    lab.boot(node)
    # the last run's console would otherwise count as this run's progress
    assert not stale.exists() and node.console == stale
    assert ("ip", "-n", "hctest", "link", "set", "tap0", "mtu", "9000", "master", "br0",
            "up") in commands
    (argv,) = started
    assert argv[argv.index("-cpu") + 1] == "qemu64,+rdrand"
    assert f"e1000,netdev=n0,mac={node.mac}" in argv


def test_first_data_is_when_data_flows_not_when_a_node_starts_waiting():
    from builder.lab.demo import _FIRST_DATA

    waiting = ["herdcast: receiving /dev/sda on port 9000", "herdcast: sending /dev/vda on port "
               "9000", "Connected as #1 to 10.99.0.168", "Listening to multicast on 233.255.0.1"]
    assert not any(_FIRST_DATA.search(line) for line in waiting)
    assert _FIRST_DATA.search("herdcast send: starting (3 receiver(s) connected): 3 receivers")
    assert _FIRST_DATA.search("Transfer started: first data from the sender")
    assert _FIRST_DATA.search("herdcast send: chunk carousel to 233.255.0.168: 11 chunks")
    assert _FIRST_DATA.search("Connected to 10.99.0.168: chunk carousel")


def _boot(tmp_path, monkeypatch, firmware: str, nic: str) -> list[str]:
    started: list[list[str]] = []
    monkeypatch.setattr(labmod, "_sh", lambda *argv, check=True: None)
    monkeypatch.setattr(labmod.subprocess, "Popen",
                        lambda argv, **kw: started.append(argv) or _Proc())
    lab = PxeLab(Path("unused"), tmp_path, name="hctest")
    node = lab.add_node("n", nic, "sata", tmp_path / "disk.img", firmware=firmware)
    lab.boot(node)
    (argv,) = started
    return argv


def test_a_secure_boot_vm_has_ovmf_secboot_smm_and_its_own_variables(tmp_path, monkeypatch):
    argv = _boot(tmp_path, monkeypatch, "uefi-secure", "virtio-net-pci")
    assert argv[argv.index("-machine") + 1] == "q35,smm=on"
    assert "driver=cfi.pflash01,property=secure,value=on" in argv
    flash = [a for a in argv if a.startswith("if=pflash")]
    assert flash[0].endswith("readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
    varstore = tmp_path / "n.vars.fd"
    assert flash[1].endswith(f"file={varstore}")
    assert varstore.read_bytes() == (labmod.OVMF_DIR / "OVMF_VARS_4M.ms.fd").read_bytes()
    # OVMF's own virtio-net driver and PXE, not iPXE's unsigned EFI ROM
    assert any(a.endswith(",bootindex=1,romfile=") for a in argv)


def test_a_uefi_vm_keeps_ipxe_and_a_bios_vm_is_unchanged(tmp_path, monkeypatch):
    argv = _boot(tmp_path, monkeypatch, "uefi", "e1000")
    assert "file=/usr/share/OVMF/OVMF_CODE_4M.fd" in " ".join(argv)
    assert argv[argv.index("-machine") + 1] == "q35" and "romfile=" not in " ".join(argv)
    (tmp_path / "b").mkdir()
    bios = _boot(tmp_path / "b", monkeypatch, "bios", "e1000")
    assert "-boot" in bios and not [a for a in bios if "pflash" in a]


def test_unknown_firmware_is_refused(tmp_path):
    import pytest

    with pytest.raises(labmod.LabError, match="firmware"):
        PxeLab(Path("unused"), tmp_path).add_node("n", "e1000", "sata", tmp_path / "d",
                                                  firmware="coreboot")


def test_dnsmasq_hands_each_client_architecture_its_boot_file(tmp_path, monkeypatch):
    started: list[list[str]] = []
    monkeypatch.setattr(labmod, "_sh", lambda *argv, check=True: None)
    monkeypatch.setattr(labmod.subprocess, "Popen",
                        lambda argv, **kw: started.append(argv) or _RunningProc())
    monkeypatch.setattr(labmod.time, "sleep", lambda s: None)
    src = tmp_path / "src"
    src.mkdir()
    with PxeLab(src, tmp_path / "lab", name="hctest", http=False):
        pass
    dnsmasq = next(a for a in started if "dnsmasq" in a)
    assert "--dhcp-match=set:efi-x86_64,option:client-arch,7" in dnsmasq
    assert "--dhcp-match=set:efi-x86_64,option:client-arch,9" in dnsmasq
    assert "--dhcp-boot=tag:efi-x86_64,tag:!ipxe,shimx64.efi" in dnsmasq
    assert "--dhcp-boot=tag:efi-x86_64,tag:ipxe,grubx64.efi" in dnsmasq
    assert "--dhcp-match=set:efi-http,option:client-arch,16" in dnsmasq
    assert "--dhcp-boot=tag:efi-http,http://10.99.0.1/shimx64.efi" in dnsmasq
    assert "--dhcp-option-force=tag:efi-http,60,HTTPClient" in dnsmasq
    assert "--dhcp-match=set:efi-arm64,option:client-arch,11" in dnsmasq
    assert "--dhcp-boot=tag:efi-arm64,shimaa64.efi" in dnsmasq
    assert "--dhcp-boot=tag:!efi-x86_64,tag:!efi-http,tag:!efi-arm64,pxelinux.0" in dnsmasq


class _RunningProc:
    def poll(self):
        return None

    def send_signal(self, sig):
        pass

    def wait(self, timeout=None):
        return 0


def test_the_demo_defaults_point_into_the_repository():
    from builder.lab import demo

    assert (demo.ROOT / "builder" / "lab" / "demo.py").is_file()


def test_a_faulty_disk_runs_through_blkdebug_and_a_sound_one_does_not(tmp_path, monkeypatch):
    from builder.lab.vms import write_eio_rules

    rules = write_eio_rules(tmp_path / "eio.cfg", 16384)
    text = rules.read_text()
    assert '[inject-error]' in text and 'event = "write_aio"' in text
    assert 'errno = "5"' in text and 'sector = "16384"' in text and 'once = "off"' in text
    started: list[list[str]] = []
    monkeypatch.setattr(labmod, "_sh", lambda *argv, check=True: None)
    monkeypatch.setattr(labmod.subprocess, "Popen",
                        lambda argv, **kw: started.append(argv) or _Proc())
    lab = PxeLab(Path("unused"), tmp_path, name="hctest")
    bad = lab.add_node("bad", "e1000", "virtio", tmp_path / "bad.img", fault=rules)
    good = lab.add_node("good", "e1000", "nvme", tmp_path / "good.img")
    lab.boot(bad)
    lab.boot(good)
    drives = [[a for i, a in enumerate(argv) if i and argv[i - 1] == "-drive"]
              for argv in started]
    assert drives[0] == [f"format=raw,file.driver=blkdebug,file.config={rules},"
                         f"file.image.driver=file,file.image.filename={tmp_path / 'bad.img'}"
                         ",if=virtio"]
    assert drives[1] == [f"file={tmp_path / 'good.img'},format=raw,if=none,id=d0"]


def test_the_table_shows_the_bytes_on_the_wire_from_the_result_line():
    from builder.lab.demo import _WIRE

    assert _WIRE.search("herdcast: SUCCESS: sent 32819272 bytes in 4.1 s").group(1) \
        == "32819272"
    assert _WIRE.search("herdcast: SUCCESS: received 5487528 bytes in 3.1 s").group(1) \
        == "5487528"
    assert not _WIRE.search("herdcast: FAILED: receive: ... after 16777216 bytes")


def test_the_lab_nic_wakes_only_on_a_magic_packet_naming_its_mac():
    """builder.lab.bmcs wol finds deploy's magic packet (agent.deploy.bmc) inside a whole
    Ethernet frame, and nothing else wakes a domain."""
    from agent.deploy.bmc import magic_packet
    from builder.lab.bmcs import woken

    macs = {bytes.fromhex("525400991003"): "node-wol"}
    header = bytes(14) + bytes(28)  # Ethernet, then IPv4 + UDP headers: any bytes
    frame = header + magic_packet("52:54:00:99:10:03")
    assert woken(frame, macs) == "node-wol"
    assert woken(header + b"\xff" * 12 + magic_packet("52:54:00:99:10:03"), macs) == "node-wol"
    assert woken(header + magic_packet("52:54:00:99:10:04"), macs) is None
    assert woken(frame[:-6], macs) is None  # fifteen copies are not a magic packet


def test_a_vm_stuck_after_herdcast_powered_it_off_is_ended_and_counts_as_off(tmp_path,
                                                                              monkeypatch):
    import subprocess

    monkeypatch.setattr(labmod, "POWER_OFF_GRACE", 0.5)
    lab = PxeLab(Path("unused"), tmp_path, name="hctest")
    stuck = lab.add_node("stuck", "e1000", "sata", tmp_path / "a.img")
    working = lab.add_node("working", "e1000", "sata", tmp_path / "b.img")
    for node, said in ((stuck, "herdcast: SUCCESS\nherdcast: powering off\n"),
                       (working, "herdcast: receiving /dev/sda\n")):
        node.console = tmp_path / f"{node.name}.console.log"
        node.console.write_text(said)
        node.proc = subprocess.Popen(["sleep", "60"])  # a qemu that never exits
    try:
        # a node still at work keeps the lab waiting; the stuck one is ended after the grace
        assert not lab.wait(3)
        assert stuck.proc.returncode is not None and stuck.ended == stuck.powering_off
        assert working.proc.poll() is None and working.ended is None
        working.console.write_text("herdcast: SUCCESS\nherdcast: powering off\n")
        assert lab.wait(5)
    finally:
        for node in (stuck, working):
            node.proc.kill()
            node.proc.wait()
