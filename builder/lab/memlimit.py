"""A memory cgroup for a program the lab runs: a sender with little memory to spare, as under
a systemd unit's MemoryMax= or in a container (agent.hw.memory reads what it leaves).

A new cgroup under this process's own memory cgroup (v1 `memory.limit_in_bytes`, or v2
`memory.max` where the parent delegates the memory controller), removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

from agent.hw.memory import cgroup_dirs
from builder.lab.vms import LabError


@contextlib.contextmanager
def memory_limited(limit: int, name: str) -> Iterator[Callable[[int], None]]:
    """`admit(pid)`, which moves a process into a new memory cgroup named `name`, limited to
    `limit` bytes; the cgroup goes when the block ends (its processes must have exited).
    Processes are moved from here, and run in a lab namespace with `nsenter --net`: `ip
    netns exec` gives a program a /sys of its own, where the cgroup file systems are not
    mounted (agent.hw.memory could not read its limit). LabError where no memory cgroup
    can be made."""
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
        made = path
        break
    if made is None:
        raise LabError("no memory cgroup can be made here",
                       "run as root on a kernel with the memory controller")
    try:
        def admit(pid: int) -> None:
            with open(os.path.join(made, "cgroup.procs"), "w", encoding="ascii") as f:
                f.write(str(pid))

        yield admit
    finally:
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(made)
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
