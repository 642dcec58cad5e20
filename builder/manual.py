"""`python -m builder manual`: herdcast's man page and shell completions, generated.

Both come from the parser the commands themselves run (agent.cli.parser gathers every
command's `parser()`), by argparse-manpage and shtab (the `manual` extra), so they list
exactly the options and help texts of `herdcast COMMAND --help`: nothing is written by hand.
The files are laid out as under /usr/share (`make install` copies OUT/* into
$(PREFIX)/share): man/man1/herdcast.1, bash-completion/completions/herdcast and
zsh/site-functions/_herdcast.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from builder.errors import BuildError

MAN_PAGE = Path("man/man1/herdcast.1")
COMPLETIONS = {"bash": Path("bash-completion/completions/herdcast"),
               "zsh": Path("zsh/site-functions/_herdcast")}


def man_page() -> str:
    """herdcast(1): every command's usage, options and their help, in roff."""
    from argparse_manpage.manpage import Manpage

    from agent import __version__
    from agent.cli import parser

    # argparse wraps usage lines at $COLUMNS with indented continuations, which roff would
    # keep as breaks: one long line lets man fill it to the reader's width instead
    with _environ(COLUMNS="100000"):
        page = Manpage(parser())
        page.source = f"herdcast {__version__}"
        page.manual = "herdcast manual"
        page.description = "unattended multicast disk cloning for PXE-booted fleets"
        return str(page)


@contextlib.contextmanager
def _environ(**values: str):
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def completion(shell: str) -> str:
    """The completion script of `herdcast` for `shell` (bash or zsh)."""
    import shtab

    from agent.cli import parser

    return shtab.complete(parser(), shell=shell)


def write_manual(out: Path) -> list[Path]:
    """Write the man page and the completions under `out`; the paths written."""
    try:
        texts = {MAN_PAGE: man_page(),
                 **{path: completion(shell) for shell, path in COMPLETIONS.items()}}
    except ImportError as exc:
        raise BuildError(f"the manual needs {exc.name}",
                         "pip install 'herdcast[manual]' (make venv installs it)") from exc
    written = []
    for path, text in texts.items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written
