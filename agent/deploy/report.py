"""What a deploy ends with: the table of nodes by inventory name, and `--report FILE.json`.

The JSON document (`herdcast-deploy/1`) holds one entry per inventory node — name, MAC,
BMC address (never its credentials), how it was powered on, its state (agreed, failed,
never connected), why, whether it is still armed, what its next boot is, the BMC's power
state when asked, its address, bytes and digest — and under `send` the sender's own report
of the same run (docs/report-schema.md), whose receivers carry the same names.
"""

from __future__ import annotations

import json
import time

from agent.deploy.flow import Deployment, NodeRun
from agent.transfer.result import TransferResult
from agent.transfer.send.fleet import iso

FORMAT = "herdcast-deploy/1"


def next_boot(run: NodeRun) -> str:
    """What the node's per-MAC files make it boot next."""
    return "network: armed, images itself again" if run.armed else "local disk"


def node_entry(run: NodeRun) -> dict:
    node = run.node
    return {
        "name": node.name,
        "mac": node.mac,
        "bmc": node.bmc.shown if node.bmc else None,
        "power_action": run.action,
        "state": run.state,
        "reason": run.reason,
        "armed": run.armed,
        "next_boot": next_boot(run),
        "bmc_power": run.bmc_says,
        "address": run.address,
        "bytes": run.bytes,
        "digest": run.digest,
        "agreed_at": iso(run.agreed_at),
    }


def build(deploy: Deployment, result: TransferResult, image: str, status: int,
          send_doc: dict | None) -> dict:
    """The report document of a finished deploy."""
    return {
        "format": FORMAT,
        "image": image,
        "inventory": deploy.inventory.path,
        "tftp_root": str(deploy.tftp_root),
        "wait": deploy.wait,
        "started": iso(deploy.started),
        "ended": iso(time.time()),
        "ok": status == 0,
        "error": None if status == 0 else (str(result.error) if result.error else _failed(deploy)),
        "sha256": result.sha256,
        "nodes": [node_entry(r) for r in deploy.runs],
        "send": send_doc,
    }


def _failed(deploy: Deployment) -> str:
    bad = [f"{r.node.name} {r.state}" for r in deploy.runs if r.state != "agreed"]
    return f"{len(bad)} of {len(deploy.runs)} node(s) not agreed: {', '.join(bad)}"


def table(deploy: Deployment) -> str:
    """The final table: one row per node, by inventory name."""
    rows = [("node", "mac", "bmc", "state", "next boot", "why")]
    for r in deploy.runs:
        rows.append((r.node.name, r.node.mac, r.node.bmc.shown if r.node.bmc else "-",
                     r.state, "local disk" if not r.armed else "armed", r.reason or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:5], widths, strict=True)) +
             (f"  {row[5]}" if row[5] else "") for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def summary(deploy: Deployment) -> str:
    """The last line: how many agreed."""
    agreed = sum(r.state == "agreed" for r in deploy.runs)
    if agreed == len(deploy.runs):
        return f"herdcast deploy: all {agreed} node(s) agreed and boot their new system"
    return f"herdcast deploy: {_failed(deploy)}"


def dumps(doc: dict) -> str:
    return json.dumps(doc, indent=2) + "\n"
