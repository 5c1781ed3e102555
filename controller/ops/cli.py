"""`firepath drain|undrain|drains|guard|damping|routes|lsd|clients|masters`: the operator's commands.

    firepath drain   (--link A:P-B:Q | --switch NAME) [--reason TEXT] [--who NAME] [--dry-run] [--force]
    firepath undrain (--link A:P-B:Q | --switch NAME)
    firepath drains  [--json]
    firepath guard   [--confirm [LINK ...]] [--json]   # links the guard holds; --confirm publishes them DOWN
    firepath damping [--json]               # links master-side damping holds DOWN, switches whose UPs wait
    firepath routes  SWITCH [PREFIX] [--address HOST:PORT] [--no-ovs] [--json]
    firepath lsd     [--since V] [--all] [--json]
    firepath clients [--json]
    firepath masters [--json]

Every command takes `--config FABRIC.yaml` (masters' addresses and REST ports, switches' REST ports) or
`--lab NAME` (a local `firepath lab`: its config, admin token and network namespace), and `--timeout S`.
Writes go to the serving master (found by asking every configured master, following `leader` on a 409)
with the admin token from `--token-file`, `$FIREPATH_TOKEN`, `$FIREPATH_TOKEN_FILE` or the config's
`security.admin_token_file`. Before a drain the command computes what it would cost (controller.ops.dryrun: per ToR
pair the ECMP width, paths and capacity lost) from the master's LSD and the config; a drain that would
disconnect a ToR pair is refused unless `--force`; `--dry-run` prints the cost and changes nothing.
`routes` asks the switch's client (its REST on 127.0.0.1:<rest_port>, i.e. run it on the switch, or pass
--address) for its routes as computed and as read back from OVS over its OpenFlow connection.

Errors are one line on stderr naming the problem; exit codes are in controller.ops.api (0 ok, 1 bad news, 2 usage,
3 unreachable, 4 denied, 5 unknown link/switch/prefix, 6 refused).
"""

from __future__ import annotations

import argparse
import getpass
import json
import re
import socket
import sys
from datetime import UTC, datetime
from typing import Any

from client.of.sockets import enter_netns
from controller.ops.api import (
    BAD_NEWS,
    OK,
    REFUSED,
    UNKNOWN,
    UNREACHABLE,
    USAGE,
    Masters,
    OpsError,
    client_get,
    master_note,
    read_token,
)
from proto.argtypes import parse_prefix, positive_seconds
from proto.drains import MAX_REASON, MAX_WHO
from proto.termsafe import clean

COMMANDS = {
    "drain": "drain a link or a switch (with --dry-run: only show what it would cost)",
    "undrain": "lift the drain of a link or a switch",
    "drains": "list the drains in force: who, when, why",
    "guard": "the links the drastic-change guard holds (reported down, not published); --confirm publishes them",
    "damping": "the links master-side damping holds down (penalty, reuse in) and the switches whose UPs wait",
    "routes": "a switch's routes as its client computed them and as OVS holds them",
    "lsd": "the link state database of the serving master",
    "clients": "the switch clients as the serving master sees them",
    "masters": "every master replica's view of the replica set",
}
EXIT_CODES = ("exit codes: 0 ok, 1 bad news (differences, unexpected answer), 2 usage or local input, "
              "3 no master serving / client unreachable, 4 token missing or refused, "
              "5 unknown link, switch or prefix, 6 refused (drain would disconnect ToR pairs: --force; or the "
              "master refuses it: its drain book is full)")


# ---------------------------------------------------------------------------------------------- parser
def add_parser(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="fabric YAML (masters' and switches' REST addresses)")
    where.add_argument("--lab", metavar="NAME", help="a local `firepath lab`: its config, token and namespace")
    common.add_argument("--netns", help="run the requests inside this network namespace")
    common.add_argument("--timeout", type=positive_seconds, default=2.0,
                        help="per-request timeout in s: each connect and read (a whole request: 3x) (positive; "
                             "default 2)")
    js = argparse.ArgumentParser(add_help=False)
    js.add_argument("--json", action="store_true", help="print JSON for scripts")

    def sub(name: str, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        return subparsers.add_parser(name, help=COMMANDS[name], parents=[common, *parents], epilog=EXIT_CODES,
                                     description=COMMANDS[name] + ".")

    for name in ("drain", "undrain"):
        p = sub(name, js)
        target = p.add_mutually_exclusive_group(required=True)
        target.add_argument("--link", metavar="A:P-B:Q", help="a link, by its ends (either orientation)")
        target.add_argument("--switch", metavar="NAME", help="every link of a switch")
        p.add_argument("--token-file", help="admin token file (default: $FIREPATH_TOKEN, "
                                            "$FIREPATH_TOKEN_FILE, the config's admin_token_file)")
        if name == "drain":
            p.add_argument("--reason", help="why (kept with the drain, shown by `firepath drains`)")
            p.add_argument("--who", help="who (default USER@HOST)")
            p.add_argument("--dry-run", action="store_true", help="only show what the drain would cost")
            p.add_argument("--force", action="store_true", help="drain even if ToR pairs lose every path")
            p.add_argument("--all-pairs", action="store_true", help="list every ToR pair, not only affected ones")
        p.set_defaults(func=_run(cmd_drain if name == "drain" else cmd_undrain))
    sub("drains", js).set_defaults(func=_run(cmd_drains))
    p = sub("guard", js)
    p.add_argument("--confirm", action="store_true",
                   help="publish the held links DOWN now (POST /v1/guard/confirm, admin token): the LINKs named, "
                        "else every held link")
    p.add_argument("links", nargs="*", metavar="LINK",
                   help="with --confirm: only these held links (a:1-b:2); one not held refuses them all")
    p.add_argument("--token-file", help="admin token file for --confirm (default: $FIREPATH_TOKEN, "
                                        "$FIREPATH_TOKEN_FILE, the config's admin_token_file)")
    p.set_defaults(func=_run(cmd_guard))
    sub("damping", js).set_defaults(func=_run(cmd_damping))
    p = sub("routes", js)
    p.add_argument("switch")
    p.add_argument("prefix", nargs="?", help="an address or prefix: only the route that forwards it")
    p.add_argument("--address", metavar="HOST[:PORT]", help="the client's REST (default 127.0.0.1:<rest_port>)")
    p.add_argument("--no-ovs", action="store_true", help="only the computed routes (do not read OVS)")
    p.set_defaults(func=_run(cmd_routes))
    p = sub("lsd", js)
    p.add_argument("--since", type=int, metavar="V", help="only the links changed since version V")
    p.add_argument("--all", action="store_true", help="list every link (default: those not up)")
    p.set_defaults(func=_run(cmd_lsd))
    p = sub("clients", js)
    p.add_argument("--client-rest", action="store_true",
                   help="also read each client's own REST on 127.0.0.1:<rest_port> (clients on this host, in "
                        "--netns): the LSD version it holds and has programmed, its real lag (implied by --lab)")
    p.set_defaults(func=_run(cmd_clients))
    sub("masters", js).set_defaults(func=_run(cmd_masters))


def _run(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        try:
            fabric = _setup(args)
            return func(args, fabric)
        except OpsError as e:
            print(f"firepath {args.command}: {e}", file=sys.stderr)
            return e.code
        except BrokenPipeError:           # `firepath lsd --all | head`
            return OK
        except (AttributeError, KeyError, TypeError, IndexError, ValueError) as e:
            # JSON of another shape than firepath serves (another program on the port, another version)
            print(f"firepath {args.command}: unexpected answer from a master or switch client REST "
                  f"({type(e).__name__}: {e}); is firepath of this version serving there?", file=sys.stderr)
            return UNREACHABLE
    return run


def load_target(args: argparse.Namespace) -> Any:
    """The fabric of `--config` or `--lab NAME` (then its namespace too), entering `--netns`; OpsError(USAGE)
    with the reason otherwise. Shared with `firepath status`."""
    return _setup(args)


def _setup(args: argparse.Namespace) -> Any:
    from proto.config import ConfigError, load_fabric

    config, netns = args.config, args.netns
    try:
        if args.lab:
            # the config the lab runs, not an edit of its file awaiting `lab reload` (lab.labconfig.lab_fabric,
            # as every `firepath lab` command): a tester's typo in the edited file stopped `drain|drains|status
            # --lab` mid-rollout, and a ToR added by `config add-tor --write` entered the drain dry run
            from lab.labconfig import lab_fabric

            state = _lab_state(args.lab)
            netns = netns or state.netns or _lab_netns(args.lab)
            fabric = lab_fabric(state)
            if fabric is None:
                raise OpsError(USAGE, f"lab {args.lab}: its record names no config")
        else:
            fabric = load_fabric(config)
    except (ConfigError, OSError) as e:
        raise OpsError(USAGE, str(e)) from None
    if netns:
        _enter_netns(netns)
    return fabric


def lab_target(name: str) -> tuple[str, str]:
    """(config, network namespace) of the lab NAME, from its record (lab.json) in its default directory
    (/tmp/fplab-NAME) or, for a lab up with `--dir DIR`, in DIR as the lab registry names it
    (lab.state.find_lab_dir): the config it was started with — generated, or `lab up --config FILE` wherever
    FILE is — whatever the current directory. OpsError(USAGE) if there is no such lab."""
    st = _lab_state(name)
    return st.config, st.netns or _lab_netns(name)


def _lab_netns(name: str) -> str:
    from lab.state import lab_netns

    return lab_netns(name)


def _lab_state(name: str) -> Any:
    """The record (lab.state.LabState) of the lab NAME, found as `lab_target` says; OpsError(USAGE) if none."""
    from lab.state import LabState, LabStateError, check_lab_name, find_lab_dir, lab_netns, not_found

    try:
        check_lab_name(name)
    except LabStateError as e:
        raise OpsError(USAGE, str(e)) from None
    d = find_lab_dir(name)
    if not LabState.exists(d):
        raise OpsError(USAGE, not_found(name, f"for a lab the registry does not know, pass --config with its "
                                              f"config and --netns {lab_netns(name)}"))
    try:
        return LabState.load(d)
    except LabStateError as e:
        raise OpsError(USAGE, f"lab {name}: {e}") from None


def _enter_netns(name: str) -> None:
    """Move this process (before any thread or socket exists) into network namespace `name`."""
    try:
        enter_netns(name)
    except OSError as e:
        raise OpsError(USAGE, f"network namespace {name}: {e.strerror} (root needed)") from None


def _table(rows: list[list[Any]], headers: list[str]) -> str:
    """The operator commands' tables: every cell cleaned (proto.termsafe: cells come from masters' and clients'
    answers; a newline in one no longer breaks the table, an ESC sequence never reaches the terminal)."""
    from tabulate import tabulate

    rows = [[None if v is None else clean(v) for v in row] for row in rows]
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True, missingval="-")


def _check_address(address: str) -> str:
    """`HOST:PORT` for --address: a host name or IPv4 address without spaces or URL characters, a port in
    1..65535; OpsError(USAGE) naming what is wrong (it used to surface as http.client.InvalidURL)."""
    host, _, port = address.rpartition(":")
    if not host or any(c in host for c in " /?#@[]\\") or not host.isprintable():
        raise OpsError(USAGE, f"--address {address!r}: expected HOST:PORT (a host name or IPv4 address)")
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise OpsError(USAGE, f"--address {address!r}: port {port!r} is not a number in 1..65535")
    return address


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=1, sort_keys=True))


def _when(at: Any) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if at else "-"


# ---------------------------------------------------------------------------------------------- targets
def resolve(fabric: Any, link: str | None, switch: str | None) -> tuple[str, str, tuple[int, ...]]:
    """(kind, canonical name, link indices) of a drain target; OpsError naming what is wrong: USAGE for a
    `--link` that is not SWITCH:PORT-SWITCH:PORT (like any malformed argument), UNKNOWN for a well-formed
    name of no switch or link of the fabric."""
    if switch is not None:
        names = {s.name for s in fabric.switches}
        if switch not in names:
            raise OpsError(UNKNOWN, f"unknown switch {switch!r} in fabric {fabric.name!r}")
        return "switch", switch, fabric.links_of(switch)
    assert link is not None
    # a switch name may itself contain '-': the separator is the '-' that follows ':<digits>'
    m = re.fullmatch(r"([^:\s]+):(\d+)-([^:\s]+):(\d+)", link, re.ASCII)     # \d: ASCII digits only
    if m is None:
        raise OpsError(USAGE, f"link {link!r}: expected SWITCH:PORT-SWITCH:PORT, e.g. tor-1-1:1-agg-1-1:1")
    parsed = [(m[1], int(m[2])), (m[3], int(m[4]))]
    names = {s.name for s in fabric.switches}
    for sw, _port in parsed:
        if sw not in names:
            raise OpsError(UNKNOWN, f"link {link!r}: unknown switch {sw!r}")
    la = fabric.link_at(*parsed[0])
    # both ends the same port ("spine-1:1-spine-1:1") names no link, though link_at agrees with itself
    if la is None or la is not fabric.link_at(*parsed[1]) or parsed[0] == parsed[1]:
        raise OpsError(UNKNOWN, f"link {link!r}: no link between {parsed[0][0]}:{parsed[0][1]} and "
                                f"{parsed[1][0]}:{parsed[1][1]} in fabric {fabric.name!r}")
    return "link", la.name, (la.index,)


def _lsd_states(fabric: Any, lsd: dict[str, Any]) -> bytes:
    from proto.lsd import LinkState

    by_name = lsd.get("links", {})
    code = {"up": LinkState.UP, "down": LinkState.DOWN, "drained": LinkState.DRAINED,
            "drained_down": LinkState.DRAINED_DOWN}
    return bytes(code.get(by_name.get(link.name, "down"), LinkState.DOWN) for link in fabric.links)


# ---------------------------------------------------------------------------------------------- drain
def _warn_not_saved(mid: str, answer: dict[str, Any]) -> None:
    if answer.get("not_saved"):
        print(f"firepath: warning: master {mid} could not save its drain notes ({answer['not_saved']}): the "
              "change is in force and replicated, but would be lost if every replica restarted", file=sys.stderr)


def cmd_drain(args: argparse.Namespace, fabric: Any) -> int:
    from controller.ops.dryrun import drain_impact
    from proto.lsd import LinkState

    kind, name, links = resolve(fabric, args.link, args.switch)
    for field, value, limit in (("--reason", args.reason, MAX_REASON), ("--who", args.who, MAX_WHO)):
        if value is not None and len(value) > limit:
            raise OpsError(USAGE, f"{field}: {len(value)} characters, at most {limit}")
        if value is not None and not value.isprintable():      # "at most 200 printable characters (got 3)"
            bad = next(c for c in value if not c.isprintable())
            raise OpsError(USAGE, f"{field}: the non-printable character {bad!r} at position "
                                  f"{value.index(bad) + 1} (printable characters only: no tab, newline or control)")
    token = None if args.dry_run else read_token(fabric, args.token_file)
    masters = Masters(fabric, args.timeout)
    mid, lsd = masters.get("/v1/lsd")
    states = _lsd_states(fabric, lsd)
    impact = drain_impact(fabric, states, links, alone=kind == "link")
    refused = bool(impact.disconnected) and not args.force
    report = _impact_json(fabric, impact, lsd, mid)
    # every link of the target drained in the LSD already as this drain would leave it: no link would change
    # (at most its note). A link drain takes a link of a drained switch (DRAINED) out of use: that changes it.
    done = (LinkState.DRAINED_DOWN,) if kind == "link" else (LinkState.DRAINED, LinkState.DRAINED_DOWN)
    drained = bool(links) and all(states[i] in done for i in links)
    if args.dry_run or refused:
        if args.json:
            _print_json({"dry_run": args.dry_run, "refused": refused, "target": {"kind": kind, "name": name},
                         "already_drained": drained, "impact": report})
        else:
            print(f"{'dry run: ' if args.dry_run else ''}drain {kind} {name}: {len(links)} link(s)"
                  + (" — already drained: no link would change (`firepath drains` shows who, when, why)"
                     if drained else ""))
            print(render_impact(impact, lsd, mid, all_pairs=args.all_pairs))
        if refused:
            n = len(impact.disconnected)
            print(f"firepath drain: refused: {kind} {name} would disconnect {n} ToR pair(s) "
                  f"({_pairs(impact.disconnected)}); use --force to drain anyway", file=sys.stderr)
            return REFUSED
        return OK
    who = args.who or _default_who()[:MAX_WHO]
    body: dict[str, Any] = {kind: name, "who": who}
    if args.reason:
        body["reason"] = args.reason
    mid, answer = masters.write("POST", "/v1/drain", body, token)  # type: ignore[arg-type]
    _warn_not_saved(mid, answer)
    if args.json:
        _print_json({"dry_run": False, "refused": False, "target": {"kind": kind, "name": name},
                     "impact": report, "answer": answer})
        return OK
    if answer.get("outcome") in ("already_drained", "reason_changed"):
        # drained before: the LSD and the links did not change, only (maybe) the note; the master's message
        # names the note it had (who, since when, why) and what became of it
        print(f"{answer.get('message')} (master {mid}, LSD version {answer.get('version')}, "
              f"term {answer.get('term')})")
        return OK
    print(f"drained {kind} {name}: {len(answer.get('links', []))} link(s), LSD version {answer.get('version')} "
          f"on master {mid} (term {answer.get('term')})")
    print("  " + _impact_line(impact))
    for sw, pairs in impact.still_relaying.items():
        print(f"  warning: {sw} still relays {len(pairs)} ToR pair(s) ({_pairs(pairs)}): no other path")
    return OK


def cmd_undrain(args: argparse.Namespace, fabric: Any) -> int:
    kind, name, _links = resolve(fabric, args.link, args.switch)
    token = read_token(fabric, args.token_file)
    mid, answer = Masters(fabric, args.timeout).write("DELETE", "/v1/drain", {kind: name}, token)
    _warn_not_saved(mid, answer)
    if args.json:
        _print_json(answer)
        return OK
    still = answer.get("still_drained") or {}
    if answer.get("lifted") == []:
        print(f"{kind} {name} was not drained (master {mid}, LSD version {answer.get('version')})")
    else:
        print(f"undrained {kind} {name}: LSD version {answer.get('version')} on master {mid} "
              f"(term {answer.get('term')})")
    for link, notes in still.items():
        by = ", ".join(f"{n['kind']} {n['target']}" for n in notes)
        print(f"  still drained: {link} (by {by})")
    return OK


def _default_who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _pairs(pairs: list[Any], limit: int = 6) -> str:
    text = ", ".join(f"{p.src}->{p.dst}" for p in pairs[:limit])
    return text + (f" and {len(pairs) - limit} more" if len(pairs) > limit else "")


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def _impact_line(impact: Any) -> str:
    worst = impact.worst
    changed = [p for p in impact.pairs if p.changed]
    w = (f", worst {worst.src}->{worst.dst} loses {_pct(worst.lost)} of its capacity"
         if worst is not None and worst.lost > 0 else ", no pair loses capacity")
    return (f"{len(impact.newly_out)} of {impact.up_links} UP links out ({_pct(impact.links_lost)}); "
            f"{len(impact.pairs)} ToR pairs: {len(changed)} affected, {len(impact.disconnected)} disconnected{w}")


def render_impact(impact: Any, lsd: dict[str, Any], mid: str, all_pairs: bool = False) -> str:
    lines = [f"from LSD version {lsd.get('version')} of master {mid}: " + _impact_line(impact)]
    rows = [[p.src, p.dst, f"{p.width_before} -> {p.width_after}", f"{p.paths_before} -> {p.paths_after}",
             f"{p.capacity_before:g} -> {p.capacity_after:g}", _pct(p.lost),
             "DISCONNECTED" if p.disconnected else ""]
            for p in impact.pairs if all_pairs or p.changed]
    if rows:
        lines.append(_table(rows, ["src ToR", "dst ToR", "ECMP width", "paths", "capacity (links)", "lost",
                                   "note"]))
    else:
        lines.append("no ToR pair changes (ECMP width, paths and capacity all stay)")
    for sw, pairs in impact.still_relaying.items():
        lines.append(f"warning: {sw} stays in the path of {len(pairs)} ToR pair(s) ({_pairs(pairs)}): "
                     "nothing else reaches them, so its drain (soft) cannot move that traffic")
    return "\n".join(lines)


def _impact_json(fabric: Any, impact: Any, lsd: dict[str, Any], mid: str) -> dict[str, Any]:
    return {"master": mid, "version": lsd.get("version"),
            "links": [fabric.links[i].name for i in impact.drained],
            "links_up_taken": [fabric.links[i].name for i in impact.newly_out],
            "up_links": impact.up_links, "links_lost": round(impact.links_lost, 6),
            "pairs": [p.to_json() for p in impact.pairs],
            "disconnected": [[p.src, p.dst] for p in impact.disconnected],
            "drained_switches": list(impact.drained_switches),
            "still_relaying": {sw: [[p.src, p.dst] for p in pairs] for sw, pairs in impact.still_relaying.items()}}


# ---------------------------------------------------------------------------------------------- reads
def cmd_drains(args: argparse.Namespace, fabric: Any) -> int:
    mid, answer = Masters(fabric, args.timeout).get("/v1/drains")
    if args.json:
        _print_json(answer)
        return OK
    drains = answer.get("drains", [])
    print(f"{len(drains)} drain(s) in force, {len(answer.get('drained_links', []))} link(s) drained "
          f"(master {mid}, LSD version {answer.get('version')})")
    if drains:
        rows = [[d["kind"], d["target"], len(d["links"]), d.get("who"), _when(d.get("at")), d.get("reason")]
                for d in drains]
        print(_table(rows, ["kind", "target", "links", "who", "when (UTC)", "reason"]))
    return OK


def _evidence(e: Any) -> str:
    return f"{e.get('a')}/{e.get('b')}" if isinstance(e, dict) else "-"


def cmd_guard(args: argparse.Namespace, fabric: Any) -> int:
    """GET /v1/guard (docs/API.md) from the serving master; `--confirm`: POST /v1/guard/confirm with the admin
    token, which publishes every held link DOWN in one LSD version (ARCHITECTURE.md, "drastic-change guard")."""
    masters = Masters(fabric, args.timeout)
    if args.links and not args.confirm:
        raise OpsError(USAGE, "guard: LINK names go with --confirm (to confirm only those held links)")
    if args.confirm:
        token = read_token(fabric, args.token_file)
        mid, answer = masters.write("POST", "/v1/guard/confirm", {"links": args.links} if args.links else {},
                                    token)
        if args.json:
            _print_json(answer)
            return OK
        released = answer.get("released", [])
        print(f"released {len(released)} held link(s) as DOWN: LSD version {answer.get('version')} on master {mid}"
              + (f": {', '.join(released)}" if released else " (the guard held none)"))
        return OK
    mid, g = masters.get("/v1/guard")
    if args.json:
        _print_json(g)
        return OK
    held = g.get("held_links", [])
    print(f"guard (master {mid}, LSD version {g.get('version')}): {len(held)} link(s) held; it holds downs reported "
          f"by one end only beyond {g.get('link_budget')} link(s) or {g.get('switch_budget')} switch(es) cut off "
          f"within {g.get('window')} s (down_share {_pct(g.get('down_share', 0))}); "
          f"{g.get('recent_uncorroborated')} such down(s) recently, {g.get('holds')} hold(s) so far")
    if held:
        rows = [[h["link"], f"{h['held_for']:.1f}s", h.get("state"), _evidence(h.get("evidence"))] for h in held]
        print(_table(rows, ["link", "held for", "LSD state", "evidence a/b"]))
        print("if they are really down: `firepath guard --confirm [LINK ...]` publishes them (or the links named) "
              "DOWN now")
    return OK


def cmd_damping(args: argparse.Namespace, fabric: Any) -> int:
    """GET /v1/damping (docs/API.md) from the serving master: the links held DOWN for flapping and when they
    would be reused if they flap no more, and the switches whose UPs wait for their rate limit."""
    mid, d = Masters(fabric, args.timeout).get("/v1/damping")
    if args.json:
        _print_json(d)
        return OK
    held, deferred = d.get("suppressed", []), d.get("deferred", [])
    print(f"damping (master {mid}, LSD version {d.get('version')}): {len(held)} link(s) held down, "
          f"{len(deferred)} switch(es) rate-limited; {d.get('flaps')} flap(s), {d.get('suppressions')} "
          f"suppression(s), {d.get('storms')} correlated drop(s) not charged so far")
    if held:
        rows = [[h["link"], h.get("penalty"), h.get("flaps"), f"{h['suppressed_for']:.1f}s", f"{h['reuse_in']:.1f}s",
                 _when(h.get("reuse_at")), h.get("state"), _evidence(h.get("evidence"))] for h in held]
        print(_table(rows, ["link", "penalty", "flaps", "held for", "reuse in", "reuse at (UTC)", "LSD state",
                            "evidence a/b"]))
    if deferred:
        print(_table([[x["switch"], f"{x['due_in']:.3f}s", x.get("deferred")] for x in deferred],
                     ["switch (UPs waiting)", "due in", "batches deferred"]))
    return OK


def cmd_lsd(args: argparse.Namespace, fabric: Any) -> int:
    path = "/v1/lsd" if args.since is None else f"/v1/lsd?since={args.since}"
    mid, answer = Masters(fabric, args.timeout).get(path)
    if args.json:
        _print_json(answer)
        return OK
    links = answer.get("links", {})
    counts = {s: sum(1 for v in links.values() if v == s) for s in ("up", "down", "drained", "drained_down")}
    scope = "full" if answer.get("full") else f"changes since version {answer.get('since')}"
    print(f"LSD version {answer.get('version')} (term {answer.get('term')}, master {mid}), {scope}: "
          f"{len(links)} link(s): {counts['up']} up, {counts['down']} down, {counts['drained']} drained"
          + (f", {counts['drained_down']} drained and out of use" if counts["drained_down"] else ""))
    if answer.get("reason"):
        print(f"  ({answer['reason']})")
    shown = [(n, s) for n, s in links.items() if args.all or s != "up" or args.since is not None]
    if shown:
        print(_table([[n, s] for n, s in shown], ["link", "state"]))
    return OK


def cmd_clients(args: argparse.Namespace, fabric: Any) -> int:
    from controller.ops.clientrest import read_clients

    mid, answer = Masters(fabric, args.timeout).get("/v1/clients")
    rows = answer.get("clients", [])
    term, version = answer.get("term"), answer.get("version")
    own = (read_clients(fabric, version, bool(args.lab), args.timeout)
           if getattr(args, "lab", None) or getattr(args, "client_rest", False) else None)
    if args.json:
        _print_json(answer if own is None else {**answer, "own": own})
        return OK
    alive = sum(1 for c in rows if c.get("alive"))
    print(f"{alive}/{len(rows)} clients alive (master {mid}, term {term}, LSD version {version})")
    if own is None:
        print(_table([[c["switch"], c.get("address"), "yes" if c.get("alive") else "NO",
                       _age(c.get("last_report_age")), _confirmed(c, term), c.get("sent_version"),
                       "unknown" if c.get("lag") is None else c["lag"]]
                      for c in rows], ["switch", "address", "alive", "report age", "confirmed", "sent", "lag"]))
        if any(c.get("lag") is None for c in rows):
            print("confirmed: the version the client last said it holds in this term (an LsdRequest: clients ask "
                  "only on a gap); lag unknown: nothing confirmed since the last update sent to it; --client-rest "
                  "(or --lab) reads each client's own version")
        return OK if alive == len(rows) else BAD_NEWS

    def mine(name: str, key: str) -> Any:
        r = own.get(name)
        return "no answer" if r is None or "error" in r else r[key]

    print(_table([[c["switch"], c.get("address"), "yes" if c.get("alive") else "NO",
                   _age(c.get("last_report_age")), c.get("sent_version"), mine(c["switch"], "lsd_version"),
                   mine(c["switch"], "programmed_version"), mine(c["switch"], "lag"),
                   mine(c["switch"], "programmed_lag")]
                  for c in rows], ["switch", "address", "alive", "report age", "sent", "holds", "programmed",
                                   "lag", "programmed lag"]))
    print("holds / programmed: the LSD version the client says it holds / has installed in its switch (its own "
          "REST, read after the master's); lag: the master's version minus that (- while it holds none)")
    behind = [c["switch"] for c in rows if c.get("alive") and mine(c["switch"], "lag") != 0
              or c.get("alive") and mine(c["switch"], "programmed_lag") != 0]
    return OK if alive == len(rows) and not behind else BAD_NEWS


def _confirmed(c: dict[str, Any], term: Any) -> Any:
    """The version the client itself last reported holding, in the master's term (None: none)."""
    v = c.get("acked_version")
    return v if c.get("acked_term") == term and isinstance(v, int) and v >= 0 else None


def _age(x: Any) -> str | None:
    return None if x is None else f"{x:.1f}s"


def cmd_masters(args: argparse.Namespace, fabric: Any) -> int:
    masters = Masters(fabric, args.timeout)
    answers = masters.ask_all("/v1/masters")
    out: dict[str, Any] = {}
    for mid, a in answers.items():
        if isinstance(a, Exception):
            out[mid] = {"url": masters.url[mid], "error": str(getattr(a, "reason", a))}
        else:
            out[mid] = {"url": masters.url[mid], **(a[1] if isinstance(a[1], dict) else {"error": a[1]})}
    serving = [mid for mid, v in out.items() if v.get("role") == "master"]
    if args.json:
        _print_json({"masters": out, "serving": serving})
    else:
        rows = []
        for mid, v in out.items():
            if "error" in v:
                rows.append([mid, v["url"], "unreachable", None, None, None, None, v["error"]])
                continue
            me = next((r for r in v.get("replicas", []) if r.get("self")), {})
            rows.append([mid, v["url"], v.get("role"), v.get("term"), v.get("version"), v.get("leader"),
                         me.get("state"), master_note(v)])
        print(_table(rows, ["master", "REST", "role", "term", "version", "leader", "fmrp", "note"]))
    if not serving:
        print("firepath masters: no master serving", file=sys.stderr)
        return UNREACHABLE
    return OK if len(serving) == 1 else BAD_NEWS


# ---------------------------------------------------------------------------------------------- routes
def cmd_routes(args: argparse.Namespace, fabric: Any) -> int:
    try:
        sw = fabric.switch(args.switch)
    except KeyError:
        raise OpsError(UNKNOWN, f"unknown switch {args.switch!r} in fabric {fabric.name!r}") from None
    prefix = None
    if args.prefix:
        try:       # the client's REST parses it the same way (host bits set: refused, not guessed)
            prefix = parse_prefix(args.prefix)
        except ValueError as e:
            raise OpsError(USAGE, str(e)) from None
    address = args.address
    if address is None:
        if not sw.rest_port:
            raise OpsError(USAGE, f"switch {sw.name} has no rest_port in the config: pass --address")
        address = f"127.0.0.1:{sw.rest_port}"
    elif ":" not in address:
        if not sw.rest_port:
            raise OpsError(USAGE, f"--address {address!r} has no port and switch {sw.name} has no rest_port in "
                                  "the config: pass HOST:PORT")
        address = f"{address}:{sw.rest_port}"
    address = _check_address(address)
    query = []
    if prefix is not None:
        query.append(f"prefix={prefix}")
    if args.no_ovs:
        query.append("ovs=0")
    view = client_get(address, "/v1/routes" + ("?" + "&".join(query) if query else ""), args.timeout + 3)
    rows = view.get("routes", [])
    if prefix is not None and not rows:
        if args.json:
            _print_json(view)
        raise OpsError(UNKNOWN, f"{sw.name} has no route for {prefix}")
    bad = [r for r in rows if r["status"] not in ("ok", "excluded", "unknown")]
    if args.json:
        _print_json(view)
    else:
        print(render_routes(view))
    if not args.no_ovs and not view.get("ovs_read"):
        print(f"firepath routes: OVS of {sw.name} not read: {view.get('ovs_error')}", file=sys.stderr)
        return UNREACHABLE
    return BAD_NEWS if bad else OK


def _hops(hops: list[dict[str, Any]], weights: bool = False) -> str:
    out = []
    for h in hops:
        s = f"{h.get('neighbour') or '?'} (port {h.get('port')})"
        if weights:
            s += f" w={h.get('weight')}"
        out.append(s)
    return ", ".join(out) if out else "(none)"


def render_routes(view: dict[str, Any]) -> str:
    rows = []
    for r in view.get("routes", []):
        comp, inst = r.get("computed"), r.get("installed")
        mark = {"ok": "", "excluded": "~", "unknown": "?"}.get(r["status"], "!")
        rows.append([mark + r["prefix"],
                     _hops(comp["next_hops"]) if comp else "-",
                     f"{inst['group']:#x}" if inst and inst.get("group") is not None else "-",
                     _hops(inst["buckets"], weights=True) if inst else "-",
                     r["status"] + (f": {r['detail']}" if r.get("detail") and r["status"] != "ok" else "")])
    diff = sum(1 for r in view.get("routes", []) if r["status"] not in ("ok", "excluded", "unknown"))
    head = (f"{view.get('switch')}: {len(rows)} route(s), LSD version {view.get('lsd_version')}, "
            f"programmed {view.get('programmed_version')}, "
            + ("OVS read over the client's OpenFlow connection" if view.get("ovs_read") else "OVS not read")
            + (f"; {diff} difference(s) marked !" if diff else "; no differences"))
    if view.get("excluded_ports"):
        head += f"; ports excluded by local repair: {view['excluded_ports']} (marked ~)"
    if view.get("config_mismatch"):
        # a switch moved to a next config its masters do not serve (or left on an aborted rollout): its OVS
        # flows are what it kept, nothing computed — every route shows as a difference, say why (tester)
        head += (f"\nrefuses the masters' LSD: they serve config {str(view['config_mismatch'])[:12]}..., not the one "
                 f"this client runs; its switch forwards on the flows it kept (computed: none) until it is served "
                 f"its own config (the rollout's commit, or a reload onto the running one)")
    return head + "\n" + _table(rows, ["prefix", "computed next hops", "OVS group", "OVS buckets", "status"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="firepath")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

