"""`herdcast deploy IMAGE --inventory FILE`: the command over agent.deploy (see flow).

Everything the user gave is checked first — the inventory (every node, every key), the
image, the sender's options, every node's armed boot line — and a mistake is one line that
touches no file and powers nothing. Then: arm, power on, serve, disarm; the final table and
`--report` name nodes by inventory name. Exit 0 only when every node agreed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from agent.deploy import inventory
from agent.deploy.flow import DeployError, Deployment
from agent.say import say

DEFAULT_TFTP_ROOT = Path("/var/lib/tftpboot")
DEFAULT_WAIT = 600.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="herdcast deploy",
        description="Power a fleet on through its BMCs (Redfish, IPMI, or Wake-on-LAN), "
        "image every node with IMAGE, and boot each into its new system.")
    p.add_argument("image", help="what to send: a stored image (herdcast image capture), "
                   "a disk or a file")
    p.add_argument("--inventory", required=True, metavar="FILE",
                   help="TOML, one [[node]] table per machine: name, mac, bmc, username, "
                   "password or password_file, boot parameters (README: Deploying)")
    p.add_argument("--tftp-root", type=Path, default=DEFAULT_TFTP_ROOT, metavar="DIR",
                   help="the PXE server's TFTP root, where each node's per-MAC files are "
                   "armed and disarmed (default: %(default)s)")
    p.add_argument("--wait", type=float, default=DEFAULT_WAIT, metavar="SECONDS",
                   help="how long after power-on a node may take to connect before it is "
                   "reported as never connected (default: %(default)g)")
    p.add_argument("--interface", metavar="IF",
                   help="the interface to the nodes: the sender's, and Wake-on-LAN's (the "
                   "magic packet goes out there alone)")
    p.add_argument("--report", metavar="FILE.json",
                   help="write the deploy's report (nodes by inventory name, and the "
                   "sender's own report) when it ends")
    return p


def main(argv: list[str]) -> int:
    """Exit 2 for bad input (one line, nothing touched), else deploy()'s status."""
    from agent.transfer.options import OptionError

    args = parser().parse_args(argv)
    try:
        return deploy(args)
    except (inventory.InventoryError, DeployError, OptionError) as exc:
        say(f"herdcast deploy: {exc}")
        return 2


def deploy(args: argparse.Namespace) -> int:
    from agent.transfer.options import parse_send_args
    from agent.transfer.send.sender import send

    if args.wait <= 0:
        raise DeployError(f"--wait {args.wait:g}: not a positive number of seconds",
                          "give how long a node may take to PXE-boot, e.g. --wait 600")
    inv = inventory.load(args.inventory)
    if not os.path.exists(args.image):
        raise DeployError(f"image {args.image}: no such file",
                          "give a stored image, a disk or a file to send")
    with tempfile.TemporaryDirectory(prefix="herdcast-deploy-") as tmp:
        send_report = os.path.join(tmp, "send.json")
        sender_argv = ["-f", args.image, "--serve", "--nokbd", "--report", send_report]
        if args.interface:
            sender_argv += ["--interface", args.interface]
        opts = parse_send_args(sender_argv)
        deploy = Deployment(inv, args.tftp_root, args.wait, args.interface)
        deploy.check()
        deploy.arm_all()
        deploy.power_all()
        say(f"herdcast deploy: serving {args.image} to {len(deploy.runs)} node(s) until "
            f"each agreed, failed or did not connect within {args.wait:g} s")
        result = send(opts, observer=deploy, should_stop=deploy.should_stop)
        status = deploy.finish(result)
        send_doc = _read(send_report)
    from agent.deploy import report
    from agent.transfer.send.report import format_table

    if result.receivers or (result.stats and result.stats.data_packets):
        say(format_table(result, result.stats))
    say(report.table(deploy))
    if args.report:
        doc = report.build(deploy, result, args.image, status, send_doc)
        try:
            from agent.transfer.send.jsonreport import write

            write(args.report, doc)
        except OSError as exc:
            say(f"herdcast deploy: --report {args.report}: {exc.strerror or exc}")
            status = 1
    say(report.summary(deploy))
    return status


def _read(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
