"""`BuildConfig`: everything one `python -m builder initrd` run is asked to do, typed,
checked and frozen. builder/__main__.py makes it once from the command line; the pipeline
(builder/initrd.py) reads it and nothing else."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from builder import firmware, modules, pxelinux
from builder.arch import Arch, get
from builder.errors import BuildError


def default_cache() -> Path:
    """Outside the git tree, so `make clean` does not throw away a 70 MB kernel download:
    $HERDCAST_CACHE, else $XDG_CACHE_HOME/herdcast or ~/.cache/herdcast."""
    if env := os.environ.get("HERDCAST_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "herdcast"


@dataclass(frozen=True)
class BuildConfig:
    """One initrd build. Constructing it checks every field a user can get wrong, before
    any download or write (BuildError names the option and the fix)."""

    out: Path  # the TFTP root written
    work: Path  # scratch: frozen agent, initrd root, caches
    cache: Path = Path()  # the kernel package download (default_cache() when empty)
    kernel: Path | None = None  # a vmlinuz instead of Debian's package (with modules_dir)
    modules_dir: Path | None = None
    modules: str = ""  # --modules spec: "+a,+b" adds, "a,b" narrows
    firmware: str = "debian"  # debian, host (/lib/firmware), none, or a directory
    level: int = 22  # zstd level (22: the window is the frame, ~40 MB, which the kernel takes)
    http_url: str | None = None  # boot files over HTTP from here (normalised, no "/" at end)
    python: Path = Path(sys.executable)  # the interpreter that freezes the agent
    mtime: int = 0  # every archive member's mtime ($SOURCE_DATE_EPOCH)
    trust_key: Path | None = None  # nodes accept only senders signing with its private key
    guarded: bool = False  # pxelinux.cfg/default boots the local disk; per-MAC files arm
    arch: str = "amd64"  # the nodes' architecture (builder/arch.py): amd64, arm64

    @property
    def target(self) -> Arch:
        return get(self.arch)

    def __post_init__(self) -> None:
        if not 1 <= self.level <= 22:
            raise BuildError(f"--level {self.level}: zstd levels are 1 to 22",
                             "use 22 (the default) or lower for a faster build")
        if (self.kernel is None) != (self.modules_dir is None):
            raise BuildError("--kernel and --modules-dir go together (image and its modules)")
        get(self.arch)  # an unknown --arch is refused here
        modules.parse_spec(self.modules)
        firmware.check_source(self.firmware)
        if self.http_url is not None:
            object.__setattr__(self, "http_url", pxelinux.check_http_url(self.http_url))
        if self.trust_key is not None:
            from agent.trust.keys import load_public

            load_public(str(self.trust_key))  # a bad key is refused before any work
        if self.cache == Path():
            object.__setattr__(self, "cache", default_cache())
