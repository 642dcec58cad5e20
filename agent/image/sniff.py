"""Telling, from a stream's first bytes, whether it is a herdcast image.

A receiver learns the stream's compression from the sender but not whether the round is an
image or a raw disk (the sender decides per round: an image only when every receiver is a
herdcast one). The image magic is 16 bytes no raw disk starts with unless it holds an image
file, so the receiver reads the first decompressed bytes and chooses: unpack the image, store
it as it came, or write the raw stream as before.
"""

from __future__ import annotations

import zlib

from agent.image.stream import MAGIC


class HeadSniffer:
    """Feed wire bytes until `verdict` is True (an image) or False (not one)."""

    def __init__(self, codec: str | None) -> None:
        self.verdict: bool | None = None
        self.head = b""
        if codec in (None, "none"):
            self._decompress = None
        elif codec == "gz":
            self._decompress = zlib.decompressobj(31).decompress
        elif codec == "zstd":
            import zstandard

            self._decompress = zstandard.ZstdDecompressor().decompressobj().decompress
        else:  # lzop runs in a child process: no image travels lzop-compressed
            self.verdict = False

    def feed(self, data: bytes | memoryview) -> bool | None:
        if self.verdict is not None:
            return self.verdict
        try:
            more = self._decompress(bytes(data)) if self._decompress else bytes(data)
        except Exception:  # noqa: BLE001 - a corrupt stream is the decompressor's to report
            self.verdict = False
            return False
        self.head += more[:len(MAGIC) - len(self.head)]
        if len(self.head) >= len(MAGIC):
            self.verdict = self.head == MAGIC
        return self.verdict

    def end(self) -> bool:
        """At the end of the stream: a stream shorter than the magic is no image."""
        if self.verdict is None:
            self.verdict = False
        return self.verdict
