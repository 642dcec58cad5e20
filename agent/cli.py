"""The `herdcast` console command: send, receive, plan, node.

Subcommands import their module only when run, so `herdcast send` on a server does not pay
for pyudev or pyroute2, and a frozen node does not pay for the builder. A failure the user
can act on (any HerdcastError) ends a command with one line, `herdcast COMMAND: error`, and
exit status 2 for a bad option or boot parameter, 1 for anything else; a traceback means a
bug. The node reports its own failures on its consoles and follows onfail=.
"""

from __future__ import annotations

import signal
import sys

from agent.errors import HerdcastError
from agent.say import say

USAGE = """usage: herdcast COMMAND [options]

commands:
  send      send a file or disk by multicast (udp-sender's options)
  receive   receive a file or disk by multicast (udp-receiver's options)
  plan      print what a node would do with a kernel command line, touching nothing
  image     map, capture, restore and inspect used-block images (no network)
  keygen    make an Ed25519 key pair for signed sessions (send --sign-key)
  node      the initramfs init: read /proc/cmdline and image this node unattended
  deploy    power a fleet on through its BMCs, image it, boot it into its new system

`herdcast COMMAND --help` lists a command's options.
"""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a service manager stopping us), raised where the program is so the
    clean-up of Ctrl-C runs too: a receiver says DISCONNECT, so its sender drops it at once
    instead of waiting for it, and a terminal left in raw mode is restored."""


def _on_sigterm(signum: int, frame) -> None:
    raise Terminated


def _transfer(side: str, argv: list[str]) -> int:
    """`herdcast send` / `herdcast receive`: parse udpcast's options, then run that side."""
    from agent.transfer import options

    signal.signal(signal.SIGTERM, _on_sigterm)
    parse = options.parse_send_args if side == "send" else options.parse_receive_args
    opts = parse(argv)
    if side == "send":
        from agent.transfer.send.sender import run_sender

        return run_sender(opts)
    from agent.transfer.receive.receiver import run_receiver

    return run_receiver(opts)


def _plan(argv: list[str]) -> int:
    from agent.boot.plan import main as plan_main

    return plan_main(argv)


def _image(argv: list[str]) -> int:
    from agent.image.commands import main as image_main

    return image_main(argv)


def _keygen(argv: list[str]) -> int:
    """`herdcast keygen NAME`: NAME.key (private, for herdcast send --sign-key) and
    NAME.pub (for make initrd SIGN_PUBKEY= and herdcast receive --trust-key)."""
    import argparse
    from pathlib import Path

    from agent.trust.keys import generate

    p = argparse.ArgumentParser(prog="herdcast keygen", description=_keygen.__doc__)
    p.add_argument("name", help="path prefix of the two files, e.g. /etc/herdcast/fleet")
    name = p.parse_args(argv).name
    line = generate(Path(f"{name}.key"), Path(f"{name}.pub"))
    say(f"herdcast keygen: wrote {name}.key (keep it secret) and {name}.pub: {line}")
    return 0


def _node(argv: list[str]) -> int:
    from agent.boot.initnode import main as node_main

    return node_main(argv)


def _deploy(argv: list[str]) -> int:
    from agent.deploy.command import main as deploy_main

    signal.signal(signal.SIGTERM, _on_sigterm)
    return deploy_main(argv)


COMMANDS = {
    "send": lambda argv: _transfer("send", argv),
    "receive": lambda argv: _transfer("receive", argv),
    "plan": _plan,
    "image": _image,
    "keygen": _keygen,
    "node": _node,
    "deploy": _deploy,
}


def _exit_status(exc: Exception) -> int | None:
    """For a failure the user can act on: 2 for a bad option or boot parameter (as
    argparse's usage errors), 1 otherwise. None for anything else: a bug, whose traceback
    is wanted."""
    from agent.boot.tokens import CmdlineError
    from agent.transfer.options import OptionError

    if isinstance(exc, (OptionError, CmdlineError)):  # OptionError: until it is a HerdcastError
        return 2
    return 1 if isinstance(exc, HerdcastError) else None


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    if argv[0] == "--version":
        from agent import __version__

        print(f"herdcast {__version__}")
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        say(f"herdcast: unknown command {argv[0]!r}")
        print(USAGE, file=sys.stderr, end="")
        return 2
    try:
        return command(argv[1:])
    except Terminated:
        say(f"herdcast {argv[0]}: terminated")
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        say(f"herdcast {argv[0]}: interrupted")
        return 130
    except Exception as exc:
        status = _exit_status(exc)
        if status is None:
            raise
        say(f"herdcast {argv[0]}: {exc}")
        return status
