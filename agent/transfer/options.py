"""Options of `herdcast send` and `herdcast receive`, with udpcast's names and meanings.

One argparse declaration per side is the single source of truth: the console command, the
node agent (which turns `udpcparam=` into argv) and the tests all go through
`parse_send_args` / `parse_receive_args`, so an admin's udp-sender script works by changing
only the program name.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from dataclasses import dataclass

from agent.codec import NAMES as CODECS
from agent.errors import UsageError
from agent.udpcast.protocol import MAX_BLOCKSIZE

DEFAULT_PORTBASE = 9000
# A receiver silent this long is dead (power cut, cable pulled, SIGKILL): a live one, even
# with a stalled disk, keeps answering REQACKs (agent.transfer.receive.slices), so the others
# wait seconds for a dead one, not udpcast's minutes of --retries-until-drop 200.
DEFAULT_DROP_AFTER = 5.0
# --blocksize is at most MAX_BLOCKSIZE (what one UDP datagram carries after the DATA header).
# The sender also keeps each block within its interface's MTU (block_size_for in
# agent.transfer.send.network): a datagram IP fragments is lost whole when any fragment is.


class OptionError(UsageError, ValueError):
    """A bad option value: the message names the option and the fix, on one line
    (HerdcastError escapes any newline the user's text held)."""


@dataclass(frozen=True)
class FecSpec:
    """`--fec SxR/Z`: S stripes, R redundancy blocks per stripe, stripe size Z blocks."""

    stripes: int
    redundancy: int
    stripesize: int


@dataclass(frozen=True)
class CommonOptions:
    """Options both sides share (udpcast's `net_config` and `disk_config`).

    Frozen: the options are what the user asked for, fixed once parsed. What a run finds out
    (the interface it picked, the block size the MTU allows, the image size) lives in the
    run's own objects (the sender's `SendSession`, the receiver's `Session`); a changed copy
    is `dataclasses.replace(opts, ...)`.
    """

    file: str | None = None
    pipe: str | None = None
    interface: str | None = None
    portbase: int = DEFAULT_PORTBASE
    mcast_rdv_address: str | None = None
    ttl: int = 1
    nokbd: bool = False
    no_progress: bool = False
    start_timeout: float | None = None
    log: str | None = None
    compress: str | None = None  # herdcast: in-process codec (agent.codec)


@dataclass(frozen=True)
class SendOptions(CommonOptions):
    """What `udp-sender` takes."""

    blocksize: int | None = None  # None: the largest the interface's MTU carries
    mcast_data_address: str | None = None
    broadcast: bool = False
    max_bitrate: int | None = None  # bits per second
    duplex: str | None = None  # None = auto-detect, "full" or "half"
    pointopoint: bool | None = None  # None = point-to-point when exactly one receiver
    min_receivers: int | None = None
    min_wait: float | None = None
    max_wait: float | None = None
    autostart: int | None = None
    retries_until_drop: int = 200
    # herdcast: a receiver that has not answered anything for this long while it owed an
    # answer is dropped, whatever --retries-until-drop says (0 = no time bound)
    drop_after: float = DEFAULT_DROP_AFTER
    rexmit_hello_interval: int = 0  # milliseconds, 0 = HELLO only once
    fec: FecSpec | None = None
    async_: bool = False
    sendbuf: int | None = None
    min_slice_size: int = 16
    max_slice_size: int = 1024
    default_slice_size: int = 0  # 0 = automatic
    late_join: bool = True  # herdcast: serve receivers that miss the start in a further round
    blocks: str = "used"  # herdcast: "used" sends herdcast receivers the used blocks only
    sign_key: str | None = None  # herdcast: Ed25519 private key that signs the session
    serve: bool = False  # herdcast: keep serving rounds until stopped (send.serve)
    report: str | None = None  # herdcast: write the JSON report here at the end
    events: str | None = None  # herdcast: JSON lines as things happen ("-": stdout)
    live: bool | None = None  # herdcast: the rich fleet table; None: when stderr is a terminal


@dataclass(frozen=True)
class ReceiveOptions(CommonOptions):
    """What `udp-receiver` takes."""

    receive_timeout: float | None = None
    exit_wait: int = 500  # milliseconds
    sync: bool = False
    rcvbuf: int | None = None
    passive: bool = False
    ignore_lost_data: bool = False
    # herdcast images: unpacked onto the disk or file (None, True), or stored into a file as
    # they came (False: --store). See agent.image.
    unpack: bool | None = None
    blank: str = "keep"  # what unpacking does with the space no image extent covers
    verify: str = "none"  # "readback": read what was written back from the disk after fsync
    description: str | None = None  # a stored image's description (agent.image.catalogue)
    # herdcast: public key a sender must sign with (default: agent.trust.TRUSTED_KEY_PATH
    # when that file exists)
    trust_key: str | None = None


# udpcast options herdcast recognises but does not implement: each fails with this reason.
UNSUPPORTED = {
    "--rate-governor": "loadable rate governors are udpcast plug-ins; use --max-bitrate",
    "--autorate": "use --max-bitrate; herdcast's rate follows the receivers' feedback anyway",
    "--daemon-mode": "run herdcast send in a loop from a service manager instead",
    "--pid-file": "run herdcast send from a service manager instead",
    "--kill": "run herdcast send from a service manager instead",
    "--streaming": "herdcast serves late receivers in a further round (the default)",
    "--rehello-offset": "only used with --streaming, which herdcast does not implement",
    "--bw-period": "herdcast prints its own progress line",
    "--stat-period": "herdcast prints its own progress line",
    "--print-uncompressed-position": "herdcast prints its own progress line",
    "--write-loss": "loss-test builds only; shape loss with nftables instead",
    "--read-loss": "loss-test builds only; shape loss with nftables instead",
    "--seed": "loss-test builds only",
    "--print-seed": "loss-test builds only",
}


def parse_size(text: str, *, option: str, binary: bool = False) -> int:
    """A count with an optional k/m/g suffix (×1000, or ×1024 when `binary`)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*", text)
    if not m:
        raise OptionError(f"{option}: {text[:40]!r} is not a number (examples: 500000, 800k, 1g)")
    base = 1024 if binary else 1000
    scale = {"": 1, "k": base, "m": base**2, "g": base**3}[m.group(2).lower()]
    try:
        value = int(float(m.group(1)) * scale)
    except (OverflowError, ValueError):
        value = -1
    if not 0 < value < 2**63:
        raise OptionError(f"{option}: {text[:40]!r} out of range (examples: 500000, 800k, 1g)")
    return value


def _check_ipv4(option: str, text: str | None, *, multicast: bool = False) -> None:
    """An IPv4 address option: one line naming the option when it is not one."""
    if text is None:
        return
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        raise OptionError(f"{option}: {text!r} is not an IPv4 address "
                          "(e.g. 239.192.1.2)") from None
    if multicast and not address.is_multicast:
        raise OptionError(f"{option}: {text} is not a multicast group (224.0.0.0/4)")


def parse_fec(text: str) -> FecSpec:
    """`--fec` as udpcast writes it: `8x8/128`, `8x8`, or just the redundancy."""
    m = re.fullmatch(r"(?:(\d+)x)?(\d+)(?:/(\d+))?", text.strip())
    if not m:
        raise OptionError(f"--fec: {text!r} is not STRIPESxREDUNDANCY/STRIPESIZE (e.g. 8x8/128)")
    stripes = int(m.group(1) or 8)
    redundancy = int(m.group(2))
    stripesize = int(m.group(3) or 128)
    if not 1 <= stripes <= 1024 or not 1 <= redundancy <= 128 or not 1 <= stripesize <= 128:
        raise OptionError(f"--fec: {text!r} out of range (stripes>=1, redundancy and stripe "
                          "size 1..128)")
    if stripes * stripesize > 1024:
        stripes = max(1, 1024 // stripesize)
    return FecSpec(stripes, redundancy, stripesize)


class _Parser(argparse.ArgumentParser):
    """argparse that raises OptionError instead of exiting, so callers choose how to fail."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise OptionError(message)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", help="file or block device (default: stdin/stdout)")
    p.add_argument("-p", "--pipe", help="filter command, e.g. 'gzip -c' / 'gzip -dc'")
    p.add_argument("-i", "--interface", help="interface name, IP or name prefix")
    p.add_argument("-P", "--portbase", "--port", type=int, default=DEFAULT_PORTBASE)
    p.add_argument("-M", "--mcast-rdv-address", "--mcast-all-address")
    p.add_argument("-t", "--ttl", type=int, default=1)
    p.add_argument("-k", "--nokbd", action="store_true", help="no keyboard start")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("-l", "--log")
    p.add_argument("--compress", choices=["none", *CODECS],
                   help="herdcast: compress on the wire (the sender compresses, the receiver "
                        "decompresses); gz and lzop streams are what gzip -dc / lzop -dc read")
    p.add_argument("--license", action="store_true", help=argparse.SUPPRESS)
    for opt in UNSUPPORTED:
        p.add_argument(opt, nargs="?", const=True, default=None, help=argparse.SUPPRESS)


def send_parser(prog: str = "herdcast send") -> argparse.ArgumentParser:
    """The argparse declaration of `herdcast send` (udp-sender's options)."""
    p = _Parser(prog=prog, description="Send a file or disk by multicast (udp-sender).",
                allow_abbrev=True)
    _common(p)
    p.add_argument("file_arg", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("-b", "--blocksize", type=int, default=None)
    p.add_argument("-m", "--mcast-data-address", "--mcast-address")
    p.add_argument("-B", "--broadcast", action="store_true")
    p.add_argument("-r", "--max-bitrate")
    p.add_argument("-d", "--full-duplex", dest="duplex", action="store_const", const="full")
    p.add_argument("-c", "--half-duplex", dest="duplex", action="store_const", const="half")
    p.add_argument("-1", "--pointopoint", dest="pointopoint", action="store_const", const=True)
    p.add_argument("-2", "--nopointopoint", dest="pointopoint", action="store_const",
                   const=False)
    p.add_argument("-C", "--min-receivers", "--min-clients", type=int)
    p.add_argument("-w", "--min-wait", type=float)
    p.add_argument("-W", "--max-wait", type=float)
    p.add_argument("-S", "--autostart", type=int)
    p.add_argument("-T", "--start-timeout", type=float)
    p.add_argument("-R", "--retries-until-drop", type=int, default=200)
    p.add_argument("--drop-after", type=float, default=DEFAULT_DROP_AFTER, metavar="SECONDS",
                   help="herdcast: drop a receiver that answered nothing for this long while "
                        f"asked (default {DEFAULT_DROP_AFTER:g}; 0: only --retries-until-drop)")
    p.add_argument("-H", "--rexmit-hello-interval", type=int, default=0)
    p.add_argument("-F", "--fec")
    p.add_argument("-a", "--async", dest="async_", action="store_true")
    p.add_argument("-s", "--sendbuf")
    p.add_argument("--min-slice-size", type=int, default=16)
    p.add_argument("--max-slice-size", type=int, default=1024)
    p.add_argument("--default-slice-size", "--slice-size", type=int, default=0)
    p.add_argument("--no-late-join", dest="late_join", action="store_false",
                   help="herdcast: tell late receivers they missed the start instead of "
                        "serving them in a further round")
    p.add_argument("--sign-key", metavar="FILE.key",
                   help="herdcast: sign the session and its result with this key (herdcast "
                        "keygen), for receivers that trust only its public key")
    p.add_argument("--serve", action="store_true",
                   help="herdcast: keep serving the image until stopped (SIGINT/SIGTERM): each "
                        "receiver that connects is served in the round in flight's successor")
    p.add_argument("--report", metavar="FILE.json",
                   help="herdcast: write a JSON report (receivers, verdicts, digests, times) "
                        "at the end; schema in docs/report-schema.md")
    p.add_argument("--events", metavar="FILE",
                   help="herdcast: JSON lines as things happen, to FILE or '-' for stdout")
    p.add_argument("--blocks", choices=["used", "all"], default="used",
                   help="herdcast: to herdcast receivers send only the blocks the disk's "
                        "filesystems use (default), or all of them")
    return p


def receive_parser(prog: str = "herdcast receive") -> argparse.ArgumentParser:
    """The argparse declaration of `herdcast receive` (udp-receiver's options)."""
    p = _Parser(prog=prog, description="Receive a file or disk by multicast (udp-receiver).",
                allow_abbrev=True)
    _common(p)
    p.add_argument("file_arg", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("-s", "--start-timeout", type=float)
    p.add_argument("--receive-timeout", type=float)
    p.add_argument("-w", "--exit-wait", type=int, default=500)
    p.add_argument("-n", "--nosync", dest="sync", action="store_false", default=False)
    p.add_argument("-y", "--sync", dest="sync", action="store_true")
    p.add_argument("-b", "--rcvbuf")
    p.add_argument("-d", "--passive", action="store_true")
    p.add_argument("-Z", "--ignore-lost-data", action="store_true")
    p.add_argument("--unpack", action="store_const", const=True, default=None,
                   help="herdcast: write a herdcast image onto --file as onto a disk (the "
                        "default; a regular file is then sparse where the disk is free)")
    p.add_argument("--store", dest="unpack", action="store_const", const=False,
                   help="herdcast: store a herdcast image into --file as it came, "
                        "compression and all (the capture a server keeps for send -f)")
    p.add_argument("--trust-key", metavar="FILE.pub",
                   help="herdcast: image only from a sender that signs with this public "
                        "key's pair (default: /etc/herdcast/trusted.pub if it exists)")
    p.add_argument("--blank", choices=["keep", "zero", "discard"], default="keep",
                   help="herdcast: what unpacking an image does with free space: keep it "
                        "(default), zero it, or discard it (SSD trim)")
    p.add_argument("--verify", choices=["none", "readback"], default="none",
                   help="herdcast: readback reads everything written back from the disk "
                        "after it is flushed and compares (one more read of the data)")
    p.add_argument("--description", metavar="TEXT",
                   help="herdcast: a stored image's description (herdcast image list shows "
                        "it), written into the image file once it is complete")
    return p


def _check_unsupported(ns: argparse.Namespace) -> None:
    for opt, why in UNSUPPORTED.items():
        if getattr(ns, opt.lstrip("-").replace("-", "_"), None) is not None:
            raise OptionError(f"{opt} is not supported by herdcast: {why}")


def _check_common(ns: argparse.Namespace) -> None:
    if not 1 <= ns.portbase <= 65534:
        raise OptionError(f"--portbase: {ns.portbase} out of range (1..65534; default 9000)")
    if not 1 <= ns.ttl <= 255:
        raise OptionError(f"--ttl: {ns.ttl} out of range (1..255)")
    _check_ipv4("--mcast-rdv-address", ns.mcast_rdv_address)
    if ns.file_arg is not None:
        if ns.file is not None:
            raise OptionError(f"give the file once: --file {ns.file} and {ns.file_arg}")
        ns.file = ns.file_arg
    for name in ("start_timeout",):
        value = getattr(ns, name, None)
        if value is not None and value < 0:
            raise OptionError(f"--{name.replace('_', '-')}: must be >= 0 seconds")


def _fill(cls: type, ns: argparse.Namespace):
    """The frozen options from the checked namespace (`--compress none` is no codec)."""
    if getattr(ns, "compress", None) == "none":
        ns.compress = None
    names = {f for f in cls.__dataclass_fields__}
    return cls(**{k: v for k, v in vars(ns).items() if k in names})


def parse_send_args(argv: list[str]) -> SendOptions:
    """Parse udp-sender style arguments; raises OptionError with a one-line reason."""
    ns = send_parser().parse_args(argv)
    _check_unsupported(ns)
    _check_common(ns)
    _check_ipv4("--mcast-data-address", ns.mcast_data_address, multicast=True)
    if ns.blocksize is not None:
        ns.blocksize -= ns.blocksize % 4
        if not 64 <= ns.blocksize <= MAX_BLOCKSIZE:
            raise OptionError(f"--blocksize: {ns.blocksize} out of range (64..{MAX_BLOCKSIZE},"
                              " and at most what the interface's MTU carries)")
    ns.max_bitrate = (parse_size(ns.max_bitrate, option="--max-bitrate")
                      if ns.max_bitrate is not None else None)
    ns.sendbuf = (parse_size(ns.sendbuf, option="--sendbuf", binary=True)
                  if ns.sendbuf is not None else None)
    ns.fec = parse_fec(ns.fec) if ns.fec is not None else None
    if ns.async_ and ns.max_bitrate is None:
        raise OptionError("--async needs --max-bitrate (there is no return channel to pace by)")
    for name in ("min_receivers", "autostart", "retries_until_drop", "rexmit_hello_interval"):
        value = getattr(ns, name)
        if value is not None and value < 0:
            raise OptionError(f"--{name.replace('_', '-')}: must be >= 0, got {value}")
    if ns.drop_after < 0:
        raise OptionError(f"--drop-after: must be >= 0 seconds, got {ns.drop_after:g}")
    if not 1 <= ns.min_slice_size <= ns.max_slice_size <= 1024:
        raise OptionError("--min-slice-size/--max-slice-size: need 1 <= min <= max <= 1024")
    if ns.serve:
        _check_serve(ns)
    return _fill(SendOptions, ns)


def _check_serve(ns: argparse.Namespace) -> None:
    """--serve reads the input again for every round and waits for receivers forever."""
    if ns.file is None or ns.pipe:
        raise OptionError("--serve reads the image again for every round: give it as -f FILE "
                          "(a file, disk or stored image), not stdin or --pipe")
    conflict = serve_conflict(ns)
    if conflict:
        raise OptionError(conflict)


def serve_conflict(opts) -> str | None:
    """Why options (a namespace or SendOptions) cannot go with --serve, or None."""
    for given, name in ((opts.async_, "--async"), (not opts.late_join, "--no-late-join"),
                        (opts.start_timeout, "--start-timeout"),
                        (opts.autostart, "--autostart"),
                        (opts.min_receivers is not None, "--min-receivers"),
                        (opts.min_wait is not None, "--min-wait"),
                        (opts.max_wait is not None, "--max-wait")):
        if given:
            return (f"--serve and {name} do not go together: --serve starts a round whenever "
                    f"receivers wait and keeps going until stopped; drop {name}")
    return None


def parse_receive_args(argv: list[str]) -> ReceiveOptions:
    """Parse udp-receiver style arguments; raises OptionError with a one-line reason."""
    ns = receive_parser().parse_args(argv)
    _check_unsupported(ns)
    _check_common(ns)
    ns.rcvbuf = (parse_size(ns.rcvbuf, option="--rcvbuf", binary=True)
                 if ns.rcvbuf is not None else None)
    if ns.receive_timeout is not None and ns.receive_timeout <= 0:
        raise OptionError("--receive-timeout: must be > 0 seconds")
    if ns.exit_wait < 0:
        raise OptionError("--exit-wait: must be >= 0 milliseconds")
    if ns.verify == "readback" and (ns.file is None or ns.pipe):
        raise OptionError("--verify readback: needs --file (a disk or file) and no --pipe, "
                          "to read back what was written")
    return _fill(ReceiveOptions, ns)
