"""Files inside a mounted clone, reached as the clone itself would reach them.

A cloned root's symlinks are absolute to *its* /, not ours (/etc/os-release ->
/usr/lib/os-release on some distributions): `inside` resolves a path component by
component with the mount as /, so nothing outside the clone is read or written. Files are
replaced whole (a temporary file, then rename), keeping the old file's owner and mode.
"""

from __future__ import annotations

import os
from pathlib import Path

MAX_LINKS = 40  # the kernel's own bound on symlinks followed in one lookup


def inside(root: Path, path: str) -> Path:
    """`path` (absolute in the clone) as a path under `root`, its symlinks followed within
    the clone; the last component need not exist."""
    parts = [p for p in path.split("/") if p and p != "."]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        here = root.joinpath(*resolved, part)
        if here.is_symlink() and hops < MAX_LINKS:
            hops += 1
            target = os.readlink(here)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def read_text(root: Path, path: str) -> str | None:
    """The file's text, or None when it is absent or unreadable."""
    try:
        return inside(root, path).read_text(errors="replace")
    except OSError:
        return None


def write_file(root: Path, path: str, data: bytes, mode: int = 0o644,
               uid: int = 0, gid: int = 0, keep_owner: bool = True) -> None:
    """Replace (or create) `path` in the clone with `data`. An existing file keeps its
    owner and mode when `keep_owner`; a new one gets `mode`, `uid`, `gid`. Parent
    directories are made as root, 0755."""
    target = inside(root, path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if keep_owner and target.exists():
        st = target.stat()
        mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
    tmp = target.with_name(f".{target.name}.herdcast")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with open(fd, "wb", closefd=False) as f:
            f.write(data)
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
