"""The `herdcast` console command: a table of command name -> module in agent/cmd.

Each command's module is imported only when it runs, so `herdcast send` on a server does
not pay for pyudev or pyroute2, and a frozen node does not pay for the builder. A command
returns 0 or raises; a failure the user can act on (any HerdcastError) ends it with one
line, `herdcast COMMAND: what -- fix`, a traceback means a bug. The exit status of an
outcome is decided in one place, agent.cmd.exit_status:

    every command   0 success; 1 a failure the user can fix (the line says what and how);
                    2 a usage error: a bad option, boot parameter or command, nothing
                    touched; 130 interrupted (SIGINT, Ctrl-C); 143 terminated (SIGTERM)
    send            1 also when any receiver failed, was dropped, disagreed or could not
                    be personalised, or none took part (under --serve: a receiver that
                    finished disagreed, said it failed or could not be personalised, or
                    it was stopped before any receiver was imaged)
    receive         1 also when the image is incomplete (the line says so), or the
                    digest agreed and personalising the clone failed
    plan            2 also for an unreadable --cmdline-file
    image           1 also for an unreadable or damaged image file
    keygen          1 when the key files cannot be written
    deploy          2 also for a bad inventory or image (nothing armed or powered); 1 when
                    a node did not agree (or never connected)
    node            (run by hand) 1 a step failed, 2 a bad boot parameter, 70 an internal
                    error (its traceback on the console); as PID 1 it never exits. The
                    node reports its own failures on its consoles and follows onfail=.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from typing import NamedTuple

from agent.cmd import INTERRUPTED, TERMINATED, exit_status
from agent.errors import HerdcastError
from agent.image.heap import keep_freed_blocks
from agent.say import one_command, say


class Command(NamedTuple):
    module: str  # has main(argv) -> int and parser() -> its argparse.ArgumentParser
    summary: str
    own_signals: bool = False  # handles SIGTERM itself (PID 1 never dies of it)


COMMANDS = {
    "send": Command("agent.cmd.send",
                    "send a file or disk by multicast (udp-sender's options)"),
    "receive": Command("agent.cmd.receive",
                       "receive a file or disk by multicast (udp-receiver's options)"),
    "plan": Command("agent.cmd.plan",
                    "print what a node would do with a kernel command line, touching nothing"),
    "image": Command("agent.cmd.image",
                     "map, capture, restore and inspect used-block images (no network)"),
    "keygen": Command("agent.cmd.keygen",
                      "make an Ed25519 key pair for signed sessions (send --sign-key)"),
    "node": Command("agent.cmd.node",
                    "the initramfs init: read /proc/cmdline and image this node unattended",
                    own_signals=True),
    "deploy": Command("agent.cmd.deploy",
                      "power a fleet on through its BMCs, image it, boot it into its new system"),
}

USAGE = ("usage: herdcast COMMAND [options]\n\ncommands:\n"
         + "".join(f"  {name:<9} {c.summary}\n" for name, c in COMMANDS.items())
         + "\n`herdcast COMMAND --help` lists a command's options.\n")


def parser() -> argparse.ArgumentParser:
    """Every command's own parser under one `herdcast` parser: what the man page and the
    shell completions are generated from (builder.manual), so they list exactly the options
    the commands take. Dispatching stays main's (a command's module is imported only when
    it runs); this imports them all."""
    from agent import __version__

    p = argparse.ArgumentParser(
        prog="herdcast", description="Unattended multicast disk cloning for PXE-booted "
        "fleets, speaking udpcast's wire protocol: udp-sender's and udp-receiver's options "
        "work as they are.")
    p.add_argument("--version", action="version", version=f"herdcast {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        own = importlib.import_module(command.module).parser()
        sub.add_parser(name, help=command.summary, description=own.description,
                       parents=[own], add_help=False)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a service manager stopping us), raised where the program is so the
    clean-up of Ctrl-C runs too: a receiver says DISCONNECT, so its sender drops it at once
    instead of waiting for it, and a terminal left in raw mode is restored."""


def _on_sigterm(signum: int, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a command; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    if argv[0] == "--version":
        from agent import __version__

        print(f"herdcast {__version__}")
        return 0
    name = argv[0]
    command = COMMANDS.get(name)
    if command is None:
        say(f"herdcast: unknown command {name!r}")
        print(USAGE, file=sys.stderr, end="")
        return 2
    keep_freed_blocks()  # image-sized buffers reused, not faulted in again (agent.image.heap)
    previous = None if command.own_signals else signal.signal(signal.SIGTERM, _on_sigterm)
    with one_command():  # a --log the command opened gets its last line too
        try:
            return importlib.import_module(command.module).main(argv[1:])
        except SystemExit as exc:  # argparse: --help (0), or usage printed (2)
            return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
        except Terminated:
            say(f"herdcast {name}: terminated")
            return TERMINATED
        except KeyboardInterrupt:
            say(f"herdcast {name}: interrupted")
            return INTERRUPTED
        except HerdcastError as exc:
            say(f"herdcast {name}: {exc}")
            return exit_status(exc)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
