"""Debian packages the TFTP root is made from, fetched the way an unprivileged user can:
`apt-get download` into `CACHE/debs` and `dpkg-deb -x` into `CACHE/<kind>/<package>`.
Nothing is installed (no maintainer scripts, nothing in /boot or /boot/efi), and each
package is downloaded and unpacked once."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from builder.errors import BuildError
from builder.lock import locked


def run(argv: list[str], what: str, cwd: Path | None = None, timeout: int = 900) -> str:
    """argv's stdout; a failure is a BuildError naming `what` and the tool's last line."""
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise BuildError(f"{argv[0]} not found", "run scripts/install-deps") from None
    except subprocess.TimeoutExpired:
        raise BuildError(f"{what}: {argv[0]} took over {timeout} s") from None
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise BuildError(f"{what}: {last}")
    return proc.stdout


#: The package's control fields, kept beside its files.
CONTROL = ".herdcast-control"


def control(tree: Path, field: str) -> str | None:
    """A control field (`Version`, `Built-Using`) of the package unpacked in `tree`."""
    text = (tree / CONTROL).read_text() if (tree / CONTROL).is_file() else ""
    match = re.search(rf"^{re.escape(field)}:\s*(.*)$", text, re.MULTILINE)
    return match.group(1).strip() if match else None


def candidate_version(package: str, apt: Sequence[str] = ()) -> str:
    """The version `apt-get download package` would fetch now (`apt`: apt options, e.g.
    a private sources list)."""
    out = run(["apt-cache", *apt, "policy", package], f"looking up {package}")
    match = re.search(r"Candidate:\s*(\S+)", out)
    if not match or match.group(1) == "(none)":
        raise BuildError(f"apt-cache policy {package}: no candidate version",
                         "run apt-get update (Debian 12 main must be in the sources)")
    return match.group(1)


def _wanted_version(package: str, stamp: Path, debs: Path, apt: Sequence[str]) -> str:
    """apt's candidate (security updates of shim, GRUB and the kernel matter); when apt
    knows no such package (no lists, an offline machine), what the cache already holds."""
    try:
        return candidate_version(package, apt)
    except BuildError:
        if stamp.is_file():
            return stamp.read_text()
        cached = sorted(debs.glob(f"{glob_escape(package)}_*.deb"))
        if cached:
            return cached[-1].name.split("_")[1].replace("%3a", ":")
        raise


def _deb_name(package: str, version: str) -> str:
    return f"{package}_{version.replace(':', '%3a')}_"


def unpacked(cache: Path, kind: str, package: str, version: str | None = None,
             finish: Callable[[Path], None] | None = None, apt: Sequence[str] = ()) -> Path:
    """CACHE/<kind>/<package>: the package's files, downloaded and unpacked on first use
    (`version` pins it, else the candidate; `finish(tree)` runs once on a fresh tree, e.g.
    depmod; `apt`: options for apt-get and apt-cache). The .deb is kept in CACHE/debs (in
    CACHE/debs/<kind> for a nested kind, so one package from two suites can sit side by
    side); older versions of the same package there are dropped."""
    with locked(cache / ".lock"):
        tree = cache / kind / package
        debs = cache / "debs" / kind if "/" in kind else cache / "debs"
        stamp = tree / ".herdcast-version"
        if version is None:
            version = _wanted_version(package, stamp, debs, apt)
        if stamp.is_file() and stamp.read_text() == version:
            return tree
        debs.mkdir(parents=True, exist_ok=True)
        prefix = _deb_name(package, version)
        found = sorted(debs.glob(f"{glob_escape(prefix)}*.deb"))
        if not found:
            run(["apt-get", *apt, "download", f"{package}={version}"],
                f"downloading {package}", cwd=debs)
            found = sorted(debs.glob(f"{glob_escape(prefix)}*.deb"))
        if not found:
            raise BuildError(f"apt-get download {package}={version} left no .deb in {debs}")
        scratch = tree.with_name(tree.name + ".partial")
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.parent.mkdir(parents=True, exist_ok=True)
        run(["dpkg-deb", "-x", str(found[-1]), str(scratch)], f"unpacking {found[-1].name}")
        (scratch / CONTROL).write_text(run(["dpkg-deb", "-f", str(found[-1])],
                                           f"reading {found[-1].name}"))
        if finish is not None:
            finish(scratch)
        (scratch / ".herdcast-version").write_text(version)
        shutil.rmtree(tree, ignore_errors=True)
        scratch.rename(tree)
        for old in debs.glob(f"{glob_escape(package)}_*.deb"):
            if not old.name.startswith(prefix):
                old.unlink(missing_ok=True)
        return tree


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
