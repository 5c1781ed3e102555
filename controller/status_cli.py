"""`firepath status`: the fabric as the masters see it, from their REST APIs.

    firepath status (--config FABRIC.yaml | --lab NAME) [--client-rest] [--netns NS] [--json] [--timeout S]

Queries every configured master (its configured address and rest_port) for `/v1/lsd/version`,
`/v1/masters` and `/v1/clients`, in parallel, and prints

- one row per master: reachable?, role, term, LSD version, leader, whether a new master still holds its
  first LSD publication (`held`), and how its FMRP view sees it;
- the clients as the serving master sees them: how many are alive and on its term, how many it sent its
  current version, and the switches that are silent or behind by name;
- each client's lag (the serving master's LSD version minus the version the client holds; and minus the
  version it has programmed into its switch) when the clients' own REST can be read from here: with `--lab`
  (every lab client serves it on 127.0.0.1:<rest_port> in the lab namespace) or `--client-rest` (clients
  on this host, in --netns). The master alone cannot know it: a client tells it the version it holds only
  in an LsdRequest, sent when it finds a gap, so the master's `lag` is a confirmed figure only while such a
  request is the client's latest word (shown as "max confirmed lag" when some client has one), never guessed.

A client is behind when it says it holds or has programmed less than the master's version (read from it),
or else when it confirmed a lag or the master has not even sent it its current version.
Exit status: 0 when exactly one master serves and no alive client is behind; 1 otherwise (no master,
several masters, clients behind); 2 on a bad config or option; 3 when no master answered (unreachable
from here: nothing is known). `--json` prints everything gathered.
`--lab NAME` is a local `firepath lab` (its config and network namespace), as for the operator commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from controller.ops.api import master_note
from controller.ops.clientrest import client_ports, get_json, own_lag, read_states
from controller.ops.fetch import MAX_ANSWER
from proto.argtypes import positive_seconds
from proto.termsafe import clean

ENDPOINTS = ("/v1/lsd/version", "/v1/masters", "/v1/clients")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("status", help="show the fabric state as seen by the masters",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="fabric YAML (master addresses and REST ports)")
    where.add_argument("--lab", metavar="NAME", help="a local `firepath lab`: its config and namespace")
    p.add_argument("--client-rest", action="store_true",
                   help="also read each switch client's own REST on 127.0.0.1:<rest_port> (the clients run on this "
                        "host, in --netns): the LSD version it holds and has programmed, i.e. its real lag "
                        "(implied by --lab)")
    p.add_argument("--netns", help="run the requests inside this network namespace")
    p.add_argument("--json", action="store_true", help="print the gathered state as JSON")
    p.add_argument("--timeout", type=positive_seconds, default=1.0,
                   help="per-request timeout in seconds (positive; default 1)")
    p.set_defaults(func=run)


def gather(fabric: Any, timeout: float = 1.0, client_ports: dict[str, int] | None = None) -> dict[str, Any]:
    """{"fabric", "masters": {id: {"address", "rest_port", "version"|..., "error"?}}, "serving": [id],
    "leader": id|None, "clients": summary (`_client_summary`) or None}. `client_ports` {switch: REST port}: also
    read each client's `/v1/state` on 127.0.0.1:<port> (after the masters, so a client is seldom ahead of the
    version it is compared with); None: the masters only."""
    jobs = [(m, ep) for m in fabric.masters for ep in ENDPOINTS]
    with ThreadPoolExecutor(max_workers=min(16, len(jobs)) or 1) as pool:
        # a master's /v1/clients of a big fabric is many MB: the bound of a master's answer, not of a client's
        # state (MAX_STATE, 1 MiB: 'status' refused a fabric of ~3,000 switches)
        results = list(pool.map(lambda j: get_json(f"http://{j[0].address}:{j[0].rest_port}{j[1]}", timeout,
                                                   limit=MAX_ANSWER), jobs))
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
    own = None
    if client_ports is not None and leader is not None:
        own = read_states(client_ports, timeout)
    return {"fabric": fabric.name, "masters": masters, "serving": serving, "leader": leader,
            "clients": _client_summary(masters[leader], own) if leader else None}


def _client_summary(row: dict[str, Any], own: dict[str, dict[str, Any] | str] | None = None) -> dict[str, Any] | None:
    """The serving master's `/v1/clients` (`row["clients"]`) summed up, with each client's own word where
    `own` ({switch: its `/v1/state` or an error}) has it: "lag_source" is "clients" then, else "master"
    (confirmed lags only); "max_lag"/"max_programmed_lag" over the alive clients (None: none known)."""
    view = row.get("clients")
    if not isinstance(view, dict):
        return None
    rows = view.get("clients", [])
    term, version = view.get("term"), view.get("version")
    alive = [c for c in rows if c.get("alive")]
    have = {c["switch"]: _client_version(c, term) for c in alive}
    lags = {name: version - v for name, v in have.items() if v is not None and isinstance(version, int)}
    confirmed = {c["switch"]: c["lag"] for c in alive if isinstance(c.get("lag"), int)}
    read = {name: own_lag(version, s) for name, s in own.items()} if own is not None else {}
    known = {name: r for name, r in read.items() if name in have and "error" not in r}

    def behind(name: str) -> bool:
        if name in known:          # the client's own word: it holds or programmed less (or nothing)
            r = known[name]
            return r["lag"] != 0 or r["programmed_lag"] != 0
        return confirmed.get(name, 0) > 0 or (name not in confirmed and (lags.get(name) is None or lags[name] > 0))

    def most(values: list[Any]) -> int | None:
        values = [v for v in values if isinstance(v, int)]
        return max(values) if values else None

    return {
        "total": len(rows),
        "alive": len(alive),
        "on_term": len(lags),
        "sent_current": sum(1 for lag in lags.values() if lag == 0),
        "confirmed": len(confirmed),
        "unconfirmed": sum(1 for name, lag in lags.items() if lag == 0 and name not in confirmed),
        "lag_source": "clients" if own is not None else "master",
        "max_lag": (most([r["lag"] for r in known.values()]) if own is not None
                    else most(list(confirmed.values()))),
        "max_programmed_lag": most([r["programmed_lag"] for r in known.values()]) if own is not None else None,
        "read": len(known),
        "own": read,
        "unread": sorted(name for name in have if name in read and name not in known),
        "silent": sorted(c["switch"] for c in rows if not c.get("alive")),
        "behind": sorted(name for name in have if behind(name)),
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


def answered(state: dict[str, Any]) -> bool:
    """Whether any master answered its LSD version (else nothing is known: exit 3, like the other commands)."""
    return any(isinstance(row.get("version"), dict) for row in state["masters"].values())


def healthy(state: dict[str, Any]) -> bool:
    c = state["clients"]
    return state["leader"] is not None and c is not None and not c["behind"]


def render(state: dict[str, Any]) -> str:
    lines = [f"fabric {state['fabric']}", ""]
    header = f"{'master':<10} {'address':<21} {'role':<11} {'term':>6} {'version':>8} {'leader':<8} {'fmrp':<9} note"
    lines.append(header)
    for mid, row in state["masters"].items():
        addr = f"{row['address']}:{row['rest_port']}"
        v = row.get("version")
        if not isinstance(v, dict):
            lines.append(f"{mid:<10} {addr:<21} {'unreachable':<11} {'-':>6} {'-':>8} {'-':<8} {'-':<9} "
                         f"{clean(row.get('error', ''))}")
            continue
        fmrp = "-"
        view = row.get("masters")
        if isinstance(view, dict):
            me = next((r for r in view.get("replicas", []) if r.get("self")), None)
            if me is not None:
                fmrp = clean(me.get("state", "-"))
        note = master_note(v)
        # a master's answer as text: cleaned (proto.termsafe), and a wrong type no longer raises
        lines.append(f"{mid:<10} {addr:<21} {clean(v.get('role')):<11} {clean(v.get('term')):>6} "
                     f"{clean(v.get('version')):>8} {clean(v.get('leader') or '-'):<8} {fmrp:<9} {clean(note)}")
    lines.append("")
    if state["leader"] is None:
        n = len(state["serving"])
        if not answered(state):
            lines.append("NO MASTER ANSWERED from here: whether one serves is unknown (run where the masters' "
                         "addresses are reachable: --netns NS, or --lab NAME for a lab)")
        else:
            lines.append("NO MASTER SERVING: clients forward on their last LSD (fail-static)" if n == 0
                         else f"SEVERAL MASTERS SERVING: {', '.join(state['serving'])}")
        return "\n".join(lines)
    c = state["clients"]
    if c is None:
        lines.append(f"clients: {state['leader']} did not answer /v1/clients")
        return "\n".join(lines)
    line = (f"clients (as {state['leader']} sees them): {c['alive']}/{c['total']} alive, {c['on_term']} on its "
            f"term, {c['sent_current']} sent its current version")
    if c["lag_source"] == "clients":
        line += (f"; from their own REST ({c['read']} read): max lag {_n(c['max_lag'])}, "
                 f"max programmed lag {_n(c['max_programmed_lag'])} (LSD versions)")
    elif c["confirmed"]:
        line += f"; max confirmed lag {c['max_lag']} ({c['confirmed']} confirmed)"
    else:       # why there is no lag figure, and how to get one
        line += ("; lag not known here (a client tells the master its version only on a gap; "
                 "--client-rest or --lab read each client's own)")
    lines.append(line)
    if c["unread"]:
        lines.append(f"  no REST answer: {_names(c['unread'])}")
    if c["silent"]:
        lines.append(f"  silent: {', '.join(c['silent'])}")
    if c["behind"]:
        lines.append(f"  behind: {', '.join(_behind(name, c['own'].get(name)) for name in c['behind'])}")
    return "\n".join(lines)


def _names(names: list[str], limit: int = 12) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _n(value: Any) -> str:
    return "-" if value is None else str(value)


def _behind(name: str, own: dict[str, Any] | None) -> str:
    """A switch behind, with what it holds and programmed when it said so itself."""
    if own is None or "error" in own:
        return name
    return f"{name} (holds {clean(own.get('lsd_version'))}, programmed {clean(own.get('programmed_version'))})"


def run(args: argparse.Namespace) -> int:
    from controller.ops.cli import OpsError, load_target

    try:
        fabric = load_target(args)
    except OpsError as e:
        print(f"firepath status: {e}", file=sys.stderr)
        return 2
    try:
        ports = client_ports(fabric, bool(args.lab)) if args.lab or args.client_rest else None
        state = gather(fabric, args.timeout, ports)
        text = json.dumps(state, indent=1, sort_keys=True) if args.json else render(state)
        ok = healthy(state)
    except (AttributeError, KeyError, TypeError, IndexError, ValueError) as e:
        # JSON of another shape than firepath serves (another program on the port, another version)
        print(f"firepath status: unexpected answer from a master REST ({type(e).__name__}: {e}); is firepath of "
              f"this version serving there?", file=sys.stderr)
        return 3
    print(text)
    if not answered(state):
        errors = sorted({str(row.get("error", "no version")) for row in state["masters"].values()})
        print(f"firepath status: no master answered from here ({'; '.join(errors)[:300]})", file=sys.stderr)
        return 3
    return 0 if ok else 1
