"""The guarded layout (`make initrd GUARDED=yes`, `python -m builder initrd --guarded`): a
machine that PXE-boots without a per-MAC file boots its own disk, on BIOS (pxelinux
LOCALBOOT) and UEFI (GRUB exits to the firmware); a per-MAC file written by `builder node`
or `arm` is what makes a machine a receiver, and `disarm` puts it back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from builder import grub, pxelinux
from builder.__main__ import _parser, build_config
from builder.efi import PREFIX

ROOT = Path(__file__).resolve().parent.parent
MAC = "52:54:00:ab:cd:ef"
MAC_FILE = "01-52-54-00-ab-cd-ef"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A TFTP root whose default is the guarded one, with GRUB's folder."""
    tftp = tmp_path / "tftp"
    (tftp / "pxelinux.cfg").mkdir(parents=True)
    (tftp / PREFIX).mkdir()
    (tftp / "pxelinux.cfg" / "default").write_text(pxelinux.default_config(guarded=True))
    return tftp


def _builder(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def _booting(text: str) -> pxelinux.Label:
    label = pxelinux.parse_menu(text).booting()
    assert label is not None
    return label


def test_the_guarded_default_boots_the_local_disk_on_both_firmwares():
    text = pxelinux.default_config(guarded=True)
    label = _booting(text)
    assert label.localboot == 0 and label.kernel is None
    names = [lb.name for lb in pxelinux.parse_menu(text).labels]
    assert {"receiver", "sender"} <= set(names)  # a person at the console can still pick
    twin = grub.from_pxelinux(text, "pxelinux.cfg/default")
    assert "set default=local" in twin
    local = twin[twin.index("menuentry local"):]
    assert "exit" in local[:local.index("}")]


def test_the_plain_default_still_images_every_client():
    """udpcast's tutorial layout stays the default a user gets."""
    assert _booting(pxelinux.default_config()).name == "receiver"
    args = _parser().parse_args(["initrd"])
    assert build_config(args).guarded is False
    assert build_config(_parser().parse_args(["initrd", "--guarded"])).guarded is True


def test_a_node_file_arms_one_machine(root: Path, tmp_path: Path):
    proc = _builder("node", "--tftp-root", str(root), MAC, "disk=/dev/nvme0n1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = (root / "pxelinux.cfg" / MAC_FILE).read_text()
    label = _booting(text)
    assert label.name == "receiver" and "disk=/dev/nvme0n1" in label.params
    assert "not armed" not in text and "is armed" in text
    twin = (root / PREFIX / f"grub.cfg-{MAC_FILE}").read_text()
    assert "set default=receiver" in twin
    # every other machine still boots its disk
    assert _booting((root / "pxelinux.cfg" / "default").read_text()).localboot == 0


def test_arm_then_disarm(root: Path, tmp_path: Path):
    proc = _builder("node", "--tftp-root", str(root), MAC, "arm", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    label = _booting((root / "pxelinux.cfg" / MAC_FILE).read_text())
    assert label.name == "receiver" and "post=reboot" in label.params
    proc = _builder("node", "--tftp-root", str(root), MAC, "disarm", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _booting((root / "pxelinux.cfg" / MAC_FILE).read_text()).localboot == 0
