"""Freeze the agent with PyInstaller, onedir: a directory with the `herdcast` executable.

Onedir rather than onefile: onefile unpacks ~17 MB into /tmp at every start (slow under
TCG, and it needs a writable /tmp before the agent has mounted one). The freeze is cached
by a hash of the agent's sources and the freezing interpreter, so rebuilding an initrd for
other modules does not re-run PyInstaller (about a minute).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from builder.errors import BuildError

REPO = Path(__file__).resolve().parent.parent
RTHOOK = Path(__file__).with_name("rthook_libs.py")
NAME = "herdcast"
#: Libraries opened with ctypes at run time, which PyInstaller's analysis cannot see.
CTYPES_LIBS = ("libudev.so.1",)
LIB_DIRS = (Path("/lib/x86_64-linux-gnu"), Path("/usr/lib/x86_64-linux-gnu"))
#: Imports made with computed names (plugins) that PyInstaller must be told about.
COLLECT = ("agent", "pyroute2")
#: pyca cryptography (3.7 MB of the initrd) is on every node: it verifies signed sessions
#: (agent.trust) and makes each clone's fresh SSH host keys (agent.personalize.identity).
HIDDEN = ("pyudev", "construct", "zstandard", "zstandard.backend_c", "cryptography")
#: Never imported on a node; each would drag megabytes in (tkinter: Tk).
#: Not unittest, ssl or sqlite3: `import pyroute2` imports all three (its __init__ imports
#: NDB, whose schema imports sqlite3, and IPRoute's socket imports probe_msg, which
#: imports ssl), so libssl and libsqlite3 stay while the agent uses pyroute2.
EXCLUDE = ("tkinter", "zstandard.backend_cffi", "cffi", "pytest", "hypothesis", "builder",
           "setuptools", "pip", "PyInstaller",
           "sushy", "pyghmi",  # herdcast deploy's BMC drivers: a PXE server's, not a node's
           "rich")  # the sender's live table is for a server's terminal, never a node's
#: Extensions nothing on a node imports, and whose absence the stdlib expects (each import
#: of them is guarded, or there is a pure-Python fallback): readline (with libreadline and
#: libtinfo: pdb/cmd/code only), _decimal (decimal falls back to _pydecimal) and the CJK
#: codecs (an unknown encoding becomes LookupError). 1.9 MB less to unpack per boot.
# sqlite3: only pyroute2's NDB uses it, and agent.net.netlink keeps NDB out (1.4 MB).
EXCLUDE_OPTIONAL = ("readline", "_decimal", "_multibytecodec", "_codecs_cn", "_codecs_hk",
                    "_codecs_iso2022", "_codecs_jp", "_codecs_kr", "_codecs_tw", "sqlite3",
                    "_sqlite3")


ENTRY = '''\
"""Frozen entry point: `herdcast COMMAND`, the same dispatcher as the console script."""
import os
import sys

if os.environ.get("HERDCAST_FREEZE_CHECK"):
    # The builder's check that nothing is missing from the freeze: a module missing here
    # would otherwise show up as a crash on a node, in the middle of imaging.
    import importlib
    import pkgutil

    import agent

    for info in pkgutil.walk_packages(agent.__path__, "agent."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    for name in ("pyudev", "pyroute2", "pyroute2.dhcp.client", "construct", "zstandard",
                 "cryptography.hazmat.primitives.asymmetric.ed25519"):
        importlib.import_module(name)
    import ctypes.util

    import pyudev

    pyudev.Context()  # loads libudev through ctypes, as the node does
    print(f"freeze check: libudev is {ctypes.util.find_library('udev')}")
    import tempfile
    from pathlib import Path

    from agent.personalize.identity import fresh_ssh_keys

    with tempfile.TemporaryDirectory() as tmp:  # a clone's new host keys, as a node makes them
        (Path(tmp) / "etc/ssh").mkdir(parents=True)
        for kind in ("ed25519", "ecdsa", "rsa"):
            (Path(tmp) / f"etc/ssh/ssh_host_{kind}_key").write_bytes(b"")
        made = fresh_ssh_keys(Path(tmp), "freeze-check")
    if len(made) != 3:
        sys.exit(f"freeze check: SSH host keys not made: {made}")
    print(f"freeze check: {len(made)} SSH host keys made (OpenSSH format)")
    print("freeze check: ok")
    sys.exit(0)

from agent.cli import main

sys.exit(main())
'''
CHECK_OK = "freeze check: ok"


def _find_lib(soname: str, lib_dirs: Sequence[Path] = LIB_DIRS) -> Path:
    for directory in lib_dirs:
        if (directory / soname).exists():
            return directory / soname
    raise BuildError(f"{soname} not found in {', '.join(map(str, lib_dirs))}: "
                     "run scripts/install-deps (libudev1)")


def installed(python: Path) -> str:
    """The distributions `python` has installed (name==version lines): PyInstaller follows
    optional imports into whatever is there (construct's lazy `cryptography` import adds
    13 MB once cryptography is installed), so a package installed or upgraded in the venv
    changes the frozen tree as much as an agent edit does. Asked from the root directory:
    `python -c` searches the current directory too, and a checkout's own
    herdcast.egg-info (left by `make install`) would list herdcast twice and change the key
    without changing the tree."""
    code = ("import importlib.metadata as m; print('\\n'.join(sorted("
            "f\"{d.metadata['Name']}=={d.version}\" for d in m.distributions())))")
    try:
        proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                              timeout=120, cwd="/")
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout


def sources_hash(extra: Sequence[Path] = (), seed: bytes = b"") -> str:
    """The agent's sources, this module and the hook (and `extra` files), after `seed`."""
    digest = hashlib.sha256(seed)
    files = sorted((REPO / "agent").rglob("*.py")) + [Path(__file__), RTHOOK, *extra]
    for path in files:
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def source_hash(python: Path) -> str:
    """What the frozen tree depends on: agent sources, this module, the hook, the Python
    and the packages installed for it."""
    return sources_hash(seed=str(python).encode() + b"\0" + installed(python).encode())


def pyinstaller_argv(python: Path, work: Path, entry: Path,
                     lib_dirs: Sequence[Path] = LIB_DIRS) -> list[str]:
    argv = [str(python), "-m", "PyInstaller", "--noconfirm", "--clean", "--onedir",
            "--console", "--name", NAME, "--log-level", "WARN",
            "--distpath", str(work / "dist"), "--workpath", str(work / "build"),
            "--specpath", str(work), "--paths", str(REPO),
            "--runtime-hook", str(RTHOOK)]
    for package in COLLECT:
        argv += ["--collect-submodules", package]
    for module in HIDDEN:
        argv += ["--hidden-import", module]
    for module in EXCLUDE + EXCLUDE_OPTIONAL:
        argv += ["--exclude-module", module]
    for soname in CTYPES_LIBS:
        argv += ["--add-binary", f"{_find_lib(soname, lib_dirs)}:."]
    return argv + [str(entry)]


def _reproducible_env() -> dict[str, str]:
    """A fixed hash seed: PyInstaller orders base_library.zip by iterating a set, so the
    archive (and the initrd) changed from one freeze to the next without it."""
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = "0"
    env.setdefault("SOURCE_DATE_EPOCH", "0")
    return env


def freeze(python: Path, work: Path) -> Path:
    """The onedir tree (dist/herdcast, holding the `herdcast` executable and _internal/);
    able to verify signed sessions and make SSH host keys (pyca cryptography inside)."""
    work = work.resolve()
    python = Path(os.path.abspath(python))  # not resolve(): a venv's python is a symlink
    dist = work / "dist" / NAME
    stamp = work / "stamp"
    wanted = source_hash(python)
    if (dist / NAME).is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return dist
    if not python.exists():
        raise BuildError(f"--python {python}: no such interpreter (make venv creates .venv)")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    entry = work / "herdcast_entry.py"
    entry.write_text(ENTRY)
    argv = pyinstaller_argv(python, work, entry)
    try:
        proc = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=900,
                              env=_reproducible_env())
    except subprocess.TimeoutExpired:
        raise BuildError("PyInstaller took over 15 minutes") from None
    if proc.returncode or not (dist / NAME).is_file():
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise BuildError(f"PyInstaller failed (is it installed in {python}?):\n{tail}")
    check_frozen(dist / NAME)
    stamp.write_text(wanted)
    return dist


def check_frozen(executable: Path, runner: Sequence[str] = (), timeout: int = 120,
                 env: dict[str, str] | None = None) -> None:
    """Run the frozen program once (through `runner`, e.g. qemu-user, when it is another
    architecture's, with `env` added), importing every agent module and the libraries."""
    env = dict(os.environ, **(env or {}), HERDCAST_FREEZE_CHECK="1")
    try:
        proc = subprocess.run([*runner, str(executable)], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{executable}: the freeze check hung for {timeout} s") from None
    if proc.returncode or CHECK_OK not in proc.stdout:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "[PYI-" not in ln]
        last = (lines or ["no output"])[-1]
        raise BuildError(f"the frozen agent cannot import everything: {last} "
                         "(add it to COLLECT/HIDDEN in builder/freeze.py)")
