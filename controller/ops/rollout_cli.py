"""`firepath config rollout NEXT.yaml`: drive a two-phase config rollout (issue #21) and show it.

    firepath config rollout NEXT.yaml (--config CUR.yaml | --lab NAME)            # prepare on every replica
    firepath config rollout NEXT.yaml (--config ... | --lab ...) --status         # who holds which config
    firepath config rollout NEXT.yaml (--config ... | --lab ...) --commit         # the masters switch
    firepath config rollout NEXT.yaml (--config ... | --lab ...) --abort          # back to the current one

NEXT.yaml is validated here first (errors name file, line and field; exit 2, nothing sent), and so is
what the masters would refuse at prepare: a change of the masters or the distribution, or another key
set than CUR.yaml's. Prepare and abort go to every configured master (each replica holds the next config),
commit to the serving master (following `leader`). A prepare that did not reach every replica exits 3 naming
the unreachable one (it would not follow the commit: prepare again once it is back). An abort that reached
the serving master exits 0 and warns naming each unreachable replica: the fabric stays on the running
config, and a replica restarted comes back on it (controller.durable.RolloutStore), even on the next
config's file; one still running behind a partition keeps the next one prepared until aborted again. The masters read NEXT.yaml from
its absolute path on their host (the config pipeline puts it there; in a lab it is this machine).
After a prepare the switches move to NEXT.yaml (SIGHUP or restart of each client on it, e.g. `firepath
lab reload`); `--status` shows which switch holds which config and what blocks the commit.
Exit codes as the operator commands (controller.ops.api): 6 = commit refused (the blockers are listed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from controller.ops.api import (
    BAD_NEWS,
    DENIED,
    OK,
    REFUSED,
    UNREACHABLE,
    USAGE,
    Masters,
    OpsError,
    read_token,
    request,
)
from proto.argtypes import positive_seconds
from proto.config import Fabric


def add_rollout_parser(actions: Any) -> None:
    p = actions.add_parser("rollout", help="roll a new fabric config out in two phases (prepare, commit, abort)",
                           description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("next", type=Path, help="the next fabric config (YAML)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="the running fabric config (masters' REST addresses)")
    where.add_argument("--lab", metavar="NAME", help="a local `firepath lab`: its config, token and namespace")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--status", action="store_true", help="only show the rollout")
    what.add_argument("--commit", action="store_true", help="switch the fabric to NEXT.yaml")
    what.add_argument("--abort", action="store_true", help="drop NEXT.yaml, stay on the running config")
    p.add_argument("--token-file", help="admin token file (default: as `firepath drain`)")
    p.add_argument("--netns", help="run the requests inside this network namespace")
    p.add_argument("--timeout", type=positive_seconds, default=2.0, help="per-request timeout in s (positive; default 2)")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=cmd_rollout, command="config rollout")


def cmd_rollout(args: argparse.Namespace) -> int:
    try:
        return _rollout(args)
    except (AttributeError, KeyError, TypeError, IndexError, ValueError) as e:
        # JSON of another shape than firepath serves (another program on the port, another version)
        print(f"firepath config rollout: unexpected answer from a master REST ({type(e).__name__}: {e}); is "
              f"firepath of this version serving there?", file=sys.stderr)
        return UNREACHABLE


def _rollout(args: argparse.Namespace) -> int:
    from controller.ops.cli import _print_json, _setup, _table
    from proto.config import ConfigError, load_fabric

    try:
        fabric = _setup(args)
        try:
            nxt = load_fabric(args.next)
        except (ConfigError, OSError) as e:
            raise OpsError(USAGE, str(e)) from None
        if not (args.status or args.commit or args.abort):
            check_next(fabric, nxt)
        masters = Masters(fabric, args.timeout)
        path = str(args.next.resolve())
        if args.status:
            mid, st = masters.get("/v1/rollout")
            code = OK
        elif args.commit:
            mid, st, code = _commit(masters, read_token(fabric, args.token_file))
        else:
            route, body = ("/v1/rollout/abort", None) if args.abort else ("/v1/rollout/prepare", {"config": path})
            mid, st, code = _to_all(masters, route, body, read_token(fabric, args.token_file), abort=args.abort)
    except OpsError as e:
        print(f"firepath config rollout: {e}", file=sys.stderr)
        return e.code
    if args.json:
        _print_json(st)
        return code
    print(render(st, mid, nxt.digest, _table))
    return code


def check_next(running: Fabric, nxt: Fabric) -> None:
    """What every master would refuse at prepare, found before anything is sent: a next config that changes
    the masters or the distribution, or names another key set than the running config's file
    (proto.keyroll.keys_for_reload). OpsError(USAGE) with the file:line: field error."""
    from controller.rollout import IncompatibleConfig, check_compatible
    from proto.auth import KeySet
    from proto.config import ConfigError, line_of
    from proto.keyroll import keys_for_reload

    try:
        if nxt.digest != running.digest:
            check_compatible(running, nxt)
        # the same config from the running file is a key-only change, or nothing: the masters say which
        keys_for_reload(KeySet.from_security(running.security), nxt, running.digest, running.source)
    except IncompatibleConfig as e:
        raise OpsError(USAGE, str(ConfigError(e.source, line_of(e.source, e.field), e.field, e.problem))) from None
    except ValueError as e:             # ConfigError, AuthError (a key file): named
        raise OpsError(USAGE, str(e)) from None


def _to_all(masters: Masters, route: str, body: Any, token: str, abort: bool = False) -> tuple[str, dict, int]:
    """POST to every replica; (a replica's id, its rollout status, exit code). Errors are printed. An
    unreachable replica is exit 3 for a prepare; for an `abort` a warning, when the serving master took it
    (it alone decides what the fabric runs), else exit 3 (see the module doc)."""
    answers: dict[str, Any] = {}
    code = OK
    missed: dict[str, str] = {}
    for mid, url in masters.url.items():
        try:
            status, ans = request(url + route, "POST", body, token, masters.timeout)
        except (OSError, ValueError) as e:
            missed[mid] = str(getattr(e, "reason", e))
            if not abort:
                print(f"  {mid}: unreachable: {missed[mid]}", file=sys.stderr)
                code = max(code, UNREACHABLE)
            continue
        if status in (401, 403):
            raise OpsError(DENIED, f"master {mid} refused the token: {ans.get('error') if isinstance(ans, dict) else ans}")
        if status == 400:
            raise OpsError(USAGE, f"master {mid}: {ans.get('error') if isinstance(ans, dict) else ans}")
        if status != 200:
            print(f"  {mid}: HTTP {status}: {ans.get('error') if isinstance(ans, dict) else ans}", file=sys.stderr)
            code = max(code, REFUSED if status == 409 else BAD_NEWS)
            continue
        answers[mid] = ans
        print(f"  {mid}: {ans.get('outcome')}")
    if not answers:
        raise OpsError(UNREACHABLE, "no master answered")
    try:
        mid = masters.serving()
    except OpsError as e:
        if abort and missed:        # which replica serves is unknown: maybe one the abort did not reach
            raise OpsError(UNREACHABLE, f"abort not confirmed: {e}; unreachable: "
                                        f"{', '.join(f'{m} ({why})' for m, why in missed.items())}") from None
        mid = next(iter(answers))
    if abort and missed:
        if mid in missed:           # it answered a moment ago, not the abort: it may still hold the next config
            raise OpsError(UNREACHABLE, f"the serving master {mid} did not get the abort ({missed[mid]}): abort again")
        for m, why in missed.items():
            print(f"firepath config rollout: warning: master {m} did not get the abort (unreachable: {why}); the "
                  f"serving master {mid} did, so the fabric stays on the running config. Restarted, {m} comes back "
                  f"on the running config; if it is still running, abort again once it answers", file=sys.stderr)
    st = answers.get(mid) or next(iter(answers.values()))
    return mid, st["rollout"], code


def _commit(masters: Masters, token: str) -> tuple[str, dict, int]:
    mid = masters.serving()
    for _ in range(3):
        try:
            status, ans = request(masters.url[mid] + "/v1/rollout/commit", "POST", None, token, masters.timeout)
        except (OSError, ValueError) as e:
            raise OpsError(UNREACHABLE, f"master {mid}: {getattr(e, 'reason', e)}") from None
        if status == 409 and isinstance(ans, dict) and ans.get("leader") in masters.url and ans["leader"] != mid:
            mid = ans["leader"]
            continue
        if status in (401, 403):
            raise OpsError(DENIED, f"master {mid} refused the token: {ans.get('error')}")
        if status == 409 and isinstance(ans, dict) and "rollout" in ans:
            print(f"firepath config rollout: master {mid}: {ans['error']}", file=sys.stderr)
            return mid, ans["rollout"], REFUSED
        if status != 200:
            raise OpsError(BAD_NEWS, f"master {mid}: HTTP {status}: {ans}")
        print(f"  {mid}: committed: LSD version {ans.get('version')} on config {str(ans.get('digest'))[:12]}...")
        return mid, ans["rollout"], OK
    raise OpsError(UNREACHABLE, "no master kept mastership")


def render(st: dict, mid: str, next_digest: str, table: Any) -> str:
    """The rollout as a master sees it: phase, digests, per switch the config it holds, the blockers."""
    lines = [f"rollout on master {mid} (LSD version {st.get('version')}, term {st.get('term')}): "
             f"{st['phase']}; running {st['current'][:12]}..., next "
             f"{(st['next'] or '-')[:12]}{'...' if st['next'] else ''}"]
    if st["next"] is not None and st["next"] != next_digest:
        lines.append(f"  note: the prepared next config is not this file's ({next_digest[:12]}...)")
    if st.get("last"):
        lines.append(f"  last rollout: {st['last']['outcome']} ({st['last']['digest'][:12]}...)")
    by: dict[str, list[str]] = {}
    for sw, held in st["switches"].items():
        by.setdefault(held, []).append(sw)
    rows = [[held, len(sws), ", ".join(sws[:10]) + (" ..." if len(sws) > 10 else "")]
            for held, sws in sorted(by.items())]
    lines.append("  " + table(rows, ["holds", "switches", "names"]).replace("\n", "\n  "))
    if st["blockers"]:
        lines.append(f"  commit blocked by {len(st['blockers'])} live switch(es):")
        lines += [f"    {sw}: {why}" for sw, why in sorted(st["blockers"].items())]
    elif st["phase"] == "prepared":
        lines.append("  nothing blocks the commit")
    if st["phase"] == "prepared" and st.get("next_withheld") and by.get("next"):
        lines.append(f"  the {len(by['next'])} switch(es) on the next config are not served its LSD before the commit "
                     f"(they keep their routes: local repair only): {st['next_withheld']} — routing on it next to "
                     f"switches on the running config could loop traffic")
    if st["phase"] == "prepared" and st.get("next_version") is not None and by.get("next"):
        lines.append(f"  the {len(by['next'])} switch(es) on the next config are served its LSD (version "
                     f"{st['next_version']}, carried from the running one)")
    # after an abort (or a switch reloaded onto a file no master prepared) a client may hold another config than
    # the running one: it refuses every LSD of the masters (no reroute but local repair) until it is reloaded. A
    # tester's abort left tor-1-1 so, named only in the table as "other".
    stray = sorted(by.get("other", []) + (by.get("next", []) if st["next"] is None else []))
    if stray:
        lines.append(f"  warning: {len(stray)} switch(es) hold another config than the running one and refuse its "
                     f"LSD (no reroute but local repair): {', '.join(stray[:10])}{' ...' if len(stray) > 10 else ''}; "
                     f"reload them onto the running config (its file, SIGHUP or POST /v1/reload; in a lab `lab "
                     f"reload SWITCH` with the running file back in place)")
    return "\n".join(lines)
