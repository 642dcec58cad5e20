"""Shared fixtures: the namespace lab and the repository paths."""

from __future__ import annotations

import sys
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


def pytest_collection_modifyitems(config, items):
    """Tests marked netns need root; say so instead of failing obscurely."""
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


def ensure_tftpboot() -> Path:
    """build/tftpboot as `make initrd` makes it, built when missing or older than the
    agent's and builder's sources (the slow boot and PXE tests run on it)."""
    import subprocess

    target = ROOT / "build" / "tftpboot"
    initrd = target / "initrd.img"
    # builder/lab/ is the VM lab, not part of what the initrd is built from
    sources = [p for d in ("agent", "builder") for p in (ROOT / d).rglob("*.py")
               if not p.is_relative_to(ROOT / "builder" / "lab")]
    newest = max(p.stat().st_mtime for p in sources)
    if not initrd.exists() or initrd.stat().st_mtime < newest:
        proc = subprocess.run([sys.executable, "-m", "builder", "initrd"], cwd=ROOT,
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"python -m builder initrd failed:\n{proc.stdout[-3000:]}"
                        f"\n{proc.stderr[-3000:]}")
    return target


def ensure_arm64_tftpboot() -> Path:
    """build/tftpboot with the arm64 tree beside the x86 one (`make initrd ARCH=arm64`:
    arm64/vmlinuz, arm64/initrd.img, shimaa64.efi, grubaa64.efi), each built when missing
    or older than the sources. A fresh machine downloads ~120 MB of arm64 packages and
    freezes the agent under qemu-user (about 2 minutes); later runs take the cache."""
    import subprocess

    target = ensure_tftpboot()
    initrd = target / "arm64" / "initrd.img"
    sources = [p for d in ("agent", "builder") for p in (ROOT / d).rglob("*.py")
               if not p.is_relative_to(ROOT / "builder" / "lab")]
    newest = max(p.stat().st_mtime for p in sources)
    if not initrd.exists() or initrd.stat().st_mtime < newest:
        proc = subprocess.run([sys.executable, "-m", "builder", "initrd", "--arch", "arm64"],
                              cwd=ROOT, capture_output=True, text=True, timeout=2400)
        if proc.returncode != 0:
            raise RuntimeError(f"python -m builder initrd --arch arm64 failed:\n"
                               f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return target


@pytest.fixture(scope="session")
def tftpboot() -> Path:
    """ensure_tftpboot() once per session."""
    return ensure_tftpboot()
