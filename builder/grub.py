"""GRUB's configs for UEFI nodes, each one rendered from its pxelinux.cfg twin.

pxelinux.cfg/ stays the one source an admin edits or `python -m builder node` writes;
GRUB reads a translation of it, so a BIOS node and a UEFI node with the same MAC file
boot the same label with the same parameters:

    grub/grub.cfg                  the dispatcher below (fixed): the per-MAC file, else
                                   the default, chosen the way pxelinux chooses
    grub/grub.cfg-default          <- pxelinux.cfg/default
    grub/grub.cfg-01-<mac>         <- pxelinux.cfg/01-<mac> (GRUB's own per-MAC name)

Debian's signed netboot GRUB has its config path built in (it sources $prefix/grub.cfg,
$prefix being (tftp,SERVER)/grub after PXE and (http,SERVER)/grub after UEFI HTTP Boot)
and does not run GRUB's per-MAC lookup after that, so the dispatcher does it with
$net_default_mac. Every name the configs give without a device (`/vmlinuz`) is read from
that same device, so one set of files serves TFTP and HTTP Boot alike. IPAPPEND 2's BOOTIF= becomes
BOOTIF=01-$net_default_mac (the MAC GRUB booted from; the agent reads either spelling).
"""

from __future__ import annotations

import math
import re

from builder.arch import ARCHES
from builder.pxelinux import Label, Menu, parse_menu

DEFAULT_NAME = "grub.cfg-default"

_HEX = "([0-9a-f][0-9a-f])"
#: Written as is into grub/grub.cfg. GRUB cannot test whether a file exists over TFTP
#: (`[ -e ]` needs a directory listing, which TFTP has not), so it just tries: configfile
#: of a missing file returns at once, silently.
DISPATCHER = f"""\
# herdcast: UEFI nodes boot shimx64.efi -> grubx64.efi, which reads this file over TFTP
# (PXE) or HTTP (UEFI HTTP Boot): $prefix is on the device GRUB was loaded from.
# Written by `python -m builder initrd`. Like pxelinux, boot the node's own menu
# (grub.cfg-01-<mac>, the twin of pxelinux.cfg/01-<mac>) when there is one, else
# grub.cfg-default (the twin of pxelinux.cfg/default). Edit the pxelinux.cfg/ files, then
# run `python -m builder sync` (`node` and `initrd` do it too).
regexp --set=1:hc_1 --set=2:hc_2 --set=3:hc_3 --set=4:hc_4 --set=5:hc_5 --set=6:hc_6 \
'^{":".join([_HEX] * 6)}$' "$net_default_mac"
if [ -n "$hc_6" ]; then
    configfile "$prefix/grub.cfg-01-$hc_1-$hc_2-$hc_3-$hc_4-$hc_5-$hc_6"
fi
configfile "$prefix/{DEFAULT_NAME}"
"""

#: Where a node's kernel and initrd lie below the root, and its serial console: set from
#: GRUB's $grub_cpu at the top of every menu (builder/arch.py's rows), so one menu boots
#: an x86 node (grubx64.efi: /vmlinuz) and an arm64 one (grubaa64.efi: /arm64/vmlinuz).
DIR_VAR, CONSOLE_VAR = "hc_dir", "hc_console"


def arch_preamble() -> list[str]:
    lines = ["# the node's architecture: where its kernel and initrd are, its serial console",
             f"set {DIR_VAR}=", f"set {CONSOLE_VAR}="]
    for arch in ARCHES.values():
        if arch.subdir:
            lines += [f'if [ "$grub_cpu" = {arch.grub_cpu} ]; then',
                      f"    set {DIR_VAR}=/{arch.subdir}",
                      f"    set {CONSOLE_VAR}={arch.console}", "fi"]
    return lines


def _escape(text: str) -> str:
    return re.sub(r'([\\"$])', r"\\\1", text)


def path_word(path: str) -> str:
    """A file's GRUB word, in the node architecture's directory: `/vmlinuz` is
    "${hc_dir}/vmlinuz" (double quotes: the variable expands, nothing else does)."""
    head, _, base = path.rpartition("/")
    return f'"{_escape(head)}${{{DIR_VAR}}}/{_escape(base)}"'


_SAFE = re.compile(r"^[A-Za-z0-9_./,:=+@%-]+$")
_URL = re.compile(r"^http://([^/:\s]+)(?::(\d+))?(/\S*)?$")


def quote(word: str) -> str:
    """A literal GRUB script word (single quotes: no $ expansion, no escapes)."""
    if word and _SAFE.match(word):
        return word
    return "'" + word.replace("'", "'\\''") + "'"


def kernel_word(word: str) -> str:
    """What the kernel makes of one APPEND word: `k="a b"` and `"k=a b"` are `k=a b`.
    GRUB's `linux` puts such a word back in double quotes when it has a blank."""
    if word.startswith('"'):
        return word[1:-1] if word.endswith('"') and len(word) > 1 else word[1:]
    key, sep, value = word.partition("=")
    if sep and value.startswith('"'):
        value = value[1:-1] if value.endswith('"') and len(value) > 1 else value[1:]
    return f"{key}{sep}{value}"


def _paths(name: str) -> tuple[str | None, str]:
    """(GRUB's HTTP path or None, GRUB's TFTP path) of a pxelinux file name. A URL is
    fetched over HTTP by GRUB when it can (port 80: GRUB 2.06 has no other), and over TFTP
    as the same name in the TFTP root otherwise (the web server serves that root)."""
    match = _URL.match(name)
    if not match:
        return None, "/" + name.lstrip("/")
    host, port, path = match.group(1), match.group(2), match.group(3) or "/"
    tftp = "/" + path.rstrip("/").rsplit("/", 1)[-1]
    if port not in (None, "80"):
        return None, tftp
    return f"(http,{host}){path}", tftp


def _load(kernel: str, initrds: list[str], args: str) -> list[str]:
    lines = [f"linux {path_word(kernel)}{args}"]
    if initrds:
        lines.append("initrd " + " ".join(path_word(i) for i in initrds))
    return lines


def _entry(label: Label) -> list[str]:
    args = "".join(" " + quote(kernel_word(w)) for w in label.params)
    if label.ipappend & 2:
        args += " BOOTIF=01-$net_default_mac"
    args += f" ${CONSOLE_VAR}"  # empty on x86: its console= words are in the APPEND line
    out = [f"menuentry {quote(label.name)} --id {quote(label.name)} {{"]
    if label.localboot is not None and label.kernel is None:
        # pxelinux's LOCALBOOT: back to the firmware, which boots its next entry (the disk)
        return out + ["    echo 'herdcast: booting the local disk (back to the firmware)'",
                      "    exit", "}"]
    if label.kernel is None:
        return out + ["    echo 'herdcast: this label has no KERNEL'", "}"]
    kernel = _paths(label.kernel)
    initrds = [_paths(i) for i in label.initrds]
    files = [kernel[1]] + [t for _, t in initrds]
    tftp = _load(kernel[1], [t for _, t in initrds], args)
    if kernel[0] is not None and all(h is not None for h, _ in initrds):
        http = [kernel[0]] + [h or "" for h, _ in initrds]
        # `linux` fails at once where the web server does not answer: then the same
        # files come from the boot device (TFTP after PXE)
        out.append(f"    echo herdcast: loading {' '.join(map(path_word, http))}")
        out.append(f"    if {_load(http[0], http[1:], args)[0]}; then")
        out += [f"        {line}" for line in _load(http[0], http[1:], args)[1:]]
        out.append("    else")
        out.append(f"        echo herdcast: over TFTP instead: {' '.join(map(path_word, files))}")
        out += [f"        {line}" for line in tftp]
        out.append("    fi")
    else:
        out.append(f"    echo herdcast: loading {' '.join(map(path_word, files))}")
        out += [f"    {line}" for line in tftp]
    return out + ["}"]


def _timeout(menu: Menu) -> int:
    """GRUB's seconds for pxelinux's TIMEOUT (tenths; 0 = wait for a person)."""
    if menu.timeout is None:
        return -1 if menu.prompt else 0
    return -1 if menu.timeout == 0 else math.ceil(menu.timeout / 10)


def from_pxelinux(text: str, source: str) -> str:
    """GRUB's twin of the pxelinux config `text` (read from `source`, for the header)."""
    menu = parse_menu(text)
    booting = menu.booting()
    lines = [
        f"# herdcast: GRUB's twin of {source}, written by `python -m builder`.",
        f"# Do not edit: edit {source}, then run `python -m builder sync`.",
        f"echo {quote(f'herdcast: the menu of {source}')}",
        f"set timeout={_timeout(menu)}",
    ]
    if booting is not None:
        lines.append(f"set default={quote(booting.name)}")
    lines += arch_preamble()
    if any(_paths(lb.kernel or "")[0] for lb in menu.labels):
        lines += ["# Debian 13's signed GRUB has http built in (then this is a no-op); an",
                  "# older GRUB loads it from $prefix, or the files come over TFTP.",
                  "insmod http"]
    for label in menu.labels:
        lines += [""] + _entry(label)
    return "\n".join(lines) + "\n"
