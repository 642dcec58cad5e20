"""`herdcast node`: what the initramfs /init runs, from /proc/cmdline to a cloned disk.

The steps read top to bottom, each one printing one line the admin can act on:
cmdline -> config (and its plan, as `herdcast plan` prints it) -> hardware -> network ->
transfer options -> disk -> transfer -> result -> post action. Nothing touches a disk
before the command line (udpcparam= included) and the disk itself have been checked; a bad
parameter stops the node with one line naming it.

As PID 1 the node forks the agent under agent.boot.supervisor and never exits; the agent
tells PID 1 its onfail= and, at the end, the action it is doing, so PID 1 can follow it if
the agent dies (OOM killer, crash). Run by hand (tests, a server) it does the same steps
with the test switches (NodeArgs; agent.cmd.node parses them) and returns its failure
instead of powering anything off; agent.cmd.node turns that into the exit status.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.boot import pid1, supervisor
from agent.boot.console import Console, open_consoles, tee_std
from agent.boot.phases import Phases
from agent.errors import HerdcastError, UsageError

if TYPE_CHECKING:  # imported where used: a broken module still leaves a FAILED line
    from agent.boot.cmdline import BootConfig
    from agent.net.network import NetConfig
    from agent.transfer.options import ReceiveOptions, SendOptions

FAIL_ACTION = "wait"  # before the command line is parsed there is no onfail= to follow


class NodeFailure(HerdcastError):
    """One step failed: `what` failed, `fix` says what to change."""


class BootParameterError(NodeFailure, UsageError):
    """A bad boot parameter: nothing was touched (exit status 2, as a bad option)."""


@dataclass
class NodeArgs:
    """`herdcast node`'s own switches (agent.cmd.node): all for running it outside an
    initramfs; an initramfs runs it with none."""

    cmdline: str | None
    root: str
    disk: str | None
    no_hardware: bool
    no_network: bool
    no_post: bool


def read_cmdline(args: NodeArgs) -> str:
    """--cmdline, else ROOT/proc/cmdline."""
    if args.cmdline is not None:
        return args.cmdline
    path = os.path.join(args.root, "proc/cmdline")
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        raise NodeFailure(f"cannot read {path}: {exc.strerror}",
                          "is /proc mounted? (herdcast node mounts it when it is PID 1)") from exc


def load_config(text: str, disk: str | None = None) -> BootConfig:
    """The validated BootConfig; a bad parameter is one line naming it. `disk` (the --disk
    test switch) stands in for disk=."""
    from agent.boot.cmdline import parse_cmdline
    from agent.boot.tokens import CmdlineError

    try:
        cfg = parse_cmdline(text)
    except CmdlineError as exc:
        raise BootParameterError(f"boot parameter {exc.what}", _joined(
            exc.fix, "fix the append line in pxelinux.cfg (check it with "
            "`herdcast plan --cmdline '...'`)")) from exc
    return dataclasses.replace(cfg, disk=disk) if disk else cfg


def run_options(cfg: BootConfig, interface: str | None, dhcp_name: str | None = None,
                con: Console | None = None) -> SendOptions | ReceiveOptions:
    """The options of the transfer this node runs, once the network step has named the
    interface (and the DHCP server perhaps the node): the plan's (`cfg.transfer`, parsed
    once from udpcparam= with disk=, port=, compr=, hostname= ... set as values). An
    --interface in udpcparam wins; a receiver with hostname= unset is named by the DHCP
    server (option 12) when it names it."""
    opts = cfg.transfer
    if not cfg.sending and opts.hostname is None:
        opts = dataclasses.replace(opts, hostname=dhcp_hostname(dhcp_name, con or Console()))
    return dataclasses.replace(opts, interface=opts.interface or interface)


def dhcp_hostname(dhcp_name: str | None, con: Console) -> str | None:
    """The clone's name from the DHCP server (option 12), or None when it gave none or gave
    one that is no hostname (said on the console and not written)."""
    from agent.personalize.wishes import WishError, check_hostname

    if not dhcp_name:
        return None
    try:
        name = check_hostname(dhcp_name)
    except WishError:
        con.say(f"clone: the DHCP server's host name {dhcp_name[:64]!r} is no hostname: "
                "not written (set hostname=)")
        return None
    con.say(f"clone: named {name} by the DHCP server (option 12; hostname= overrides)")
    return name


def confirm(cfg: BootConfig, con: Console) -> None:
    """auto=no: the admin presses Enter at the console before anything is written."""
    if cfg.auto:
        return
    con.say("auto=no: press Enter to start the transfer (auto=yes runs unattended)")
    line = sys.stdin.readline() if sys.stdin is not None else ""
    if not line:
        raise NodeFailure("auto=no, but there is no console input to confirm with",
                          "set auto=yes to run unattended")


def nic_missing(mac: str | None, timeout: int) -> str:
    """What the hardware step says when the NIC to use is not there."""
    if mac:
        return f"the NIC with MAC {mac} (BOOTIF=) did not appear within {timeout} s"
    return f"no NIC appeared within {timeout} s"


def import_ahead(cfg: BootConfig) -> threading.Thread:
    """Import the network and transfer steps' modules in a thread while the hardware step
    waits for the kernel (modprobe, devices probing, a disk showing up): under TCG pyroute2
    and the sender or receiver took about a second to import, now mostly overlapped with
    that wait. A module that fails to import here fails again, with its message, where its
    step imports it (no agent module imports another in a cycle: tests/test_architecture)."""
    names = ["agent.net.network",
             "agent.transfer.send.sender" if cfg.sending else "agent.transfer.receive.receiver"]

    def run() -> None:
        for name in names:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001, S112 - reported by the step that needs it
                continue

    thread = threading.Thread(target=run, name="import-ahead", daemon=True)
    thread.start()
    return thread


def hardware_step(cfg: BootConfig, con: Console) -> None:
    """Load drivers until the NIC and the disk are there; the later steps' modules are
    imported meanwhile (import_ahead, started once this step's own are in: on one CPU
    it would otherwise delay the first modprobe)."""
    from agent.hw.drivers import Host, Wanted, load_drivers

    import_ahead(cfg)

    disk = cfg.disk
    wanted = Wanted(disk=disk, mac=cfg.bootif_mac, netmodule=cfg.netmodule,
                    netmodparm=cfg.netmodparm,
                    diskmodule=cfg.diskmodule if cfg.enable_diskmodule else "NONE",
                    diskmodparm=cfg.diskmodparm)
    host = Host(dev_root="/dev" if pid1.is_init() else None)  # elsewhere udevd owns /dev/disk
    report = load_drivers(wanted, host, timeout=cfg.hwtimeout, say=con.say)
    for note in report.notes:
        con.say(note)
    con.say(f"modules loaded: {', '.join(report.loaded) or 'none'}"
            f" ({report.passes} passes, {report.seconds:.1f} s)")
    for failure in report.failed:
        con.say(f"modprobe failed: {failure}")
    con.say(f"NICs: {', '.join(f'{n} {m}' for n, m in report.nics) or 'none'}")
    if not report.nics or (cfg.bootif_mac and cfg.bootif_mac not in
                           [m for _, m in report.nics]):
        raise NodeFailure(nic_missing(cfg.bootif_mac, cfg.hwtimeout),
                          "set netmodule= to its driver (and netmodparm=), or hwtimeout=")
    if report.disk is None:
        raise NodeFailure(f"disk {disk} did not appear within {cfg.hwtimeout} s",
                          "check disk=, or set diskmodule= to its driver")
    con.say(f"disk {disk} present")


def network_step(cfg: BootConfig, args: NodeArgs, con: Console) -> NetConfig:
    """Bring up and address the NIC; the transfer then uses exactly that interface."""
    from agent.net.network import NetworkError, existing_config, setup_network

    try:
        if args.no_network:
            net = existing_config(cfg.udpcparam.interface)
        else:
            net = setup_network(dhcp=cfg.dhcp, ip=cfg.ip, netmask=cfg.netmask,
                                gateway=cfg.gateway, mac=cfg.bootif_mac,
                                carrier_timeout=cfg.hwtimeout, dhcp_timeout=cfg.dhcptimeout,
                                say=con.say)
    except NetworkError as exc:
        raise NodeFailure(f"network: {exc.what}", exc.fix) from exc
    con.say(f"network: {net.describe()}")
    return net


def disk_step(cfg: BootConfig, args: NodeArgs, con: Console) -> None:
    """Receiver: refuse a disk in use before writing; sender: measure it, and refuse a
    read-write mounted filesystem on it unless mounted=warn. disk= must be a
    block device; a file given by --disk (the test switch) stands in for one. A DiskError
    says what to change on its own."""
    from agent.hw.disk import check_receive_target, check_send_source, send_source_warnings

    block_only = args.disk is None
    if cfg.sending:
        disk = check_send_source(cfg.disk, block_only=block_only, mounted=cfg.mounted,
                                 node=True)
        for warning in send_source_warnings(cfg.disk):  # mounted=warn: sent anyway
            con.say(f"{warning} (mounted=warn)")
        con.say(f"disk {cfg.disk}: {disk.size} bytes to send")
    else:
        # the image size is known only once the sender answers: the receiver checks it
        disk = check_receive_target(cfg.disk, file_is_disk=True, block_only=block_only,
                                    node=True)
        con.say(f"disk {cfg.disk}: {disk.size} bytes, not in use; it will be overwritten")


def transfer_step(cfg: BootConfig, opts: SendOptions | ReceiveOptions, con: Console):
    """Run herdcast send/receive in this process; returns its TransferResult."""
    try:
        if cfg.sending:
            from agent.transfer.send.sender import send as run
        else:
            from agent.transfer.receive.receiver import receive as run
    except ImportError as exc:
        raise NodeFailure(f"this herdcast lacks the {'sender' if cfg.sending else 'receiver'} "
                          f"({exc})", "rebuild the initramfs with make initrd") from exc
    con.say(f"{'sending' if cfg.sending else 'receiving'} {opts.file} on port "
            f"{opts.portbase}" + (f", compression {opts.compress}" if opts.compress else "")
            + (", serving until powered off" if cfg.sending and cfg.serve else ""))
    if cfg.sending:  # a console is a terminal, but plain lines are what it can keep
        opts = dataclasses.replace(opts, live=False)
    return run(opts)


def report_result(cfg: BootConfig, opts: SendOptions | ReceiveOptions, result, con: Console
                  ) -> None:
    """The line the admin looks for: SUCCESS with bytes, time and digest, or FAILED."""
    verb = "sent" if cfg.sending else "received"
    if result.ok:
        rate = result.bytes / result.seconds / 1e6 if result.seconds > 0 else 0.0
        for r in result.receivers:
            con.say(f"receiver {r.address}: {r.verdict}, {r.bytes} bytes"
                    + (f", sha256 {r.digest}" if r.digest else ""))
        what = f"sha256 of the {opts.compress} stream" if opts.compress else "sha256"
        if result.changes is not None:
            con.say(f"clone: {len(result.changes)} change(s) after the digest agreed")
            for line in result.changes:
                con.say(f"  changed: {line}")
        con.say(f"SUCCESS: {verb} {result.bytes} bytes in {result.seconds:.1f} s "
                f"({rate:.1f} MB/s), {what} {result.sha256 or 'unknown'}")
        return
    error = result.error or NodeFailure("failed")
    if cfg.sending:
        raise NodeFailure(f"send: {error.what}", _joined(
            error.fix, "the receivers' disks are incomplete; fix it and boot them "
            "again")) from error
    from agent.personalize.run import PersonalizeError

    if isinstance(error, PersonalizeError):  # after the digest agreed: the image is whole
        raise NodeFailure(f"receive: {error.what}", _joined(
            error.fix, f"disk {opts.file} holds the master's image, not yet this node's "
            "own: fix the cause and image this node again")) from error
    raise NodeFailure(f"receive: {error.what} after {result.bytes} bytes", _joined(
        error.fix, f"disk {opts.file} is INCOMPLETE, do not boot from it; fix the cause "
        "and image this node again")) from error


def _joined(*fixes: str | None) -> str:
    """The fix of the error a step caught, then what the node adds to it."""
    return "; ".join(fix for fix in fixes if fix)


def run(args: NodeArgs) -> BaseException | None:
    """The node's steps; returns the failure it reported (None on success), in init mode
    after its post action, which then never returns. Every failure is one FAILED line on
    the console, then onfail=; an exception that is not a HerdcastError is a bug, reported
    with its traceback."""
    con = Console()
    action, failure = FAIL_ACTION, None
    phases = Phases()
    try:
        text = read_cmdline(args)
        con = open_consoles(text, is_init=pid1.is_init())
        if pid1.is_init():
            tee_std(con)
        from agent import __version__

        con.say(f"herdcast node {__version__} (PID {os.getpid()})")
        cfg = load_config(text, args.disk)
        action = cfg.onfail
        supervisor.tell_init("onfail", action)  # PID 1 follows it if this process dies
        from agent.boot.plan import describe

        con.say("plan:")
        for line in describe(cfg):
            con.say(line)
        if args.disk is None:  # /dev/null or the like: say so before drivers and network
            from agent.hw.disk import check_is_disk

            check_is_disk(cfg.disk)
        if not args.no_hardware:
            hardware_step(cfg, con)
            phases.mark("hardware")
        net = network_step(cfg, args, con)
        phases.mark("network")
        opts = run_options(cfg, net.ifname, net.hostname, con)
        disk_step(cfg, args, con)
        confirm(cfg, con)
        phases.mark("disk")
        started = time.monotonic()
        result = transfer_step(cfg, opts, con)
        phases.mark("transfer")
        if not result.seconds:
            result = dataclasses.replace(result, seconds=time.monotonic() - started)
        report_result(cfg, opts, result, con)
        action = cfg.post
    except HerdcastError as exc:
        con.fail(exc.what, exc.fix)
        failure = exc
    except Exception as exc:  # noqa: BLE001 - init must report, not die
        con.fail(f"internal error {type(exc).__name__}: {exc}",
                 "this is a herdcast bug; the console log above shows where")
        import traceback

        traceback.print_exc(file=con)
        failure = exc
    con.say(phases.line())
    kind = "post" if failure is None else "onfail"
    if args.no_post:
        con.say(f"--no-post: skipping {kind}={action}")
        return failure
    supervisor.tell_init(kind, action, finished=True)  # nothing is written any more
    con.say(f"{kind}={action}")
    pid1.post_action(action, con)
    return failure
