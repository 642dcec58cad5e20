"""The initrd: its two zstd archives, what the root holds, that its programs run, and that
the same inputs give the same bytes."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_boot import tftpboot  # noqa: F401  (module fixture: build/tftpboot, or skip)

from builder import cpio, initrd
from builder.config import BuildConfig, default_cache
from builder.errors import BuildError

ROOT = Path(__file__).resolve().parent.parent


def _small_root(root: Path) -> Path:
    (root / "opt" / "herdcast").mkdir(parents=True)
    (root / "opt" / "herdcast" / "herdcast").write_bytes(b"\x7fELF pretend agent")
    (root / "opt" / "herdcast" / "herdcast").chmod(0o755)
    (root / "dev").mkdir()
    (root / "init").write_text(initrd.INIT)
    (root / "init").chmod(0o755)
    return root


def test_pack_writes_two_zstd_archives_that_zstd_and_cpio_read(tmp_path):
    blob, unpacked, count = initrd.pack(_small_root(tmp_path / "root"), level=3, mtime=5)
    image = tmp_path / "initrd.img"
    image.write_bytes(blob)
    raw = subprocess.run(["zstd", "-dc", str(image)], capture_output=True, timeout=30,
                         check=True).stdout
    assert len(raw) == unpacked
    assert raw == initrd.unpack(blob)
    members = {name: hdr for hdr, name, _ in cpio.read_archive(raw)}
    assert set(members) == {"dev", "dev/console", "dev/null", "dev/urandom", "init", "opt",
                            "opt/herdcast", "opt/herdcast/herdcast"}
    assert count == len(members)
    assert stat.S_ISCHR(members["dev/console"]["mode"])
    assert (members["dev/console"]["rdevmajor"], members["dev/console"]["rdevminor"]) == (5, 1)
    # Python seeds its hashes from /dev/urandom when the kernel's pool is not ready yet
    assert (members["dev/urandom"]["rdevmajor"], members["dev/urandom"]["rdevminor"]) == (1, 9)
    # GNU cpio stops at the first trailer: the agent executable is in the second archive
    listed = subprocess.run(["cpio", "-t", "--quiet"], input=raw, capture_output=True,
                            timeout=30, check=True).stdout.decode().split()
    assert "init" in listed and "opt/herdcast/herdcast" not in listed


def test_pack_is_reproducible_and_the_cache_gives_the_same_bytes(tmp_path):
    root = _small_root(tmp_path / "root")
    first = initrd.pack(root, level=3, mtime=5)[0]
    cached = initrd.pack(root, level=3, mtime=5, cache=tmp_path / "z")[0]
    again = initrd.pack(root, level=3, mtime=5, cache=tmp_path / "z")[0]
    assert first == cached == again
    assert len(list((tmp_path / "z").glob("*.zst"))) == 2
    assert initrd.pack(root, level=3, mtime=6)[0] != first


@pytest.mark.parametrize("kw, match", [
    (dict(level=0), "--level"),
    (dict(kernel=Path("/boot/vmlinuz")), "--modules-dir"),
    (dict(modules="e1000,+"), "--modules"),
    (dict(http_url="https://10.0.0.1/"), "--http-url"),
])
def test_bad_options_are_refused_before_any_work(kw, match):
    with pytest.raises(BuildError, match=match):
        BuildConfig(out=Path("x"), work=Path("w"), **kw)


def test_init_leaves_the_mounts_to_pid1():
    """One mount path: /init execs the agent, whose PID 1 mounts proc, sys and devtmpfs
    (and reports a failure) before anything else runs."""
    from agent.boot.pid1 import EARLY_MOUNTS

    assert not [ln for ln in initrd.INIT.splitlines() if ln.strip().startswith("mount")]
    assert "exec /opt/herdcast/herdcast node" in initrd.INIT
    assert {"/proc", "/sys", "/dev"} <= {target for _, target, *_ in EARLY_MOUNTS}


def test_the_config_is_frozen_and_normalised():
    import dataclasses

    cfg = BuildConfig(out=Path("x"), work=Path("w"), http_url="http://10.0.0.1/herdcast/")
    assert cfg.http_url == "http://10.0.0.1/herdcast" and cfg.cache == default_cache()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.level = 3  # type: ignore[misc]


def test_every_builder_error_is_a_herdcast_error():
    from agent.errors import HerdcastError
    from builder.cpio import CpioError
    from builder.lab.vms import LabError
    from builder.pxelinux import PxeConfigError

    for cls in (CpioError, PxeConfigError, LabError):
        assert issubclass(cls, BuildError)
    assert issubclass(BuildError, HerdcastError)
    assert str(BuildError("x missing", "install x")) == "x missing -- install x"


def _cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "builder", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def _one_line(proc: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.stderr.startswith("python -m builder: "), proc.stderr
    return proc.stderr


def test_cli_bad_option_is_one_line_and_writes_nothing(tmp_path):
    proc = _cli("initrd", "--level", "30", "--out", "o", "--work", "w", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--level" in _one_line(proc)
    assert list(tmp_path.iterdir()) == []


def test_cli_bad_source_date_epoch_is_one_line_before_any_work(tmp_path):
    proc = _cli("initrd", "--out", "o", "--work", "w", cwd=tmp_path,
                SOURCE_DATE_EPOCH="yesterday")
    assert proc.returncode == 2
    assert "SOURCE_DATE_EPOCH='yesterday'" in _one_line(proc)
    assert list(tmp_path.iterdir()) == []


def test_cli_lab_error_is_one_line(tmp_path, monkeypatch, capsys):
    """A LabError (here: qemu missing) ends `python -m builder demo` with one line, exit 1."""
    from builder.__main__ import main
    from builder.lab import vms

    (tmp_path / "initrd.img").write_bytes(b"")
    monkeypatch.setattr(vms.shutil, "which", lambda tool: None)
    status = main(["demo", "--tftpboot", str(tmp_path), "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert status == 1
    assert err == "python -m builder: qemu-system-x86_64 is not installed -- run " \
        "scripts/install-deps (as root)\n"
    assert not (tmp_path / "w").exists()  # refused before any disk image was made


def test_cli_demo_without_an_initrd_says_to_build_first(tmp_path, capsys):
    from builder.__main__ import main

    assert main(["demo", "--tftpboot", str(tmp_path)]) == 1
    assert "run `make initrd` first" in capsys.readouterr().err


def test_builds_sharing_a_work_dir_wait_for_each_other(tmp_path):
    import threading
    import time

    from builder.lock import locked

    order: list[str] = []

    def second() -> None:
        with locked(tmp_path / ".lock"):
            order.append("second")

    with locked(tmp_path / ".lock"):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)
        order.append("first done")
    thread.join(timeout=10)
    assert order == ["first done", "second"]


def _freeze_check_without(blocked: tuple[str, ...]) -> subprocess.CompletedProcess:
    """The frozen program's import check (freeze.ENTRY), run by this interpreter with the
    `blocked` modules made unimportable, as if PyInstaller had left them out."""
    from builder import freeze

    code = (f"import sys\nfor m in {blocked!r}: sys.modules[m] = None\n" + freeze.ENTRY)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env={**os.environ, "HERDCAST_FREEZE_CHECK": "1",
                                                      "PYTHONPATH": str(ROOT)})


def test_the_extensions_left_out_of_the_freeze_are_never_needed():
    from builder import freeze

    argv = freeze.pyinstaller_argv(Path(sys.executable), Path("/tmp/w"), Path("e.py"))
    excluded = {argv[i + 1] for i, a in enumerate(argv) if a == "--exclude-module"}
    assert set(freeze.EXCLUDE_OPTIONAL) <= excluded
    proc = _freeze_check_without(freeze.EXCLUDE_OPTIONAL)
    assert freeze.CHECK_OK in proc.stdout, proc.stderr[-2000:]


def test_the_freeze_key_does_not_follow_the_current_directory(tmp_path, monkeypatch):
    """The distributions the key lists are the interpreter's: a directory holding an
    egg-info (a checkout after `make install`) does not change them, so no re-freeze."""
    from builder import freeze

    before = freeze.installed(Path(sys.executable))
    egg = tmp_path / "herdcast.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 2.1\nName: herdcast\nVersion: 9.9\n")
    monkeypatch.chdir(tmp_path)
    assert "herdcast==9.9" not in freeze.installed(Path(sys.executable))
    assert freeze.installed(Path(sys.executable)) == before


@pytest.mark.parametrize("module", ["ssl"])
def test_libssl_stays_because_pyroute2_imports_it(module):
    """If this starts failing, pyroute2 no longer needs the module: add it to
    freeze.EXCLUDE_OPTIONAL (libssl 0.7 MB). sqlite3 went that way once agent.net.netlink
    kept pyroute2's NDB out."""
    from builder import freeze

    assert module not in freeze.EXCLUDE + freeze.EXCLUDE_OPTIONAL
    proc = _freeze_check_without((module,))
    assert freeze.CHECK_OK not in proc.stdout
    assert f"import of {module} halted" in proc.stderr


# ----------------------------------------------------------------------------- the real build


@pytest.fixture(scope="module")
def members(tftpboot):  # noqa: F811
    raw = initrd.unpack((tftpboot / "initrd.img").read_bytes())
    return {name: (hdr, data) for hdr, name, data in cpio.read_archive(raw)}


@pytest.mark.slow
def test_tftp_root_has_everything_pxelinux_needs(tftpboot):  # noqa: F811
    for name in ("pxelinux.0", "lpxelinux.0", "ldlinux.c32", "vmlinuz", "initrd.img",
                 "pxelinux.cfg/default"):
        assert (tftpboot / name).is_file(), name
    assert "IPAPPEND 2" in (tftpboot / "pxelinux.cfg" / "default").read_text()


@pytest.mark.slow
def test_tftp_root_has_the_signed_uefi_chain(tftpboot):  # noqa: F811
    from builder import efi, grub

    for name in ("shimx64.efi", "grubx64.efi", "grub/grub.cfg", "grub/grub.cfg-default"):
        assert (tftpboot / name).is_file(), name
    assert efi.signed_by(tftpboot / "shimx64.efi", efi.MICROSOFT)
    assert efi.signed_by(tftpboot / "grubx64.efi", efi.DEBIAN)
    assert efi.signed_by(tftpboot / "vmlinuz", efi.DEBIAN)  # linux-image-*, not -unsigned
    assert (tftpboot / "grub" / "grub.cfg").read_text() == grub.DISPATCHER
    assert (tftpboot / "grub" / "grub.cfg-default").read_text() == grub.from_pxelinux(
        (tftpboot / "pxelinux.cfg" / "default").read_text(), "pxelinux.cfg/default")


@pytest.mark.slow
def test_initrd_holds_init_agent_tools_libraries_and_modules(members):
    hdr, init = members["init"]
    assert hdr["mode"] & 0o111 and b"exec /opt/herdcast/herdcast node" in init
    for name in ("opt/herdcast/herdcast", "opt/herdcast/_internal/libudev.so.1",
                 "usr/bin/busybox", "usr/bin/kmod", "usr/lib64/ld-linux-x86-64.so.2",
                 "usr/lib/x86_64-linux-gnu/libc.so.6", "etc/ld.so.cache", "proc", "sys",
                 "run", "tmp"):
        assert name in members, name
    assert members["usr/sbin/modprobe"][1] == b"/usr/bin/kmod"
    assert members["bin"][1] == b"usr/bin" and members["lib64"][1] == b"usr/lib64"
    assert members["usr/bin/sh"][1] == b"/usr/bin/busybox"
    assert {hdr["uid"] for hdr, _ in members.values()} == {0}
    assert {hdr["gid"] for hdr, _ in members.values()} == {0}
    assert len({hdr["mtime"] for hdr, _ in members.values()}) == 1
    deps = [n for n in members if n.endswith("/modules.dep")]
    assert len(deps) == 1
    moddir = deps[0].rsplit("/", 1)[0]
    listed = [line.split(":")[0] for line in members[deps[0]][1].decode().splitlines()]
    assert len(listed) > 150  # the full generic driver set
    for rel in listed:
        assert rel.endswith(".ko.xz"), rel  # compressed: half the bytes for the kernel to unpack
        assert f"{moddir}/{rel}" in members, rel
    assert not [n for n in members if n.endswith(".ko")]
    # stdlib extensions left out on purpose, and the libraries only they needed
    assert not [n for n in members if "_codecs_" in n or "readline" in n or "_decimal" in n]
    # (libtinfo came with readline once; partclone's mappers link it now, libreadline stays out)
    assert not [n for n in members if "libreadline" in n]
    assert [n for n in members if n.startswith("usr/sbin/partclone.")]
    # grow=yes: Debian's tools; a clone's root mounted through loop with its filesystem
    for tool in initrd.GROW_TOOLS:
        assert f"usr/sbin/{tool}" in members, tool
    for module in ("loop", "ext4", "xfs", "btrfs", "crc32c_generic"):
        assert [rel for rel in listed if rel.rsplit("/", 1)[-1] == f"{module}.ko.xz"], module
    aliases = members[f"{moddir}/modules.alias"][1].decode()
    assert "pci:v00008086d0000100Esv*sd*bc*sc*i* e1000" in aliases
    assert " virtio_blk" in aliases and " nvme" in aliases and " ahci" in aliases
    for name in ("vmxnet3", "hv_netvsc", "hv_storvsc", "xen_netfront", "xen_blkfront",
                 "vmw_pvscsi", "mptsas", "mptspi", "aacraid", "r8152", "cdc_ether"):
        assert f" {name}\n" in aliases, name


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")
def test_programs_in_the_initrd_run_with_only_its_own_libraries(tftpboot, tmp_path):  # noqa: F811
    """Unpack the initrd and run its programs chrooted into it: a missing library or a
    module PyInstaller missed shows here, not on a node's console."""
    raw = initrd.unpack((tftpboot / "initrd.img").read_bytes())
    dest = tmp_path / "root"
    dest.mkdir()
    _extract(raw, dest)
    env = {"PATH": "/usr/sbin:/usr/bin", "HERDCAST_FREEZE_CHECK": "1"}

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["chroot", str(dest), *argv], capture_output=True, text=True,
                              timeout=120, env=env)

    check = run("/opt/herdcast/herdcast")
    assert "freeze check: ok" in check.stdout, check.stderr[-2000:]
    # no ldconfig or gcc in there: the runtime hook found the bundled libudev
    assert not (dest / "usr/sbin/ldconfig").exists()
    assert "libudev is /opt/herdcast/_internal/libudev.so.1" in check.stdout, check.stdout
    assert run("/usr/sbin/modprobe", "--version").returncode == 0
    assert "made (OpenSSH format)" in check.stdout  # a clone's SSH host keys
    for argv in (["e2fsck", "-V"], ["resize2fs"], ["xfs_growfs", "-V"], ["ntfsresize", "-V"],
                 ["btrfs", "--version"]):  # each starts (its libraries are there)
        proc = run(f"/usr/sbin/{argv[0]}", *argv[1:])
        assert proc.returncode != 127 and "error while loading" not in proc.stderr, proc.stderr
        assert re.search(r"\d+\.\d+", proc.stdout + proc.stderr), argv  # says its version
    assert run("/bin/sh", "-c", "echo shell-ok").stdout.strip() == "shell-ok"
    udev = run("/opt/herdcast/herdcast", "plan", "--help")
    assert udev.returncode == 0, udev.stderr[-2000:]
    # partclone maps a node's used blocks; without libgcc_s (which glibc dlopens for
    # pthread_exit) it aborted, and nodes sent every filesystem whole
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", str(dest / "tmp" / "fs.img"), "8M"],
                   check=True, capture_output=True, timeout=60)
    mapped = run("/usr/sbin/partclone.extfs", "--domain", "-s", "/tmp/fs.img", "-o",
                 "/tmp/map", "-L", "/tmp/log")
    assert mapped.returncode == 0, (dest / "tmp" / "log").read_text(errors="replace")[-2000:]
    used = [ln for ln in (dest / "tmp" / "map").read_text().splitlines()
            if ln.endswith("  +")]
    assert used and used[0].startswith("0x00000000"), "no used blocks mapped"


def _extract(raw: bytes, dest: Path) -> None:
    """Unpack like the kernel does: members in order, device nodes left out."""
    for hdr, name, data in cpio.read_archive(raw):
        path, mode = dest / name, hdr["mode"]
        if stat.S_ISDIR(mode):
            path.mkdir(parents=True, exist_ok=True)
        elif stat.S_ISLNK(mode):
            path.symlink_to(data.decode())
        elif stat.S_ISREG(mode):
            path.write_bytes(data)
            path.chmod(stat.S_IMODE(mode))


@pytest.mark.slow
def test_same_inputs_give_the_same_initrd(tftpboot, fresh_initrd, tmp_path):  # noqa: F811
    """A build from scratch (conftest's fresh_initrd: its own freeze and work dir, none of
    build/work's caches) holds the same bytes as build/tftpboot, the session's build made
    apart from it: two independent builds, the second one the session made anyway. The
    fresh one is level 1 to keep it short, so the archives are compared unpacked (zstd's
    bytes depend only on input and level: the pack tests above). A retry covers another
    engineer editing agent/ meanwhile."""
    from conftest import ensure_tftpboot

    def stamp(work: Path) -> str:
        return (work / "freeze" / "stamp").read_text()

    fresh = fresh_initrd
    for attempt in range(3):
        if stamp(ROOT / "build" / "work") == stamp(fresh / "work"):
            break
        if attempt == 2:
            pytest.skip("agent/ sources kept changing during the test")
        ensure_tftpboot()  # the sources changed since one of the builds: both again
        fresh = tmp_path / f"again{attempt}"
        initrd.build_tftpboot(BuildConfig(out=fresh / "out", work=fresh / "work", level=1))
    built, session = (d / "initrd.img" for d in (fresh / "out", tftpboot))
    assert initrd.unpack(built.read_bytes()) == initrd.unpack(session.read_bytes()), (
        "a fresh build differs from build/tftpboot (made with other options than "
        "`python -m builder initrd`'s defaults? run it again)")
