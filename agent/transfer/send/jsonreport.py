"""`herdcast send --report FILE.json`: the session and every receiver, for scripts.

The schema is `SCHEMA` below (a JSON-Schema subset: type, required, properties, items,
enum), documented field by field in docs/report-schema.md; `validate` checks a document
against it without a JSON-Schema library (the node's initramfs has none).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

from agent.transfer.result import TransferResult
from agent.transfer.send.fleet import Fleet, iso
from agent.transfer.send.network import SendError
from agent.transfer.send.record import Verdict

VERDICTS = [str(v) for v in Verdict]
STR_OR_NULL = ["string", "null"]

RECEIVER = {
    "type": "object",
    "required": ["address", "mac", "hostname", "herdcast", "round", "bytes",
                 "retransmissions", "verdict", "reason", "digest", "started", "ended",
                 "personalised", "changes"],
    "properties": {
        "address": {"type": "string"},
        "mac": {"type": STR_OR_NULL},
        "hostname": {"type": STR_OR_NULL},
        "herdcast": {"type": "boolean"},
        "round": {"type": "integer"},
        "bytes": {"type": "integer"},
        "retransmissions": {"type": "integer"},
        "verdict": {"type": "string", "enum": VERDICTS},
        "reason": {"type": STR_OR_NULL},
        "digest": {"type": STR_OR_NULL},
        "started": {"type": STR_OR_NULL},
        "ended": {"type": STR_OR_NULL},
        "personalised": {"type": STR_OR_NULL, "enum": [None, "working", "done", "failed"]},
        "changes": {"type": "array", "items": {"type": "string"}},
    },
}
ROUND = {
    "type": "object",
    "required": ["round", "kind", "receivers", "started", "ended", "bytes", "sha256"],
    "properties": {
        "round": {"type": "integer"},
        "kind": {"type": "string", "enum": ["raw", "image", "chunks"]},
        "receivers": {"type": "integer"},
        "started": {"type": "string"},
        "ended": {"type": STR_OR_NULL},
        "bytes": {"type": "integer"},
        "sha256": {"type": STR_OR_NULL},
    },
}
SCHEMA = {
    "type": "object",
    "required": ["format", "session", "rounds", "receivers"],
    "properties": {
        "format": {"type": "string", "enum": ["herdcast-report/1"]},
        "session": {
            "type": "object",
            "required": ["image", "size", "digest", "started", "ended", "duration", "rate",
                         "ok", "error", "serve"],
            "properties": {
                "image": {"type": "string"},
                "size": {"type": ["integer", "null"]},
                "digest": {"type": STR_OR_NULL},
                "started": {"type": "string"},
                "ended": {"type": "string"},
                "duration": {"type": "number"},
                "rate": {"type": "number"},
                "ok": {"type": "boolean"},
                "error": {"type": STR_OR_NULL},
                "serve": {"type": "boolean"},
            },
        },
        "rounds": {"type": "array", "items": ROUND},
        "receivers": {"type": "array", "items": RECEIVER},
    },
}

_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
          "null": type(None), "object": dict, "array": list}


def validate(doc, schema: dict = SCHEMA, where: str = "report") -> list[str]:
    """What is wrong with `doc` against `schema` (empty: valid)."""
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    ok = any(isinstance(doc, _TYPES[k]) and not (k in ("integer", "number")
                                                 and isinstance(doc, bool)) for k in kinds)
    if not ok:
        return [f"{where}: {type(doc).__name__} is not {' or '.join(kinds)}"]
    errors = []
    if "enum" in schema and doc not in schema["enum"]:
        errors.append(f"{where}: {doc!r} is not one of {schema['enum']}")
    if isinstance(doc, dict):
        for key in schema.get("required", []):
            if key not in doc:
                errors.append(f"{where}: no {key!r}")
        for key, sub in schema.get("properties", {}).items():
            if key in doc:
                errors += validate(doc[key], sub, f"{where}.{key}")
    if isinstance(doc, list) and "items" in schema:
        for i, item in enumerate(doc):
            errors += validate(item, schema["items"], f"{where}[{i}]")
    return errors


def build(fleet: Fleet, result: TransferResult, image: str, size: int | None,
          ended: float) -> dict:
    """The report document of a finished send."""
    busy = sum((r.ended or ended) - r.started for r in fleet.rounds)
    sent = sum(r.bytes for r in fleet.rounds)
    return {
        "format": "herdcast-report/1",
        "session": {
            "image": image,
            "size": size,
            "digest": result.sha256,
            "started": iso(fleet.started),
            "ended": iso(ended),
            "duration": round(ended - fleet.started, 3),
            "rate": round(sent / busy, 1) if busy > 0 else 0.0,
            "ok": result.ok,
            "error": None if result.error is None else str(result.error),
            "serve": False,
        },
        "rounds": [{"round": r.number, "kind": r.kind, "receivers": r.receivers,
                    "started": iso(r.started), "ended": iso(r.ended), "bytes": r.bytes,
                    "sha256": r.sha256} for r in fleet.rounds],
        "receivers": [{"address": r.address, "mac": r.mac, "hostname": r.hostname,
                       "herdcast": r.herdcast, "round": r.round, "bytes": r.bytes,
                       "retransmissions": r.retransmissions, "verdict": str(r.verdict),
                       "reason": r.reason, "digest": r.digest, "started": iso(r.started),
                       "ended": iso(r.ended), "personalised": r.personalised,
                       "changes": r.changes}
                      for r in fleet.finished_rows()],
    }


def write(path: str, doc: dict) -> None:
    """Write the report atomically (a reader never sees half a file) through a new file of
    an unpredictable name beside it, created exclusively: a symlink planted where the
    temporary file will be cannot redirect the write."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        os.fchmod(fd, 0o644)  # as open() made it: a report is for everybody to read
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_path(path: str) -> None:
    """--report is written after the last round: a directory that is not there must stop
    the send before the first, not after a day of imaging."""
    folder = os.path.dirname(os.path.abspath(path))
    why = ("is a directory" if os.path.isdir(path) else
           f"directory {folder} does not exist" if not os.path.isdir(folder) else
           f"directory {folder} is not writable" if not os.access(folder, os.W_OK) else None)
    if why:
        raise SendError(f"--report {path}: {why}", "give a path in a writable directory")
