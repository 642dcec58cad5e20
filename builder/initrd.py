"""Assemble the initramfs root, pack it (cpio newc + zstd) and lay out the TFTP root.

The root holds: /init (a few lines of shell that exec the frozen agent as `herdcast node`,
agent.cmd.node, which mounts the kernel file systems as PID 1),
the agent under /opt/herdcast, busybox with its applets for a rescue shell, kmod's modprobe,
the filesystem tools that grow a clone (GROW_TOOLS),
the shared libraries all of them load, and the chosen kernel modules (.ko.xz, which kmod
decompresses; see builder/modules.py) with fresh depmod indexes. Layout is
merged-/usr like Debian's, so /lib64/ld-linux-x86-64.so.2 (the loader path compiled into
every program) and /lib/x86_64-linux-gnu (where ldd finds libraries) both resolve.

libudev (opened by pyudev with ctypes) is bundled in the frozen tree and found through the
runtime hook builder/rthook_libs.py, which answers ctypes.util.find_library from the
bundle and the library directories (an initramfs has no ldconfig). We also ship
/etc/ld.so.cache made by `ldconfig -r`, so the dynamic loader does not have to probe.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import zstandard

from builder import (
    bootcfg,
    cpio,
    crossfreeze,
    efi,
    firmware,
    freeze,
    kernel,
    modules,
    programs,
    pxelinux,
    sysroot,
)
from builder.arch import Arch
from builder.config import BuildConfig
from builder.errors import BuildError
from builder.lock import locked
from builder.programs import BUSYBOX, GROW_TOOLS, KMOD
from builder.sysroot import Sysroot

AGENT_DIR = "opt/herdcast"
PXELINUX = Path("/usr/lib/PXELINUX/pxelinux.0")
#: pxelinux with its own TCP/IP stack: fetches http:// names on any PXE ROM (--http-url).
LPXELINUX = Path("/usr/lib/PXELINUX/lpxelinux.0")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
MARKER = "herdcast-init: starting the agent"

INIT = f"""#!/bin/sh
# herdcast initramfs init: become the agent (herdcast node, PID 1 from here on), which
# mounts proc, sys, devtmpfs, run and tmp itself (agent.boot.pid1.EARLY_MOUNTS, reporting
# any failure on the console), reads /proc/cmdline and never exits.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
echo "{MARKER} ($(uname -r))"
if [ -x /{AGENT_DIR}/herdcast ]; then
    exec /{AGENT_DIR}/herdcast node
fi
echo "herdcast-init: /{AGENT_DIR}/herdcast is missing; rescue shell (exit powers off)"
/bin/sh
exec poweroff -f
"""

PASSWD = "root:x:0:0:root:/root:/bin/sh\n"
GROUP = "root:x:0:\n"


@dataclass
class Report:
    """What bench/initrd prints and `make initrd` shows at the end."""

    out: Path
    kernel_version: str
    initrd_bytes: int
    uncompressed_bytes: int
    files: int
    module_count: int
    seconds: float
    phases: dict[str, float]
    firmware: firmware.FirmwareReport | None = None
    uefi: efi.EfiBoot | None = None

    def summary(self) -> str:
        mib = self.initrd_bytes / 2**20
        return (f"{self.out}: kernel {self.kernel_version}, initrd.img {mib:.1f} MiB "
                f"({self.uncompressed_bytes / 2**20:.1f} MiB unpacked), {self.files} files, "
                f"{self.module_count} modules, "
                + (f"{self.firmware.summary()}, " if self.firmware else "")
                + f"built in {self.seconds:.1f} s"
                + (f"; UEFI: shim {self.uefi.shim_version}, GRUB {self.uefi.grub_version}, "
                   + ("kernel signed by Debian" if self.uefi.kernel_signed else
                      "kernel NOT signed (Secure Boot nodes will refuse it)")
                   if self.uefi else ""))


def _layout(root: Path) -> None:
    """Merged-/usr skeleton: /bin, /sbin, /lib, /lib64 are links into /usr."""
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "dev", "proc", "sys", "run",
              "tmp", "etc", "root", "mnt", "var", AGENT_DIR):
        (root / d).mkdir(parents=True, exist_ok=True)
    for name in ("bin", "sbin", "lib", "lib64"):
        (root / name).symlink_to(f"usr/{name}")
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    (root / "etc" / "mtab").symlink_to("/proc/self/mounts")


def assemble_root(root: Path, frozen: Path, kern: kernel.Kernel, chosen: list[str],
                  firmware_source: str = "none", module_cache: Path | None = None,
                  trust_key: Path | None = None, cache: Path = Path(),
                  sysroot: Sysroot | None = None) -> firmware.FirmwareReport:
    """Fill `root` (emptied first) with everything the initramfs holds; returns what the
    firmware step carried. Modules (and firmware) are xz-compressed, memoised in
    `module_cache`; `cache` holds the Debian packages. The programs come from the host,
    or from `sysroot` for another architecture's node."""
    if root.exists():
        shutil.rmtree(root)
    _layout(root)
    agent = root / AGENT_DIR
    shutil.copytree(frozen, agent, symlinks=True, dirs_exist_ok=True)
    programs.strip_debug(agent, "strip" if sysroot is None else "aarch64-linux-gnu-strip")
    programs.install_busybox(root, sysroot)
    programs.install_kmod(root, sysroot)
    mappers = [*programs.install_partclone(root, sysroot),
               *programs.install_grow_tools(root, sysroot)]
    if trust_key is not None:
        from agent.trust import TRUSTED_KEY_PATH

        target = root / TRUSTED_KEY_PATH.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(trust_key, target)
    programs.install_libraries(root, agent, [programs.here(KMOD, sysroot), *mappers], sysroot)
    triplet = "x86_64-linux-gnu" if sysroot is None else sysroot.arch.triplet
    programs.dedupe(agent, root, (f"usr/lib/{triplet}", "usr/lib64"))
    modules.install(kern.modules_dir, kern.version, chosen, root, module_cache)
    fw = firmware.install(kern.modules_dir, chosen, firmware_source, root, cache, kern.config,
                          module_cache)
    init = root / "init"
    init.write_text(INIT)
    init.chmod(0o755)
    if sysroot is None:
        subprocess.run(["ldconfig", "-r", str(root)], check=True, timeout=120,
                       capture_output=True)
    else:
        sysroot.ldconfig(root)
        # not lib/firmware: some firmware files are ELF programs for the device's own CPU
        sysroot.check_elves(root / "usr/bin", root / "usr/sbin", root / AGENT_DIR,
                            root / "usr/lib" / sysroot.arch.triplet)
    return fw


#: Members that change with every edit of the agent (the bootloader carries the PYZ with all
#: Python code). They form a second, small archive, so an agent change recompresses ~4 MB
#: instead of ~75 MB; the kernel unpacks concatenated compressed archives one after another.
VOLATILE = (f"{AGENT_DIR}/herdcast",)


def _compress(raw: bytes, level: int, cache: Path | None) -> bytes:
    """zstd, single-threaded (one frame; bytes depend only on input and level), memoised
    in `cache` by the input's hash because level 19 takes a minute for the modules."""
    key = f"{hashlib.sha256(raw).hexdigest()}-{level}.zst"
    if cache is not None and (cache / key).is_file():
        return (cache / key).read_bytes()
    blob = zstandard.ZstdCompressor(level=level, write_checksum=True, threads=0).compress(raw)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f"{key}.tmp{os.getpid()}"
        tmp.write_bytes(blob)
        os.replace(tmp, cache / key)
    return blob


def prune_cache(cache: Path, keep: int = 6) -> None:
    """Drop all but the newest compressed segments."""
    if cache.is_dir():
        old = sorted(cache.glob("*.zst"), key=lambda p: p.stat().st_mtime, reverse=True)
        for path in old[keep:]:
            path.unlink(missing_ok=True)


def pack(root: Path, level: int, mtime: int, cache: Path | None = None
         ) -> tuple[bytes, int, int]:
    """(initrd bytes, uncompressed size, entry count): two zstd-compressed newc archives,
    the stable bulk and the VOLATILE members. /dev/console and /dev/null are added as
    device nodes so the kernel has a console before /init runs, and /dev/urandom because
    the frozen agent's Python seeds its hash from getrandom() before PID 1 mounts devtmpfs:
    when the kernel's random pool is not ready yet (a fast boot: UEFI HTTP Boot reached
    /init in 5 s) getrandom() says EAGAIN, Python falls back to /dev/urandom, and without
    the node it dies ("failed to get random numbers") and the kernel panics."""
    entries = cpio.entries_from_tree(root) + [
        cpio.chardev("dev/console", 5, 1),
        cpio.chardev("dev/null", 1, 3, perm=0o666),
        cpio.chardev("dev/urandom", 1, 9, perm=0o666),
    ]
    stable = [e for e in entries if e.name not in VOLATILE]
    volatile = [e for e in entries if e.name in VOLATILE]
    blob, unpacked = b"", 0
    for part in (stable, volatile):
        if not part:
            continue
        raw = io.BytesIO()
        cpio.write_archive(part, raw, mtime=mtime)
        unpacked += raw.tell()
        blob += _compress(raw.getvalue(), level, cache)
    return blob, unpacked, len(entries)


def unpack(blob: bytes) -> bytes:
    """The concatenated cpio archives inside an initrd.img (every zstd frame)."""
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob), read_across_frames=True)
    return reader.read()


#: What building for another architecture runs here (qemu-user, its binutils).
CROSS_TOOLS = ("qemu-aarch64-static", "aarch64-linux-gnu-objcopy", "aarch64-linux-gnu-strip")


def check_tools(arch: Arch) -> None:
    """The host programs and boot loader files the build copies, before any work."""
    if not arch.native:
        for tool in CROSS_TOOLS:
            if shutil.which(tool) is None:
                raise BuildError(f"{tool} missing", "run scripts/install-deps (as root)")
        return
    for path in (PXELINUX, LPXELINUX, LDLINUX, BUSYBOX, KMOD):
        if not path.is_file():
            raise BuildError(f"{path} missing", "run scripts/install-deps (as root)")
    for name in GROW_TOOLS:
        if programs.which(name) is None:
            raise BuildError(f"{name} missing (grow=yes runs it on the nodes)",
                             "run scripts/install-deps (as root)")


def get_kernel(cfg: BuildConfig, sysroot: Sysroot | None = None) -> kernel.Kernel:
    if cfg.kernel is not None and cfg.modules_dir is not None:
        kern = kernel.host_kernel(cfg.kernel, cfg.modules_dir)
    elif sysroot is not None:
        kern = kernel.debian_kernel(cfg.cache, arch=sysroot.arch, apt=sysroot.apt)
    else:
        kern = kernel.debian_kernel(cfg.cache)
    kernel.check_rd_zstd(kern)
    return kern


def build_tftpboot(cfg: BuildConfig) -> Report:
    """`python -m builder initrd`: kernel, modules, frozen agent -> cfg.out (TFTP root).
    Per-node files already in pxelinux.cfg/ are kept; `default` is rewritten. Builds that
    share a work directory run one after the other."""
    check_tools(cfg.target)
    try:
        with locked(cfg.work / ".lock"):
            return _build(cfg)
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or b"")
        tail = (tail.decode(errors="replace") if isinstance(tail, bytes) else tail).strip()
        raise BuildError(f"{' '.join(map(str, exc.cmd))} failed (exit {exc.returncode})"
                         + (f": {tail.splitlines()[-1]}" if tail else "")) from None
    except OSError as exc:  # a full disk, a read-only --out, a file that vanished
        raise BuildError(f"the build stopped: {exc}") from None


def _build(cfg: BuildConfig) -> Report:
    started = time.monotonic()
    phases: dict[str, float] = {}

    def phase(name: str) -> None:
        phases[name] = time.monotonic() - started - sum(phases.values())

    arch = cfg.target
    sr = None if arch.native else sysroot.sysroot(cfg.cache, arch)
    kern = get_kernel(cfg, sr)
    chosen = modules.select(kern.modules_dir, cfg.modules, modules.ALWAYS)
    phase("kernel")
    work = cfg.work if arch.native else cfg.work / arch.name
    if sr is None:
        frozen = freeze.freeze(cfg.python, work / "freeze")
    else:
        frozen = crossfreeze.freeze_for(sr, cfg.python, cfg.cache)
    phase("freeze")
    root = work / "root"
    mcache = cfg.work / "module-cache"
    fw = assemble_root(root, frozen, kern, chosen, cfg.firmware, mcache, cfg.trust_key,
                       cfg.cache, sr)
    if sr is not None:  # the agent starts in the root as the node unpacks it, under qemu
        here = root.resolve()
        crossfreeze.check(Sysroot(here, arch, ""), here / AGENT_DIR / "herdcast")
    modules.prune_cache(mcache)
    phase("assemble")
    zcache = work / "zstd-cache"
    blob, unpacked, count = pack(root, cfg.level, cfg.mtime, zcache)
    prune_cache(zcache)
    phase("pack")

    out = cfg.out
    (out / "pxelinux.cfg").mkdir(parents=True, exist_ok=True)
    (out / arch.path("initrd.img")).parent.mkdir(parents=True, exist_ok=True)
    tmp = out / arch.path("initrd.img.tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, out / arch.path("initrd.img"))
    shutil.copyfile(kern.vmlinuz, out / arch.path("vmlinuz"))
    if arch.native:  # BIOS PXE: x86 only
        shutil.copyfile(PXELINUX, out / "pxelinux.0")
        shutil.copyfile(LPXELINUX, out / "lpxelinux.0")
        shutil.copyfile(LDLINUX, out / "ldlinux.c32")
    uefi = efi.install(cfg.cache, out, kern.vmlinuz, require_signed_kernel=cfg.kernel is None,
                       arch=arch)
    (out / "pxelinux.cfg" / "default").write_text(
        pxelinux.default_config(cfg.http_url, cfg.guarded))
    bootcfg.sync(out)
    phase("boot files")
    return Report(out, kern.version, len(blob), unpacked, count, len(chosen),
                  time.monotonic() - started, phases, fw, uefi=uefi)
