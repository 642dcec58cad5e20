"""Ed25519 key pairs for signed sessions (pyca `cryptography`).

The private key stays on the imaging server (PKCS#8 PEM, mode 0600); the public key is one
line, `herdcast-ed25519 <base64>`, small enough to read aloud and built into the initramfs.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from agent.errors import HerdcastError

PUBLIC_TAG = "herdcast-ed25519"


class KeyFileError(HerdcastError):
    """A key file that cannot be read or is not a herdcast Ed25519 key."""


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # a node frozen without signing support
        raise KeyFileError("signed sessions need the cryptography package",
                        "install herdcast with its dependencies, or build the initrd with "
                        "a public key (make initrd SIGN_PUBKEY=...)") from exc
    return serialization, ed25519


def generate(private_path: Path, public_path: Path) -> str:
    """Write a new pair; refuses to overwrite. Returns the public key line."""
    serialization, ed25519 = _crypto()
    for path in (private_path, public_path):
        if path.exists():
            raise KeyFileError(f"{path} exists", "choose another name or remove it first")
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    line = f"{PUBLIC_TAG} {base64.b64encode(raw).decode()}"
    public_path.write_text(line + "\n")
    return line


def load_private(path: str):
    """The signing key from a PKCS#8 PEM file."""
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise KeyFileError(f"--sign-key {path}: {exc.strerror}", "give the private key file "
                        "herdcast keygen wrote") from exc
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"--sign-key {path}: not an unencrypted PEM private key",
                        "give the private key file herdcast keygen wrote") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"--sign-key {path}: not an Ed25519 key",
                           "make one with herdcast keygen")
    return key


def load_public(path: str):
    """The verifying key from a `herdcast-ed25519 <base64>` line."""
    _, ed25519 = _crypto()
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise KeyFileError(f"public key {path}: {exc.strerror}", "give the .pub file herdcast "
                        "keygen wrote") from exc
    tag, _, b64 = text.partition(" ")
    try:
        raw = base64.b64decode(b64.strip(), validate=True)
        if tag != PUBLIC_TAG or len(raw) != 32:
            raise ValueError(tag)
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise KeyFileError(f"public key {path}: not a '{PUBLIC_TAG} <base64>' line",
                        "give the .pub file herdcast keygen wrote") from exc
