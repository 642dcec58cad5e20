"""After the digest agreed: the clone fitted and personalised (agent.personalize), and the
sender told what was changed.

The digest has proved the image arrived before anything here touches the disk. The
receiver stays connected meanwhile: personalising runs in a worker thread while this one
answers the sender and, with a herdcast sender, says HC_CHANGED WORKING every second (the
sender keeps waiting for it, resize2fs on a large disk takes minutes), then the changes
(DONE) or why it failed (FAILED) until the sender acknowledges them; then DISCONNECT as
always. A sender that never acknowledges (an older herdcast) costs ACK_TIMEOUT, nothing
more: the changes are on this side's console either way.
"""

from __future__ import annotations

import threading
import time

from agent.errors import HerdcastError
from agent.personalize.run import Outcome, PersonalizeError, personalize
from agent.personalize.wishes import Wishes
from agent.say import say
from agent.transfer.options import ReceiveOptions
from agent.transfer.receive.link import Link
from agent.transfer.receive.output import Output
from agent.udpcast.protocol import CHANGED_TEXT, Cap, ChangedStatus, Op, build

HEARTBEAT = 1.0  # seconds between WORKING reports
ACK_INTERVAL = 0.25
ACK_TIMEOUT = 3.0


def wanted(opts: ReceiveOptions, output: Output | None) -> bool:
    """Whether this receive ends with personalising: a disk (or a file unpacked as one,
    or one the admin asked to personalise) written, not a stored image or a pipe. `output`
    None: the chunk carousel wrote the image in place (receive.carousel), as onto a disk."""
    if opts.file is None or opts.pipe:
        return False
    if output is None:
        return True
    wishes = opts.wishes
    return not output.stored and bool(output.unpack or wishes.grow or wishes.into_root)


def fit_text(lines: list[str], limit: int = CHANGED_TEXT) -> bytes:
    """As many whole lines as fit in `limit` bytes of UTF-8 (and how many did not),
    NUL-padded to HC_CHANGED's text field."""
    return _fitted(lines, limit).encode()[:limit].ljust(CHANGED_TEXT, b"\0")


def _fitted(lines: list[str], limit: int) -> str:
    text = ""
    for i, line in enumerate(lines):
        more = len(lines) - i - 1
        candidate = f"{text}\n{line}" if text else line
        tail = f"\n... {more} more (on the node's console)" if more else ""
        if len((candidate + tail).encode()) > limit:
            return text + f"\n... {len(lines) - i} more (on the node's console)"
        text = candidate
    return text


def personalise(link: Link, disk: str, wishes: Wishes) -> Outcome:
    """Fit and personalise `disk` while keeping the sender informed; the Outcome, or the
    PersonalizeError (or any HerdcastError of the tools) that stopped it."""
    herdcast = link.session is not None and bool(link.session.capabilities & Cap.HERDCAST) \
        and not link.opts.passive
    said: list[str] = []

    def tell(line: str) -> None:
        said.append(line)
        say(line)

    box: dict = {}

    def work() -> None:
        try:
            box["outcome"] = personalize(disk, wishes, say=tell)
        except HerdcastError as exc:
            box["error"] = exc
        except Exception as exc:  # noqa: BLE001 - reported to the sender and the console
            box["error"] = PersonalizeError(f"personalising {disk}: internal error "
                                            f"{type(exc).__name__}: {exc}",
                                            "this is a herdcast bug")

    def working() -> None:
        if herdcast:
            link.send(build(Op.HC_CHANGED, status=int(ChangedStatus.WORKING),
                            text=fit_text(said[-1:], 200)))

    asked = wishes.grow or wishes.into_root
    if asked:
        say(f"personalising {disk}: {wishes.describe()}")
        working()  # the sender waits from now on
    worker = threading.Thread(target=work, name="personalize", daemon=True)
    worker.start()
    while True:
        worker.join(HEARTBEAT)  # a plain clone's fitting is done before the first beat
        if not worker.is_alive():
            break
        working()
        link.pump(0.0)
    error, outcome = box.get("error"), box.get("outcome")
    if herdcast and (asked or error is not None or outcome.changes):
        if error is not None:
            _report(link, ChangedStatus.FAILED, fit_text([str(error.what)]))
        else:
            _report(link, ChangedStatus.DONE, fit_text(outcome.changes))
    if error is not None:
        if isinstance(error, PersonalizeError):
            raise error
        raise PersonalizeError(f"the image arrived (its digest agreed) but personalising "
                               f"{disk} failed: {error.what}", error.fix) from error
    return outcome


def _report(link: Link, status: ChangedStatus, text: bytes) -> None:
    """The final report, repeated until the sender acknowledges it (or ACK_TIMEOUT)."""
    message = build(Op.HC_CHANGED, status=int(status), text=text)
    link.changed_ack = False
    give_up = time.monotonic() + ACK_TIMEOUT
    while not link.changed_ack and time.monotonic() < give_up:
        link.send(message)
        next_send = time.monotonic() + ACK_INTERVAL
        while not link.changed_ack and time.monotonic() < next_send:
            link.pump(max(next_send - time.monotonic(), 0))
    if not link.changed_ack:
        say("the sender did not acknowledge what was changed (an older herdcast?): "
            "it is on this console only")
