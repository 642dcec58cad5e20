"""The boot parameter parser: kernel splitting rules, every parameter's values, udpcparam."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.boot.addressing import PxeIp
from agent.boot.cmdline import BootConfig, parse_cmdline
from agent.boot.node import run_options
from agent.boot.params import PARAMETERS, split_cmdline
from agent.boot.plan import transfer_argv
from agent.boot.tokens import CmdlineError, consoles
from agent.boot.udpcparam import option_words, split_words
from agent.hw.modprobe import named_loads
from agent.transfer.options import (
    ReceiveOptions,
    SendOptions,
    parse_receive_args,
    parse_send_args,
    to_argv,
)

TUTORIAL = ("load_ramdisk=1 initrd=initrd root=01:00 auto=yes lang=US kbmap=US netmodule=AUTO "
            "netmodparm= dhcp=yes port=9000 enableDiskmodule=yes diskmodule=AUTO diskmodparm= "
            "disk=/dev/sda compr=none umode=rcv udpcparam=")


def _error(text: str) -> str:
    with pytest.raises(CmdlineError) as err:
        parse_cmdline(text)
    message = str(err.value)
    assert "\n" not in message
    return message


# --- splitting ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ('udpcparam="--min-receivers 4 --max-wait 60"',
     {"udpcparam": "--min-receivers 4 --max-wait 60"}),
    ('"udpcparam=--min-receivers 4"', {"udpcparam": "--min-receivers 4"}),
    ('disk=/dev/sda\tumode=rcv\nport=9002\n', {"disk": "/dev/sda", "umode": "rcv",
                                               "port": "9002"}),
    ('umode=snd umode=rcv', {"umode": "rcv"}),
    ('a=b"c d" e=f', {"a": 'b"c d"', "e": "f"}),  # a quote mid-value stays, as in the kernel
    ("quiet ro auto", {"auto": ""}),  # bare words only when they name our parameters
    ("root=01:00 initrd=initrd x.y=z", {"root": "01:00", "initrd": "initrd", "x.y": "z"}),
    ("enableDiskModule=no bootif=01-aa-bb-cc-dd-ee-ff UMODE=snd",
     {"enableDiskmodule": "no", "BOOTIF": "01-aa-bb-cc-dd-ee-ff", "umode": "snd"}),
    ("enableDiskmodule=yes enablediskmodule=no", {"enableDiskmodule": "no"}),
    ("lang=US\u00a0x", {"lang": "US\u00a0x"}),  # only ASCII whitespace separates
    ('udpcparam="unterminated', {"udpcparam": "unterminated"}),
    ("  ", {}),
])
def test_split_follows_the_kernel(text, expected):
    assert split_cmdline(text) == expected


def test_unknown_keys_and_bare_words_are_ignored():
    assert parse_cmdline("quiet splash root=/dev/nfs foo=bar -- umode=rcv") == \
        BootConfig(umode="rcv")


def test_tutorial_append_line_parses():
    cfg = parse_cmdline(TUTORIAL)
    assert (cfg.auto, cfg.umode, cfg.disk, cfg.port, cfg.dhcp) == (True, "rcv", "/dev/sda", 9000,
                                                                  True)
    assert (cfg.lang, cfg.kbmap, cfg.netmodule, cfg.diskmodule) == ("US", "US", "AUTO", "AUTO")
    assert transfer_argv(cfg) == ["--file", "/dev/sda", "--portbase", "9000", "--nokbd"]


def test_tutorial_sender_broadcast_is_an_option():
    cfg = parse_cmdline(TUTORIAL.replace("umode=rcv udpcparam=", "umode=snd udpcparam=broadcast"))
    assert cfg.udpcparam == parse_send_args(["--broadcast"])
    opts = run_options(cfg, interface=None)
    assert isinstance(opts, SendOptions) and opts.broadcast and opts.nokbd


# --- every parameter: good values -----------------------------------------------------------


@pytest.mark.parametrize("text, attr, expected", [
    ("auto=yes", "auto", True), ("auto=NO", "auto", False), ("auto=1", "auto", True),
    ("lang=FR", "lang", "FR"), ("lang=", "lang", None), ("kbmap=de_CH", "kbmap", "de_CH"),
    ("netmodule=auto", "netmodule", "AUTO"), ("netmodule=e1000e", "netmodule", "e1000e"),
    ("netmodule=NONE", "netmodule", "NONE"),
    ('netmodparm="debug=2 copybreak=0"', "netmodparm", "debug=2 copybreak=0"),
    ("dhcp=no ip=10.0.0.5/24", "dhcp", False), ("dhcp=true", "dhcp", True),
    ("port=9002", "port", 9002), ("port=1", "port", 1), ("port=65534", "port", 65534),
    ("port=9001", "port", 9001),
    ("enableDiskModule=no", "enable_diskmodule", False),
    ("diskmodule=ahci", "diskmodule", "ahci"), ("diskmodparm=x=1", "diskmodparm", "x=1"),
    ("disk=/dev/nvme0n1", "disk", "/dev/nvme0n1"),
    ("disk=/dev/disk/by-path/pci-0000:00:1f.2-ata-1", "disk",
     "/dev/disk/by-path/pci-0000:00:1f.2-ata-1"),
    ("compr=gzip", "compr", "gz"), ("compr=lzo", "compr", "lzop"), ("compr=ZSTD", "compr", "zstd"),
    ("compr=none", "compr", "none"), ("umode=SND", "umode", "snd"),
    ("post=reboot", "post", "reboot"), ("post=shell", "post", "shell"),
    ("onfail=poweroff", "onfail", "poweroff"), ("hwtimeout=300", "hwtimeout", 300),
    ("dhcptimeout=5", "dhcptimeout", 5),
    ("BOOTIF=01-AA-bb-cc-dd-ee-0f", "bootif_mac", "aa:bb:cc:dd:ee:0f"),
    ("BOOTIF=aa:bb:cc:dd:ee:ff", "bootif_mac", "aa:bb:cc:dd:ee:ff"),
    ("console=ttyS0,115200 console=tty0", "console", ["ttyS0,115200", "tty0"]),
    ("ip=dhcp", "ip", None), ("ip= netmask= gateway=", "ip", None),
])
def test_good_value(text, attr, expected):
    cfg = parse_cmdline(f"umode=rcv {text}")
    assert getattr(cfg, attr) == expected


def test_modparm_reaches_modprobe_as_words():
    cfg = parse_cmdline('umode=rcv netmodule=e1000e netmodparm="debug=2 copybreak=0" '
                        "diskmodule=ahci diskmodparm=x=1")
    loads = named_loads(cfg.netmodule, cfg.netmodparm, cfg.diskmodule, cfg.diskmodparm)
    assert [load.params for load in loads] == [["debug=2", "copybreak=0"], ["x=1"]]


def test_defaults_when_absent():
    cfg = parse_cmdline("umode=rcv")
    assert cfg == BootConfig(umode="rcv")
    assert (cfg.auto, cfg.dhcp, cfg.port, cfg.disk, cfg.compr, cfg.post, cfg.onfail) == \
        (False, True, 9000, "/dev/sda", "none", "poweroff", "wait")
    assert (cfg.netmodule, cfg.diskmodule, cfg.enable_diskmodule, cfg.bootif_mac) == \
        ("AUTO", "AUTO", True, None)


# --- every parameter: bad values ------------------------------------------------------------


@pytest.mark.parametrize("bad, start", [
    ("auto=perhaps", "auto=perhaps: not yes or no"), ("auto", "auto=: not yes or no"),
    ("lang=en;fr", "lang=en;fr: not a name"), ("kbmap=de/ch", "kbmap=de/ch: not a name"),
    ("netmodule=e1000e.ko", "netmodule=e1000e.ko: not a module name"),
    ("netmodule=", "netmodule=: not a module name"),
    ('netmodparm="debug=1 \'x"', "netmodparm=\"debug=1 'x\": unbalanced quotes"),
    ("netmodparm=;", "netmodparm=;: ';' is not a module parameter"),
    ("dhcp=maybe", "dhcp=maybe: not yes or no; use dhcp=yes or dhcp=no"),
    ("ip=10.0.0.300", "ip=10.0.0.300: not an IPv4 host address"),
    ("ip=224.0.0.1", "ip=224.0.0.1: not an IPv4 host address"),
    ("ip=127.0.0.1", "ip=127.0.0.1: not an IPv4 host address"),
    ("ip=10.0.0.5/33", "ip=10.0.0.5/33: not an IPv4 host address"),
    ("ip=10.0.0.5:10.0.0.1", "ip=10.0.0.5:10.0.0.1: colon form needs at least"),
    ("ip=10.0.0.5:10.0.0.1:10.0.0.1:255.0.255.0",
     "ip=10.0.0.5:10.0.0.1:10.0.0.1:255.0.255.0: field 4 (netmask)"),
    ("ip=10.0.0.5:x::", "ip=10.0.0.5:x::: field 2 (server) 'x' is not an IPv4 address"),
    ("netmask=255.0.255.0", "netmask=255.0.255.0: not a netmask"),
    ("netmask=0", "netmask=0: not a netmask"), ("netmask=33", "netmask=33: not a netmask"),
    ("gateway=10.0.0", "gateway=10.0.0: not an IPv4 host address"),
    ("port=99999", "port=99999: out of range; use port=1..65534 (default 9000)"),
    ("port=abc", "port=abc: not a number; use port=1..65534 (default 9000)"),
    ("port=0", "port=0: out of range"), ("port=65535", "port=65535: out of range"),
    ("port=-1", "port=-1: not a number"), ("port=", "port=: not a number"),
    ("port=\u0663", "port=\u0663: not a number"),  # int() would take an Arabic-Indic digit
    ("enableDiskmodule=sure", "enableDiskmodule=sure: not yes or no"),
    ("diskmodule=ahci.ko", "diskmodule=ahci.ko: not a module name"),
    ("diskmodparm=x;y", "diskmodparm=x;y: 'x;y' is not a module parameter"),
    ("disk=", "disk=: empty; use an absolute /dev path such as disk=/dev/sda"),
    ("disk=sda", "disk=sda: not a /dev path"), ("disk=/dev/", "disk=/dev/: not a /dev path"),
    ("disk=/dev/../etc/passwd", "disk=/dev/../etc/passwd: not a /dev path"),
    ("disk=/tmp/img", "disk=/tmp/img: not a /dev path"),
    ("compr=rar", "compr=rar: not a compression; use compr=none, compr=gz, compr=lzop or "
                  "compr=zstd (gzip and lzo also accepted)"),
    ("umode=xmit", "umode=xmit: not a mode; use umode=snd or umode=rcv"),
    ("umode=", "umode=: not a mode"),
    ("BOOTIF=01-aa-bb", "BOOTIF=01-aa-bb: not a MAC as pxelinux writes it"),
    ("BOOTIF=20-aa-bb-cc-dd-ee-ff", "BOOTIF=20-aa-bb-cc-dd-ee-ff: not a MAC"),
    ("BOOTIF=01-gg-bb-cc-dd-ee-ff", "BOOTIF=01-gg-bb-cc-dd-ee-ff: not a MAC"),
    ("post=halt", "post=halt: not an action; use post=poweroff, post=reboot, post=shell or "
                  "post=wait"),
    ("onfail=beep", "onfail=beep: not an action"),
    ("hwtimeout=0", "hwtimeout=0: out of range"), ("dhcptimeout=1.5", "dhcptimeout=1.5: not a"),
])
def test_bad_value_is_one_clear_line(bad, start):
    assert _error(f"umode=rcv {bad}").startswith(start)


def test_control_characters_in_a_value_keep_the_error_on_one_line():
    assert _error('umode=rcv lang="a\nb"') == \
        "lang=\"a\\nb\": not a name; use letters, digits, '_', '-' or '.', e.g. lang=US"


def test_first_bad_parameter_in_command_line_order_wins():
    assert _error("umode=rcv port=abc compr=rar").startswith("port=abc")
    assert _error("umode=rcv compr=rar port=abc").startswith("compr=rar")


def test_a_later_good_value_repairs_an_earlier_bad_one():
    assert parse_cmdline("umode=xmit port=abc umode=rcv port=9002").port == 9002


def test_umode_is_required():
    assert _error("auto=yes disk=/dev/sda").startswith("umode: missing; add umode=snd")


# --- addressing -----------------------------------------------------------------------------


def test_static_addressing():
    cfg = parse_cmdline("umode=rcv dhcp=no ip=10.0.0.5 netmask=255.255.255.0 gateway=10.0.0.1")
    assert (cfg.ip, cfg.netmask, cfg.prefixlen, cfg.gateway) == \
        ("10.0.0.5", "255.255.255.0", 24, "10.0.0.1")
    cfg = parse_cmdline("umode=rcv dhcp=no ip=10.0.0.5/16")
    assert (cfg.ip, cfg.netmask, cfg.gateway) == ("10.0.0.5", "255.255.0.0", None)
    assert parse_cmdline("umode=rcv dhcp=no ip=10.0.0.5/16 netmask=/24").prefixlen == 24


PXE = "ip=192.168.1.50:192.168.1.1:192.168.1.254:255.255.255.0"


def test_pxelinux_ip_with_dhcp_is_kept_but_not_used():
    cfg = parse_cmdline(f"umode=rcv dhcp=yes {PXE}")
    assert cfg.dhcp and cfg.ip is None and cfg.gateway is None
    assert cfg.ip_from_pxelinux == PxeIp("192.168.1.50", "192.168.1.1", "192.168.1.254",
                                         "255.255.255.0")


def test_pxelinux_ip_without_dhcp_is_the_static_address():
    cfg = parse_cmdline(f"umode=rcv dhcp=no {PXE}")
    assert (cfg.ip, cfg.netmask, cfg.gateway) == ("192.168.1.50", "255.255.255.0",
                                                  "192.168.1.254")
    cfg = parse_cmdline(f"umode=rcv dhcp=no {PXE} netmask=16 gateway=192.168.7.1")
    assert (cfg.netmask, cfg.gateway) == ("255.255.0.0", "192.168.7.1")


def test_pxelinux_zero_fields_mean_not_given():
    cfg = parse_cmdline("umode=rcv dhcp=no ip=10.0.0.5:0.0.0.0:0.0.0.0:255.255.255.0")
    assert (cfg.ip, cfg.gateway, cfg.ip_from_pxelinux.server) == ("10.0.0.5", None, None)


def test_consoles_never_raise():
    assert consoles('umode=xmit console=ttyS0,115200n8 "console=tty0" console=') == \
        ["ttyS0,115200n8", "tty0"]


def test_kernel_ip_with_hostname_and_device():
    cfg = parse_cmdline("umode=rcv ip=10.1.2.3::10.1.2.1:255.255.255.0:node7:eth0:off:1.1.1.1")
    assert cfg.ip_from_pxelinux == PxeIp("10.1.2.3", None, "10.1.2.1", "255.255.255.0",
                                         "node7", "eth0", "off")


@pytest.mark.parametrize("text, start", [
    ("dhcp=no", "dhcp=no: no address; add ip=10.0.0.5 netmask=255.255.255.0"),
    ("dhcp=no ip=dhcp", "dhcp=no: no address"),
    ("dhcp=no ip=10.0.0.5", "netmask: missing with dhcp=no and ip=10.0.0.5"),
    ("dhcp=no ip=10.0.0.5/24 gateway=10.0.1.1", "gateway=10.0.1.1: not in the node's subnet "
                                                "10.0.0.0/24"),
    (f"dhcp=no {PXE} gateway=10.9.9.9", "gateway=10.9.9.9: not in the node's subnet"),
    ("dhcp=no ip=10.0.0.5:10.0.0.1:10.9.0.1:255.255.255.0", "ip=10.0.0.5:10.0.0.1:10.9.0.1:"
                                                             "255.255.255.0: not in the node's"),
    ("dhcp=no ip=10.0.0.255/24", "ip=10.0.0.255/24: the subnet's network or broadcast"),
    ("ip=10.0.0.5", "ip=10.0.0.5: static addressing with dhcp=yes; add dhcp=no"),
    ("netmask=24", "netmask=24: static addressing with dhcp=yes"),
    ("gateway=10.0.0.1", "gateway=10.0.0.1: static addressing with dhcp=yes"),
])
def test_addressing_checks(text, start):
    assert _error(f"umode=rcv {text}").startswith(start)


def test_point_to_point_prefixes_allow_every_address():
    assert parse_cmdline("umode=rcv dhcp=no ip=10.0.0.0/31").ip == "10.0.0.0"


# --- udpcparam and the transfer argv ---------------------------------------------------------


@pytest.mark.parametrize("umode, udpcparam, expected", [
    ("snd", '"--min-receivers 4 --max-wait 60"', ["--min-receivers", "4", "--max-wait", "60"]),
    ("snd", "--min-receivers=4", ["--min-receivers=4"]),
    ("snd", '"min-receivers=4 broadcast"', ["--min-receivers=4", "--broadcast"]),
    ("snd", '"-C 4 -B"', ["-C", "4", "-B"]),
    ("snd", '"--min-rec 3"', ["--min-rec", "3"]),  # argparse's abbreviations, as udpcast's
    ("snd", "\"--interface 'eth0'\"", ["--interface", "eth0"]),
    ("snd", '"--mcast-rdv-address 224.0.0.1 --fec 8x8/128 --max-bitrate 600m"',
     ["--mcast-rdv-address", "224.0.0.1", "--fec", "8x8/128", "--max-bitrate", "600m"]),
    ("rcv", '"--start-timeout 300 nokbd"', ["--start-timeout", "300", "--nokbd"]),
    ("rcv", "", []),
])
def test_udpcparam_words(umode, udpcparam, expected):
    """The words become this argv, parsed once into the options the node keeps."""
    cfg = parse_cmdline(f"umode={umode} udpcparam={udpcparam}")
    assert option_words(split_words(split_cmdline(f"udpcparam={udpcparam}")["udpcparam"]),
                        umode) == expected
    parse = parse_send_args if umode == "snd" else parse_receive_args
    assert cfg.udpcparam == parse(expected)


@pytest.mark.parametrize("umode, udpcparam, start", [
    ("rcv", "broadcast", "udpcparam=broadcast: --broadcast is an option of herdcast send only; "
                         "drop it with umode=rcv"),
    ("snd", "--frob", "udpcparam=--frob: --frob is not an option of herdcast send"),
    ("snd", "frob", "udpcparam=frob: --frob is not an option of herdcast send"),
    ("snd", '"--min 3"', 'udpcparam="--min 3": --min is ambiguous'),
    ("snd", '"--portbase 9002"', 'udpcparam="--portbase 9002": --portbase is not allowed in '
                                 "udpcparam; set port= instead"),
    ("snd", "-P9002", "udpcparam=-P9002: -P is not allowed in udpcparam; set port= instead"),
    ("snd", "--port=9002", "udpcparam=--port=9002: --port is not allowed"),
    ("rcv", "--file=/dev/sdb", "udpcparam=--file=/dev/sdb: --file is not allowed in udpcparam; "
                               "set disk= instead"),
    ("rcv", '"--pipe \'gzip -dc\'"', "udpcparam=\"--pipe 'gzip -dc'\": --pipe is not allowed"),
    ("snd", '"--compress gz"', 'udpcparam="--compress gz": --compress is not allowed'),
    ("rcv", "--help", "udpcparam=--help: --help is not a transfer option"),
    ("rcv", "--he", "udpcparam=--he: --he is not a transfer option"),
    ("snd", "-h", "udpcparam=-h: -h is not a transfer option"),
    ("snd", "/dev/sdb", "udpcparam=/dev/sdb: '/dev/sdb' is not an option of herdcast send"),
    ("snd", '"--min-receivers x"', 'udpcparam="--min-receivers x": argument -C/--min-receivers'),
    ("snd", "--async", "udpcparam=--async: --async needs --max-bitrate"),
    ("snd", '"--max-bitrate ' + "9" * 400 + '"', 'udpcparam="--max-bitrate 999'),
    ("snd", '"--fec \'8x8"', "udpcparam=\"--fec '8x8\": unbalanced quotes"),
    ("rcv", "--min-receivers=4", "udpcparam=--min-receivers=4: --min-receivers is an option of "
                                 "herdcast send only"),
    ("rcv", "--ignore-lost-data", "udpcparam=--ignore-lost-data: --ignore-lost-data cannot be "
                                  "honoured on a node"),
    ("rcv", "-Z", "udpcparam=-Z: --ignore-lost-data cannot be honoured on a node"),
    ("rcv", "ignore-lost", "udpcparam=ignore-lost: --ignore-lost-data cannot be honoured"),
    # every option a boot parameter sets is that parameter's, not udpcparam's
    ("snd", '"--blocks all"', 'udpcparam="--blocks all": --blocks is not allowed in udpcparam; '
                              "set blocks= instead"),
    ("snd", "serve", "udpcparam=serve: --serve is not allowed in udpcparam; set serve= instead"),
    ("rcv", "--blank=zero", "udpcparam=--blank=zero: --blank is not allowed in udpcparam; "
                            "set blank= instead"),
    ("rcv", "--verify=readback", "udpcparam=--verify=readback: --verify is not allowed"),
    ("snd", "-", "udpcparam=-: - is not an option of herdcast send"),
])
def test_udpcparam_refused(umode, udpcparam, start):
    assert _error(f"umode={umode} udpcparam={udpcparam}").startswith(start)


def test_transfer_argv_and_options():
    cfg = parse_cmdline('umode=rcv disk=/dev/vda port=9010 compr=lzo '
                        'udpcparam="--receive-timeout 30"')
    assert transfer_argv(cfg) == ["--file", "/dev/vda", "--portbase", "9010", "--nokbd",
                                  "--compress", "lzop", "--receive-timeout", "30"]
    assert transfer_argv(cfg) == to_argv(cfg.transfer, first=("file", "portbase", "nokbd"))
    opts = run_options(cfg, interface=None)
    assert isinstance(opts, ReceiveOptions)
    assert (opts.file, opts.portbase, opts.compress, opts.nokbd, opts.receive_timeout) == \
        ("/dev/vda", 9010, "lzop", True, 30.0)


@pytest.mark.parametrize("text", [
    "umode=rcv", "umode=snd compr=zstd port=9100 udpcparam=broadcast",
    'umode=rcv disk=/dev/vdb compr=gz udpcparam="--receive-timeout 30 --sync"',
    'umode=snd udpcparam="--min-receivers 4 --interface eth1 --fec 8x8/128"',
    "umode=snd serve=yes blocks=all", "umode=rcv blank=zero verify=readback",
])
def test_the_plans_command_is_what_the_node_runs(text):
    """The plan shows the transfer as a command line; the node builds its options as
    values. Both must say the same: parsing the shown command gives the node's options."""
    cfg = parse_cmdline(text)
    parse = parse_send_args if cfg.sending else parse_receive_args
    assert parse(transfer_argv(cfg)) == run_options(cfg, interface=None)


def test_run_options_take_the_network_steps_interface_unless_udpcparam_names_one():
    assert run_options(parse_cmdline("umode=rcv"), "eth0").interface == "eth0"
    cfg = parse_cmdline("umode=rcv udpcparam=--interface=eth1")
    assert run_options(cfg, "eth0").interface == "eth1"


def test_as_json_keys_are_parameter_names():
    d = parse_cmdline("umode=snd BOOTIF=01-aa-bb-cc-dd-ee-ff").as_json()
    documented = {name for name in PARAMETERS if name != "BOOTIF"}
    assert documented <= set(d) and d["bootif"] == "aa:bb:cc:dd:ee:ff"


# --- property: any text is a BootConfig or one CmdlineError ---------------------------------

_WORDS = st.sampled_from(sorted(PARAMETERS) + ["ip", "BOOTIF", "x", "quiet", "--", '"'])
_VALUES = st.one_of(
    st.sampled_from(["", "yes", "no", "AUTO", "snd", "rcv", "gz", "9000", "/dev/sda", "10.0.0.5",
                     "10.0.0.5/24", "1.2.3.4:5.6.7.8:1.2.3.1:255.255.255.0", "broadcast",
                     '"--min-receivers 4"', "--async", "-P1", "01-aa-bb-cc-dd-ee-ff", "24"]),
    st.text(max_size=20),
    st.text(max_size=20).map(lambda t: f'"{t}"'),  # quoted: may hold newlines and tabs
)
_PLAUSIBLE = st.lists(st.tuples(_WORDS, _VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
                      max_size=12).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), _PLAUSIBLE, _PLAUSIBLE.map(lambda t: "umode=snd " + t),
                 _PLAUSIBLE.map(lambda t: "umode=rcv dhcp=no " + t)))
def test_any_text_gives_a_config_or_one_cmdline_error(text):
    try:
        cfg = parse_cmdline(text)
    except CmdlineError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert isinstance(cfg, BootConfig)
        assert cfg.umode in ("snd", "rcv")
        run_options(cfg, interface="eth0")  # what the node will run builds too
