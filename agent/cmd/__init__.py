"""The `herdcast` commands, one module per command, each over the library that does the work.

A command module holds `parser()` (its argparse, or the library's parser builder, which
agent.cli.parser gathers for the man page and shell completion) and `main(argv)`, which
runs the library and returns 0, or raises the library's HerdcastError: nothing else. agent.cli maps
a command name to its module and imports it only when run. Which exit status an outcome
gives is decided here, once, for the dispatcher and for the node (whose PID 1 runs it
without the dispatcher); agent.cli's docstring lists every command's statuses.
"""

from __future__ import annotations

from agent.errors import HerdcastError, UsageError

#: The statuses every command shares. New ones (a command's own) are added here, first match
#: wins, and are listed in agent.cli's docstring and the README.
EXIT_STATUS: list[tuple[type[HerdcastError], int]] = [
    (UsageError, 2),  # a bad option or boot parameter, as argparse's own usage errors
    (HerdcastError, 1),  # anything else the user can fix
]
INTERNAL_ERROR = 70  # EX_SOFTWARE: a bug, already reported with its traceback
INTERRUPTED = 130  # SIGINT (Ctrl-C): 128 + 2
TERMINATED = 143  # SIGTERM: 128 + 15


def exit_status(failure: BaseException | None) -> int:
    """0 for no failure, EXIT_STATUS's for a HerdcastError, INTERNAL_ERROR for anything else
    (only the node asks for that: the dispatcher lets a bug's traceback show instead)."""
    if failure is None:
        return 0
    for family, status in EXIT_STATUS:
        if isinstance(failure, family):
            return status
    return INTERNAL_ERROR
