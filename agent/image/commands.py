"""`herdcast image`: look at, capture and restore used-block images without a network.

    herdcast image map DISK               what a sender of DISK would send, per partition
    herdcast image capture DISK FILE      DISK's used blocks into an image file (--compress)
    herdcast image restore FILE DISK      an image file onto DISK (--blank keep|zero|discard)
    herdcast image info FILE              an image file's layout, sizes and digest
"""

from __future__ import annotations

import argparse
import os
import sys

from agent.image.sink import BLANK_MODES, DiskSink
from agent.image.store import ImageFileError, read_info
from agent.image.stream import StreamReader, encode
from agent.image.usedmap import used_map
from agent.say import say


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="herdcast image",
                                description="Used-block images of disks (no network).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    m = sub.add_parser("map", help="show which bytes of DISK a sender would send")
    m.add_argument("disk")
    c = sub.add_parser("capture", help="write DISK's used blocks into an image file")
    c.add_argument("disk")
    c.add_argument("file")
    c.add_argument("--compress", choices=["none", "gz", "lzop", "zstd"], default="zstd")
    r = sub.add_parser("restore", help="write an image file onto DISK")
    r.add_argument("file")
    r.add_argument("disk")
    r.add_argument("--blank", choices=BLANK_MODES, default="keep")
    i = sub.add_parser("info", help="an image file's layout, sizes and digest")
    i.add_argument("file")
    return p


def main(argv: list[str]) -> int:
    """Entry point of `herdcast image`; errors are HerdcastErrors the caller prints."""
    ns = _parser().parse_args(argv)
    try:
        return _run(ns)
    except OSError as exc:
        raise ImageFileError(f"{exc.filename or ns.command}: {exc.strerror or exc}",
                             "check the path") from exc


def _run(ns: argparse.Namespace) -> int:
    if ns.command == "map":
        umap = used_map(ns.disk)
        for line in umap.describe():
            print(line)
        return 0
    if ns.command == "info":
        for line in read_info(ns.file).lines():
            print(line)
        return 0
    if ns.command == "capture":
        return _capture(ns.disk, ns.file, None if ns.compress == "none" else ns.compress)
    return _restore(ns.file, ns.disk, ns.blank)


def _capture(disk: str, path: str, codec: str | None) -> int:
    from agent.transfer.compress import compressing_reader

    umap = used_map(disk)
    for line in umap.describe():
        say(line)
    fd = os.open(disk, os.O_RDONLY | os.O_CLOEXEC)
    try:
        stream = StreamReader(encode(fd, umap.disk_size, umap.extents))
        source = compressing_reader(stream, codec) if codec else stream
        with open(path, "wb") as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
    finally:
        os.close(fd)
    say(f"captured {disk} into {path}: {os.path.getsize(path)} bytes")
    return 0


def _restore(path: str, disk: str, blank: str) -> int:
    from agent.image.store import codec_of
    from agent.transfer.compress import decompressing_writer

    flags = os.O_WRONLY | os.O_CLOEXEC | (0 if disk.startswith("/dev/") else os.O_CREAT)
    fd = os.open(disk, flags, 0o644)
    try:
        sink = DiskSink(fd, disk, blank)
        with open(path, "rb") as f:
            codec = codec_of(f.read(8))
            f.seek(0)
            target = decompressing_writer(sink, codec) if codec else sink
            while chunk := f.read(1 << 20):
                target.write(chunk)
            target.close()
            sink.close()
        os.fsync(fd)
    finally:
        os.close(fd)
    say(f"restored {path} onto {disk}: {sink.written} bytes written, "
        f"{sink.blanked} bytes blanked (blank={blank})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
