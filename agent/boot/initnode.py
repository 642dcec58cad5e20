"""`herdcast node` as the initramfs starts it: PID 1 is made safe before any agent module
loads.

agent.boot.node imports the console, the error family and (lazily) everything else; as
PID 1 a broken import there would end init and panic the kernel. Here PID 1 protects itself
first (agent.boot.supervisor, standard library only) and imports the node inside the agent
it forks, so such a failure is the agent crashing: a traceback, one FAILED line and onfail=.
Elsewhere this is agent.boot.node.main.
"""

from __future__ import annotations

import os

from agent.boot import supervisor


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


def main(argv: list[str]) -> int:
    """`herdcast node`: as PID 1 never returns; elsewhere the node's exit status."""
    if os.getpid() != 1:
        from agent.boot.node import main as node_main

        return node_main(argv)

    def agent() -> int:
        from agent.boot.node import parse_args, run

        return run(parse_args(argv))

    supervisor.init_main(agent, lambda: cmdline_of(argv))
