"""The lab's BMCs: virtualbmc (IPMI) and sushy-tools' emulator (Redfish), both over libvirt.

pyghmi's BMC server, which virtualbmc is, speaks cipher suite 3 (RAKP-HMAC-SHA1) only, and
answers a client's proposal of suite 17 (SHA-256) with suite 3's algorithms instead of the
error the IPMI spec asks for; pyghmi's client, which takes the answer for agreement, then
fails its key exchange ("pack expected 32 items"). A real BMC that lacks SHA-256 refuses the
proposal, and the client falls back to SHA-1: `refuse_what_it_cannot_do` makes the lab's
BMC do that (an RMCP+ status 0x11, "invalid authentication algorithm"). `python -m
builder.lab.bmcs vbmc ...` runs one virtual BMC in the foreground with it.
"""

from __future__ import annotations

import argparse
import sys

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
    bmc = VirtualBMC(args.username, password, args.port, args.address, args.domain,
                     args.libvirt_uri)
    print(f"vbmc: {args.domain} on [{args.address}]:{args.port}", flush=True)
    bmc.listen(timeout=3600)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["vbmc"]:
        sys.exit(run_vbmc(sys.argv[2:]))
    sys.exit("usage: python -m builder.lab.bmcs vbmc DOMAIN --password-file F [...]")
