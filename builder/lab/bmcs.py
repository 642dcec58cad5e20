"""The lab's BMCs: virtualbmc (IPMI) and sushy-tools' emulator (Redfish), both over libvirt,
and a Wake-on-LAN-capable NIC for a machine with neither.

pyghmi's BMC server, which virtualbmc is, speaks cipher suite 3 (RAKP-HMAC-SHA1) only, and
answers a client's proposal of suite 17 (SHA-256) with suite 3's algorithms instead of the
error the IPMI spec asks for; pyghmi's client, which takes the answer for agreement, then
fails its key exchange ("pack expected 32 items"). A real BMC that lacks SHA-256 refuses the
proposal, and the client falls back to SHA-1: `refuse_what_it_cannot_do` makes the lab's
BMC do that (an RMCP+ status 0x11, "invalid authentication algorithm"). `python -m
builder.lab.bmcs vbmc ...` runs one virtual BMC in the foreground with it.

virtualbmc also sets a boot device by making it the domain's only one, for good, so after
`chassis bootdev pxe` (meant for the next boot) the machine can boot nothing but the
network: pxelinux's LOCALBOOT finds no next device (libvirt runs SeaBIOS with
`-boot strict=on`). A real BMC's "next boot" leaves the firmware's own order behind it, the
disk among it; `keep_the_disk_behind` makes the lab's BMC do that too: the requested device
first, the domain's disk after it (as sushy-tools' libvirt driver already does).

A NIC that wakes its machine on a magic packet is the NIC's firmware, which a qemu NIC does
not have: `python -m builder.lab.bmcs wol` stands in for it, watching the lab bridge's frames
(a packet socket sees every frame crossing it, the server's own included) for a magic packet
naming a domain's MAC, and powering that domain on through libvirt, as the NIC would.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

RAKP_HMAC_SHA1 = 1
INVALID_AUTH_ALGORITHM = 0x11


def refuse_what_it_cannot_do(server_session_class) -> None:
    """Make pyghmi's ServerSession refuse an open-session request whose authentication
    algorithm is not RAKP-HMAC-SHA1 (byte 12 of the request: after tag, role, reserved and
    the console's session id, the authentication payload's algorithm)."""
    original = server_session_class.create_open_session_response
    if getattr(original, "refuses", False):
        return

    def respond(self, request):
        if len(request) > 12 and request[12] != RAKP_HMAC_SHA1:
            return bytearray([request[0], INVALID_AUTH_ALGORITHM, 0, 0]) + request[4:8]
        return original(self, request)

    respond.refuses = True
    server_session_class.create_open_session_response = respond


def keep_the_disk_behind(vbmc_class) -> type:
    """virtualbmc's BMC whose boot device keeps the domain's disk as the next boot entry."""

    class LabVirtualBMC(vbmc_class):
        def set_boot_device(self, bootdevice):
            failed = super().set_boot_device(bootdevice)
            if failed or bootdevice == "hd":
                return failed
            import xml.etree.ElementTree as ET

            from virtualbmc import utils

            with utils.libvirt_open(**self._conn_args) as conn:
                domain = utils.get_libvirt_domain(conn, self.domain_name)
                tree = ET.fromstring(self.get_xml_desc(domain, dump_sensitive=True))
                if tree.find("devices/disk") is not None:
                    ET.SubElement(tree.find("os"), "boot").set("dev", "hd")
                    conn.defineXML(ET.tostring(tree, encoding="unicode"))
            return None

    return LabVirtualBMC


def run_vbmc(argv: list[str]) -> int:
    """One virtualbmc BMC for one libvirt domain, in the foreground."""
    p = argparse.ArgumentParser(prog="python -m builder.lab.bmcs vbmc")
    p.add_argument("domain")
    p.add_argument("--address", default="::")
    p.add_argument("--port", type=int, default=623)
    p.add_argument("--username", default="admin")
    p.add_argument("--password-file", required=True)
    p.add_argument("--libvirt-uri", default="qemu:///system")
    args = p.parse_args(argv)
    from pyghmi.ipmi.private import serversession
    from virtualbmc.vbmc import VirtualBMC

    refuse_what_it_cannot_do(serversession.ServerSession)
    with open(args.password_file, encoding="utf-8") as f:
        password = f.read().strip()
    bmc = keep_the_disk_behind(VirtualBMC)(args.username, password, args.port, args.address,
                                           args.domain, args.libvirt_uri)
    print(f"vbmc: {args.domain} on [{args.address}]:{args.port}", flush=True)
    bmc.listen(timeout=3600)
    return 0


ETH_P_ALL = 0x0003


def woken(frame: bytes, macs: dict[bytes, str]) -> str | None:
    """The domain whose magic packet (six 0xff, its MAC sixteen times) `frame` carries."""
    at = frame.find(b"\xff" * 6)
    while at != -1:
        mac = frame[at + 6:at + 12]
        if mac in macs and frame[at + 6:at + 102] == mac * 16:
            return macs[mac]
        at = frame.find(b"\xff" * 6, at + 1)
    return None


def run_wol(argv: list[str]) -> int:
    """Wake-on-LAN for libvirt domains: MAC=DOMAIN pairs, watched on --interface."""
    p = argparse.ArgumentParser(prog="python -m builder.lab.bmcs wol")
    p.add_argument("pairs", nargs="+", metavar="MAC=DOMAIN")
    p.add_argument("--interface", default="br0")
    p.add_argument("--libvirt-uri", required=True)
    p.add_argument("--timeout", type=float, default=3600)
    args = p.parse_args(argv)
    import libvirt

    macs = {bytes.fromhex(mac.replace(":", "")): name
            for mac, _, name in (pair.partition("=") for pair in args.pairs)}
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((args.interface, 0))
    sock.settimeout(1)
    print(f"wol: watching {args.interface} for {', '.join(sorted(macs.values()))}", flush=True)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        try:
            frame = sock.recv(65536)
        except TimeoutError:
            continue
        name = woken(frame, macs)
        if name is None:
            continue
        conn = libvirt.open(args.libvirt_uri)
        try:
            dom = conn.lookupByName(name)
            if dom.isActive():
                print(f"wol: magic packet for {name}: already on", flush=True)
            else:
                dom.create()
                print(f"wol: magic packet for {name}: powered on", flush=True)
        finally:
            conn.close()
    return 0


def htpasswd(path, username: str, password: str) -> None:
    """An htpasswd file (bcrypt) for sushy-emulator's basic authentication."""
    import bcrypt

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{username}:{hashed}\n")


def sushy_libvirt_config(path, libvirt_uri: str, auth_file, allowed: list[str],
                         state_dir) -> None:
    """sushy-emulator's configuration: its libvirt driver on `libvirt_uri`, the boot device
    really set (PXE once rewrites the domain's boot order), basic authentication, and only
    the `allowed` domains (UUIDs) visible."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"SUSHY_EMULATOR_LIBVIRT_URI = {libvirt_uri!r}\n"
                "SUSHY_EMULATOR_IGNORE_BOOT_DEVICE = False\n"
                f"SUSHY_EMULATOR_AUTH_FILE = {str(auth_file)!r}\n"
                f"SUSHY_EMULATOR_ALLOWED_INSTANCES = {allowed!r}\n"
                f"SUSHY_EMULATOR_STATE_DIR = {str(state_dir)!r}\n")


if __name__ == "__main__":
    commands = {"vbmc": run_vbmc, "wol": run_wol}
    if sys.argv[1:2] and sys.argv[1] in commands:
        sys.exit(commands[sys.argv[1]](sys.argv[2:]))
    sys.exit("usage: python -m builder.lab.bmcs vbmc DOMAIN --password-file F [...]\n"
             "       python -m builder.lab.bmcs wol MAC=DOMAIN ... --libvirt-uri URI")
