"""A clone's own name and identity: hostname, /etc/hosts, machine-id, SSH host keys.

Forty clones of one master share its machine-id (systemd's journal, DHCP DUIDs and
D-Bus tell machines apart by it) and its SSH host keys (every node answers with the
master's fingerprint, and a client that trusts one trusts all). `fresh` empties the
machine-id, which systemd takes as a first boot and fills with a new random one, and makes
new host keys of the kinds the master had, in OpenSSH's own format, private 0600 and
public 0644 as ssh-keygen leaves them.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from agent.personalize.rootfs import inside, read_text, write_file

KEY_KINDS = ("ed25519", "ecdsa", "rsa")  # what OpenSSH makes today (dsa is gone in 9.8)
DEFAULT_RSA_BITS = 3072


def set_hostname(root: Path, name: str) -> list[str]:
    """/etc/hostname holds the short name; the 127.0.1.1 line of /etc/hosts names it (as
    Debian's installer writes it: `127.0.1.1 fqdn short` when the master had a domain)."""
    old = (read_text(root, "/etc/hostname") or "").strip()
    changed = []
    if old != name:
        write_file(root, "/etc/hostname", f"{name}\n".encode())
        changed.append(f"/etc/hostname: {old or '(none)'} -> {name}")
    hosts = read_text(root, "/etc/hosts")
    if hosts is not None:
        new = _hosts(hosts, old, name)
        if new != hosts:
            write_file(root, "/etc/hosts", new.encode())
            changed.append(f"/etc/hosts: 127.0.1.1 {_names_of(new)}")
    return changed


def _hosts(text: str, old: str, name: str) -> str:
    short = name.split(".")[0]
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        words = line.split("#")[0].split()
        if words and words[0] == "127.0.1.1":
            domain = next((w.split(".", 1)[1] for w in words[1:]
                           if old and w.startswith(old.split(".")[0] + ".")), None)
            names = [name] if "." in name else \
                ([f"{short}.{domain}", short] if domain else [short])
            lines[i] = "127.0.1.1\t" + " ".join(names) + "\n"
            return "".join(lines)
    at = next((i + 1 for i, line in enumerate(lines) if line.split()[:1] == ["127.0.0.1"]),
              0)
    if lines and not lines[-1].endswith("\n") and at == len(lines):
        lines[-1] += "\n"
    lines.insert(at, f"127.0.1.1\t{name}\n")
    return "".join(lines)


def _names_of(hosts: str) -> str:
    for line in hosts.splitlines():
        words = line.split()
        if words[:1] == ["127.0.1.1"]:
            return " ".join(words[1:])
    return ""


def fresh_machine_id(root: Path) -> list[str]:
    """/etc/machine-id emptied (systemd makes a new one at first boot); D-Bus's copy in
    /var/lib/dbus made a link to it, as Debian's dbus package makes it."""
    changed = []
    etc = inside(root, "/etc/machine-id")
    if etc.is_file() and etc.stat().st_size:
        write_file(root, "/etc/machine-id", b"")
        changed.append("/etc/machine-id emptied (a new one is made at first boot)")
    dbus = inside(root, "/var/lib/dbus") / "machine-id"
    if dbus.exists() and not dbus.is_symlink():
        dbus.unlink()
        dbus.symlink_to("/etc/machine-id")
        changed.append("/var/lib/dbus/machine-id -> /etc/machine-id")
    return changed


def _new_key(kind: str, old_public: str | None):
    """A private key of `kind`, of the master's size or curve where its public key says."""
    old = None
    if old_public:
        try:
            old = serialization.load_ssh_public_key(" ".join(old_public.split()[:2]).encode())
        except (ValueError, TypeError):
            old = None
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind == "ecdsa":
        curve = old.curve if isinstance(old, ec.EllipticCurvePublicKey) else ec.SECP256R1()
        return ec.generate_private_key(curve)
    bits = old.key_size if isinstance(old, rsa.RSAPublicKey) else DEFAULT_RSA_BITS
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def fresh_ssh_keys(root: Path, hostname: str | None) -> list[str]:
    """New host keys for each kind the master had (/etc/ssh/ssh_host_KIND_key); kinds
    OpenSSH no longer makes are named, not regenerated."""
    ssh = inside(root, "/etc/ssh")
    if not ssh.is_dir():
        return []
    changed = []
    comment = f"root@{hostname or 'localhost'}"
    for private in sorted(ssh.glob("ssh_host_*_key")):
        kind = private.name.removeprefix("ssh_host_").removesuffix("_key")
        if kind not in KEY_KINDS:
            changed.append(f"/etc/ssh/{private.name}: a {kind} key, left as is "
                           "(remove it: clones share it)")
            continue
        st = private.stat()
        pub_path = f"/etc/ssh/{private.name}.pub"
        key = _new_key(kind, read_text(root, pub_path))
        pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
        line = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH)
        write_file(root, f"/etc/ssh/{private.name}", pem, 0o600, st.st_uid, st.st_gid,
                   keep_owner=False)
        write_file(root, pub_path, line + f" {comment}\n".encode(), 0o644, st.st_uid,
                   st.st_gid, keep_owner=False)
        changed.append(f"/etc/ssh/{private.name}: new {kind} host key "
                       f"({_fingerprint(line)})")
    return changed


def _fingerprint(public_line: bytes) -> str:
    """SHA256:... as ssh-keygen -l shows it."""
    import base64
    import hashlib

    blob = base64.b64decode(public_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
