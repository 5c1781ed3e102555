"""`firepath client`: run the Firepath client of one switch.

    firepath client --config FABRIC.yaml --switch NAME [--ovs tcp:127.0.0.1:PORT] [--ovsdb unix:PATH] [--netns NS]
                    [--rest-port P] [--bind ADDR] [--log-level LEVEL]

Connects actively to the switch's Open vSwitch bridge, which listens on `ptcp:PORT:127.0.0.1` (default:
the switch's `ovs:` entry in the config). SIGTERM/SIGINT stop the client cleanly; the switch keeps
forwarding with its last flows (fail_mode=secure) and a restarted client reconciles them without a flush.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
from typing import Any

from proto.argtypes import ipv4, non_negative_float, ovsdb_target, port_or_zero


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("client", help="run the Firepath client of one switch",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="fabric YAML")
    p.add_argument("--switch", required=True, help="this switch's name in the config")
    p.add_argument("--ovs", help="OpenFlow target of the bridge, tcp:IP:PORT (default: from the config)")
    p.add_argument("--netns", help="the switch's network namespace: its OVS (OpenFlow) is reached from "
                   "inside it, and a border's BGP speaker runs in it")
    p.add_argument("--ovsdb", type=ovsdb_target, help="OVSDB of the switch's OVS, unix:PATH or tcp:IP:PORT: the client configures "
                                   "and monitors link OAM (CFM) on its fabric ports there (liveness: oam); "
                                   "without it, ports fall back to software ND")
    p.add_argument("--rest-port", type=port_or_zero,
                   help="REST/metrics port on 127.0.0.1 (default: from the config; 0: none)")
    p.add_argument("--bind", type=ipv4, default="127.0.0.1", help="UDP bind address towards the masters")
    p.add_argument("--restart-hold", type=non_negative_float, default=None, metavar="SECONDS",
                   help="on SIGTERM/SIGINT ask ND peers to keep the links up this long while the client "
                        "restarts (graceful restart; default: the fabric's switch_dead, after which the "
                        "master forgets a silent switch anyway; 0 = links go down at once)")
    p.add_argument("--bgp-dir", help="eBGP border (a switch with `bgp:`): working directory of its ExaBGP "
                   "(config, API socket, log); default <tmp>/firepath-bgp-SWITCH")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", default="kv", choices=["kv", "json"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from client.daemon import ClientDaemon
    from client.of.sockets import parse_target
    from client.rest import RestServer
    from proto.auth import KeySet
    from proto.config import ConfigError, load_fabric
    from proto.logsetup import setup_logging
    from proto.restaddr import CLIENT_REST_HOST

    setup_logging(args.log_level, args.log_format)
    log = logging.getLogger("firepath.client")
    try:
        fabric = load_fabric(args.config)
    except ConfigError as e:
        print(f"firepath client: {e}", file=sys.stderr)
        return 2
    try:
        switch = fabric.switch(args.switch)
    except KeyError:
        print(f"firepath client: {args.config}: no switch named {args.switch!r}", file=sys.stderr)
        return 2
    target = args.ovs or switch.ovs
    if not target:
        print(f"firepath client: {args.config}: switch {args.switch} has no `ovs:` target; pass --ovs",
              file=sys.stderr)
        return 2
    try:
        parse_target(target)
    except ValueError as e:
        hint = " (unix sockets are not supported: make the bridge listen on ptcp:PORT:127.0.0.1)" \
            if target.startswith(("unix:", "punix:")) else ""
        print(f"firepath client: {'--ovs' if args.ovs else f'{args.config}: switch {args.switch} ovs'}: {e}{hint}",
              file=sys.stderr)
        return 2
    try:
        keyring = KeySet.from_security(fabric.security)
        keyring.check_usable_by(args.switch, master=False)
    except (OSError, ValueError) as e:
        print(f"firepath client: key file: {e}", file=sys.stderr)
        return 2
    from proto.auth import AuthError, configured_admin_token

    try:                                                # named but unreadable: refuse, as the master does
        admin_token = configured_admin_token(fabric.security)
    except AuthError as e:
        print(f"firepath client: {e}", file=sys.stderr)
        return 2
    rest_port = args.rest_port if args.rest_port is not None else switch.rest_port
    if args.netns is not None:
        # The OpenFlow driver enters it for every connection attempt and retries failures for ever: a
        # namespace that is not there (or cannot be entered) is refused here, once, with its name.
        from client.of.sockets import socket_in_netns

        if not args.netns or "/" in args.netns or args.netns in (".", ".."):
            return _fatal(log, f"--netns {args.netns!r}: not a network namespace name")
        try:
            socket_in_netns(args.netns).close()
        except OSError as e:
            return _fatal(log, f"--netns {args.netns}: cannot enter that network namespace "
                               f"({e.strerror or e}; `ip netns list` shows those that exist)")
    # Everything that can fail at start-up (UDP and REST sockets) happens before any thread runs or any
    # ND peer is told anything; a failure ends the process at once, with the reason, and exit status 1.
    daemon = rest = None
    try:
        bgp_dir = args.bgp_dir or os.path.join(tempfile.gettempdir(), f"firepath-bgp-{args.switch}")
        daemon = ClientDaemon(fabric, args.switch, keyring, ovs_target=target, netns=args.netns, bind=args.bind,
                              ovsdb=args.ovsdb, bgp_dir=bgp_dir if switch.bgp is not None else None)
    except RuntimeError as e:          # an eBGP border without its speaker (exabgp not installed)
        return _fatal(log, str(e))
    except ValueError as e:            # an eBGP peer's password file (client.bgpspeaker.PasswordError)
        print(f"firepath client: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        return _fatal(log, f"cannot open the UDP socket towards the masters on {args.bind}: {e}")
    stop = threading.Event()
    reload_asked = threading.Event()

    def rest_reload() -> dict[str, Any]:
        """POST /v1/reload: as SIGHUP, but the answer says what happens (ConfigError: refused)."""
        from client.reload import check

        decision = check(args.config, args.switch, fabric)
        _apply_keys(log, daemon, decision.fabric, fabric)
        _apply_token(log, rest, decision.fabric, fabric)
        if decision.outcome == "changed":
            # shortly after the answer is on its way: the restart stops the REST server
            threading.Timer(0.2, lambda: (reload_asked.set(), stop.set())).start()
        return {"outcome": decision.outcome, "digest": decision.fabric.digest,
                "keys": daemon.core.codec.keys.status()}

    if rest_port:
        try:
            rest = RestServer(daemon.status, CLIENT_REST_HOST, rest_port, routes=daemon.routes_view,
                              reload=rest_reload, token=admin_token)
            rest.start()
        except OSError as e:
            daemon.transport.stop()
            return _fatal(log, f"cannot serve REST on {CLIENT_REST_HOST}:{rest_port}: {e.strerror or e}")

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal=%s stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    reexec = False

    def on_hup(_signum: int, _frame: Any) -> None:
        reload_asked.set()
        stop.set()                      # wake the main loop; it decides whether to really stop

    signal.signal(signal.SIGHUP, on_hup)
    fatal: list[str] = []

    def on_fatal(message: str) -> None:     # another client took the switch over (client.ofrole)
        fatal.append(message)
        stop.set()

    daemon.on_fatal = on_fatal
    try:
        daemon.start()
    except Exception as e:
        if rest is not None:
            rest.stop()
        daemon.stop()
        return _fatal(log, f"start-up failed: {e}")
    try:
        while True:
            while not stop.wait(0.5):
                pass
            if fatal or not reload_asked.is_set():
                break
            reload_asked.clear()
            stop.clear()
            if _reload(log, args.config, args.switch, fabric, daemon, rest):
                reexec = True
                break
    finally:
        if rest is not None:
            rest.stop()
        hold = fabric.timers.switch_dead if args.restart_hold is None else args.restart_hold
        daemon.stop(restart_hold=0.0 if fatal else hold)
    if fatal:
        print(f"firepath client: {fatal[0]}", file=sys.stderr)
        return 1
    if reexec:
        # Issue #21: the same process, started again on the new config (graceful: ND peers hold our links,
        # the new process reconciles the switch without a flush). Same PID, same arguments.
        logging.shutdown()
        os.execv(sys.executable, sys.orig_argv)
    return 0


def _apply_keys(log: logging.Logger, daemon: Any, nxt: Any, running: Any) -> None:
    """Key rollover (issue #21): the key set of a reloaded file of the `running` config is swapped in at once
    (the security section is outside the digest: a key-only change is an "unchanged" config, no restart).
    Another config must name the key set held now (proto.keyroll.keys_for_reload): the masters verify this
    switch with it until they commit. Raises ConfigError (another config, another set), AuthError."""
    from proto.keyroll import keys_for_reload

    keys = keys_for_reload(daemon.core.codec.keys, nxt, running.digest)
    if keys is not None:
        daemon.core.codec.set_keys(keys)
        log.warning("config-reload: key set now %s", keys.status())


def _apply_token(log: logging.Logger, rest: Any, nxt: Any, running: Any) -> None:
    """A reload of the `running` config reads its `security.admin_token_file` again for the REST server
    `rest` (None: no REST), as it swaps the key set (the security section is outside the digest): a token
    added to the file, or rotated, is in force at once, without a restart. Another config (a restart on it
    follows) or an unusable token file changes nothing (the latter logged)."""
    from proto.auth import AuthError, configured_admin_token

    if rest is None or nxt.digest != running.digest:
        return
    try:
        token = configured_admin_token(nxt.security)
    except AuthError as e:
        log.error("config-reload: admin token kept: %s", e)
        return
    if token != rest.api.token:
        log.warning("config-reload: admin token %s", "now in force" if token else "removed (reload disabled)")
    rest.api.token = token


def _reload(log: logging.Logger, path: str, switch: str, running: Any, daemon: Any, rest: Any = None) -> bool:
    """SIGHUP: True if the config file now holds another valid config for this switch (restart on it)."""
    from client.reload import check
    from proto.config import ConfigError

    try:
        decision = check(path, switch, running)
        _apply_keys(log, daemon, decision.fabric, running)
        _apply_token(log, rest, decision.fabric, running)
    except (ConfigError, ValueError) as e:      # AuthError is a ValueError: a key file, named
        log.error("config-reload refused (nothing changes): %s", e)
        return False
    if decision.outcome == "unchanged":
        log.info("config-reload: %s unchanged (digest %s...)", path, running.digest[:12])
        return False
    log.warning("config-reload: %s holds config %s... (running %s...): restarting on it gracefully", path,
                decision.fabric.digest[:12], running.digest[:12])
    return True


def _fatal(log: logging.Logger, message: str) -> int:
    """A start-up error: one clear line on stderr and in the log; the caller exits with status 1."""
    log.error("fatal error=%r", message)
    print(f"firepath client: {message}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="firepath")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
