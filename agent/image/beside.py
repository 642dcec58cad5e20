"""Replacing a file only once its successor is whole: written beside it, then renamed.

A capture, a description or a re-chunked manifest that fails half-way (a full disk, Ctrl-C,
a damaged source) must leave the previous image as it was, so every rewrite of a stored
image goes through `written_beside`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def written_beside(path: str, mode: int | None = None) -> Iterator[str]:
    """A temporary path in `path`'s directory to write the new file into. Leaving the block
    normally fsyncs it, gives it `mode` (default: `path`'s own permission bits) and renames
    it over `path`; an exception removes it, and `path` is untouched."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                               suffix=".partial")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as done:
            os.fsync(done.fileno())
        os.chmod(tmp, mode if mode is not None else os.stat(path).st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
