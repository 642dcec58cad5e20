"""pxelinux.cfg/default and the per-node 01-<mac> files `python -m builder node` writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from builder import pxelinux

ROOT = Path(__file__).resolve().parent.parent


def _labels(text: str) -> dict[str, list[str]]:
    """label -> its lines (lower-cased keyword first)."""
    labels: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        words = line.split(None, 1)
        if words and words[0].lower() == "label":
            current = words[1]
            labels[current] = []
        elif current and words:
            labels[current].append(line.strip())
    return labels


def _append_words(lines: list[str]) -> list[str]:
    (append,) = [line for line in lines if line.lower().startswith("append ")]
    return append.split()[1:]


def test_default_boots_an_unattended_receiver_with_ipappend_2():
    text = pxelinux.default_config()
    assert "SERIAL 0 115200" in text.splitlines()
    assert "DEFAULT receiver" in text.splitlines()
    labels = _labels(text)
    words = _append_words(labels["receiver"])
    expected = "initrd=initrd.img auto=yes umode=rcv disk=/dev/sda compr=none port=9000 dhcp=yes"
    expected += " netmodule=AUTO diskmodule=AUTO post=poweroff udpcparam="
    expected = expected.split(" ")
    assert words[: len(expected)] == expected
    assert "IPAPPEND 2" in labels["receiver"]
    assert "KERNEL vmlinuz" in labels["receiver"]


def test_default_has_a_sender_label_that_differs_only_in_umode():
    labels = _labels(pxelinux.default_config())
    rcv, snd = _append_words(labels["receiver"]), _append_words(labels["sender"])
    assert "umode=snd" in snd
    assert [w for w in snd if w != "umode=snd"] == [w for w in rcv if w != "umode=rcv"]
    assert "IPAPPEND 2" in labels["sender"]


def test_http_url_fetches_kernel_and_initrd_over_http_in_every_label():
    text = pxelinux.default_config("http://10.0.0.1/herdcast/")
    for label in ("receiver", "sender"):
        lines = _labels(text)[label]
        assert "KERNEL http://10.0.0.1/herdcast/vmlinuz" in lines
        words = _append_words(lines)
        assert words[0] == "initrd=http://10.0.0.1/herdcast/initrd.img"
        assert "disk=/dev/sda" in words and "IPAPPEND 2" in lines
    # the rest of the file (prompt, serial) is the TFTP default's
    assert [w for w in text.splitlines() if "http" not in w] == [
        w for w in pxelinux.default_config().splitlines() if "vmlinuz" not in w
        and "initrd=" not in w]


def test_boot_files_over_http_leaves_urls_and_other_words_alone():
    text = ("DEFAULT a\nLABEL a\n  kernel linux\n  append initrd=/one.img,two.img "
            "xinitrd=keep quiet\nLABEL b\n  KERNEL http://other/vmlinuz\n")
    out = pxelinux.boot_files_over_http(text, "http://h:8080")
    assert "  kernel http://h:8080/linux" in out.splitlines()
    assert "  append initrd=http://h:8080/one.img,http://h:8080/two.img xinitrd=keep quiet" \
        in out.splitlines()
    assert "  KERNEL http://other/vmlinuz" in out.splitlines()
    assert pxelinux.boot_files_over_http(out, "http://h:8080") == out


def test_per_node_files_keep_the_http_names():
    default = pxelinux.default_config("http://10.0.0.1")
    node = pxelinux.node_config(default, [("umode", "snd")])
    words = _append_words(_labels(node)["receiver"])
    assert words[0] == "initrd=http://10.0.0.1/initrd.img" and "umode=snd" in words


@pytest.mark.parametrize("url", ["https://10.0.0.1/x", "10.0.0.1/x", "http://", "ftp://h/x",
                                 "http://h/a b"])
def test_bad_http_urls_are_refused_naming_the_option(url):
    with pytest.raises(pxelinux.PxeConfigError, match="--http-url"):
        pxelinux.check_http_url(url)


@pytest.mark.parametrize(
    "mac",
    ["52:54:00:12:34:5A", "52-54-00-12-34-5a", "52540012345a", "01-52-54-00-12-34-5a"],
)
def test_mac_spellings_give_the_name_pxelinux_looks_for(mac):
    assert pxelinux.mac_file_name(mac) == "01-52-54-00-12-34-5a"


@pytest.mark.parametrize(
    "mac", ["52:54:00:12:34", "52:54:00:12:34:zz", "52:54-00:12:34:56", "", "01:00:5e:00:00:01"]
)
def test_bad_macs_are_refused_with_the_parameter_named(mac):
    with pytest.raises(pxelinux.PxeConfigError, match="MAC"):
        pxelinux.mac_file_name(mac)


def test_node_config_changes_only_the_default_label_and_adds_new_keys():
    text = pxelinux.node_config(
        pxelinux.default_config(), [("umode", "snd"), ("udpcparam", "broadcast"), ("ip", "x")]
    )
    labels = _labels(text)
    words = _append_words(labels["receiver"])
    assert "umode=snd" in words and "umode=rcv" not in words
    assert "udpcparam=broadcast" in words and "udpcparam=" not in words
    assert words[-1] == "ip=x"
    assert _append_words(labels["sender"]) == _append_words(_labels(pxelinux.default_config())[
        "sender"])


def test_values_with_blanks_are_quoted_and_replaced_whole():
    changes = pxelinux.parse_assignments(["udpcparam=--min-receivers 4 --max-wait 60"])
    assert changes == [("udpcparam", '"--min-receivers 4 --max-wait 60"')]
    once = pxelinux.node_config(pxelinux.default_config(), changes)
    twice = pxelinux.node_config(once, [("udpcparam", "broadcast"), ("umode", "snd")])
    words = _append_words(_labels(twice)["receiver"])
    assert "udpcparam=broadcast" in words and "umode=snd" in words
    assert not any("--min-receivers" in w or w in ("4", "60") for w in words)
    words = _append_words(_labels(once)["receiver"])
    assert 'udpcparam="--min-receivers' in words


@pytest.mark.parametrize("arg", ["umode", "=snd", 'udpcparam=a"b', 'disk="/dev/sda"', "1x=2"])
def test_bad_assignments_are_refused(arg):
    with pytest.raises(pxelinux.PxeConfigError, match="parameter"):
        pxelinux.parse_assignments([arg])


def _builder(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "builder", *args], cwd=cwd, capture_output=True, text=True,
        timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )


def test_cli_node_writes_the_mac_file_from_the_default(tmp_path):
    cfg = tmp_path / "tftp" / "pxelinux.cfg"
    cfg.mkdir(parents=True)
    (cfg / "default").write_text(pxelinux.default_config())
    proc = _builder("node", "--tftp-root", str(tmp_path / "tftp"), "52:54:00:AB:CD:EF",
                    "umode=snd", "udpcparam=broadcast", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = cfg / "01-52-54-00-ab-cd-ef"
    words = _append_words(_labels(written.read_text())["receiver"])
    assert "umode=snd" in words and "udpcparam=broadcast" in words
    assert str(written) in proc.stdout


def test_cli_node_bad_input_gives_one_line_and_writes_nothing(tmp_path):
    cfg = tmp_path / "tftp" / "pxelinux.cfg"
    cfg.mkdir(parents=True)
    (cfg / "default").write_text(pxelinux.default_config())
    for args in (["nonsense-mac", "umode=snd"], ["52:54:00:ab:cd:ef", "umode"]):
        proc = _builder("node", "--tftp-root", str(tmp_path / "tftp"), *args, cwd=tmp_path)
        assert proc.returncode == 2
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in cfg.iterdir()) == ["default"]


def test_cli_node_without_a_default_says_to_build_first(tmp_path):
    proc = _builder("node", "--tftp-root", str(tmp_path), "52:54:00:ab:cd:ef", cwd=tmp_path)
    assert proc.returncode == 2
    assert "make initrd" in proc.stderr


def test_cli_help_lists_the_commands(tmp_path):
    proc = _builder("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for command in ("initrd", "node"):
        assert command in proc.stdout


@pytest.mark.parametrize("args, match", [
    (["compr=rar"], "compr=rar: not a compression"),
    (["port=70000"], "port=70000"),
    (["udpcparam=--min-receivers 4"], "herdcast send only"),  # the default label receives
    (["umod=snd"], "did you mean umode"),
    (["enableDiskModul=no"], "did you mean enableDiskmodule"),
])
def test_cli_node_refuses_a_line_the_node_would_refuse(tmp_path, args, match):
    """The merged boot line is parsed by the agent's own parser before anything is written:
    a bad value fails here, not on the node's console at boot."""
    cfg = tmp_path / "tftp" / "pxelinux.cfg"
    cfg.mkdir(parents=True)
    (cfg / "default").write_text(pxelinux.default_config())
    proc = _builder("node", "--tftp-root", str(tmp_path / "tftp"), "52:54:00:ab:cd:ef", *args,
                    cwd=tmp_path)
    assert proc.returncode == 2
    assert match in proc.stderr
    assert proc.stderr.startswith("python -m builder: ") and proc.stderr.count("\n") == 1
    assert sorted(p.name for p in cfg.iterdir()) == ["default"]


def test_node_keeps_kernel_parameters_it_does_not_know(tmp_path):
    (tmp_path / "pxelinux.cfg").mkdir()
    (tmp_path / "pxelinux.cfg" / "default").write_text(pxelinux.default_config())
    written = pxelinux.write_node_config(tmp_path, "52:54:00:ab:cd:ef", [
        "umode=snd", "udpcparam=--min-receivers 4", "net.ifnames=0", "nomodeset=1"])
    words = _append_words(_labels(written.read_text())["receiver"])
    assert "net.ifnames=0" in words and "nomodeset=1" in words and "umode=snd" in words


def test_cli_node_starts_from_the_nodes_own_file_and_says_what_changed(tmp_path):
    """Yesterday's disk= and a hand edit survive today's verify=; each run says what it
    changed. A disarmed node (its file boots the local disk) starts from the default again."""
    cfg = tmp_path / "tftp" / "pxelinux.cfg"
    cfg.mkdir(parents=True)
    (cfg / "default").write_text(pxelinux.default_config())
    mac = "52:54:00:ab:cd:ef"
    node = cfg / "01-52-54-00-ab-cd-ef"

    def run(*params: str) -> str:
        proc = _builder("node", "--tftp-root", str(tmp_path / "tftp"), mac, *params,
                        cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    out = run("disk=/dev/nvme0n1")
    assert f"from {cfg / 'default'}: disk: /dev/sda -> /dev/nvme0n1" in out
    node.write_text(node.read_text().replace("netmodule=AUTO", "netmodule=e1000e"))  # by hand
    out = run("verify=readback")
    assert "from its own file: verify=readback (new)" in out
    words = _append_words(_labels(node.read_text())["receiver"])
    assert {"disk=/dev/nvme0n1", "netmodule=e1000e", "verify=readback"} <= set(words)
    assert "from its own file: nothing changed" in run("disk=/dev/nvme0n1")
    out = run("arm", "blank=zero")
    assert "post: poweroff -> reboot" in out and "blank=zero (new)" in out
    assert "disk=/dev/nvme0n1" in _append_words(_labels(node.read_text())["receiver"])
    assert node.read_text().count("# herdcast: armed") == 1
    run("disarm")
    assert "disk: /dev/sda -> /dev/nvme0n1" in run("disk=/dev/nvme0n1")
