"""udpcast's option names and meanings, and one-line errors for bad values."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.transfer.options import (
    UNSUPPORTED,
    FecSpec,
    OptionError,
    ReceiveOptions,
    SendOptions,
    parse_fec,
    parse_receive_args,
    parse_send_args,
    parse_size,
    to_argv,
)
from agent.transfer.optiontable import BOOT, FIELDS, OPTIONS


def test_udp_sender_style_arguments():
    o = parse_send_args(["-f", "img", "--portbase", "9002", "--max-bitrate", "800m",
                         "--min-receivers=4", "--max-wait", "60", "--broadcast",
                         "--fec", "8x8/128", "--nokbd", "--half-duplex"])
    assert (o.file, o.portbase, o.max_bitrate, o.min_receivers, o.max_wait) == (
        "img", 9002, 800_000_000, 4, 60.0)
    assert o.broadcast and o.nokbd and o.duplex == "half"
    assert o.fec == FecSpec(8, 8, 128)


def test_bare_file_argument_and_blocksize_rounding():
    o = parse_send_args(["img", "--blocksize", "1023"])
    assert o.file == "img" and o.blocksize == 1020


def test_receiver_arguments():
    o = parse_receive_args(["-f", "out", "--receive-timeout", "5", "--exit-wait", "100",
                            "--sync", "--rcvbuf", "4M", "--compress", "zstd"])
    assert (o.file, o.receive_timeout, o.exit_wait, o.sync, o.rcvbuf, o.compress) == (
        "out", 5.0, 100, True, 4 * 1024 * 1024, "zstd")
    assert parse_receive_args(["--compress", "none"]).compress is None


@pytest.mark.parametrize("argv, option", [
    (["--portbase", "70000"], "--portbase"),
    (["--max-bitrate", "fast"], "--max-bitrate"),
    (["--max-bitrate", "9" * 400], "--max-bitrate"),
    (["--mcast-data-address", "10.0.0.1"], "--mcast-data-address"),
    (["--mcast-rdv-address", "1"], "--mcast-rdv-address"),
    (["--fec", "8x999"], "--fec"),
    (["--blocksize", "70000"], "--blocksize"),
    (["--async"], "--async"),
    (["--rate-governor", "x.so"], "--rate-governor"),
    (["--min-receivers", "-1"], "--min-receivers"),
])
def test_bad_send_options_name_the_option(argv, option):
    with pytest.raises(OptionError) as err:
        parse_send_args(argv)
    assert option in str(err.value) and "\n" not in str(err.value)


def test_every_unsupported_option_is_refused_with_its_reason():
    for opt, why in UNSUPPORTED.items():
        with pytest.raises(OptionError, match="not supported"):
            parse_send_args([opt])
        assert why


def test_size_suffixes():
    assert parse_size("1g", option="x") == 10**9
    assert parse_size("4k", option="x", binary=True) == 4096
    assert parse_fec("4") == FecSpec(8, 4, 128)


@given(st.lists(st.text(max_size=20), max_size=6))
def test_any_argv_parses_or_fails_with_option_error(argv):
    for parse in (parse_send_args, parse_receive_args):
        try:
            parse(argv)
        except OptionError as exc:
            assert "\n" not in str(exc)


# --- one row per option (agent.transfer.optiontable) -----------------------------------------


def test_the_dataclass_defaults_are_the_parsers():
    """One declaration: what a command line without options gives is the dataclass's
    defaults, field for field."""
    assert parse_send_args([]) == SendOptions()
    assert parse_receive_args([]) == ReceiveOptions()


@pytest.mark.parametrize("parse, argv", [
    (parse_send_args, ["-f", "img", "-P", "9002", "-r", "800m", "-C", "4", "-W", "60.5",
                       "-B", "-F", "8x8/128", "-k", "-c", "-2", "--blocks", "all",
                       "--sendbuf", "4m", "--drop-after", "0", "--no-late-join",
                       "--compress", "gz", "-T", "30", "--min-slice-size", "32"]),
    (parse_send_args, ["-f", "img", "--serve", "--full-duplex", "--pointopoint",
                       "--mcast-data-address", "239.1.2.3", "--report", "r.json"]),
    (parse_receive_args, ["-f", "out", "-s", "10", "--receive-timeout", "5", "-w", "0",
                          "-y", "-b", "1k", "-d", "--unpack", "--blank", "zero",
                          "--verify", "readback", "--description", "a b", "-M", "224.0.0.9"]),
    (parse_receive_args, ["--nosync", "--compress", "none", "-t", "4"]),
])
def test_options_render_back_to_the_argv_that_gives_them(parse, argv):
    """`to_argv` (what `herdcast plan` prints) parses back to the same options."""
    opts = parse(argv)
    assert opts != parse([])
    assert parse(to_argv(opts)) == opts


def test_every_row_has_help_and_a_long_flag():
    for row in OPTIONS:
        assert row.help and row.flags[0].startswith("--"), row.dest
        assert row.dest in FIELDS and row.sides


def test_every_boot_parameter_of_an_option_has_the_rows_words_and_default():
    from agent.boot.params import PARAMETERS

    for name, row in BOOT.items():
        param = PARAMETERS[name]
        assert param.option == row.dest
        if row.choices:
            assert param.choices == row.choices
            # the node's default is the option's (compr=none is --compress unset;
            # identity= unset is --identity unset)
            node_default = None if param.default is None else param.convert(param.default)
            assert row.value_of(node_default) == row.default


def test_allow_takes_addresses_networks_macs_and_files(tmp_path):
    from agent.transfer.send.allow import AllowList

    fleet = tmp_path / "fleet.txt"
    fleet.write_text("# lab\n52:54:00:aa:00:01\n10.0.1.0/24  # the second rack\n")
    opts = parse_send_args(["-f", "x", "--allow", "10.0.0.21,10.0.0.22", "--allow", str(fleet)])
    allow = AllowList.parse(opts.allow)
    macs = {"10.0.0.30": "52:54:00:aa:00:01", "10.0.0.31": "52:54:00:aa:00:99"}
    assert [allow.admits(ip, macs.get) for ip in
            ("10.0.0.21", "10.0.1.77", "10.0.0.30", "10.0.0.31", "10.0.0.32")] == \
        [True, True, True, False, None]  # .32: its MAC is not known yet
    assert AllowList.parse(parse_send_args(["-f", "x"]).allow) is None  # everybody


@pytest.mark.parametrize("value", ["10.0.0.300", "nosuchfile", "10.0.0.0/33"])
def test_a_bad_allow_entry_is_one_line_naming_it(value, tmp_path, capsys):
    from agent.cli import main

    assert main(["send", "-f", "x", "--allow", value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--allow: '{value}' is no" in err, err
