"""A memory cgroup for a program the lab runs: a sender with little memory to spare, as under
a systemd unit's MemoryMax= or in a container (agent.hw.memory reads what it leaves).

A new cgroup under this process's own memory cgroup (v1 `memory.limit_in_bytes`, or v2
`memory.max` where the parent delegates the memory controller), removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

from agent.hw.memory import cgroup_dirs
from builder.lab.vms import LabError


class Limited:
    """A memory cgroup made for the lab (memory_limited): `argv(cmd)` runs `cmd` in it."""

    def __init__(self, path: str, version: int) -> None:
        self.path, self.version = path, version
        point = path
        while not os.path.ismount(point):
            point = os.path.dirname(point)
        self.rel = os.path.relpath(path, point)

    def argv(self, cmd: list[str]) -> list[str]:
        """`cmd` run in the cgroup, from a lab host (`ip netns exec`). That gives a program a
        /sys of its own without the cgroup file systems, where agent.hw.memory would find no
        limit: the hierarchy is mounted there again first (as a container's runtime does),
        then the shell enters the cgroup and becomes `cmd`."""
        if self.version == 1:
            mount = ("mount -t tmpfs hc /sys/fs/cgroup && mkdir /sys/fs/cgroup/memory && "
                     "mount -t cgroup -o memory hc /sys/fs/cgroup/memory")
            procs = f"/sys/fs/cgroup/memory/{self.rel}/cgroup.procs"
        else:
            mount = "mount -t cgroup2 hc /sys/fs/cgroup"
            procs = f"/sys/fs/cgroup/{self.rel}/cgroup.procs"
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                f'{mount} && echo $$ > {procs} && exec "$@"', "sh", *cmd]


@contextlib.contextmanager
def memory_limited(limit: int, name: str) -> Iterator[Limited]:
    """A new memory cgroup named `name`, limited to `limit` bytes, under this process's own
    (or a parent's); it goes when the block ends (its processes must have exited). LabError
    where no memory cgroup can be made."""
    made = None
    for parent, limit_file in _parents():
        path = os.path.join(parent, name)
        try:
            os.mkdir(path)
        except OSError:
            continue
        try:
            with open(os.path.join(path, limit_file), "w", encoding="ascii") as f:
                f.write(str(limit))
        except OSError:
            os.rmdir(path)
            continue
        made = Limited(path, 1 if limit_file == "memory.limit_in_bytes" else 2)
        break
    if made is None:
        raise LabError("no memory cgroup can be made here",
                       "run as root on a kernel with the memory controller")
    try:
        yield made
    finally:
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(made.path)
                break
            except OSError:  # a process still in it (EBUSY) for a moment after its exit
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def _parents() -> Iterator[tuple[str, str]]:
    """(a memory cgroup directory: this process's, then its parents', the limit file a child
    of it has)."""
    for d in cgroup_dirs():
        if os.path.exists(os.path.join(d, "memory.limit_in_bytes")):
            yield d, "memory.limit_in_bytes"
        elif "memory" in _read(os.path.join(d, "cgroup.subtree_control")).split():
            yield d, "memory.max"


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read()
    except OSError:
        return ""
