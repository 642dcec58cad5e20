"""Image files kept on a server: the image stream as it crossed the wire, compression and all.

A stored image is the exact byte stream a herdcast sender sends (optionally compressed), so
capturing is writing what arrives and deploying is sending the file: no re-encoding, and the
file is about the size of the disk's data. Its compression is known from the first bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import BinaryIO

from agent.codec import decompressing_writer, sniff
from agent.errors import HerdcastError
from agent.image.chunkfile import ChunkedFile, is_chunked
from agent.image.stream import DATA, Decoder, DecodingWriter, is_image


class ImageFileError(HerdcastError):
    """A file that is not a herdcast image, or a damaged one."""


@dataclass(frozen=True)
class ImageInfo:
    """What `herdcast image info` prints."""

    path: str
    file_bytes: int
    codec: str | None
    disk_size: int
    records: int
    data_bytes: int
    zero_bytes: int
    blank_bytes: int
    sha256: str  # of the file's bytes: the digest a sender of this file reports
    meta: dict = field(default_factory=dict)  # the header's metadata (agent.image.catalogue)
    chunks: int = 0  # a chunked image's chunks; its sha256 is then the image digest

    def lines(self) -> list[str]:
        from agent.image.catalogue import human

        ratio = self.file_bytes / self.disk_size if self.disk_size else 0.0
        m = self.meta
        source = (f"{m.get('host', '(host not recorded)')}, captured "
                  f"{m.get('captured', '(date not recorded)')}")
        kind = (f"chunked herdcast image, {self.chunks} chunks of 1 MiB compressed alone "
                "(zstd)" if self.chunks else
                f"herdcast image, compression {self.codec or 'none'}")
        digest = (f"  digest      {self.sha256} (of the chunks' content: what a receiver of "
                  "its chunks confirms)" if self.chunks else f"  sha256      {self.sha256}")
        return [f"image {self.path}: {kind}",
                f"  source      {source}",
                *([f"  description {m['description']}"] if m.get("description") else []),
                f"  disk size   {self.disk_size} bytes ({human(self.disk_size)})",
                f"  used        {self.data_bytes + self.zero_bytes} bytes in {self.records} "
                f"extents, {self.zero_bytes} of them zeros (not stored)",
                f"  blank       {self.blank_bytes} bytes (not stored)",
                f"  file        {self.file_bytes} bytes ({human(self.file_bytes)}, "
                f"{100 * ratio:.1f}% of the disk)",
                digest]


def damaged(path: str, exc: HerdcastError) -> ImageFileError:
    """`exc` (a StreamError, a CodecError) as one line naming the image file."""
    return ImageFileError(f"image {path}: {exc.what}", exc.fix or "the file is damaged or "
                          "not a whole image: capture it again")


def read_info(path: str) -> ImageInfo:
    """Read the whole file once: its layout, and that it is complete and well-formed."""
    with open(path, "rb") as f:
        if is_chunked(f.read(64)):
            return _chunked_info(path)
    blank = [0]
    decoder = Decoder(lambda offset, data: None, lambda offset, length: None,
                      lambda offset, length: blank.__setitem__(0, blank[0] + length))
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        head = f.read(64)
        codec = sniff(head)
        sink: BinaryIO = DecodingWriter(decoder)
        if codec:
            sink = decompressing_writer(sink, codec)
        elif not is_image(head):
            raise ImageFileError(f"{path}: not a herdcast image",
                                 "capture one with herdcast receive -f FILE from a herdcast "
                                 "sender, or herdcast image capture")
        size = 0
        f.seek(0)
        try:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                sink.write(chunk)
                size += len(chunk)
            if codec:
                sink.close()
            decoder.finish()
        except ImageFileError:
            raise
        except HerdcastError as exc:  # a damaged or forged image: say which file
            raise damaged(path, exc) from exc
    return ImageInfo(path, size, codec, decoder.disk_size, decoder.records,
                     decoder.data_bytes, decoder.zero_bytes, blank[0], digest.hexdigest(),
                     decoder.meta)



def _chunked_info(path: str) -> ImageInfo:
    """A stored chunked image's layout; every chunk checked against its manifest."""
    try:
        stored = ChunkedFile.open(path)
    except HerdcastError as exc:  # it names the file
        raise ImageFileError(f"image {exc.what}", exc.fix) from exc
    try:
        t = stored.table
        data = zero = records = 0
        for chunk in t.chunks:
            stored.decoded(chunk.index)
        for extent_kind, length in ((k, n) for c in t.chunks for _, n, k in c.extents):
            data += length if extent_kind == DATA else 0
            zero += length if extent_kind != DATA else 0
        records = len(stored.extents())
        size = stored.file_bytes
    except HerdcastError as exc:
        raise damaged(path, exc) from exc
    finally:
        stored.close()
    return ImageInfo(path, size, "zstd", t.disk_size, records, data, zero,
                     t.disk_size - data - zero, t.digest.hex(), t.meta, len(t.chunks))
