"""The lab's TFTP root: the default boot config made for unattended VMs, and per-node
configs written as an admin does (`python -m builder node`). Shared by the demo, the
capture-and-deploy run and the lab tests."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository (builder/lab/tftp.py)


def node_config(tftp: Path, mac: str, params: dict[str, str]) -> list[Path]:
    """Write pxelinux.cfg/01-<mac> from the default with `params` changed, and its GRUB
    twin, as an admin does with `python -m builder node MAC key=value ...`."""
    from builder.bootcfg import write_node

    return write_node(tftp, mac, [f"{k}={v}" for k, v in params.items()])


def lab_default(tftp: Path, http_url: str | None = None) -> None:
    """In the lab a failed node powers off (onfail=poweroff) instead of waiting for a
    person, so a broken run ends in seconds and its console log says why; and nobody types
    at the pxelinux prompt, so it does not wait the default's 5 s for a label. With
    `http_url` the kernel and initrd come over HTTP, as `make initrd HTTP_URL=...` writes
    it (TFTP's lock-step blocks cost four TCG guests about a minute)."""
    from builder.bootcfg import sync
    from builder.pxelinux import boot_files_over_http, node_config

    default = tftp / "pxelinux.cfg" / "default"
    text = node_config(default.read_text(), [("onfail", "poweroff")])
    if http_url:
        text = boot_files_over_http(text, http_url)
    default.write_text(re.sub(r"(?im)^TIMEOUT\s+\d+$", "TIMEOUT 1", text))
    sync(tftp)  # GRUB's twins follow
