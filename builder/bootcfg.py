"""The boot loader configs of a TFTP root, kept in step: pxelinux.cfg/ is the source (what
`make initrd` writes, `python -m builder node` edits, an admin may edit by hand) and
grub/ holds GRUB's twin of each of its files (builder/grub.py), so BIOS and UEFI nodes
cannot disagree."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from builder import grub, pxelinux
from builder.efi import PREFIX


def _has_grub(tftp_root: Path) -> bool:
    """A root built before UEFI support has no grub/: only pxelinux files are kept."""
    return (tftp_root / PREFIX).is_dir()


def write_twin(tftp_root: Path, name: str) -> Path:
    """grub/grub.cfg-<name> from pxelinux.cfg/<name> (`default` or `01-<mac>`)."""
    source = tftp_root / "pxelinux.cfg" / name
    target = tftp_root / PREFIX / (grub.DEFAULT_NAME if name == "default" else f"grub.cfg-{name}")
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(grub.from_pxelinux(source.read_text(), f"pxelinux.cfg/{name}"))
    tmp.replace(target)
    return target


def sync(tftp_root: Path) -> list[Path]:
    """Rewrite every GRUB config from pxelinux.cfg/: the dispatcher, the default, one per
    01-<mac> file; drop per-MAC GRUB files whose pxelinux file is gone. Returns the files
    written ([] for a root without grub/)."""
    tftp_root = Path(tftp_root)
    if not _has_grub(tftp_root):
        return []
    (tftp_root / PREFIX / "grub.cfg").write_text(grub.DISPATCHER)
    written = [tftp_root / PREFIX / "grub.cfg"]
    names = ["default"] + sorted(p.name for p in (tftp_root / "pxelinux.cfg").glob("01-*"))
    for name in names:
        written.append(write_twin(tftp_root, name))
    for stale in (tftp_root / PREFIX).glob("grub.cfg-01-*"):
        if not (tftp_root / "pxelinux.cfg" / stale.name.removeprefix("grub.cfg-")).exists():
            stale.unlink()
    return written


def write_node(tftp_root: Path, mac: str, assignments: Iterable[str]) -> list[Path]:
    """`python -m builder node`: pxelinux.cfg/01-<mac> from the default with `assignments`
    (checked by the agent's parser first, see pxelinux.write_node_config), then its GRUB
    twin. Returns the files written."""
    written = [pxelinux.write_node_config(tftp_root, mac, assignments)]
    if _has_grub(Path(tftp_root)):
        written.append(write_twin(Path(tftp_root), written[0].name))
    return written
