"""`herdcast node`: the initramfs init, from /proc/cmdline to a cloned disk (agent.boot.node).

The one entry the initramfs takes: /init execs `herdcast node`, the dispatcher comes here,
and as PID 1 this module protects PID 1 (agent.boot.supervisor, standard library only, which
also mounts proc, sys and devtmpfs) before any other agent module loads: the node's modules,
and its switches' parser, are imported in the agent PID 1 forks, so a broken import there is
the agent crashing (a traceback, one FAILED line and onfail=), not init ending and the
kernel panicking. Run by hand (tests, a server) it runs the node in this process.

Exit status (run by hand; as PID 1 it never exits): 0 imaged, 1 a step failed (its FAILED
line says what and the fix), 2 a bad boot parameter or switch, 70 an internal error (a bug,
its traceback on the console).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from agent.boot import supervisor

if TYPE_CHECKING:  # imported in the agent only (see above)
    from agent.boot.node import NodeArgs


def main(argv: list[str]) -> int:
    if os.getpid() == 1:
        from agent.boot.phases import python_started

        python_started()
        supervisor.init_main(lambda: _node(argv), lambda: cmdline_of(argv))
    return _node(argv)


def _node(argv: list[str]) -> int:
    """The node's steps under these switches; the failure they reported as exit status."""
    from agent.boot import node
    from agent.cmd import exit_status

    return exit_status(node.run(parse_args(argv)))


def parser():
    """`herdcast node`'s switches: all for running it outside an initramfs."""
    import argparse

    p = argparse.ArgumentParser(prog="herdcast node", description=(
        "The initramfs init: read the kernel command line, load drivers, configure the "
        "network, and send or receive the disk. The switches are for tests."))
    p.add_argument("--cmdline", metavar="TEXT", help="use TEXT instead of /proc/cmdline")
    p.add_argument("--root", default="/", metavar="DIR",
                   help="read proc/cmdline under DIR (default: /)")
    p.add_argument("--disk", metavar="PATH",
                   help="use PATH instead of disk= (a file-backed disk)")
    p.add_argument("--no-hardware", action="store_true", help="load no modules")
    p.add_argument("--no-network", action="store_true",
                   help="use the interfaces as they are configured")
    p.add_argument("--no-post", action="store_true",
                   help="do no post=/onfail= action, just exit with the status")
    return p


def parse_args(argv: list[str]) -> NodeArgs:
    """The test switches; an initramfs runs `herdcast node` with none of them."""
    from agent.boot.node import NodeArgs

    p = parser()
    ns = p.parse_args(argv)
    return NodeArgs(ns.cmdline, ns.root, ns.disk, ns.no_hardware, ns.no_network, ns.no_post)


def cmdline_of(argv: list[str]) -> str:
    """The command line the node will read, found without argparse or the node's modules:
    --cmdline TEXT, else ROOT/proc/cmdline (--root), else /proc/cmdline; "" if unreadable.
    Only PID 1's own reading of onfail= and console= uses it."""
    root = "/"
    for i, word in enumerate(argv):
        for switch in ("--cmdline", "--root"):
            if word.startswith(f"{switch}="):
                value: str | None = word.split("=", 1)[1]
            elif word == switch and i + 1 < len(argv):
                value = argv[i + 1]
            else:
                continue
            if switch == "--cmdline":
                return value or ""
            root = value or "/"
    try:
        with open(os.path.join(root, "proc/cmdline"), encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""
