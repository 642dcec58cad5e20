"""Signed sessions: a node built with a public key images only from a sender holding the
private key, and says SUCCESS only for the digest that sender signed.

`keys` makes, stores and loads the Ed25519 pair; `statements` declares what is signed (with
construct, like the wire) and signs and verifies it. The receiver's nonce is in every
statement, so a signature cannot be replayed to another node or another boot.
"""

#: Where a node built with `make initrd TRUST_KEY=...` finds the key it trusts.
TRUSTED_KEY_PATH = "/etc/herdcast/trusted.pub"
