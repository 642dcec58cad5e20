"""Firmware files from Debian's packages: which package holds each wanted name, fetched and
unpacked like the kernel (builder/debs.py), never installed.

Debian keeps NIC and HBA firmware in the `non-free-firmware` component (firmware-bnx2,
firmware-bnx2x, firmware-realtek, firmware-misc-nonfree, firmware-qlogic, ...), which most
build hosts do not have in their sources. So the build gets its own apt state under
CACHE/apt-firmware: a sources list naming that component for every Debian suite the host
uses (same mirrors, same signing keyring) plus the suite's backports (last resort, for the
few files the release lacks), its own lists directory, and the suites' `Contents-all`
indexes (a few dozen kB) to map each file to its package. Only the packages that hold a
wanted file are downloaded. The host's own sources and lists are never touched.

firmware-linux-free, the few freely licensed files (PCMCIA CIS files, isci), is in `main`,
which the host's apt already knows: it is fetched with the host's sources.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path

from builder import debs
from builder.errors import BuildError

COMPONENT = "non-free-firmware"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
#: Packages in `main` that carry firmware files; looked up with the host's apt.
MAIN_PACKAGES = ("firmware-linux-free",)
#: Names a driver asks for that Debian ships only one directory down. Debian's
#: firmware-netronome links most netronome/nic_<card>.nffw names to the basic NIC
#: application in netronome/nic/; for these three cards it leaves the link to the admin
#: (netronome/flower/ and bpf/ hold the other applications). A node gets the basic one.
LINKS = {
    "netronome/nic_AMDA0058-0011_2x40.nffw": "netronome/nic/nic_AMDA0058-0011_2x40.nffw",
    "netronome/nic_AMDA0058-0012_2x40.nffw": "netronome/nic/nic_AMDA0058-0012_2x40.nffw",
    "netronome/nic_AMDA0099-0001_1x10_1x25.nffw":
        "netronome/nic/nic_AMDA0099-0001_1x10_1x25.nffw",
}
#: apt's index target that fetches a suite's Contents-all (file -> package) for us.
_CONTENTS = {
    "MetaKey": "$(COMPONENT)/Contents-all",
    "ShortDescription": "Contents-all",
    "Description": "$(RELEASE)/$(COMPONENT) Contents-all",
}
_POLICY = re.compile(r"^\s*\d+\s+(\S+)\s+(\S+)/\S+\s+\S+\s+Packages\n\s+release\s+(.*)$",
                     re.MULTILINE)


@dataclass(frozen=True)
class Found:
    """Where a wanted file is: `path` inside the unpacked package `package`."""

    package: str
    path: Path


def host_suites() -> list[tuple[str, str]]:
    """(mirror URI, suite) of every Debian archive in the host's apt sources, release
    first, then -updates and -security, then each release's -backports."""
    out = debs.run(["apt-cache", "policy"], "reading the host's apt sources")
    seen: list[tuple[str, str]] = []
    for uri, suite, release in _POLICY.findall(out):
        if "o=Debian" in release.split(",") and (uri, suite) not in seen:
            seen.append((uri, suite))
    if not seen:
        raise BuildError("the host's apt sources name no Debian archive",
                         "add Debian 12 to /etc/apt/sources.list, or pass --firmware host")
    seen.sort(key=lambda s: "-" in s[1])
    backports = [(uri, f"{suite}-backports") for uri, suite in seen if "-" not in suite]
    return seen + [b for b in backports if b not in seen]


class PrivateApt:
    """apt with its own sources list and state under `root` (CACHE/apt-firmware; the UEFI
    chain's CACHE/apt-efi names another release's `main`, without Contents indexes;
    CACHE/apt-arm64 another `architecture`'s packages)."""

    def __init__(self, root: Path, suites: list[tuple[str, str]],
                 component: str = COMPONENT, contents: bool = True,
                 architecture: str | None = None) -> None:
        self.root = root
        self.suites = [suite for _, suite in suites]
        for d in ("lists/partial", "cache/archives/partial", "sources.list.d"):
            (root / d).mkdir(parents=True, exist_ok=True)
        signed = f"[signed-by={KEYRING}] " if KEYRING.is_file() else ""
        text = "".join(f"deb {signed}{uri} {suite} {component}\n" for uri, suite in suites)
        sources = root / "sources.list"
        if not sources.is_file() or sources.read_text() != text:
            sources.write_text(text)
        self.options = [
            "-o", f"Dir::Etc::SourceList={sources}",
            "-o", f"Dir::Etc::SourceParts={root / 'sources.list.d'}",
            "-o", f"Dir::State::Lists={root / 'lists'}",
            "-o", f"Dir::Cache={root / 'cache'}",
            "-o", "APT::Sandbox::User=root",  # the cache may be where _apt cannot write
        ] + ([] if architecture is None else [  # a node architecture's packages (arm64)
            "-o", f"APT::Architecture={architecture}",
            "-o", f"APT::Architectures={architecture}",
        ]) + [x for key, value in _CONTENTS.items() if contents
             for x in ("-o", f"Acquire::IndexTargets::deb::Contents-all::{key}={value}")]

    def update(self) -> str | None:
        """apt-get update on the private lists; the error's last line when it fails (an
        offline build goes on with the lists it has)."""
        try:
            debs.run(["apt-get", *self.options, "update"],
                     f"apt-get update for {' '.join(self.suites)}", timeout=300)
        except BuildError as exc:
            return str(exc)
        return None

    def contents(self) -> dict[str, dict[str, str]]:
        """suite -> {path in the package (lib/firmware/...) -> package}."""
        out = debs.run(["apt-get", *self.options, "indextargets", "--format",
                        "$(FILENAME) $(RELEASE)", "Created-By: Contents-all"],
                       "listing the Contents indexes")
        found: dict[str, dict[str, str]] = {}
        for line in out.splitlines():
            filename, _, suite = line.rpartition(" ")
            if not filename or not Path(filename).is_file():
                continue
            text = debs.run(["/usr/lib/apt/apt-helper", "cat-file", filename],
                            f"reading {filename}")
            table = found.setdefault(suite, {})
            for entry in text.splitlines():
                path, _, where = entry.rpartition(" ")
                path = path.strip()
                if path.startswith(("lib/firmware/", "usr/lib/firmware/")):
                    table[path.removeprefix("usr/")] = where.split(",")[0].rsplit("/", 1)[-1]
        return found

    def version(self, package: str, suite: str) -> str | None:
        """The version of `package` that `suite` holds (apt-cache madison)."""
        out = debs.run(["apt-cache", *self.options, "madison", package],
                       f"looking up {package}")
        for line in out.splitlines():
            fields = [f.strip() for f in line.split("|")]
            if len(fields) == 3 and fields[2].split()[1:2] and \
                    fields[2].split()[1].split("/")[0] == suite:
                return fields[1]
        return None


def excluded(copyright_text: str) -> list[tuple[str, str]]:
    """(pattern, Debian's reason) from a firmware-nonfree copyright file's Files-Excluded
    field: what Debian leaves out of linux-firmware on purpose, and why."""
    rows: list[tuple[str, str]] = []
    inside, reason = False, ""
    for line in copyright_text.splitlines():
        if line.startswith("Files-Excluded:"):
            inside = True
        elif inside and line.startswith("#"):
            reason = line.lstrip("# -").strip()
        elif inside and line.startswith(" "):
            rows += [(pattern, reason) for pattern in line.split()]
        elif inside:
            break
    return rows


def _why_not(trees: list[Path], name: str) -> str | None:
    """Debian's stated reason for leaving `name` out, from any fetched package's
    copyright file (firmware-nonfree's packages share it)."""
    for tree in trees:
        for text in (p.read_text(errors="replace")
                     for p in tree.glob("usr/share/doc/*/copyright")):
            for pattern, reason in excluded(text):
                if fnmatch.fnmatchcase(name, pattern):
                    return f"Debian leaves it out: {reason}"
    return None


def _inside(tree: Path, name: str) -> Path | None:
    """tree/lib/firmware/name with its links followed, if it stays inside the package."""
    base = tree / "lib" / "firmware"
    path = Path(os.path.realpath(base / name))
    return path if path.is_file() and path.is_relative_to(tree.resolve()) else None


def fetch(cache: Path, names: list[str]) -> tuple[dict[str, Found], dict[str, str]]:
    """({name: where it is}, {name: why it is missing}) for the wanted firmware names."""
    apt = PrivateApt(cache / "apt-firmware", host_suites())
    offline = apt.update()
    contents = apt.contents()
    found: dict[str, Found] = {}
    missing: dict[str, str] = {}
    trees: dict[tuple[str, str], Path | str] = {}

    def tree_of(suite: str, package: str) -> Path | str:
        """The unpacked package, or why it could not be had."""
        key = (suite, package)
        if key not in trees:
            try:
                version = apt.version(package, suite)
                if version is None:
                    raise BuildError(f"apt knows no {package} in {suite}")
                trees[key] = debs.unpacked(cache, f"firmware/{suite}", package, version,
                                           apt=apt.options)
            except BuildError as exc:
                trees[key] = f"{package} ({suite}) could not be fetched: {exc}"
        return trees[key]

    for name in names:
        path = LINKS.get(name, name)
        for suite in apt.suites:
            package = contents.get(suite, {}).get(f"lib/firmware/{path}")
            if package is None:
                continue
            tree = tree_of(suite, package)
            if isinstance(tree, str):
                missing[name] = tree
                continue
            if (file := _inside(tree, path)) is not None:
                found[name] = Found(package, file)
                missing.pop(name, None)
                break
            missing[name] = f"{package} ({suite}) lists it but holds no such file"
        else:
            if name not in found and name not in missing:
                missing[name] = (f"in none of Debian's firmware packages ({COMPONENT} of "
                                 f"{', '.join(apt.suites)}; {', '.join(MAIN_PACKAGES)})"
                                 + (f"; {offline}" if offline else ""))
    fetched = [t for t in trees.values() if isinstance(t, Path)][:1]
    for name in missing:
        if missing[name].startswith("in none") and (why := _why_not(fetched, name)):
            missing[name] = why
    for package in MAIN_PACKAGES:
        todo = [n for n in names if n in missing]
        if not todo:
            break
        try:
            tree = debs.unpacked(cache, "firmware/main", package)
        except BuildError:
            continue  # not worth failing the build: the reasons above stand
        for name in todo:
            if (file := _inside(tree, name)) is not None:
                found[name] = Found(package, file)
                del missing[name]
    return found, missing
