"""`python -m builder COMMAND`: what `make initrd` and an admin run on the boot server.

Every failure is one line, `python -m builder: what -- fix`, never a traceback: the whole
HerdcastError family is caught here, once. Exit status 2 when what was asked is wrong
(checked before any work), 1 when the work itself failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.errors import HerdcastError
from builder.config import BuildConfig, default_cache
from builder.errors import BuildError

PROG = "python -m builder"
#: `node MAC VERB`: arm (receive, then reboot), disarm or local (boot the local disk).
NODE_VERBS = ("arm", "disarm", "local")
DEFAULT_OUT = Path("build/tftpboot")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Build herdcast's PXE boot files (kernel, initramfs, pxelinux) from "
        "Debian packages.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("initrd", help="build the TFTP root: pxelinux, vmlinuz, initrd.img")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help="TFTP root to write (default: %(default)s)")
    p.add_argument("--work", type=Path, default=Path("build/work"),
                   help="scratch directory: frozen agent, initrd root (default: %(default)s)")
    p.add_argument("--cache", type=Path, default=default_cache(),
                   help="where the kernel package is downloaded and unpacked "
                   "(default: $HERDCAST_CACHE or ~/.cache/herdcast)")
    p.add_argument("--kernel", type=Path,
                   help="use this vmlinuz instead of Debian's package (needs --modules-dir)")
    p.add_argument("--modules-dir", type=Path,
                   help="the kernel's /lib/modules/VERSION directory (with --kernel)")
    p.add_argument("--modules", default="",
                   help="comma list; +NAME adds to the generic driver set, NAME alone narrows "
                   "it to the names given (dependencies are always added). A name may be a "
                   "module (e1000e) or a tree under kernel/ (drivers/net/ethernet/intel)")
    p.add_argument("--firmware", default="debian",
                   help="where the firmware files the chosen modules ask for come from: "
                   "`debian` (Debian's non-free-firmware packages, fetched into the cache), "
                   "`host` (this machine's /lib/firmware), a directory laid out like it, or "
                   "`none` (default: %(default)s)")
    p.add_argument("--level", type=int, default=22,
                   help="zstd level 1-22 (default: 22, 0.3 MiB smaller than 19; its window "
                   "is the ~40 MB frame, which the kernel unpacks)")
    p.add_argument("--trust-key", metavar="FILE.pub", type=Path,
                   help="nodes accept only senders that sign with this key's private half "
                   "(herdcast keygen; herdcast send --sign-key): an image nobody else can "
                   "make them write. Off by default (stock udp-senders keep working)")
    p.add_argument("--http-url", metavar="URL",
                   help="have pxelinux fetch vmlinuz and initrd.img from URL (e.g. "
                   "http://10.0.0.1/herdcast, a web server over this TFTP root) instead of "
                   "TFTP: several times faster. Works with iPXE ROMs as is; with other PXE "
                   "ROMs, set the DHCP boot file to lpxelinux.0")
    p.add_argument("--guarded", action="store_true",
                   help="machines without a per-MAC file boot their own disk (LOCALBOOT) "
                   "instead of being imaged: only nodes armed by `node MAC ...` or herdcast "
                   "deploy are wiped. Default: every PXE client boots as a receiver "
                   "(udpcast's tutorial layout)")
    p.add_argument("--arch", default="amd64", choices=("amd64", "arm64"),
                   help="the nodes' architecture (default: %(default)s). arm64 writes "
                   "arm64/vmlinuz, arm64/initrd.img, shimaa64.efi and grubaa64.efi into the "
                   "same root (DHCP client-arch 11 boots shimaa64.efi); its agent is frozen "
                   "by Debian's arm64 Python under qemu-aarch64-static")
    p.add_argument("--python", type=Path, default=Path(sys.executable),
                   help="the Python that freezes the agent (default: this one)")

    p = sub.add_parser("node", help="write pxelinux.cfg/01-<mac> from the default, and its "
                       "GRUB twin grub/grub.cfg-01-<mac>; `arm` makes it a receiver that "
                       "reboots when done, `disarm` (or `local`) boots its own disk")
    p.add_argument("mac", help="the node's MAC, e.g. 52:54:00:12:34:56")
    p.add_argument("params", nargs="*", metavar="[arm|disarm|local] key=value",
                   help="boot parameters to change, e.g. umode=snd udpcparam=broadcast; "
                   "first `arm` (umode=rcv auto=yes post=reboot with these parameters) or "
                   "`disarm`/`local` (LOCALBOOT: boot the local disk)")
    p.add_argument("--tftp-root", type=Path, default=DEFAULT_OUT,
                   help="TFTP root holding pxelinux.cfg/ (default: %(default)s)")

    p = sub.add_parser("sync", help="rewrite grub/ from pxelinux.cfg/ after editing it by hand")
    p.add_argument("--tftp-root", type=Path, default=DEFAULT_OUT,
                   help="the TFTP root (default: %(default)s)")

    p = sub.add_parser("manual", help="write herdcast's man page and bash/zsh completions, "
                       "generated from its parsers")
    p.add_argument("--out", type=Path, default=Path("build/share"),
                   help="directory laid out as /usr/share: man/man1/herdcast.1, "
                   "bash-completion/completions/herdcast, zsh/site-functions/_herdcast "
                   "(default: %(default)s)")

    sub.add_parser("demo", add_help=False,
                   help="boot four VMs in a private PXE lab and clone a disk (demo --help)")
    return parser


def build_config(args: argparse.Namespace) -> BuildConfig:
    """The one place the command line becomes the typed, checked BuildConfig."""
    from builder.cpio import source_date_epoch

    return BuildConfig(
        out=args.out, work=args.work, cache=args.cache, kernel=args.kernel,
        modules_dir=args.modules_dir, modules=args.modules,
        firmware=args.firmware,
        level=args.level, http_url=args.http_url, python=args.python,
        trust_key=args.trust_key, guarded=args.guarded, arch=args.arch,
        mtime=source_date_epoch(),
    )


def _fail(error: HerdcastError, status: int) -> int:
    print(f"{PROG}: {error}", file=sys.stderr)
    return status


def _run(argv: list[str]) -> int:
    if argv[:1] == ["demo"]:  # builder/lab/demo.py parses its own options
        from builder.lab.demo import main as demo_main

        return demo_main(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "node":
        from builder import bootcfg

        verb, params = (args.params[0], args.params[1:]) if args.params and \
            args.params[0] in NODE_VERBS else (None, args.params)
        try:
            from builder.pxelinux import mac_file_name, node_base

            base = node_base(args.tftp_root, args.mac) if verb != "disarm" and \
                verb != "local" else None
            before = bootcfg.boot_words(base) if base is not None else {}
            if verb == "arm":
                paths = bootcfg.arm(args.tftp_root, args.mac, params)
            elif verb in ("disarm", "local"):
                if params:
                    return _fail(BuildError(f"node {args.mac} {verb}: takes no parameters "
                                            f"({' '.join(params)})",
                                            "a disarmed node boots its disk; to change its "
                                            "parameters, arm it"), 2)
                paths = bootcfg.disarm(args.tftp_root, args.mac)
            else:
                paths = bootcfg.write_node(args.tftp_root, args.mac, params)
        except HerdcastError as exc:  # a bad MAC or parameter, no default to start from
            return _fail(exc, 2)
        print("wrote " + " and ".join(map(str, paths)))
        if base is not None:
            own = base.name == mac_file_name(args.mac)
            said = bootcfg.changes(before, bootcfg.boot_words(paths[0]))
            print(f"from {'its own file' if own else base}: "
                  + ("; ".join(said) if said else "nothing changed"))
        return 0
    if args.command == "sync":
        from builder.bootcfg import sync

        if not (args.tftp_root / "pxelinux.cfg" / "default").is_file():
            return _fail(BuildError(f"{args.tftp_root}/pxelinux.cfg/default not found",
                                    "run `make initrd` first, or pass --tftp-root DIR"), 2)
        paths = sync(args.tftp_root)
        print(f"wrote {len(paths)} GRUB files in {args.tftp_root}/grub" if paths else
              f"{args.tftp_root} has no grub/ (built before UEFI support): nothing to do")
        return 0
    if args.command == "manual":
        from builder.manual import write_manual

        print("wrote " + ", ".join(map(str, write_manual(args.out))))
        return 0
    if args.command == "initrd":
        from builder.initrd import build_tftpboot

        try:
            cfg = build_config(args)
        except HerdcastError as exc:
            return _fail(exc, 2)
        report = build_tftpboot(cfg)
        print(report.summary())
        for line in report.firmware.missing_lines() if report.firmware else []:
            print(f"  {line}")
        return 0
    parser.print_help()
    return 2


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(list(sys.argv[1:] if argv is None else argv))
    except HerdcastError as exc:
        return _fail(exc, 1)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
