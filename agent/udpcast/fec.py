"""Forward error correction compatible with udpcast's `--fec SxR/Z`.

udpcast uses Rizzo's erasure code over GF(2^8) (polynomial x^8+x^4+x^3+x^2+1, 0x11D). A slice
is cut into S interleaved stripes (stripe s holds blocks s, s+S, s+2S, ...; the short last
block counts zero-padded) and each stripe gets up to R redundancy blocks:

    FEC[r] of stripe s = XOR over j of  c(r, j) * D[s + j*S],   c(r, j) = 1 / ((128 + j) ^ r)

which is a Cauchy matrix, so any m missing data blocks of a stripe can be rebuilt from any m
of its FEC blocks. On the wire FEC block r of stripe s is numbered s + r*S.

The arithmetic is done a whole block at a time: multiplying a block by a constant is one
`bytes.translate` with that constant's 256-byte product table, and adding blocks is an XOR of
big integers, so no Python loop runs per byte.
"""

from __future__ import annotations

from collections.abc import Sequence

POLY = 0x11D
DATA_BASE = 128  # data block j of a stripe is the field element 128 + j


def _tables() -> tuple[list[int], list[int]]:
    exp = [0] * 510
    log = [0] * 256
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x <<= 1
        if x & 0x100:
            x ^= POLY
    for i in range(255, 510):
        exp[i] = exp[i - 255]
    return exp, log


EXP, LOG = _tables()


def gf_mul(a: int, b: int) -> int:
    """Product in GF(2^8)."""
    if a == 0 or b == 0:
        return 0
    return EXP[LOG[a] + LOG[b]]


def gf_inv(a: int) -> int:
    """Multiplicative inverse in GF(2^8); a must not be 0."""
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    return EXP[255 - LOG[a]]


# MUL[c] is the translate table "multiply every byte by c"
MUL: list[bytes] = [bytes(gf_mul(c, x) for x in range(256)) for c in range(256)]


def coefficient(r: int, j: int) -> int:
    """Weight of data block j in FEC block r of a stripe."""
    return gf_inv((DATA_BASE + j) ^ r)


def _as_int(block: bytes | bytearray | memoryview, c: int, size: int) -> int:
    data = bytes(block)
    if len(data) < size:
        data += bytes(size - len(data))
    if c != 1:
        data = data.translate(MUL[c])
    return int.from_bytes(data, "little")


def encode_stripe(data: Sequence[bytes | bytearray | memoryview], redundancy: int,
                  blocksize: int) -> list[bytes]:
    """The `redundancy` FEC blocks of one stripe (data blocks shorter than blocksize count
    zero-padded, as udpcast pads the slice's last block)."""
    if not 0 < len(data) <= 128 or not 0 < redundancy <= 128:
        raise ValueError("a stripe has 1..128 data and 1..128 FEC blocks")
    out = []
    for r in range(redundancy):
        acc = 0
        for j, block in enumerate(data):
            acc ^= _as_int(block, coefficient(r, j), blocksize)
        out.append(acc.to_bytes(blocksize, "little"))
    return out


def stripe_blocks(nblocks: int, stripes: int, stripe: int) -> list[int]:
    """Block numbers (within the slice) that belong to `stripe`."""
    return list(range(stripe, nblocks, stripes))


def encode_slice(blocks: Sequence[bytes | bytearray | memoryview], stripes: int,
                 redundancy: int, blocksize: int) -> list[tuple[int, bytes]]:
    """Every FEC block of a slice as (wire fecBlockNo, payload), for the sender.

    Stripes without data blocks (a short last slice) get no FEC blocks.
    """
    out = []
    fec_by_stripe = {}
    for s in range(min(stripes, len(blocks))):
        fec_by_stripe[s] = encode_stripe([blocks[i] for i in
                                          stripe_blocks(len(blocks), stripes, s)],
                                         redundancy, blocksize)
    for r in range(redundancy):
        for s, fec in fec_by_stripe.items():
            out.append((s + r * stripes, fec[r]))
    return out


def _invert(matrix: list[list[int]]) -> list[list[int]]:
    """Inverse of a square matrix over GF(2^8) (Gauss-Jordan); ValueError if singular."""
    n = len(matrix)
    a = [row[:] + [int(i == k) for k in range(n)] for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = next((r for r in range(col, n) if a[r][col]), None)
        if pivot is None:
            raise ValueError("singular FEC matrix")
        a[col], a[pivot] = a[pivot], a[col]
        inv = gf_inv(a[col][col])
        a[col] = [gf_mul(inv, v) for v in a[col]]
        for r in range(n):
            if r != col and a[r][col]:
                f = a[r][col]
                a[r] = [v ^ gf_mul(f, p) for v, p in zip(a[r], a[col], strict=True)]
    return [row[n:] for row in a]


def decode_stripe(data: Sequence[bytes | bytearray | memoryview | None],
                  fec: dict[int, bytes | bytearray | memoryview],
                  blocksize: int) -> dict[int, bytes]:
    """Rebuild the missing data blocks of one stripe.

    `data[j]` is data block j of the stripe or None when lost; `fec` maps redundancy index r
    (wire fecBlockNo // stripes) to its payload. Returns {j: rebuilt block (blocksize bytes,
    zero-padded)}; ValueError when fewer FEC blocks than missing blocks arrived.
    """
    missing = [j for j, block in enumerate(data) if block is None]
    if not missing:
        return {}
    if len(fec) < len(missing):
        raise ValueError(f"stripe lost {len(missing)} blocks but only {len(fec)} FEC blocks "
                         "arrived")
    rows = sorted(fec)[:len(missing)]
    known = [(j, block) for j, block in enumerate(data) if block is not None]
    syndromes = []
    for r in rows:
        acc = _as_int(fec[r], 1, blocksize)
        for j, block in known:
            acc ^= _as_int(block, coefficient(r, j), blocksize)
        syndromes.append(acc.to_bytes(blocksize, "little"))
    inverse = _invert([[coefficient(r, j) for j in missing] for r in rows])
    out = {}
    for i, j in enumerate(missing):
        acc = 0
        for k, syndrome in enumerate(syndromes):
            if inverse[i][k]:
                acc ^= _as_int(syndrome, inverse[i][k], blocksize)
        out[j] = acc.to_bytes(blocksize, "little")
    return out
