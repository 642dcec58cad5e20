"""Every option of `herdcast send` and `herdcast receive`, one row each (mkosi's ConfigSetting).

A row is the whole declaration of one command-line switch: its flags (udpcast's spellings,
aliases included), the field it sets, that field's type and default, the accepted words,
the check that turns its text into a value (and the rendering back), its help text and,
where a node sets it from a boot parameter of its own, that parameter's name. From the
rows come the option dataclasses and the argparse parsers (agent.transfer.options), the
boot parameters that set transfer options (agent.boot.params), udpcparam='s checks
(agent.boot.udpcparam), the plan's command line (agent.boot.plan), the man page and the
shell completion (builder.manual). Two switches that set one field (`--full-duplex` and
`--half-duplex`) are two rows with one `dest`; the first of them declares the field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent.codec import NAMES as CODECS
from agent.image.sink import BLANK_MODES  # what unpacking does with free space
from agent.personalize.wishes import IDENTITIES  # a clone's machine-id and SSH host keys
from agent.transfer.optionchecks import (
    at_least,
    blocksize_check,
    codec_check,
    fec_check,
    hostname_check,
    ipv4,
    number,
    size,
    within,
)

SIDES = ("send", "receive")
DEFAULT_PORTBASE = 9000
# A receiver silent this long is dead (power cut, cable pulled, SIGKILL): a live one, even
# with a stalled disk, keeps answering REQACKs (agent.transfer.receive.slices), so the others
# wait seconds for a dead one, not udpcast's minutes of --retries-until-drop 200.
DEFAULT_DROP_AFTER = 5.0
BLOCKS = ("used", "all")  # what a sender sends herdcast receivers (agent.image)
YES_NO = ("yes", "no")
VERIFY = ("none", "readback")  # a receiver reading its disk back after the transfer


# ---------------------------------------------------------------------------------------------
# The row

_VALUE = object()  # `const` of a row that takes a value (not a switch)


@dataclass(frozen=True)
class Option:
    """One switch. `const` set: a switch storing it (`True`/`False` for store_true/false);
    unset: it takes a value, given to argparse's `argtype` and then to `check`, whose
    result `render` writes back as text. `short` is a dict when the sides spell it
    differently (udpcast's `-T` and `-s` for --start-timeout). `boot` is the boot
    parameter that sets it on a node (so udpcparam= may not); `node` is why a node refuses
    it (udpcparam= says so at boot)."""

    flags: tuple[str, ...]
    dest: str
    help: str
    annotation: str = "str | None"
    default: object = None
    short: str | dict[str, str] | None = None
    sides: tuple[str, ...] = SIDES
    const: object = _VALUE
    argtype: Callable[[str], object] = str
    check: Callable[[object, str], object] | None = None
    render: Callable[[object], str] = str
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    boot: str | None = None
    node: str | None = None
    repeat: bool = False  # may be given again: the values gather into a tuple


    @property
    def name(self) -> str:
        """The option as messages name it: its first long flag."""
        return self.flags[0]

    @property
    def takes_value(self) -> bool:
        return self.const is _VALUE

    def flags_on(self, side: str) -> tuple[str, ...]:
        """Its flags on `side`, short one first, as argparse lists them."""
        short = self.short.get(side) if isinstance(self.short, dict) else self.short
        return ((short,) if short else ()) + self.flags

    def value_of(self, value: object) -> object:
        """The checked value of a given one (its text, after argtype); a repeated row's
        values, each checked, as a tuple."""
        if self.repeat:
            return tuple(self.value_of_one(v) for v in value or ())
        return self.value_of_one(value)

    def value_of_one(self, value: object) -> object:
        return self.check(value, self.name) if self.check and value is not None else value


def _flag(flags: tuple[str, ...], dest: str, help: str, **kw) -> Option:
    """A store_true switch."""
    return Option(flags, dest, help, annotation="bool", default=False, const=True, **kw)


SEND, RECEIVE = ("send",), ("receive",)
HERDCAST = "herdcast: "  # what udpcast lacks says so

OPTIONS: list[Option] = [
    # both sides (udpcast's net_config and disk_config)
    Option(("--file",), "file", short="-f", metavar="FILE", boot="disk",
           help="file or block device to send (read) or receive into (write); the positional "
                "FILE is the same (default: stdin / stdout)"),
    Option(("--pipe",), "pipe", short="-p", metavar="COMMAND",
           node="is not allowed in udpcparam; set compr= instead (herdcast compresses "
                "in-process)",
           help="filter command the data goes through: the sender reads its output "
                "(e.g. 'gzip -c'), the receiver writes into it (e.g. 'gzip -dc')"),
    Option(("--interface",), "interface", short="-i", metavar="IF",
           help="network interface to use: a name, its IP address or a name prefix (default: "
                "$IFNAME, else the best-ranked interface with an IPv4 address)"),
    Option(("--portbase", "--port"), "portbase", short="-P", annotation="int",
           default=DEFAULT_PORTBASE, argtype=int, boot="port", metavar="PORT",
           check=within(1, 65534, f"; default {DEFAULT_PORTBASE}"),
           help="UDP port base: receivers listen on PORT, the sender on PORT+1; the same on "
                "both sides"),
    Option(("--mcast-rdv-address", "--mcast-all-address"), "mcast_rdv_address", short="-M",
           metavar="ADDRESS", check=ipv4(),
           help="address for the connection set-up (HELLO, CONNECT) instead of broadcast; "
                "the same on both sides"),
    Option(("--ttl",), "ttl", short="-t", annotation="int", default=1, argtype=int,
           check=within(1, 255), metavar="HOPS",
           help="multicast time-to-live: how many routers the data may cross (1: this LAN)"),
    _flag(("--nokbd",), "nokbd", short="-k",
          help="never start or stop on a key press: the sender starts by --min-receivers, "
               "--min-wait and --max-wait alone"),
    _flag(("--no-progress",), "no_progress", help="print no progress line"),
    Option(("--start-timeout",), "start_timeout", short={"send": "-T", "receive": "-s"},
           annotation="float | None", argtype=float, check=at_least(0, " seconds"),
           render=number, metavar="SECONDS",
           help="give up when the other side has not shown up within SECONDS"),
    Option(("--log",), "log", short="-l", metavar="FILE",
           help="append what the command prints to FILE as well"),
    Option(("--compress",), "compress", choices=("none", *CODECS), check=codec_check, boot="compr",
           help=HERDCAST + "compress on the wire (the sender compresses, the receiver "
                "decompresses); gz and lzop streams are what gzip -dc / lzop -dc read"),
    # udp-sender's
    Option(("--blocksize",), "blocksize", short="-b", sides=SEND, annotation="int | None",
           argtype=int, check=blocksize_check, metavar="BYTES",
           help="bytes of data per packet, rounded down to a multiple of 4 (default: the "
                "largest the interface's MTU carries)"),
    Option(("--mcast-data-address", "--mcast-address"), "mcast_data_address", short="-m",
           sides=SEND, check=ipv4(multicast=True), metavar="GROUP",
           help="multicast group the data goes to (default: one derived from the "
                "interface's address, as udp-sender does)"),
    _flag(("--broadcast",), "broadcast", short="-B", sides=SEND,
          help="send the data by broadcast instead of multicast"),
    Option(("--max-bitrate",), "max_bitrate", short="-r", sides=SEND, annotation="int | None",
           check=size(binary=False), metavar="BITS",
           help="send at most BITS bits per second (k, m and g multiply by 1000: 600m)"),
    Option(("--full-duplex",), "duplex", short="-d", sides=SEND, const="full",
           help="the network is full duplex (switched): no collisions to avoid (default: "
                "detected)"),
    Option(("--half-duplex",), "duplex", short="-c", sides=SEND, const="half",
           help="the network is half duplex (a hub): leave room for the receivers' answers"),
    Option(("--pointopoint",), "pointopoint", short="-1", sides=SEND,
           annotation="bool | None", const=True,
           help="send by unicast to the one receiver (the default when exactly one connects)"),
    Option(("--nopointopoint",), "pointopoint", short="-2", sides=SEND, const=False,
           help="send by multicast even to a single receiver"),
    Option(("--min-receivers", "--min-clients"), "min_receivers", short="-C", sides=SEND,
           annotation="int | None", argtype=int, check=at_least(0), metavar="N",
           help="start once N receivers have connected (a herdcast receiver that "
                "connected and failed before the start, its disk too small say, counts)"),
    Option(("--min-wait",), "min_wait", short="-w", sides=SEND, annotation="float | None",
           argtype=float, render=number, metavar="SECONDS",
           help="start no sooner than SECONDS after the first receiver connected, even "
                "with --min-receivers reached"),
    Option(("--max-wait",), "max_wait", short="-W", sides=SEND, annotation="float | None",
           argtype=float, render=number, metavar="SECONDS",
           help="start SECONDS after the first receiver connected, however many there are"),
    Option(("--autostart",), "autostart", short="-S", sides=SEND, annotation="int | None",
           argtype=int, check=at_least(0), metavar="N",
           help="start after N HELLO announcements even if no receiver answered (for "
                "receivers that cannot answer: --async, one-way links)"),
    Option(("--retries-until-drop",), "retries_until_drop", short="-R", sides=SEND,
           annotation="int", default=200, argtype=int, check=at_least(0), metavar="N",
           help="drop a receiver that has not answered N repeated acknowledgement requests"),
    Option(("--drop-after",), "drop_after", sides=SEND, annotation="float",
           default=DEFAULT_DROP_AFTER, argtype=float, check=at_least(0, " seconds"),
           render=number, metavar="SECONDS",
           help=HERDCAST + "drop a receiver that answered nothing for SECONDS while asked "
                "(0: only --retries-until-drop)"),
    Option(("--rexmit-hello-interval",), "rexmit_hello_interval", short="-H", sides=SEND,
           annotation="int", default=0, argtype=int, check=at_least(0), metavar="MS",
           help="repeat the HELLO announcement every MS milliseconds while waiting, for "
                "receivers started later (0: once)"),
    Option(("--fec",), "fec", short="-F", sides=SEND, annotation="FecSpec | None", check=fec_check,
           metavar="SxR/Z",
           help="forward error correction: S stripes of Z blocks, each with R redundant "
                "blocks (e.g. 8x8/128; receivers repair loss without asking)"),
    _flag(("--async",), "async_", short="-a", sides=SEND,
          help="no return channel: send without waiting for the receivers' answers (needs "
               "--max-bitrate; use --fec against loss)"),
    Option(("--sendbuf",), "sendbuf", short="-s", sides=SEND, annotation="int | None",
           check=size(binary=True), metavar="BYTES",
           help="the socket's send buffer size (k, m and g multiply by 1024)"),
    Option(("--min-slice-size",), "min_slice_size", sides=SEND, annotation="int", default=16,
           argtype=int, metavar="BLOCKS",
           help="smallest slice (blocks acknowledged together) when slices shrink on loss"),
    Option(("--max-slice-size",), "max_slice_size", sides=SEND, annotation="int",
           default=1024, argtype=int, metavar="BLOCKS",
           help="largest slice, at most 1024"),
    Option(("--default-slice-size", "--slice-size"), "default_slice_size", sides=SEND,
           annotation="int", default=0, argtype=int, metavar="BLOCKS",
           help="the slice size to start with (0: chosen from the block size)"),
    Option(("--no-late-join",), "late_join", sides=SEND, annotation="bool", default=True,
           const=False,
           help=HERDCAST + "tell late receivers they missed the start instead of serving "
                "them in a further round"),
    Option(("--blocks",), "blocks", sides=SEND, annotation="str", default="used",
           choices=BLOCKS, boot="blocks",
           help=HERDCAST + "to herdcast receivers send only the blocks the disk's "
                "filesystems use (used), or all of them"),
    Option(("--chunks",), "chunks", sides=SEND, annotation="str", default="yes",
           choices=YES_NO,
           help=HERDCAST + "herdcast receivers writing a disk in place take the image as "
                "chunks (the chunk carousel: join any time, receive only what they lack); "
                "no: the image stream in rounds for everybody"),
    Option(("--sign-key",), "sign_key", sides=SEND, metavar="FILE.key",
           help=HERDCAST + "sign the session and its result with this key (herdcast "
                "keygen), for receivers that trust only its public key"),
    _flag(("--serve",), "serve", sides=SEND, boot="serve",
          help=HERDCAST + "keep serving the image until stopped (SIGINT/SIGTERM): each "
               "receiver that connects is served in the round in flight's successor"),
    Option(("--report",), "report", sides=SEND, metavar="FILE.json",
           help=HERDCAST + "write a JSON report (receivers, verdicts, digests, times) at the "
                "end; schema in docs/report-schema.md"),
    Option(("--events",), "events", sides=SEND, metavar="FILE",
           help=HERDCAST + "JSON lines as things happen, to FILE or '-' for stdout"),
    Option(("--allow",), "allow", sides=SEND, annotation="tuple[str, ...]", default=(),
           repeat=True, metavar="WHO",
           help=HERDCAST + "answer only these receivers: IPv4 addresses, networks "
                "(10.0.0.0/24), MACs, or a file of them one per line; repeatable (checked "
                "by agent.transfer.send.allow)"),
    # udp-receiver's
    Option(("--receive-timeout",), "receive_timeout", sides=RECEIVE,
           annotation="float | None", argtype=float, render=number, metavar="SECONDS",
           check=at_least(0, " seconds", strict=True),
           help="give up when the sender has sent nothing for SECONDS during the transfer"),
    Option(("--exit-wait",), "exit_wait", short="-w", sides=RECEIVE, annotation="int",
           default=500, argtype=int, check=at_least(0, " milliseconds"), metavar="MS",
           help="after the end, wait MS milliseconds for the sender's last word in case "
                "the receiver's final acknowledgement was lost (with a stock sender; a "
                "herdcast sender's digest acknowledgement ends the receive at once)"),
    Option(("--nosync",), "sync", short="-n", sides=RECEIVE, annotation="bool",
           default=False, const=False,
           help="write without O_SYNC, flushed once at the end (the default; a block "
                "device past the page cache, a file through it)"),
    Option(("--sync",), "sync", short="-y", sides=RECEIVE, const=True,
           help="write synchronously (O_SYNC): slower, nothing waits in memory"),
    Option(("--rcvbuf",), "rcvbuf", short="-b", sides=RECEIVE, annotation="int | None",
           check=size(binary=True), metavar="BYTES",
           help="the socket's receive buffer size (k, m and g multiply by 1024)"),
    _flag(("--passive",), "passive", short="-d", sides=RECEIVE,
          help="send nothing back to the sender (for a sender in --async mode)"),
    _flag(("--ignore-lost-data",), "ignore_lost_data", short="-Z", sides=RECEIVE,
          node="cannot be honoured on a node (a disk with holes must never look finished); "
               "drop it",
          help="go on past data lost for good (--async without enough --fec), leaving "
               "holes; the result says so"),
    # herdcast images: unpacked onto the disk or file (None, True), or stored into a file as
    # they came (False: --store). See agent.image.
    Option(("--unpack",), "unpack", sides=RECEIVE, annotation="bool | None", const=True,
           help=HERDCAST + "write a herdcast image onto --file as onto a disk (the default; "
                "a regular file is then sparse where the disk is free)"),
    Option(("--store",), "unpack", sides=RECEIVE, const=False,
           help=HERDCAST + "store a herdcast image into --file as it came, compression and "
                "all (the capture a server keeps for send -f)"),
    Option(("--blank",), "blank", sides=RECEIVE, annotation="str", default="keep",
           choices=BLANK_MODES, boot="blank",
           help=HERDCAST + "what unpacking an image does with free space: keep it, zero it, "
                "or discard it (SSD trim)"),
    Option(("--verify",), "verify", sides=RECEIVE, annotation="str", default="none",
           choices=VERIFY, boot="verify",
           help=HERDCAST + "readback reads everything written back from the disk after it "
                "is flushed and compares (one more read of the data)"),
    Option(("--description",), "description", sides=RECEIVE, metavar="TEXT",
           help=HERDCAST + "a stored image's description (herdcast image list shows it), "
                "written into the image file once it is complete"),
    Option(("--trust-key",), "trust_key", sides=RECEIVE, metavar="FILE.pub",
           help=HERDCAST + "image only from a sender that signs with this public key's pair "
                "(default: /etc/herdcast/trusted.pub if it exists)"),
    # what the clone becomes once its digest agreed (agent.personalize; a GPT is always
    # fitted to a disk written): the fields of ReceiveOptions.wishes
    _flag(("--grow",), "grow", sides=RECEIVE, boot="grow",
          help=HERDCAST + "extend the last partition and its filesystem to the disk's end"),
    Option(("--hostname",), "hostname", sides=RECEIVE, check=hostname_check, boot="hostname",
           metavar="NAME",
           help=HERDCAST + "write NAME into the clone's /etc/hostname and /etc/hosts (and give "
                "it a fresh identity unless --identity keep); on a node hostname= unset is "
                "the DHCP server's name, empty none"),
    Option(("--identity",), "identity", sides=RECEIVE, choices=IDENTITIES, boot="identity",
           help=HERDCAST + "fresh: empty machine-id, new SSH host keys (the default with a "
                "name); keep: byte-faithful"),
    Option(("--userdata",), "userdata", sides=RECEIVE, boot="userdata", metavar="URL|FILE",
           help=HERDCAST + "cloud-init user-data for the clone's NoCloud seed (a node takes "
                "http://, https:// or tftp:// URLs)"),
]

#: The row that declares each field (the first with that dest).
FIELDS: dict[str, Option] = {}
for _row in OPTIONS:
    FIELDS.setdefault(_row.dest, _row)
#: The rows whose value a boot parameter sets, by that parameter's name.
BOOT: dict[str, Option] = {row.boot: row for row in OPTIONS if row.boot}

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


def rows(side: str) -> list[Option]:
    """The rows of `herdcast send` or `herdcast receive`, in declaration order."""
    return [row for row in OPTIONS if side in row.sides]
