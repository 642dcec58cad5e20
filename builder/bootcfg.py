"""The boot loader configs of a TFTP root, kept in step: pxelinux.cfg/ is the source (what
`make initrd` writes, `python -m builder node` edits, an admin may edit by hand) and
grub/ holds GRUB's twin of each of its files (builder/grub.py), so BIOS and UEFI nodes
cannot disagree."""

from __future__ import annotations

import shlex
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


def boot_words(path: Path) -> dict[str, str | None]:
    """The boot line of a pxelinux file as {key: value} (None for a bare word); {} for a
    file that boots no kernel (a disarmed node) or none at all."""
    try:
        line = pxelinux.boot_append_line(path.read_text())
    except (OSError, pxelinux.PxeConfigError):
        return {}
    words = {}
    for word in shlex.split(line):  # the kernel's quotes: key="a b" is one word
        key, sep, value = word.partition("=")
        words[key] = value if sep else None
    return words


def changes(before: dict[str, str | None], after: dict[str, str | None]) -> list[str]:
    """What a new boot line changed, one item per key: `disk: /dev/sda -> /dev/nvme0n1`,
    `verify=readback (new)`; [] when nothing did."""
    out = []
    for key, value in after.items():
        if key not in before:
            out.append(f"{key}={value or ''} (new)")
        elif before[key] != value:
            out.append(f"{key}: {before[key] or '(empty)'} -> {value or '(empty)'}")
    return out


def write_node(tftp_root: Path, mac: str, assignments: Iterable[str]) -> list[Path]:
    """`python -m builder node`: pxelinux.cfg/01-<mac> from the default with `assignments`
    (checked by the agent's parser first, see pxelinux.write_node_config), then its GRUB
    twin. Returns the files written."""
    written = [pxelinux.write_node_config(tftp_root, mac, assignments)]
    if _has_grub(Path(tftp_root)):
        written.append(write_twin(Path(tftp_root), written[0].name))
    return written


#: What an armed node does: image itself unattended, then boot again (into its new system,
#: once disarmed). Set by arm(); an inventory or a hand-given parameter cannot change them.
ARMED = ("umode=rcv", "auto=yes", "post=reboot")
ARM_KEYS = tuple(a.partition("=")[0] for a in ARMED)


def arm(tftp_root: Path, mac: str, assignments: Iterable[str] = (), note: str = "") -> list[Path]:
    """Arm a node: its per-MAC files (pxelinux's and GRUB's) make it a receiver that reboots
    when done, with `assignments` (its own boot parameters) on the same line. Until it is
    disarmed, every boot images it again: disarm it once its digest agreed."""
    assignments = check_arm(tftp_root, mac, assignments)
    note = note or "armed by `python -m builder node MAC arm`"
    written = [pxelinux.write_node_config(tftp_root, mac, assignments + list(ARMED),
                                          f"herdcast: {note}: receive, then reboot")]
    if _has_grub(Path(tftp_root)):
        written.append(write_twin(Path(tftp_root), written[0].name))
    return written


def check_arm(tftp_root: Path, mac: str, assignments: Iterable[str] = ()) -> list[str]:
    """What arm() checks, writing nothing: the MAC, each parameter, the boot line the node
    will read. Returns the assignments as a list."""
    assignments = list(assignments)
    for item in assignments:
        if item.partition("=")[0] in ARM_KEYS:
            raise pxelinux.PxeConfigError(
                f"parameter {item}: an armed node is {' '.join(ARMED)}",
                f"leave {item.partition('=')[0]} out (disarm, or edit the file by hand)")
    pxelinux.node_text(tftp_root, mac, assignments + list(ARMED))
    return assignments


def disarm(tftp_root: Path, mac: str, note: str = "") -> list[Path]:
    """Disarm a node: its per-MAC files boot its local disk (pxelinux LOCALBOOT 0; GRUB
    `exit`s back to the firmware, which boots its next entry), so a node that reboots after
    imaging comes up in the system it received."""
    note = note or "disarmed by `python -m builder node MAC disarm`"
    written = [pxelinux.write_local_config(tftp_root, mac,
                                           f"herdcast: {note}: boot the local disk")]
    if _has_grub(Path(tftp_root)):
        written.append(write_twin(Path(tftp_root), written[0].name))
    return written
