"""pxelinux.cfg files: the `default` every node boots, and per-node `01-<mac>` copies.

The per-node file is made the way udpcast's tutorial makes it by hand ("cp default 01-<mac>,
then edit"): read the default, change some key=value parameters on the append line of the
label that boots, write it under the name pxelinux looks for first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import BuildError

#: What a receiver needs to image itself unattended; udpcast's names and defaults.
RECEIVER_PARAMS: list[tuple[str, str]] = [
    ("initrd", "initrd.img"),
    ("auto", "yes"),
    ("umode", "rcv"),
    ("disk", "/dev/sda"),
    ("compr", "none"),
    ("port", "9000"),
    ("dhcp", "yes"),
    ("netmodule", "AUTO"),
    ("diskmodule", "AUTO"),
    ("post", "poweroff"),
    ("udpcparam", ""),
]
#: Kernel messages on screen and serial; the last console (serial) becomes /dev/console, so
#: a lab VM's serial log shows the agent too.
CONSOLE = "console=tty0 console=ttyS0,115200"

_MAC = re.compile(r"^(?:01[-:])?([0-9a-f]{2})([-:]?)([0-9a-f]{2})\2([0-9a-f]{2})\2([0-9a-f]{2})"
                  r"\2([0-9a-f]{2})\2([0-9a-f]{2})$")
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.]*$")
_APPEND = re.compile(r"^(\s*append\s+)(.*)$", re.IGNORECASE)
_WORD = re.compile(r'[^\s"]*"[^"]*"\S*|\S+')  # a word, or key="a quoted value"
_LABEL = re.compile(r"^\s*label\s+(\S+)", re.IGNORECASE)
_DEFAULT = re.compile(r"^\s*default\s+(\S+)", re.IGNORECASE)


class PxeConfigError(BuildError):
    """A MAC address or parameter the user gave is not usable; the message says which."""


def _append(params: Iterable[tuple[str, str]]) -> str:
    return " ".join(f"{k}={v}" for k, v in params)


def check_http_url(url: str) -> str:
    """The base URL the kernel and initrd are fetched from, without a trailing slash.

    pxelinux fetches `http://` names through iPXE's PXE extensions (qemu's and many NICs'
    ROMs) or, booted as lpxelinux.0, through its own TCP/IP stack on any PXE ROM. Over TCP
    the 30 MB of boot files come in a fraction of TFTP's lock-step 1408-byte blocks.
    """
    url = url.strip().rstrip("/")
    if not re.match(r"^http://[^/\s\"]+(/[^\s\"]*)?$", url):
        raise PxeConfigError(
            f"--http-url {url!r}: expected http://HOST[:PORT][/PATH], e.g. "
            "http://10.0.0.1/herdcast (pxelinux speaks neither https nor ftp here)"
        )
    return url


def boot_files_over_http(config_text: str, url: str) -> str:
    """A pxelinux config with its kernel and initrd names made into `url`/NAME, so the
    big boot files come over HTTP while pxelinux.0 and pxelinux.cfg/ stay on TFTP."""
    base = check_http_url(url)
    out = []
    for line in config_text.splitlines():
        if m := re.match(r"^(\s*kernel\s+)(\S+)\s*$", line, re.IGNORECASE):
            line = m.group(1) + _http_name(m.group(2), base)
        elif _APPEND.match(line):
            line = re.sub(r"(?<!\S)initrd=(\S+)",
                          lambda w: "initrd=" + ",".join(_http_name(n, base)
                                                        for n in w.group(1).split(",")),
                          line)
        out.append(line)
    return "\n".join(out) + "\n"


def _http_name(name: str, base: str) -> str:
    """`base/name` for a TFTP-relative file name; a name that is already a URL stays."""
    return name if "://" in name else f"{base}/{name.lstrip('/')}"


def default_config(http_url: str | None = None, guarded: bool = False) -> str:
    """The pxelinux.cfg/default `make initrd` writes: a receiver that boots after 5 s, and a
    sender label to pick at the prompt (`sender`) when this machine holds the master disk.
    With `http_url` the kernel and initrd are fetched from there (see check_http_url).

    `guarded`: a machine without a per-MAC file boots its own disk after 5 s instead
    (LOCALBOOT), so a stranger that PXE-boots by accident while a sender serves is not
    wiped; the receiver and sender labels stay at the prompt for a person at the console,
    and `python -m builder node MAC ...` (or herdcast deploy) arms the machines to image."""
    receiver = _append(RECEIVER_PARAMS)
    sender = _append((k, "snd" if k == "umode" else v) for k, v in RECEIVER_PARAMS)
    text = _default_text(receiver, sender, guarded)
    return boot_files_over_http(text, http_url) if http_url else text


def _default_text(receiver: str, sender: str, guarded: bool = False) -> str:
    if guarded:
        head = """\
DEFAULT local
PROMPT 1
TIMEOUT 50
SAY herdcast: this machine is not armed: booting its own disk in 5 s.
SAY herdcast: type "receiver" to image it from the network, "sender" to send its disk.

LABEL local
  LOCALBOOT 0
"""
    else:
        head = """\
DEFAULT receiver
PROMPT 1
TIMEOUT 50
SAY herdcast: booting "receiver" in 5 s; type "sender" to send this machine's disk instead.
"""
    return f"""\
# herdcast: written by `make initrd` (python -m builder initrd{' --guarded' if guarded else ''}).
# Per node: python -m builder node MAC key=value ...  (writes pxelinux.cfg/01-<mac>)
SERIAL 0 115200
{head}
LABEL receiver
  KERNEL vmlinuz
  APPEND {receiver} {CONSOLE}
  IPAPPEND 2

LABEL sender
  KERNEL vmlinuz
  APPEND {sender} {CONSOLE}
  IPAPPEND 2
"""


def mac_file_name(mac: str) -> str:
    """`01-aa-bb-cc-dd-ee-ff`, the first name pxelinux tries (01 = Ethernet)."""
    match = _MAC.match(mac.strip().lower())
    if not match:
        raise PxeConfigError(
            f"MAC {mac!r}: expected six hex pairs like 52:54:00:12:34:56 or 52-54-00-12-34-56"
        )
    octets = [g for i, g in enumerate(match.groups()) if i != 1]
    if int(octets[0], 16) & 1:
        raise PxeConfigError(f"MAC {mac!r}: a multicast address cannot be a node's NIC")
    return "01-" + "-".join(octets)


def parse_assignments(items: Iterable[str]) -> list[tuple[str, str]]:
    """`key=value` strings from the command line; the value may be empty (`udpcparam=`)."""
    out: list[tuple[str, str]] = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _KEY.match(key):
            raise PxeConfigError(f"parameter {item!r}: expected key=value, e.g. umode=snd")
        if '"' in value or "\n" in value:
            raise PxeConfigError(
                f"parameter {key}: value {value!r} has a quote or newline, which the kernel"
                " command line cannot carry"
            )
        if any(c.isspace() for c in value):
            value = f'"{value}"'  # the kernel keeps a double-quoted value whole
        out.append((key, value))
    return out


def _edit_append(line: str, changes: list[tuple[str, str]]) -> str:
    """Replace `key=...` words in place, append the keys that were not there."""
    match = _APPEND.match(line)
    assert match
    words = _WORD.findall(match.group(2))
    pending = dict(changes)
    for i, word in enumerate(words):
        key = word.partition("=")[0]
        if key in pending:
            words[i] = f"{key}={pending.pop(key)}"
    words += [f"{k}={v}" for k, v in pending.items()]
    return match.group(1) + " ".join(words)


def _boot_append(lines: list[str]) -> int:
    """Index of the APPEND line of the label that boots by default (the first label's when
    there is no DEFAULT line)."""
    target = next((m.group(1) for m in map(_DEFAULT.match, lines) if m), None)
    label = None
    for i, line in enumerate(lines):
        if m := _LABEL.match(line):
            label = m.group(1)
        elif _APPEND.match(line) and (label == target or target is None):
            return i
    raise PxeConfigError("pxelinux.cfg/default has no APPEND line for its DEFAULT label",
                         "rebuild it with `make initrd`")


def node_config(default_text: str, changes: list[tuple[str, str]]) -> str:
    """The default config with `changes` applied to the append line of the label that boots
    by default (the other labels stay as they are, still selectable at the prompt). From a
    guarded default (it boots the local disk) a node's own file is what arms it: its
    DEFAULT becomes the receiver label."""
    lines = _armed(default_text.splitlines())
    i = _boot_append(lines)
    lines[i] = _edit_append(lines[i], changes)
    return "\n".join(lines) + "\n"


def _armed(lines: list[str]) -> list[str]:
    """`lines` with DEFAULT moved to the receiver label when DEFAULT names a LOCALBOOT
    label (the guarded layout's `local`); any other config as it is."""
    menu = parse_menu("\n".join(lines))
    booting = menu.booting()
    if booting is None or booting.localboot is None or booting.kernel is not None:
        return lines
    if not any(label.name == "receiver" for label in menu.labels):
        raise PxeConfigError("pxelinux.cfg/default boots the local disk and has no "
                             "`receiver` label to arm", "rebuild it with `make initrd`")
    out = []
    for line in lines:
        if _DEFAULT.match(line):
            out += ["DEFAULT receiver",
                    'SAY herdcast: this machine is armed: booting "receiver" in 5 s.']
        elif not re.match(r"^\s*say\s", line, re.IGNORECASE):  # the guarded default's words
            out.append(line)
    return out


def boot_append_line(config_text: str) -> str:
    """The parameters the default label hands the kernel (without `append`)."""
    lines = config_text.splitlines()
    match = _APPEND.match(lines[_boot_append(lines)])
    assert match
    return match.group(2)


def check_boot_line(append: str, changed: Iterable[str] = ()) -> None:
    """What a node would make of `append`, checked by the agent's own parser
    (agent.boot.cmdline), so `compr=rar` is refused here and not at boot. A `changed` key
    that is no herdcast parameter but nearly one (`umod`) is refused too: the kernel would
    ignore it, and a sender meant by `umod=snd` would boot as a receiver."""
    from agent.boot.cmdline import parse_cmdline
    from agent.boot.params import near_parameter
    from agent.boot.tokens import CmdlineError

    for key in changed:
        if near := near_parameter(key):
            raise PxeConfigError(f"parameter {key}: not a herdcast parameter",
                                 f"did you mean {near}? (see kernel-cmdline.md)")
    try:
        parse_cmdline(append)
    except CmdlineError as exc:
        raise PxeConfigError(str(exc), "nothing written") from None


def write_node_config(tftp_root: Path, mac: str, assignments: Iterable[str],
                      note: str | None = None) -> Path:
    """Write pxelinux.cfg/01-<mac> from the node's own file (else the default); every
    argument is checked, and the resulting boot line parsed as the node will parse it,
    before anything is written. `note` becomes a comment line on top (who wrote the file,
    and why)."""
    target, text = node_text(tftp_root, mac, assignments)
    _replace(target, (f"# {note}\n" if note else "") + text)
    return target


def node_base(tftp_root: Path, mac: str) -> Path:
    """The file a node's new config starts from: its own 01-<mac> when that boots a kernel
    (its settings and hand edits stay), else pxelinux.cfg/default (new or disarmed node)."""
    default = Path(tftp_root) / "pxelinux.cfg" / "default"
    own = default.with_name(mac_file_name(mac))
    if own.is_file():
        booting = parse_menu(own.read_text()).booting()
        if booting is not None and booting.kernel is not None:
            return own
    if not default.is_file():
        raise PxeConfigError(f"{default} not found",
                             "run `make initrd` first, or pass --tftp-root DIR")
    return default


def node_text(tftp_root: Path, mac: str, assignments: Iterable[str]) -> tuple[Path, str]:
    """(pxelinux.cfg/01-<mac>, its text) from node_base with `assignments`, checked as
    write_node_config checks them; nothing written. Its `# herdcast: ` notes are dropped."""
    changes = parse_assignments(assignments)
    base = node_base(tftp_root, mac)
    lines = base.read_text().splitlines()
    while lines and lines[0].startswith("# herdcast: "):
        lines.pop(0)
    text = node_config("\n".join(lines), changes)
    check_boot_line(boot_append_line(text), [k for k, _ in changes])
    return base.with_name(mac_file_name(mac)), text


def _replace(target: Path, text: str) -> None:
    """Write `target` whole or not at all: a node booting meanwhile reads one or the other."""
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(target)


def local_config(note: str) -> str:
    """A per-MAC config that boots the node's own disk: LOCALBOOT 0 hands the boot back to
    the BIOS, which tries its next boot device (GRUB's twin `exit`s to the firmware)."""
    return (f"# {note}\n"
            "# Re-arm: python -m builder node MAC arm (or herdcast deploy).\n"
            "DEFAULT local\n"
            "PROMPT 0\n"
            "TIMEOUT 1\n"
            "\n"
            "LABEL local\n"
            "  LOCALBOOT 0\n")


def write_local_config(tftp_root: Path, mac: str, note: str) -> Path:
    """pxelinux.cfg/01-<mac> = local_config(note): the node boots its disk from now on."""
    name = mac_file_name(mac)
    folder = Path(tftp_root) / "pxelinux.cfg"
    if not (folder / "default").is_file():
        raise PxeConfigError(f"{folder / 'default'} not found",
                             "run `make initrd` first, or pass --tftp-root DIR")
    target = folder / name
    _replace(target, local_config(note))
    return target


# ---------------------------------------------------------------------------------------------
# Reading a config back (for GRUB's twin of each file, builder/grub.py)


@dataclass
class Label:
    """One LABEL: what it boots and the kernel parameters it hands over."""

    name: str
    kernel: str | None = None
    initrds: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)  # APPEND words as written, no initrd=
    ipappend: int = 0
    localboot: int | None = None  # LOCALBOOT's argument: boot the local disk instead


@dataclass
class Menu:
    """The part of a pxelinux config that decides what boots, and when."""

    default: str | None = None
    timeout: int | None = None  # tenths of a second (TIMEOUT)
    prompt: bool = False
    labels: list[Label] = field(default_factory=list)

    def booting(self) -> Label | None:
        """The label pxelinux boots unattended (DEFAULT, else the first)."""
        named = [lb for lb in self.labels if lb.name == self.default]
        return named[0] if named else (self.labels[0] if self.labels else None)


def parse_menu(text: str) -> Menu:
    """The directives herdcast's configs use (DEFAULT, TIMEOUT, PROMPT, LABEL, KERNEL or
    LINUX, APPEND with initrd=, INITRD, IPAPPEND, LOCALBOOT); other lines (SERIAL, SAY,
    MENU ...) are pxelinux's alone."""
    menu = Menu()
    label: Label | None = None
    for line in text.splitlines():
        words = line.split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        key, rest = words[0].lower(), (words[1].strip() if len(words) > 1 else "")
        if key == "default":
            menu.default = rest.split()[0] if rest else None
        elif key == "timeout" and rest.isdigit():
            menu.timeout = int(rest)
        elif key == "prompt":
            menu.prompt = rest == "1"
        elif key == "label":
            label = Label(rest)
            menu.labels.append(label)
        elif label is None:
            continue
        elif key in ("kernel", "linux"):
            label.kernel = rest
        elif key == "initrd":
            label.initrds = rest.split(",")
        elif key == "ipappend" and rest.isdigit():
            label.ipappend = int(rest)
        elif key == "localboot" and re.match(r"^-?\d+", rest):
            label.localboot = int(rest.split()[0])
        elif key == "append":
            for word in _WORD.findall(rest):
                if word.startswith("initrd="):
                    label.initrds = word.removeprefix("initrd=").split(",")
                else:
                    label.params.append(word)
    return menu
