"""Telling, from a stream's first bytes, whether it is a herdcast image (and, as a stored one
is written, whether it ends as one: ImageCheck).

A receiver learns the stream's compression from the sender but not whether the round is an
image or a raw disk (the sender decides per round: an image only when every receiver is a
herdcast one). The image magic is 16 bytes no raw disk starts with unless it holds an image
file, so the receiver reads the first decompressed bytes and chooses: unpack the image, store
it as it came, or write the raw stream as before. Only those first bytes are expanded, through
the codec's bounded decompressor, so a hostile stream cannot make the look cost memory.
"""

from __future__ import annotations

from agent.codec import codec
from agent.image.stream import MAGIC


class HeadSniffer:
    """Feed wire bytes until `verdict` is True (an image) or False (not one)."""

    def __init__(self, codec_name: str | None) -> None:
        self.verdict: bool | None = None
        self.head = b""
        self._inflater = None
        if codec_name not in (None, "none"):
            make = codec(codec_name).inflater
            if make is None:  # a codec run in a child process: no image travels in it
                self.verdict = False
            else:
                self._inflater = make()

    def feed(self, data: bytes | memoryview) -> bool | None:
        if self.verdict is not None:
            return self.verdict
        if self._inflater is None:
            self._take(bytes(data[:len(MAGIC)]))
            return self.verdict
        try:
            for piece in self._inflater.feed(data):
                if self._take(piece) is not None:
                    break  # the rest of the input is never expanded
        except Exception:  # noqa: BLE001 - a corrupt stream is the decompressor's to report
            self.verdict = False
        return self.verdict

    def _take(self, more: bytes) -> bool | None:
        self.head += more[:len(MAGIC) - len(self.head)]
        if len(self.head) >= len(MAGIC):
            self.verdict = self.head == MAGIC
        return self.verdict

    def end(self) -> bool:
        """At the end of the stream: a stream shorter than the magic is no image."""
        if self.verdict is None:
            self.verdict = False
        return self.verdict


class ImageCheck:
    """Parses a stored image stream (compressed with `codec`) as it is written and keeps
    nothing; close() fails unless it ended with its END record and trailer (a receive
    --store keeps an image only once it is whole)."""

    def __init__(self, codec: str | None) -> None:
        from agent.image.stream import Decoder, DecodingWriter

        def nothing(*_args) -> None:
            return None

        self.parser = DecodingWriter(Decoder(nothing, nothing, nothing))
        self.front = self.parser
        if codec:
            from agent.codec import decompressing_writer

            self.front = decompressing_writer(self.parser, codec)

    def write(self, data: memoryview) -> None:
        self.front.write(data)

    def close(self) -> None:
        self.front.close()  # a truncated compressed stream fails here,
        self.parser.close()  # an image without its own end here
