"""A NoCloud seed for images that run cloud-init: the convention cloud images follow.

cloud-init's NoCloud datasource reads /var/lib/cloud/seed/nocloud/{meta-data,user-data} at
boot. A new instance-id per clone makes cloud-init treat the node as a new instance (its
per-instance modules run again, host keys and all, as on a fresh cloud VM); local-hostname
names it. user-data is what the admin names with userdata= (an http:// or tftp:// URL, or on
a server a file): it is fetched once, before anything is written into the clone.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from agent.errors import HerdcastError
from agent.personalize.rootfs import inside, write_file

SEED = "/var/lib/cloud/seed/nocloud"
FETCH_TIMEOUT = 30
MAX_USERDATA = 1 << 20  # cloud-init's own limit for user-data is far below this
EMPTY_USERDATA = b"#cloud-config\n{}\n"


class UserDataError(HerdcastError):
    """userdata= could not be fetched or read."""


def has_cloud_init(root: Path) -> bool:
    """Whether the clone runs cloud-init (its configuration or its program is there)."""
    return any(inside(root, p).exists() for p in
               ("/etc/cloud/cloud.cfg", "/usr/bin/cloud-init"))


def fetch_userdata(where: str) -> bytes:
    """The user-data `where` names: http(s)://..., tftp://HOST/PATH (busybox's tftp, which
    the node has), or a local file. One line naming userdata= when it cannot be had."""
    try:
        if where.startswith(("http://", "https://")):
            with urllib.request.urlopen(where, timeout=FETCH_TIMEOUT) as answer:
                data = answer.read(MAX_USERDATA + 1)
        elif where.startswith("tftp://"):
            data = _tftp(where)
        else:
            with open(where, "rb") as f:
                data = f.read(MAX_USERDATA + 1)
    except (OSError, ValueError) as exc:
        raise UserDataError(f"userdata={where}: {getattr(exc, 'reason', None) or exc}",
                            "check the URL or path (http://, tftp://HOST/PATH or a file)"
                            ) from exc
    if len(data) > MAX_USERDATA:
        raise UserDataError(f"userdata={where}: over {MAX_USERDATA} bytes",
                            "user-data is a cloud-config file of a few kB")
    return data


def _tftp(url: str) -> bytes:
    host, _, path = url.removeprefix("tftp://").partition("/")
    if not host or not path:
        raise ValueError("not tftp://HOST/PATH")
    with tempfile.TemporaryDirectory(prefix="herdcast-ud-") as tmp:
        local = Path(tmp, "user-data")
        proc = subprocess.run(["busybox", "tftp", "-g", "-r", path, "-l", str(local), host],
                              capture_output=True, text=True, timeout=FETCH_TIMEOUT)
        if proc.returncode != 0:
            raise OSError((proc.stderr or proc.stdout).strip() or f"tftp exit {proc.returncode}")
        return local.read_bytes()


def write_seed(root: Path, hostname: str | None, userdata: bytes | None) -> list[str]:
    """meta-data with a new instance-id (and local-hostname), user-data as given (or an
    empty cloud-config when the seed has none yet)."""
    instance = f"herdcast-{hostname or 'node'}-{secrets.token_hex(4)}"
    meta = f"instance-id: {instance}\n" + (f"local-hostname: {hostname}\n" if hostname else "")
    write_file(root, f"{SEED}/meta-data", meta.encode(), 0o644, keep_owner=False)
    changed = [f"{SEED}/meta-data: instance-id {instance}"
               + (f", local-hostname {hostname}" if hostname else "")]
    if userdata is not None:
        write_file(root, f"{SEED}/user-data", userdata, 0o600, keep_owner=False)
        changed.append(f"{SEED}/user-data: {len(userdata)} bytes from userdata=")
    elif not inside(root, f"{SEED}/user-data").exists():
        write_file(root, f"{SEED}/user-data", EMPTY_USERDATA, 0o600, keep_owner=False)
        changed.append(f"{SEED}/user-data: empty cloud-config")
    return changed
