"""Shared fixtures: the namespace lab and the repository paths."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"  # captures of Debian's udpcast (see its README)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from builder.lab.loopdev import can_loop  # noqa: E402
from builder.lab.netlab import NetLab, have_netns  # noqa: E402

needs_loop = pytest.mark.skipif(not can_loop(), reason="needs root and loop devices")


def cached_kernel(cache: Path | None = None):
    """A Debian kernel already unpacked in the build cache (default: the builder's), without
    touching the network; None before the first `python -m builder initrd`."""
    from builder.config import default_cache
    from builder.kernel import Kernel

    cache = default_cache() if cache is None else cache
    for tree in sorted((cache / "kernel").glob("linux-image-*"), reverse=True):
        if tree.name.endswith(".partial"):
            continue
        version = tree.name.removeprefix("linux-image-")
        modules_dir = tree / "lib" / "modules" / version
        if (modules_dir / "modules.dep").is_file():
            config = tree / "boot" / f"config-{version}"
            return Kernel(version, tree / "boot" / f"vmlinuz-{version}", modules_dir,
                          config if config.is_file() else None)
    return None


@pytest.hookimpl(trylast=True)  # on the items -k and -m left
def pytest_collection_modifyitems(config, items):
    """The modules that run on build/tftpboot go last (whole, in their order), so its build
    overlaps the other tests (_Prebuild). Tests marked netns need root; say so instead of
    failing obscurely."""
    items.sort(key=lambda item: bool(_needs(item)))
    if have_netns():
        return
    skip = pytest.mark.skip(reason="needs root and iproute2 to create network namespaces")
    for item in items:
        if "netns" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def lab3():
    """Three hosts on one bridge: h0 sends, h1 and h2 receive."""
    with NetLab(3) as lab:
        yield lab


@pytest.fixture
def lab4():
    """Four hosts on one bridge."""
    with NetLab(4) as lab:
        yield lab


@pytest.fixture(scope="session")
def herdcast_argv() -> list[str]:
    """argv prefix that runs this checkout's herdcast with the test interpreter."""
    return [sys.executable, "-m", "agent"]


def arch_path(name: str) -> str:
    """Where build/tftpboot holds the initrd of architecture `name` (builder/arch.py)."""
    return "initrd.img" if name == "amd64" else f"{name}/initrd.img"


def _stale(initrd: Path) -> bool:
    """`initrd` missing or older than the agent's and builder's sources."""
    # builder/lab/ is the VM lab, not part of what the initrd is built from
    sources = [p for d in ("agent", "builder") for p in (ROOT / d).rglob("*.py")
               if not p.is_relative_to(ROOT / "builder" / "lab")]
    newest = max(p.stat().st_mtime for p in sources)
    return not initrd.exists() or initrd.stat().st_mtime < newest


def _build(args: list[str], timeout: int) -> None:
    """`python -m builder initrd ARGS` into build/tftpboot; RuntimeError with its output."""
    proc = subprocess.run([sys.executable, "-m", "builder", "initrd", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"python -m builder initrd {' '.join(args)} failed:\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


class _Prebuild:
    """The builds the session's tests need, started one after the other in a background
    thread when collection ends (pytest_collection_finish): the modules that use them run
    last, so the minutes of `python -m builder initrd` (and --arch arm64, and the fresh
    build test_same_inputs_give_the_same_initrd compares) overlap the tests that mostly
    wait on timers and namespaces instead of adding to them. Each runs the command the
    test would run; ensure_* and fresh_initrd wait for it, then check as before (a build
    that failed here runs again there, and its error is raised in the test needing it)."""

    def __init__(self) -> None:
        self.done: dict[str, threading.Event] = {}  # per job
        self.status: dict[str, int] = {}  # each finished job's exit status
        self.proc: subprocess.Popen | None = None
        self.stopping = False
        self.fresh: Path | None = None  # the fresh build's directory (out/, work/)

    def start(self, jobs: dict[str, list[str]]) -> None:
        self.done = {name: threading.Event() for name in jobs}
        threading.Thread(target=self._run, args=(jobs,), daemon=True).start()

    def _run(self, jobs: dict[str, list[str]]) -> None:
        try:
            for name, args in jobs.items():
                if self.stopping:
                    break
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "builder", "initrd", *args], cwd=ROOT,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    self.proc.wait(timeout=2400)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                self.status[name] = self.proc.returncode
                self.done[name].set()
        finally:
            for event in self.done.values():
                event.set()

    def wait(self, name: str) -> None:
        if name in self.done:
            self.done[name].wait(timeout=2400)

    def stop(self) -> None:
        """At the session's end: a build still running (the session was cut short) ends,
        and the fresh build's directory goes."""
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
        if self.fresh is not None:
            shutil.rmtree(self.fresh, ignore_errors=True)


_PREBUILD = _Prebuild()
#: What in a test module's source says it runs on build/tftpboot (and on its arm64 tree).
_USES_TFTPBOOT = ("ensure_tftpboot", "ensure_arm64_tftpboot", "from test_boot import tftpboot")
_TEXTS: dict[Path, str] = {}


def _needs(item) -> set[str]:
    """The builds `item`'s module uses: architectures of build/tftpboot, and "fresh"."""
    path = Path(item.path)
    if path not in _TEXTS:
        _TEXTS[path] = path.read_text() if path.suffix == ".py" else ""
    text = _TEXTS[path]
    needs = {"fresh"} if "fresh_initrd" in getattr(item, "fixturenames", ()) else set()
    if "ensure_arm64_tftpboot" in text:
        return needs | {"amd64", "arm64"}  # ensure_arm64_tftpboot builds the x86 tree first
    return needs | ({"amd64"} if any(s in text for s in _USES_TFTPBOOT) else set())


def _fresh_args(directory: Path) -> list[str]:
    """A build from scratch beside build/tftpboot: its own work dir (its own freeze, none
    of build/work's caches); level 1 keeps it short."""
    return ["--out", str(directory / "out"), "--work", str(directory / "work"),
            "--level", "1"]


def pytest_collection_finish(session):
    """Start building what the selected tests need, when it is stale."""
    if session.config.option.collectonly:
        return
    needed = set().union(*(_needs(item) for item in session.items))
    jobs = {}
    for name, args in (("amd64", []), ("arm64", ["--arch", "arm64"])):
        if name in needed and _stale(ROOT / "build" / "tftpboot" / arch_path(name)):
            jobs[name] = args
    if "fresh" in needed:
        _PREBUILD.fresh = Path(tempfile.mkdtemp(prefix="herdcast-fresh-initrd-"))
        jobs["fresh"] = _fresh_args(_PREBUILD.fresh)
    if jobs:
        _PREBUILD.start(jobs)


def pytest_sessionfinish(session):
    _PREBUILD.stop()


@pytest.fixture(scope="session")
def fresh_initrd(tmp_path_factory) -> Path:
    """A directory with out/ and work/ of a build from scratch (_fresh_args), made in the
    background (_Prebuild) or else here."""
    _PREBUILD.wait("fresh")
    if _PREBUILD.status.get("fresh") == 0:
        return _PREBUILD.fresh
    directory = tmp_path_factory.mktemp("fresh-initrd")
    _build(_fresh_args(directory), timeout=1800)
    return directory


def ensure_tftpboot() -> Path:
    """build/tftpboot as `make initrd` makes it, built when missing or older than the
    agent's and builder's sources (the slow boot and PXE tests run on it)."""
    _PREBUILD.wait("amd64")
    target = ROOT / "build" / "tftpboot"
    if _stale(target / arch_path("amd64")):
        _build([], timeout=1800)
    return target


def ensure_arm64_tftpboot() -> Path:
    """build/tftpboot with the arm64 tree beside the x86 one (`make initrd ARCH=arm64`:
    arm64/vmlinuz, arm64/initrd.img, shimaa64.efi, grubaa64.efi), each built when missing
    or older than the sources. A fresh machine downloads ~120 MB of arm64 packages and
    freezes the agent under qemu-user (about 2 minutes); later runs take the cache."""
    target = ensure_tftpboot()
    _PREBUILD.wait("arm64")
    if _stale(target / arch_path("arm64")):
        _build(["--arch", "arm64"], timeout=2400)
    return target


@pytest.fixture(scope="session")
def tftpboot() -> Path:
    """ensure_tftpboot() once per session."""
    return ensure_tftpboot()
