"""`firepath status`: the fabric as the masters see it, from their REST APIs.

    firepath status (--config FABRIC.yaml | --lab NAME) [--netns NS] [--json] [--timeout S]

Queries every configured master (its configured address and rest_port — nothing else is contacted) for
`/v1/lsd/version`, `/v1/masters` and `/v1/clients`, in parallel, and prints

- one row per master: reachable?, role, term, LSD version, leader, whether a new master still holds its
  first LSD publication (`held`), and how its FMRP view sees it;
- the clients as the serving master sees them: how many are alive and on its term; the lag a client
  *confirmed* (master version - the version of its last LsdRequest, while nothing newer was sent to it: a
  client asks only when it finds a gap, so most lags are unknown, never guessed), how many were sent the
  current version without confirming it, and the switches that are silent or behind by name (behind: a
  confirmed lag, or the master has not even sent it its current version).

Exit status: 0 when exactly one master serves and no alive client is behind; 1 otherwise (no master,
several masters, clients behind); 2 on a bad config or option. `--json` prints everything gathered.
`--lab NAME` is a local `firepath lab` (its config and network namespace), as for the operator commands.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from proto.argtypes import positive_float

ENDPOINTS = ("/v1/lsd/version", "/v1/masters", "/v1/clients")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("status", help="show the fabric state as seen by the masters",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="fabric YAML (master addresses and REST ports)")
    where.add_argument("--lab", metavar="NAME", help="a local `firepath lab`: its config and namespace")
    p.add_argument("--netns", help="run the requests inside this network namespace")
    p.add_argument("--json", action="store_true", help="print the gathered state as JSON")
    p.add_argument("--timeout", type=positive_float, default=1.0,
                   help="per-request timeout in seconds (positive; default 1)")
    p.set_defaults(func=run)


def _get(url: str, timeout: float) -> dict[str, Any] | str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            doc = json.loads(r.read())
        if not isinstance(doc, dict):
            return f"unexpected answer: JSON {type(doc).__name__}, not an object (is firepath serving there?)"
        return doc
    except Exception as e:  # noqa: BLE001 - reported per master, never fatal
        reason = getattr(e, "reason", None)
        return f"{type(e).__name__}: {reason if reason is not None else e}"


def gather(fabric: Any, timeout: float = 1.0) -> dict[str, Any]:
    """{"masters": {id: {"address", "rest_port", "version"|..., "error"?}}, "leader": id|None, "clients": ...}"""
    jobs = [(m, ep) for m in fabric.masters for ep in ENDPOINTS]
    with ThreadPoolExecutor(max_workers=min(16, len(jobs)) or 1) as pool:
        results = list(pool.map(lambda j: _get(f"http://{j[0].address}:{j[0].rest_port}{j[1]}", timeout), jobs))
    masters: dict[str, dict[str, Any]] = {}
    for (m, ep), res in zip(jobs, results, strict=True):
        row = masters.setdefault(m.id, {"address": str(m.address), "rest_port": m.rest_port})
        key = ep.rsplit("/", 1)[-1]            # version | masters | clients
        if isinstance(res, str):
            row.setdefault("error", res)
        else:
            row[key] = res
    serving = [mid for mid, row in masters.items() if row.get("version", {}).get("role") == "master"]
    leader = serving[0] if len(serving) == 1 else None
    return {"fabric": fabric.name, "masters": masters, "serving": serving, "leader": leader,
            "clients": _client_summary(masters[leader]) if leader else None}


def _client_summary(row: dict[str, Any]) -> dict[str, Any] | None:
    view = row.get("clients")
    if not isinstance(view, dict):
        return None
    rows = view.get("clients", [])
    term, version = view.get("term"), view.get("version")
    alive = [c for c in rows if c.get("alive")]
    have = {c["switch"]: _client_version(c, term) for c in alive}
    lags = {name: version - v for name, v in have.items() if v is not None and isinstance(version, int)}
    confirmed = {c["switch"]: c["lag"] for c in alive if isinstance(c.get("lag"), int)}
    return {
        "total": len(rows),
        "alive": len(alive),
        "on_term": len(lags),
        "confirmed": len(confirmed),
        "max_lag": max(confirmed.values()) if confirmed else None,     # confirmed lags only
        "unconfirmed": sum(1 for name, lag in lags.items() if lag == 0 and name not in confirmed),
        "silent": sorted(c["switch"] for c in rows if not c.get("alive")),
        "behind": sorted(name for name in have if confirmed.get(name, 0) > 0
                         or (name not in confirmed and (lags.get(name) is None or lags[name] > 0))),
    }


def _client_version(c: dict[str, Any], term: Any) -> int | None:
    """The newest version the master sent the client (`sent_version`, this term only) or the client
    acknowledged: an upper bound of what it holds, not a confirmation. A real client only asks when it
    finds a gap, so a lost datagram shows up as a keepalive-driven request within a keepalive interval."""
    versions = [c.get("sent_version")]
    if c.get("acked_term") == term:
        versions.append(c.get("acked_version"))
    known = [v for v in versions if isinstance(v, int) and v >= 0]
    return max(known) if known else None


def healthy(state: dict[str, Any]) -> bool:
    c = state["clients"]
    return state["leader"] is not None and c is not None and not c["behind"]


def render(state: dict[str, Any]) -> str:
    lines = [f"fabric {state['fabric']}", ""]
    header = f"{'master':<10} {'address':<21} {'role':<9} {'term':>6} {'version':>8} {'leader':<8} {'fmrp':<9} note"
    lines.append(header)
    for mid, row in state["masters"].items():
        addr = f"{row['address']}:{row['rest_port']}"
        v = row.get("version")
        if not isinstance(v, dict):
            lines.append(f"{mid:<10} {addr:<21} {'down':<9} {'-':>6} {'-':>8} {'-':<8} {'-':<9} "
                         f"{row.get('error', '')}")
            continue
        fmrp = "-"
        view = row.get("masters")
        if isinstance(view, dict):
            me = next((r for r in view.get("replicas", []) if r.get("self")), None)
            if me is not None:
                fmrp = str(me.get("state", "-"))
        note = "holding first LSD" if v.get("held") else ""
        lines.append(f"{mid:<10} {addr:<21} {v['role']:<9} {v['term']:>6} {v['version']:>8} "
                     f"{str(v.get('leader') or '-'):<8} {fmrp:<9} {note}")
    lines.append("")
    if state["leader"] is None:
        n = len(state["serving"])
        lines.append("NO MASTER SERVING: clients forward on their last LSD (fail-static)" if n == 0
                     else f"SEVERAL MASTERS SERVING: {', '.join(state['serving'])}")
        return "\n".join(lines)
    c = state["clients"]
    if c is None:
        lines.append(f"clients: {state['leader']} did not answer /v1/clients")
        return "\n".join(lines)
    lag = "unknown" if c["max_lag"] is None else str(c["max_lag"])
    lines.append(f"clients (as {state['leader']} sees them): {c['alive']}/{c['total']} alive, "
                 f"{c['on_term']} on its term, max confirmed lag {lag} ({c['confirmed']} confirmed, "
                 f"{c['unconfirmed']} sent the current version without confirming it)")
    if c["silent"]:
        lines.append(f"  silent: {', '.join(c['silent'])}")
    if c["behind"]:
        lines.append(f"  behind: {', '.join(c['behind'])}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from controller.ops.cli import OpsError, load_target

    try:
        fabric = load_target(args)
    except OpsError as e:
        print(f"firepath status: {e}", file=sys.stderr)
        return 2
    try:
        state = gather(fabric, args.timeout)
        text = json.dumps(state, indent=1, sort_keys=True) if args.json else render(state)
        ok = healthy(state)
    except (AttributeError, KeyError, TypeError, IndexError, ValueError) as e:
        # JSON of another shape than firepath serves (another program on the port, another version)
        print(f"firepath status: unexpected answer from a master REST ({type(e).__name__}: {e}); is firepath of "
              f"this version serving there?", file=sys.stderr)
        return 3
    print(text)
    return 0 if ok else 1
