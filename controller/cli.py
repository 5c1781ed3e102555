"""`firepath master`: run one master replica.

    firepath master --config FABRIC.yaml --id m1 [--state-dir D] [--bind ADDR] [--client-port P]
                    [--peer-port P] [--rest-port P] [--log-level LEVEL] [--log-format kv|json]
                    [--election auto|single|fmrp]
    firepath master --config FABRIC.yaml --id m1 --health [--timeout S]

--config, --id and --state-dir default to $FIREPATH_CONFIG, $FIREPATH_ID and $FIREPATH_STATE_DIR (the
container image sets them). Bind address and ports default to the master's entry in the config.
`--health` runs nothing: it asks the replica's REST API (`/v1/lsd/version` at its configured address and
rest_port, or --bind/--rest-port) and exits 0 if it answers with a role, 1 otherwise (a container
HEALTHCHECK; a backup is healthy). Logs are structured (key=value, or
JSON lines with --log-format json) on stderr. SIGTERM/SIGINT shut the replica down cleanly (the role
driver may announce a step-down first). Also runnable as `python -m controller.cli master ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from proto.argtypes import ipv4, port, positive_seconds

DEFAULT_STATE_ROOT = Path("run")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("master", help="run a Firepath master replica",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    env = os.environ.get
    p.add_argument("--config", default=env("FIREPATH_CONFIG"), required=not env("FIREPATH_CONFIG"),
                   help="fabric YAML (default $FIREPATH_CONFIG)")
    p.add_argument("--id", default=env("FIREPATH_ID"), required=not env("FIREPATH_ID"),
                   help="master id, one of the config's masters (default $FIREPATH_ID)")
    p.add_argument("--state-dir", default=env("FIREPATH_STATE_DIR"),
                   help="durable state directory (default $FIREPATH_STATE_DIR, else run/<fabric>/<id>)")
    p.add_argument("--bind", type=ipv4, help="bind address (default: the master's address in the config)")
    p.add_argument("--client-port", type=port, help="UDP port for clients")
    p.add_argument("--peer-port", type=port, help="UDP port for the other masters")
    p.add_argument("--rest-port", type=port, help="TCP port of the REST API / metrics")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="kv", choices=["kv", "json"])
    p.add_argument("--election", default="auto", choices=["auto", "single", "fmrp"],
                   help="role driver: fmrp (elect among the configured masters), single (no election: "
                        "become master after the init wait; only for a config with one master); "
                        "auto (default) = fmrp when the config has several masters")
    p.add_argument("--health", action="store_true",
                   help="only check that this replica's REST API answers (exit 0) or not (exit 1)")
    p.add_argument("--timeout", type=positive_seconds, default=2.0, help="--health: seconds to wait (default 2)")
    p.set_defaults(func=run)


def health(rest_url: str, timeout: float) -> str | None:
    """None if `rest_url` + /v1/lsd/version answers JSON with a `role`, else why not (one line)."""
    from controller.ops.fetch import fetch, loads

    try:
        status, raw = fetch(f"{rest_url}/v1/lsd/version", timeout=timeout, limit=1 << 20)
        if status != 200:
            return f"{rest_url}/v1/lsd/version: HTTP {status}"
        body = loads(raw)
    except Exception as e:  # noqa: BLE001 - any failure is "unhealthy", reported as one line
        return f"{rest_url}: {type(e).__name__}: {getattr(e, 'reason', e)}"
    if not isinstance(body, dict) or "role" not in body:
        return f"{rest_url}/v1/lsd/version: no role in the answer"
    return None


def run(args: argparse.Namespace) -> int:
    from controller.durable import DurableStateError, RolloutStore, StateStore
    from controller.server import MasterServer, serve
    from proto.auth import KeySet
    from proto.config import ConfigError, parse_file_text, read_config_text
    from proto.logsetup import kv, setup_logging

    setup_logging(args.log_level, args.log_format)
    log = logging.getLogger("firepath.master")
    try:
        text = read_config_text(args.config)
        fabric = parse_file_text(args.config, text)
        fabric.master(args.id)
    except ConfigError as e:
        print(f"firepath master: {e}", file=sys.stderr)
        return 2
    except KeyError:
        print(f"firepath master: {args.config}: no master with id {args.id!r} "
              f"(have: {', '.join(m.id for m in fabric.masters)})", file=sys.stderr)
        return 2
    if args.health:
        me = fabric.master(args.id)
        host = args.bind if args.bind not in (None, "", "0.0.0.0") else str(me.address)
        problem = health(f"http://{host}:{args.rest_port or me.rest_port}", args.timeout)
        if problem:
            print(f"firepath master {args.id}: unhealthy: {problem}", file=sys.stderr)
            return 1
        return 0
    try:
        keyring = KeySet.from_security(fabric.security)
        keyring.check_usable_by(args.id, master=True)
    except (OSError, ValueError) as e:
        print(f"firepath master: key file: {e}", file=sys.stderr)
        return 2
    if fabric.security.admin_token_file is not None:
        from proto.auth import AuthError, read_admin_token

        try:                                   # the REST reads it at start: say where it is named, before
            read_admin_token(fabric.security.admin_token_file, fabric.security.admin_token_where)
        except AuthError as e:
            print(f"firepath master: {e}", file=sys.stderr)
            return 2
    state_dir = Path(args.state_dir) if args.state_dir else DEFAULT_STATE_ROOT / fabric.name / args.id
    election = args.election
    if election == "auto":
        election = "fmrp" if len(fabric.masters) > 1 else "single"
    elif election == "single" and len(fabric.masters) > 1:
        # Every replica would make itself master of durable_term + 1: several masters in the same term.
        print(f"firepath master: --election single needs a config with one master; {args.config} has "
              f"{len(fabric.masters)} ({', '.join(m.id for m in fabric.masters)}): use --election fmrp/auto",
              file=sys.stderr)
        return 2
    driver_factory = None                      # MasterServer's default: SingleMasterDriver
    if election == "fmrp":
        from controller.roles import FmrpDriver

        def driver_factory(core, store):  # type: ignore[no-untyped-def]
            return FmrpDriver(core, store.load().term)

    try:
        # a corrupt or unreadable state file (a vote for no master of this fabric): one line, before any socket
        StateStore(state_dir, [m.id for m in fabric.masters]).load()
    except DurableStateError as e:
        print(f"firepath master: state: {e}", file=sys.stderr)
        return 2
    # restarted on the config it had prepared (a file edited in place): it runs the one it ran, holding this one
    # until its leader runs it — after an abort it missed, it must not run what the fabric does not
    rollouts = RolloutStore(state_dir)
    running = rollouts.restart_config(fabric)
    if running is None:
        try:
            rollouts.save_running(fabric.digest, fabric.source, text)
        except OSError as e:
            log.error(kv("rollout_record_failed", what="save_running", error=e))
    server = MasterServer(running or fabric, args.id, keyring, state_dir, bind=args.bind, client_port=args.client_port,
                          peer_port=args.peer_port, rest_port=args.rest_port, driver_factory=driver_factory)
    if running is not None:
        server.hold_pending(fabric, text, sole=election == "single")
    log.info(kv("election", mode=election, masters=len(fabric.masters)))


    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda s=sig: (log.info(kv("signal", name=s.name)), stop.set()))

        # SIGHUP: read the config file again (issue #21), off the loop; a bad file is refused, changes nothing
        loop.add_signal_handler(signal.SIGHUP, server.reload_signal)
        await serve(server, stop)

    try:
        asyncio.run(main())
    except DurableStateError as e:
        # the saved drain notes (drains.msgpack), read by MasterServer.start before any socket: one line, as for
        # the state file above (a tester's corrupt file stopped the start with a Python traceback, status 1)
        print(f"firepath master: state: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        log.error(kv("fatal", error=e))
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="firepath")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
