"""Shared fixtures: the namespace lab and the repository paths."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from netlab import NetLab, have_netns  # noqa: E402


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
