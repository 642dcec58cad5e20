"""The one error family of herdcast: every failure a user can act on is a `HerdcastError`.

Each carries *what* failed and, when there is one, *the fix*, both on one line: a node's
console, a serial log or a server's terminal shows `what -- fix` and nothing else, never a
traceback. Each concern subclasses it (`OptionError`, `DiskError`, `NetworkError`, ...) so a
caller can still tell them apart, and the entry points (the node's steps, `herdcast send`,
`python -m builder`) catch this base alone.
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
