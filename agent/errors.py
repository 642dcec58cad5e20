"""The one error family of herdcast: every failure a user can act on is a `HerdcastError`.

Each carries *what* failed and, when there is one, *the fix*, both on one line: a node's
console, a serial log or a server's terminal shows `what -- fix` and nothing else, never a
traceback. Each concern subclasses it (`OptionError`, `DiskError`, `NetworkError`, ...) so a
caller can still tell them apart; a library that catches one to add context raises its own
`from` it, and a transfer that fails returns the error object itself (TransferResult.error),
never its text, so the fix travels with it to whoever shows it. Bad input on a command line
or a kernel command line is a `UsageError` (exit status 2, as argparse's own usage errors);
which exit status each error gives is decided in one place, agent.cmd.exit_status.
"""

from __future__ import annotations


def one_line(text: str) -> str:
    """User text can hold newlines or carriage returns; a console shows one line per error."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


class HerdcastError(Exception):
    """A failure the user can fix: `what` happened, `fix` says what to change (or None)."""

    def __init__(self, what: str, fix: str | None = None) -> None:
        self.what = one_line(what)
        self.fix = one_line(fix) if fix else None
        super().__init__(self.what)

    def __str__(self) -> str:
        return f"{self.what} -- {self.fix}" if self.fix else self.what


class UsageError(HerdcastError):
    """Bad input the user typed: an option (`OptionError`) or a boot parameter
    (`CmdlineError`). Nothing was touched yet; exit status 2."""
