"""herdcast installs as a package: a wheel built from this checkout, installed (not editable)
into a fresh venv, runs every command.

The editable install that `make venv` makes reads the source tree itself, so a wheel that
lacks a subpackage (as one built from `packages = ["agent", "builder"]` did: `herdcast send
--help` died with ModuleNotFoundError: agent.boot) passes every other test. Here the commands
run from the venv's own `bin/herdcast`, in a directory away from the checkout, so nothing
can be imported from the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """bin/ of a fresh venv holding herdcast installed from a wheel of this checkout."""
    work = tmp_path_factory.mktemp("wheel")
    # a copy of the files git knows, as a clean clone has them: a build leaves an egg-info
    # beside the sources whose file list setuptools would reuse, hiding a missing package
    src = work / "src"
    listed = _run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT).stdout
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                  "-q", "-w", str(work / "dist"), str(src)], cwd=work)
    assert built.returncode == 0, built.stderr[-3000:]
    wheels = sorted((work / "dist").glob("herdcast-*.whl"))
    assert len(wheels) == 1, (wheels, built.stdout[-2000:], built.stderr[-2000:])
    venv.create(work / "venv", with_pip=True)
    bin_dir = work / "venv" / "bin"
    inst = _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheels[0])],
                cwd=work)
    assert inst.returncode == 0, inst.stderr[-3000:]
    return bin_dir


def test_wheel_holds_every_subpackage(installed: Path):
    """Every package of the checkout is in the installed tree, none from the checkout."""
    out = _run([str(installed / "python"), "-c",
                "import agent, builder, pkgutil; "
                "print(agent.__file__); "
                "print('\\n'.join(m.name for m in pkgutil.walk_packages("
                "agent.__path__ + builder.__path__[:0], 'agent.') if m.ispkg))"],
               cwd=installed)
    assert out.returncode == 0, out.stderr
    first, *subpackages = out.stdout.split()
    assert not Path(first).is_relative_to(ROOT), first
    expected = {".".join(p.relative_to(ROOT).parts) for p in (ROOT / "agent").rglob("*")
                if p.is_dir() and (p / "__init__.py").exists()} - {"agent"}
    assert expected <= set(subpackages), expected - set(subpackages)


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["--version"],
    ["send", "--help"],
    ["receive", "--help"],
    ["image", "--help"],
    ["keygen", "--help"],
    ["node", "--help"],
    ["plan", "--cmdline", "auto=yes umode=rcv disk=/dev/sda"],
])
def test_every_command_runs_from_the_wheel(installed: Path, argv: list[str]):
    proc = _run([str(installed / "herdcast"), *argv], cwd=installed)
    assert proc.returncode == 0, f"herdcast {' '.join(argv)}: {proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr
    assert proc.stdout.strip()


def test_plan_refuses_a_bad_line_from_the_wheel(installed: Path):
    """The one-line error path (not only --help) works from the installed package."""
    proc = _run([str(installed / "herdcast"), "plan", "--cmdline", "umode=rcv compr=rar"],
                cwd=installed)
    assert proc.returncode == 2, proc.stderr
    assert "compr" in proc.stderr and "Traceback" not in proc.stderr


def test_keygen_from_the_wheel(installed: Path, tmp_path: Path):
    proc = _run([str(installed / "herdcast"), "keygen", str(tmp_path / "fleet")],
                cwd=installed)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "fleet.key").exists() and (tmp_path / "fleet.pub").exists()


def test_builder_runs_from_the_wheel(installed: Path):
    proc = _run([str(installed / "python"), "-m", "builder", "--help"], cwd=installed)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "initrd" in proc.stdout
