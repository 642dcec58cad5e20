"""`herdcast plan`: print what a node would do with a kernel command line, touching nothing.

The plan itself (parsing the line as the node does, and its lines or JSON) is
agent.boot.plan's; this is the command around it. Exit status: 0 with the plan on stdout,
2 for a bad or unreadable line (a CmdlineError: one line naming the parameter) or a bad
switch.
"""

from __future__ import annotations

import argparse
import json

from agent.boot.cmdline import parse_cmdline
from agent.boot.plan import as_json, describe
from agent.boot.tokens import CmdlineError

PROC_CMDLINE = "/proc/cmdline"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="herdcast plan",
        description="Print what a herdcast node would do with a kernel command line, "
                    "touching no hardware. Parameters: kernel-cmdline.md.")
    p.add_argument("--cmdline", metavar="TEXT",
                   help=f"the kernel command line to check (default: read {PROC_CMDLINE})")
    p.add_argument("--cmdline-file", metavar="PATH", default=PROC_CMDLINE,
                   help=f"read the command line from PATH (default {PROC_CMDLINE})")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    text = args.cmdline
    if text is None:
        try:
            with open(args.cmdline_file, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as exc:
            raise CmdlineError(f"cannot read {args.cmdline_file}: {exc.strerror}",
                               "give the line with --cmdline") from exc
    cfg = parse_cmdline(text)
    if args.json:
        print(json.dumps(as_json(cfg), indent=2))
    else:
        print("herdcast node plan (nothing touched):")
        print("\n".join(describe(cfg)))
    return 0
