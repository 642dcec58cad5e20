"""How much memory this process may still take: the kernel's MemAvailable, and no more than
its memory cgroup leaves under its limit.

Why: a sender decides before its pass whether a disk's chunks can be kept in memory
(agent.transfer.send.chunking). A sender run under a memory limit (a systemd unit's
MemoryMax=, a container) sees the whole machine's MemAvailable in /proc/meminfo, and would
be killed by its limit where it could have made each chunk again from the disk instead.
cgroup v2 (`memory.max`, `memory.current`) and v1 (`memory.limit_in_bytes`,
`memory.usage_in_bytes`) are both read; of the usage, the cgroup's reclaimable file cache
(`inactive_file`) counts as free, as MemAvailable counts the machine's.
"""

from __future__ import annotations

import os

PROC_MEMINFO = "/proc/meminfo"
PROC_CGROUP = "/proc/self/cgroup"
PROC_MOUNTINFO = "/proc/self/mountinfo"


def available() -> int:
    """Bytes this process may still take (0 where nothing can be read)."""
    free = _meminfo_available()
    left = cgroup_left()
    return free if left is None else min(free, left)


def _meminfo_available() -> int:
    try:
        with open(PROC_MEMINFO, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cgroup_left() -> int | None:
    """What this process's memory cgroup (and its parents) leave under their limits; None
    where no limit is set or none can be read."""
    lefts = [left for d in cgroup_dirs() if (left := _left_in(d)) is not None]
    return min(lefts) if lefts else None


def cgroup_dirs() -> list[str]:
    """This process's memory cgroup directory and its parents' up to the mount's root."""
    try:
        with open(PROC_CGROUP, encoding="ascii") as f:
            lines = f.read().splitlines()
        with open(PROC_MOUNTINFO, encoding="ascii") as f:
            mounts = f.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        number, controllers, path = line.split(":", 2)
        v2 = number == "0" and controllers == ""
        if not v2 and "memory" not in controllers.split(","):
            continue
        for mount in mounts:
            fields = mount.split(" - ", 1)
            if len(fields) != 2:
                continue
            left, right = fields[0].split(), fields[1].split()
            fstype, opts = right[0], right[2].split(",") if len(right) > 2 else []
            if (v2 and fstype == "cgroup2") or (not v2 and fstype == "cgroup"
                                                and "memory" in opts):
                root, point = left[3], left[4]
                rel = os.path.relpath(path, root) if path.startswith(root) else None
                if rel is None or rel.startswith(".."):
                    continue
                d = os.path.normpath(os.path.join(point, rel))
                while d.startswith(point):
                    found.append(d)
                    if d == point:
                        break
                    d = os.path.dirname(d)
    return found


def _left_in(d: str) -> int | None:
    for limit_name, usage_name in (("memory.max", "memory.current"),
                                   ("memory.limit_in_bytes", "memory.usage_in_bytes")):
        try:
            with open(os.path.join(d, limit_name), encoding="ascii") as f:
                limit_text = f.read().strip()
            with open(os.path.join(d, usage_name), encoding="ascii") as f:
                usage = int(f.read())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or int(limit_text) >= 1 << 60:  # v1 says "no limit" so
            return None
        return max(0, int(limit_text) - usage + _stat(d, "inactive_file"))
    return None


def _stat(d: str, key: str) -> int:
    try:
        with open(os.path.join(d, "memory.stat"), encoding="ascii") as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0
