"""UEFI boot files: GRUB's twin of each pxelinux config, the per-MAC dispatcher, `builder
node`/`sync` writing both from one source, and the shim/GRUB/kernel signature checks."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from builder import bootcfg, efi, grub, pxelinux

ROOT = Path(__file__).resolve().parent.parent


def _entries(text: str) -> dict[str, list[str]]:
    """menuentry id -> its body lines, stripped."""
    out: dict[str, list[str]] = {}
    for m in re.finditer(r"^menuentry \S+ --id (\S+) \{\n(.*?)^\}", text, re.M | re.S):
        out[m.group(1)] = [line.strip() for line in m.group(2).splitlines()]
    return out


def test_the_default_becomes_the_same_menu_for_grub():
    text = grub.from_pxelinux(pxelinux.default_config(), "pxelinux.cfg/default")
    assert "set timeout=5" in text.splitlines() and "set default=receiver" in text.splitlines()
    entries = _entries(text)
    assert set(entries) == {"receiver", "sender"}
    (linux,) = [line for line in entries["receiver"] if line.startswith("linux ")]
    words = linux.split()
    assert words[1] == '"${hc_dir}/vmlinuz"'  # /vmlinuz on x86, /arm64/vmlinuz on arm64
    # the pxelinux APPEND words in order, initrd= left to GRUB's initrd command
    pxe = pxelinux.parse_menu(pxelinux.default_config()).booting()
    assert pxe is not None
    assert words[2:-2] == pxe.params and not any(w.startswith("initrd=") for w in words)
    assert words[-2:] == ["BOOTIF=01-$net_default_mac", "$hc_console"]  # IPAPPEND 2
    assert 'initrd "${hc_dir}/initrd.img"' in entries["receiver"]
    # arm64's GRUB (grubaa64.efi) takes its kernel from arm64/, with its serial console
    assert 'if [ "$grub_cpu" = arm64 ]; then' in text.splitlines()
    assert "    set hc_dir=/arm64" in text.splitlines()
    assert "    set hc_console=console=ttyAMA0,115200" in text.splitlines()
    assert "insmod http" not in text  # no URL, no HTTP


def test_values_with_blanks_reach_the_kernel_as_one_word():
    """pxelinux passes `udpcparam="a b"` to the kernel verbatim; GRUB gets the word the
    kernel makes of it, single-quoted (no $ expansion), and quotes it again itself."""
    text = pxelinux.node_config(pxelinux.default_config(), pxelinux.parse_assignments(
        ["udpcparam=--min-receivers 3 --max-wait 60", "umode=snd"]))
    linux = next(line for line in _entries(grub.from_pxelinux(text, "x"))["receiver"]
                 if line.startswith("linux "))
    assert "'udpcparam=--min-receivers 3 --max-wait 60'" in linux and "umode=snd" in linux
    assert grub.kernel_word('"k=a b"') == grub.kernel_word('k="a b"') == "k=a b"
    assert grub.quote("it's $x") == "'it'\\''s $x'" and grub.quote("plain=1,2") == "plain=1,2"


def test_http_url_on_port_80_is_tried_first_then_tftp():
    text = grub.from_pxelinux(pxelinux.default_config("http://10.0.0.1/herdcast"), "x")
    assert "insmod http" in text.splitlines()
    body = _entries(text)["receiver"]
    assert body[1].startswith('if linux "(http,10.0.0.1)/herdcast${hc_dir}/vmlinuz" auto=yes')
    assert body[1].endswith("; then")
    assert 'initrd "(http,10.0.0.1)/herdcast${hc_dir}/initrd.img"' in body
    assert body[body.index("else") + 2].startswith('linux "${hc_dir}/vmlinuz" auto=yes')
    assert 'initrd "${hc_dir}/initrd.img"' in body


def test_http_on_another_port_is_tftp_for_grub():
    """GRUB 2.06 speaks HTTP on port 80 only."""
    text = grub.from_pxelinux(pxelinux.default_config("http://10.0.0.1:8080/h"), "x")
    assert "http," not in text and 'linux "${hc_dir}/vmlinuz"' in text


@pytest.mark.parametrize("tenths, prompt, seconds", [(50, True, 5), (1, True, 1),
                                                      (0, True, -1), (None, False, 0)])
def test_timeouts(tenths, prompt, seconds):
    menu = pxelinux.Menu(timeout=tenths, prompt=prompt)
    assert grub._timeout(menu) == seconds


def test_the_dispatcher_names_pxelinux_files_for_the_mac():
    (line,) = [x for x in grub.DISPATCHER.splitlines() if x.startswith("regexp ")]
    pattern = re.search(r"'(\^.*\$)'", line).group(1)
    groups = re.match(pattern, "52:54:00:ab:cd:ef").groups()
    assert "-".join(groups) == pxelinux.mac_file_name("52:54:00:ab:cd:ef")[3:]
    assert 'configfile "$prefix/grub.cfg-01-$hc_1-$hc_2-$hc_3-$hc_4-$hc_5-$hc_6"' \
        in grub.DISPATCHER
    assert grub.DISPATCHER.rstrip().endswith(f'configfile "$prefix/{grub.DEFAULT_NAME}"')


def _root(tmp_path: Path, with_grub: bool = True) -> Path:
    (tmp_path / "pxelinux.cfg").mkdir(parents=True)
    (tmp_path / "pxelinux.cfg" / "default").write_text(pxelinux.default_config())
    if with_grub:
        (tmp_path / "grub").mkdir()
        bootcfg.sync(tmp_path)
    return tmp_path


def test_node_writes_both_files_from_one_source(tmp_path):
    root = _root(tmp_path)
    pxe, twin = bootcfg.write_node(root, "52:54:00:AB:CD:EF", ["umode=snd", "disk=/dev/vda"])
    assert pxe == root / "pxelinux.cfg" / "01-52-54-00-ab-cd-ef"
    assert twin == root / "grub" / "grub.cfg-01-52-54-00-ab-cd-ef"
    assert twin.read_text() == grub.from_pxelinux(pxe.read_text(),
                                                  "pxelinux.cfg/01-52-54-00-ab-cd-ef")
    assert "umode=snd disk=/dev/vda" in twin.read_text()


def test_a_refused_node_writes_neither(tmp_path):
    root = _root(tmp_path)
    with pytest.raises(pxelinux.PxeConfigError, match="compr=rar"):
        bootcfg.write_node(root, "52:54:00:ab:cd:ef", ["compr=rar"])
    assert sorted(p.name for p in (root / "grub").iterdir()) == ["grub.cfg", "grub.cfg-default"]


def test_sync_follows_hand_edits_and_drops_stale_twins(tmp_path):
    root = _root(tmp_path)
    bootcfg.write_node(root, "52:54:00:00:00:01", ["umode=snd"])
    bootcfg.write_node(root, "52:54:00:00:00:02", ["disk=/dev/vda"])
    (root / "pxelinux.cfg" / "01-52-54-00-00-00-02").unlink()
    edited = root / "pxelinux.cfg" / "01-52-54-00-00-00-01"
    edited.write_text(edited.read_text().replace("post=poweroff", "post=reboot"))
    bootcfg.sync(root)
    assert not (root / "grub" / "grub.cfg-01-52-54-00-00-00-02").exists()
    assert "post=reboot" in (root / "grub" / "grub.cfg-01-52-54-00-00-00-01").read_text()


def test_a_root_without_grub_keeps_pxelinux_only(tmp_path):
    root = _root(tmp_path, with_grub=False)
    assert bootcfg.write_node(root, "52:54:00:00:00:01", ["umode=snd"]) == [
        root / "pxelinux.cfg" / "01-52-54-00-00-00-01"]
    assert bootcfg.sync(root) == [] and not (root / "grub").exists()


def test_cli_node_and_sync(tmp_path):
    root = _root(tmp_path / "tftp")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "builder"]
    proc = subprocess.run([*run, "node", "--tftp-root", str(root), "52:54:00:00:00:09",
                           "umode=snd"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "01-52-54-00-00-00-09" in proc.stdout and "grub.cfg-01-52-54-00-00-00-09" in proc.stdout
    proc = subprocess.run([*run, "sync", "--tftp-root", str(root)], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 0 and "wrote 3 GRUB files" in proc.stdout, proc.stderr


# ------------------------------------------------------------------------------ signatures


def _pe(cert: bytes) -> bytes:
    """A minimal PE32+ image whose certificate table (data directory 4) holds `cert`."""
    pe_offset = 0x80
    head = bytearray(0x200)
    head[:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, pe_offset)
    head[pe_offset:pe_offset + 4] = b"PE\0\0"
    struct.pack_into("<H", head, pe_offset + 24, 0x20B)
    struct.pack_into("<II", head, pe_offset + 24 + 112 + 4 * 8, len(head), len(cert))
    return bytes(head) + cert


def test_signers_are_read_from_the_certificate_table(tmp_path):
    signed = tmp_path / "signed.efi"
    signed.write_bytes(_pe(b"\x30\x82..CN=Debian Secure Boot Signer 2022 - linux.."))
    unsigned = tmp_path / "unsigned.efi"
    unsigned.write_bytes(_pe(b""))
    assert efi.signed_by(signed, efi.DEBIAN) and not efi.signed_by(signed, efi.MICROSOFT)
    assert not efi.signed_by(unsigned, efi.DEBIAN)
    (tmp_path / "text").write_text("not a PE file")
    assert efi.authenticode(tmp_path / "text") == b""
