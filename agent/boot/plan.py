"""What a node would do with a kernel command line, touching nothing (`herdcast plan`).

An admin writes a pxelinux append line once and boots a whole room with it; a typo found
after the first node powered off costs an hour. `herdcast plan --cmdline '...'` runs the very
parser the node runs (agent.boot.cmdline) and prints the decisions it leads to, without loading
modules, configuring a NIC or opening a disk. The node prints the same lines (`describe`) on
its console before its first step. The command around it is agent.cmd.plan.
"""

from __future__ import annotations

import shlex

from agent.boot.cmdline import BootConfig
from agent.transfer.options import to_argv


def _modules(kind: str, module: str, parm: str, enabled: bool = True) -> str:
    if not enabled:
        return f"none loaded (enable{kind.capitalize()}module=no)"
    parms = f" with {parm}" if parm else ""
    if module == "AUTO":
        return f"AUTO: the modules of the devices found (udev modalias){parms}"
    if module == "NONE":
        return f"none loaded ({kind}module=NONE: built into the kernel)"
    return f"modprobe {module}{parms}"


def _network(cfg: BootConfig) -> str:
    if cfg.dhcp:
        return f"DHCP, waiting up to {cfg.dhcptimeout} s for a lease"
    gateway = f"gateway {cfg.gateway}" if cfg.gateway else "no gateway"
    return f"static {cfg.ip}/{cfg.prefixlen} (netmask {cfg.netmask}), {gateway}"


def transfer_argv(cfg: BootConfig) -> list[str]:
    """The transfer the node runs (`cfg.transfer`, the very options object the node's
    run_options starts from) written as `herdcast send|receive` options: --file, --portbase
    and --nokbd always, then every option that is not at its default."""
    return to_argv(cfg.transfer, first=("file", "portbase", "nokbd"))


def transfer_command(cfg: BootConfig) -> list[str]:
    """The equivalent `herdcast send|receive ...` command line of the node's transfer."""
    return ["herdcast", "send" if cfg.sending else "receive", *transfer_argv(cfg)]


def describe(cfg: BootConfig) -> list[str]:
    """The plan as short labelled lines, for `herdcast plan` and the node's console."""
    if cfg.sending:
        mode = f"send: {cfg.disk} is read whole and multicast (umode=snd)"
    else:
        mode = f"receive: {cfg.disk} is overwritten with the image (umode=rcv)"
    nic = (f"the NIC with MAC {cfg.bootif_mac} (BOOTIF)" if cfg.bootif_mac
           else "the first interface with carrier (no BOOTIF)")
    rows = [
        ("mode", mode),
        ("start", "unattended (auto=yes)" if cfg.auto
         else "after Enter on the console (auto=no)"),
        ("disk", f"{cfg.disk}, driver: "
         + _modules("disk", cfg.diskmodule, cfg.diskmodparm, cfg.enable_diskmodule)),
        ("nic", f"{nic}, waiting up to {cfg.hwtimeout} s"),
        ("nic driver", _modules("net", cfg.netmodule, cfg.netmodparm)),
        ("network", _network(cfg)),
    ]
    if cfg.ip_from_pxelinux is not None:
        p = cfg.ip_from_pxelinux
        rows.append(("pxelinux ip", f"client {p.client or '-'}, server {p.server or '-'}, "
                     f"gateway {p.gateway or '-'}, netmask {p.netmask or '-'}"
                     + ("" if not cfg.dhcp else " (not used: dhcp=yes)")))
    rows += [
        ("compression", cfg.compr if cfg.compr != "none" else "none (compr=none)"),
        *([("mounted", "a read-write mounted filesystem on the disk stops the node "
            "(mounted=refuse)" if cfg.mounted == "refuse" else
            "a read-write mounted filesystem on the disk is sent with a warning "
            "(mounted=warn)")] if cfg.sending else []),
        _wire(cfg),
        *([] if cfg.sending else [("clone", _clone(cfg))]),
        ("ports", f"UDP {cfg.port} (receivers) and {cfg.port + 1} (sender)"),
        ("transfer", shlex.join(transfer_command(cfg))),
        ("after", f"none on success: serves until powered off (serve=yes; post={cfg.post} "
         f"is never reached), {cfg.onfail} on failure" if cfg.serve else
         f"{cfg.post} on success, {cfg.onfail} on failure"),
    ]
    if cfg.console:
        rows.append(("console", ", ".join(cfg.console)))
    if cfg.lang or cfg.kbmap:
        rows.append(("lang/kbmap", f"{cfg.lang or '-'}/{cfg.kbmap or '-'} (accepted; "
                     "messages are English, the kernel keymap is kept)"))
    rows = [("WARNING", w) for w in cfg.warnings] + rows
    width = max(len(label) for label, _ in rows)
    return [f"  {label:<{width}}  {text}" for label, text in rows]


def _clone(cfg: BootConfig) -> str:
    """What is done to the clone once its digest agreed (agent.personalize): the receive
    options the node runs (`cfg.transfer`: grow=, hostname=, identity=, userdata=)."""
    t = cfg.transfer
    if t.hostname == "":
        name = "no host name written (hostname= empty)"
    elif t.hostname:
        name = f"host name {t.hostname} (hostname=)"
    else:
        name = "the host name the DHCP server gives (option 12), if it gives one"
    fresh = {"fresh": "fresh machine-id and SSH host keys (identity=fresh)",
             "keep": "the master's machine-id and SSH host keys kept (identity=keep)"}.get(
        t.identity or "", "fresh machine-id and SSH host keys (it is named; identity=keep "
        "keeps the master's)" if t.hostname else "fresh machine-id and SSH host keys if "
        "it gets a name (identity=)")
    return ("a GPT fitted to the disk; "
            + ("the last partition and its filesystem grown to the end (grow=yes); "
               if t.grow else "")
            + f"{name}; {fresh}"
            + (f"; cloud-init user-data from {t.userdata}" if t.userdata else ""))


def _wire(cfg: BootConfig) -> tuple[str, str]:
    """What crosses the wire: the node prints the byte count once it has read its disk's
    partition table (agent.image); the plan, touching nothing, can only say which."""
    if not cfg.sending:
        return ("image", "a herdcast image is unpacked onto the disk, free space "
                + {"keep": "kept as it is (blank=keep)", "zero": "zeroed (blank=zero)",
                   "discard": "discarded (blank=discard)"}[cfg.blank])
    if cfg.blocks == "all":
        return ("on the wire", "every byte of the disk (blocks=all)")
    return ("on the wire", "to herdcast receivers, the blocks the disk's filesystems use "
            "(blocks=used; the node prints how many); to stock ones, every byte")


def as_json(cfg: BootConfig) -> dict:
    """The plan as JSON: keys are the parameter names, values typed; plus `mode` and
    `transfer` (the command the node runs)."""
    d = cfg.as_json()
    d["mode"] = "send" if cfg.sending else "receive"
    d["nic"] = "BOOTIF" if cfg.bootif_mac else "first with carrier"
    d["transfer"] = transfer_command(cfg)
    d["transfer_argv"] = transfer_argv(cfg)
    return d
