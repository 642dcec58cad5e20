"""One-shot compression of a bounded block (a chunk of a chunked image, agent.image.chunks).

A chunk is compressed on its own so it decodes without anything before it. Its expanded size
is known from the manifest before it is decompressed, so the output is bounded by that size
exactly: a forged chunk cannot expand past it (a bomb is one CodecError, no allocation).
zstd (the zstandard package) is the chunk codec: it decodes at several hundred MB/s per core,
far above a gigabit link, and compresses a filesystem's data about as well as gzip -6.
"""

from __future__ import annotations

from agent.codec.inflate import ZSTD_LEVEL, CodecError

BLOCK_CODECS = ("none", "zstd")


def compress(name: str, data: bytes | memoryview, level: int = ZSTD_LEVEL) -> bytes:
    """`data` compressed with `name` ("none" returns it as it is)."""
    if name == "none":
        return bytes(data)
    import zstandard

    return zstandard.ZstdCompressor(level=level).compress(data)


def decompress(name: str, data: bytes | memoryview, size: int) -> bytes:
    """`data` expanded; it must expand to exactly `size` bytes (CodecError otherwise)."""
    if name == "none":
        out = bytes(data)
    elif name == "zstd":
        import zstandard

        try:
            out = zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
        except zstandard.ZstdError as exc:
            raise CodecError(f"compression zstd: a chunk is corrupt ({exc})") from exc
    else:
        raise CodecError(f"compression {name!r}: not a chunk codec",
                         f"use one of {', '.join(BLOCK_CODECS)}")
    if len(out) != size:
        raise CodecError(f"compression {name}: a chunk expanded to {len(out)} bytes, "
                         f"its manifest says {size}")
    return out
