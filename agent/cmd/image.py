"""`herdcast image`: look at, capture, restore and list used-block images without a network.

    herdcast image map DISK               what a sender of DISK would send, per partition
    herdcast image capture DISK FILE      DISK's used blocks into an image file: chunked
                                          (zstd, the default), or a stream (--compress
                                          none|gz|lzop)
    herdcast image restore FILE DISK      an image file onto DISK (--blank keep|zero|discard;
                                          --grow, --hostname, --identity, --userdata: see
                                          agent.personalize)
    herdcast image info FILE              an image file's layout, sizes and digest
    herdcast image list DIR               the images in DIR: host, date, size, partitions
    herdcast image describe FILE TEXT     give an image file a description (shown by list)
"""

from __future__ import annotations

import argparse
import os
import sys

from agent.codec import NAMES
from agent.image.catalogue import catalogue, human, set_description
from agent.image.files import capture, check_input, restore
from agent.image.sink import BLANK_MODES
from agent.image.store import ImageFileError, read_info
from agent.image.usedmap import used_map
from agent.say import say
from agent.transfer.options import WISHES, add_rows, wishes_of

FREE_SPACE = {"keep": "free space left as it was", "zero": "free space zeroed",
              "discard": "free space discarded"}


def parser() -> argparse.ArgumentParser:
    """`herdcast image` and its subcommands (agent.cli.parser shows them in the manual)."""
    p = argparse.ArgumentParser(prog="herdcast image",
                                description="Used-block images of disks (no network).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    m = sub.add_parser("map", help="show which bytes of DISK a sender would send")
    m.add_argument("disk", help="a disk device or a disk image file")
    c = sub.add_parser("capture", help="write DISK's used blocks into an image file")
    c.add_argument("disk", help="the disk to capture (a device or a disk image file)")
    c.add_argument("file", help="the image file to write (replaced only once complete)")
    c.add_argument("--compress", choices=["none", *NAMES], default="zstd",
                   help="the image file's compression: zstd (the default) writes a chunked "
                   "image, whose chunks a sender serves as they are; none, gz or lzop an "
                   "image stream")
    c.add_argument("--description", help="a line saying what the image holds, shown by "
                   "herdcast image list")
    r = sub.add_parser("restore", help="write an image file onto DISK")
    r.add_argument("file", help="the image file")
    r.add_argument("disk", help="the disk to overwrite (refused while mounted or in use)")
    r.add_argument("--blank", choices=BLANK_MODES, default="keep",
                   help="free space: keep it as it is (default), zero it, or discard it")
    add_rows(r, WISHES)  # --grow, --hostname, --identity, --userdata: receive's rows
    i = sub.add_parser("info", help="an image file's layout, sizes and digest")
    i.add_argument("file", help="the image file")
    ls = sub.add_parser("list", help="the images in DIR: source host, date, size, partitions")
    ls.add_argument("dir", help="the directory holding image files")
    d = sub.add_parser("describe", help="give an image file a description")
    d.add_argument("file", help="the image file (rewritten beside itself, then renamed)")
    d.add_argument("text", help="what the image holds, one line")
    return p


def main(argv: list[str]) -> int:
    """Entry point of `herdcast image`; errors are HerdcastErrors the caller prints."""
    ns = parser().parse_args(argv)
    subject = getattr(ns, "disk", None) if ns.command in ("map", "capture") else \
        getattr(ns, "file", None) or getattr(ns, "dir", None)
    try:
        return _run(ns)
    except OSError as exc:
        raise ImageFileError(f"{exc.filename or subject}: {exc.strerror or exc}",
                             "check the path") from exc


def _run(ns: argparse.Namespace) -> int:
    if ns.command == "map":
        check_input(ns.disk, "disk")
        for line in used_map(ns.disk).describe():
            print(line)
    elif ns.command == "info":
        check_input(ns.file, "image")
        for line in read_info(ns.file).lines():
            print(line)
    elif ns.command == "list":
        _list(ns.dir)
    elif ns.command == "describe":
        check_input(ns.file, "image")
        set_description(ns.file, ns.text)
        say(f"{ns.file}: described as {ns.text!r}")
    elif ns.command == "capture":
        size = capture(ns.disk, ns.file, None if ns.compress == "none" else ns.compress,
                       ns.description)
        say(f"captured {ns.disk} into {ns.file}: {size} bytes ({human(size)})")
    else:
        wishes = wishes_of(ns)  # a bad --hostname is refused before any write
        done = restore(ns.file, ns.disk, ns.blank)
        say(f"restored {ns.file} onto {ns.disk}: {done.written} bytes of data written, "
            f"{done.cleared} bytes cleared to zero, {FREE_SPACE[ns.blank]} "
            f"(blank={ns.blank})")
        from agent.personalize.run import personalize

        personalize(ns.disk, wishes)  # the GPT fitted to DISK always; the rest as asked
    return 0


def _list(directory: str) -> None:
    if not os.path.isdir(directory):
        raise ImageFileError(f"image list {directory}: not a directory",
                             "give the directory the images are kept in")
    entries = catalogue(directory)
    if not entries:
        print(f"{directory}: no herdcast images")
    for entry in entries:
        for line in entry.lines():
            print(line)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
