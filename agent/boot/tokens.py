"""The kernel's own splitting of its command line, and the one-line error a bad word gives.

The node reads /proc/cmdline as the kernel split it, not as a shell would: words are
separated by ASCII whitespace outside double quotes, and the quoting rules are those of
lib/cmdline.c's next_arg. Every other module of the boot parameters builds on `tokens`.
"""

from __future__ import annotations

from agent.errors import HerdcastError, UsageError

# The kernel's isspace(): ASCII only. Python's str.isspace() would also split on U+00A0 etc.
KERNEL_SPACE = " \t\n\v\f\r"


class CmdlineError(UsageError, ValueError):
    """A bad boot parameter: one line naming the parameter, the value given and the fix."""


class BadValue(HerdcastError):
    """Raised by a converter with "problem; fix"; the parser prefixes `name=value: ` and
    turns it into a CmdlineError, so each converter need not know how it was written."""


def shown(name: str, value: str) -> str:
    """`name=value` as the user would write it on the append line: quoted if it has spaces,
    control characters escaped so the message stays one line."""
    text = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in value)
    if any(c in value for c in KERNEL_SPACE):
        return f'{name}="{text}"'
    return f"{name}={text}"


def tokens(text: str) -> list[tuple[str, str | None]]:
    """Every `key=value` / bare word of a command line, in order (value None for bare words).

    As the kernel does it: words are separated by ASCII whitespace outside double quotes; a
    value starting with `"` loses that quote and a trailing one; a word starting with `"`
    (`"key=value with spaces"`) loses both; quotes elsewhere stay; `key` ends at the first `=`.
    """
    out: list[tuple[str, str | None]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in KERNEL_SPACE:
            i += 1
        if i >= n:
            break
        quoted = text[i] == '"'
        if quoted:
            i += 1
        start, in_quote, equals = i, quoted, -1
        while i < n and (in_quote or text[i] not in KERNEL_SPACE):
            if equals < 0 and text[i] == "=":
                equals = i
            if text[i] == '"':
                in_quote = not in_quote
            i += 1
        word = text[start:i]
        if equals < 0:
            key, value = word, None
            if quoted and key.endswith('"'):
                key = key[:-1]
        else:
            key, value = text[start:equals], text[equals + 1:i]
            if value.startswith('"'):
                value = value[1:]
                if value.endswith('"'):
                    value = value[:-1]
            elif quoted and value.endswith('"'):
                value = value[:-1]
        out.append((key, value))
    return out


def consoles(text: str) -> list[str]:
    """Every `console=` value, in order (the key matched case-insensitively, as all of our
    parameters are). Here rather than with the other parameters so the node's console,
    opened before anything else, needs nothing but this module; and it never raises, so a
    bad command line's error shows on the consoles that command line names."""
    return [v for k, v in tokens(text) if k.lower() == "console" and v]
