"""The border's BGP speaker: ExaBGP driven through its process API (issue #13), around `client.border`.

Why ExaBGP: the border needs eBGP sessions and nothing else of a router — firepath itself programs the
data path (OpenFlow). ExaBGP is a BGP speaker without a FIB, driven through a documented API: it pushes
JSON events (session state, parsed UPDATEs) to a process and takes text commands (`neighbor A announce
route P next-hop self`, `... withdraw ...`, `... teardown 1`) back. Python, small, packaged by Debian
(`exabgp` 4.2). FRR's bgpd would bring zebra and a kernel FIB we do not use, and its state is read by
polling vtysh; GoBGP needs a gRPC client in Go or generated stubs.

Pieces:
- pure: `exabgp_config` (the file ExaBGP runs), `parse_event` (one JSON line -> `SessionEvent` /
  `UpdateEvent`, or None), `command` (a core action -> one API line);
- `ExaBgp`: the process (started inside the border's network namespace if given) and the unix socket its
  child `client.bgpbridge` connects to; a reader thread hands events to a callback;
- `BorderSpeaker`: feeds `BorderCore` from ExaBGP and the switch's routes, and carries out its actions:
  API commands to ExaBGP, `PortReport.external` to the master (through the client daemon), external routes
  (next hops resolved by the kernel's ARP on the switch's own interface) to the programmer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from client.border import Announce, BorderCore, ExternalPorts, Provide, Teardown, Withdraw, parse_prefix
from proto.config import Fabric

log = logging.getLogger("firepath.border")

__all__ = ["BorderSpeaker", "ExaBgp", "PasswordError", "SessionEvent", "UpdateEvent", "command", "exabgp_config", "parse_event"]

EXABGP = "exabgp"
#: How often the speaker looks at the switch's routes (fabric reach of the aggregates) and at ARP.
POLL_INTERVAL = 0.05
#: ExaBGP restarted after it exited: first after RESTART_MIN s, doubling to RESTART_MAX while it keeps
#: exiting; back to RESTART_MIN once a run lasted RESTART_STABLE s.
RESTART_MIN, RESTART_MAX, RESTART_STABLE = 1.0, 30.0, 60.0


@dataclass(frozen=True, slots=True)
class SessionEvent:
    peer: str
    up: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class UpdateEvent:
    peer: str
    announced: tuple[tuple[IPv4Network, str], ...]
    withdrawn: tuple[IPv4Network, ...]
    looped: int = 0        # prefixes dropped: our own AS in their AS path (RFC 4271 9.1.2)
    malformed: int = 0     # NLRI that are not IPv4 prefixes


def exabgp_config(fabric: Fabric, switch: str, process_argv: list[str]) -> str:
    """ExaBGP's configuration for `switch`'s peers: one API process (`process_argv`), JSON encoder."""
    sw = fabric.switch(switch)
    if sw.bgp is None:
        raise ValueError(f"switch {switch}: no bgp: section")
    run = " ".join(process_argv)
    out = [f"process firepath {{\n    run {run};\n    encoder json;\n}}\n"]
    for j, p in enumerate(sw.bgp.peers):
        router_id = sw.bgp.router_id or p.local_address.ip
        lines = [f"neighbor {p.address} {{", f"    router-id {router_id};", f"    local-address {p.local_address.ip};",
                 f"    local-as {p.local_as};", f"    peer-as {p.peer_as};", f"    hold-time {p.hold_time};"]
        if p.password_file is not None:
            lines.append(f'    md5-password "{read_password(fabric, switch, j, p)}";')
        lines += ["    api {", "        processes [ firepath ];", "        neighbor-changes;",
                  "        receive { parsed; update; }", "    }", "}"]
        out.append("\n".join(lines) + "\n")
    return "\n".join(out)


class PasswordError(ValueError):
    """A peer's `password_file` cannot be used (the message names config, switch, peer, file and reason)."""


def read_password(fabric: Fabric, switch: str, index: int, peer: Any) -> str:
    """The TCP MD5 key of `peer` (`switches[switch].bgp.peers[index]`), checked by
    `proto.auth.read_tcp_md5_key`; PasswordError names where and why."""
    from proto.auth import AuthError, read_tcp_md5_key

    try:
        return read_tcp_md5_key(peer.password_file)
    except AuthError as e:
        raise PasswordError(f"{password_where(fabric, switch, index, peer)}: {e}") from None


def password_where(fabric: Fabric, switch: str, index: int, peer: Any) -> str:
    """``file:line: switches[i].bgp.peers[j].password_file (switch S, peer A): PATH`` (as `config check`)."""
    where = peer.password_where or f"{fabric.source}: switch {switch}: bgp.peers[{index}].password_file"
    return f"{where} (switch {switch}, peer {peer.address}): {peer.password_file}"


def parse_event(line: str | bytes) -> SessionEvent | UpdateEvent | None:
    """One line from ExaBGP's JSON API. None for anything that is not a session change or an UPDATE
    received from a peer (other messages, ExaBGP's own "done", garbage: never raises)."""
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError):        # not JSON (nor UTF-8), or nested past the parser's limit
        return None
    if not isinstance(msg, dict):
        return None
    kind = msg.get("type")
    nb = msg.get("neighbor")
    if not isinstance(nb, dict) or not isinstance(nb.get("address"), dict):
        return None
    peer = nb["address"].get("peer")
    if not isinstance(peer, str):
        return None
    if kind == "state":
        state = nb.get("state")
        if state in ("up", "down"):
            return SessionEvent(peer, state == "up", str(nb.get("reason", "")))
        return None
    if kind != "update" or nb.get("direction", "receive") != "receive":
        return None
    update = (nb.get("message") or {}).get("update") if isinstance(nb.get("message"), dict) else None
    if not isinstance(update, dict):
        return None
    asn = nb.get("asn") if isinstance(nb.get("asn"), dict) else {}
    path = (update.get("attribute") or {}).get("as-path", []) if isinstance(update.get("attribute"), dict) else []
    looped_path = asn.get("local") is not None and isinstance(path, list) and asn.get("local") in path
    announced: list[tuple[IPv4Network, str]] = []
    withdrawn: list[IPv4Network] = []
    looped = malformed = 0
    ann = update.get("announce", {})
    for family, by_hop in (ann.items() if isinstance(ann, dict) else ()):
        if family != "ipv4 unicast" or not isinstance(by_hop, dict):
            continue
        for hop, nlris in by_hop.items():
            for text in _nlris(nlris):
                prefix = parse_prefix(text)
                if prefix is None:
                    malformed += 1
                elif looped_path:
                    looped += 1
                else:
                    announced.append((prefix, str(hop)))
    wd = update.get("withdraw", {})
    for family, nlris in (wd.items() if isinstance(wd, dict) else ()):
        if family != "ipv4 unicast":
            continue
        for text in _nlris(nlris):
            prefix = parse_prefix(text)
            if prefix is None:
                malformed += 1
            else:
                withdrawn.append(prefix)
    return UpdateEvent(peer, tuple(announced), tuple(withdrawn), looped, malformed)


def _nlris(obj: Any) -> list[str]:
    """ExaBGP 4.2 lists `[{"nlri": "p/l"}, ...]`; older versions map `{"p/l": {...}}`."""
    if isinstance(obj, list):
        return [x["nlri"] if isinstance(x, dict) and isinstance(x.get("nlri"), str) else str(x) for x in obj]
    if isinstance(obj, dict):
        return [str(k) for k in obj]
    return []


def command(action: Announce | Withdraw | Teardown) -> str:
    """The ExaBGP API line for a core action."""
    if isinstance(action, Announce):
        return f"neighbor {action.peer} announce route {action.prefix} next-hop self"
    if isinstance(action, Withdraw):
        return f"neighbor {action.peer} withdraw route {action.prefix} next-hop self"
    return f"neighbor {action.peer} teardown {action.subcode}"


def netns_argv(netns: str | None, argv: list[str]) -> list[str]:
    return argv if netns is None else ["ip", "netns", "exec", netns, *argv]


class ExaBgp:
    """An ExaBGP process for one border, its API over a unix socket in `workdir` (see module docstring)."""

    def __init__(self, fabric: Fabric, switch: str, workdir: Path, on_event: Callable[[Any], None], *,
                 netns: str | None = None) -> None:
        if shutil.which(EXABGP) is None:
            raise RuntimeError("exabgp is not installed (Debian package exabgp: scripts/install-deps.sh)")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sock_path = self.workdir / "api.sock"
        self.conf_path = self.workdir / "exabgp.conf"
        bridge = [sys.executable, str(Path(__file__).with_name("bgpbridge.py")), str(self.sock_path)]
        self.conf_path.write_text(exabgp_config(fabric, switch, bridge))
        self.on_event = on_event
        self.netns = netns
        self.proc: subprocess.Popen | None = None
        self._conn: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self.lines = 0
        self.ignored = 0
        self.started_at: float | None = None

    def start(self) -> None:
        """The API socket and its reader thread (once), then the process (`spawn`)."""
        with contextlib.suppress(FileNotFoundError):
            self.sock_path.unlink()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.sock_path))
        self._listener.listen(1)
        threading.Thread(target=self._reader, name="exabgp-api", daemon=True).start()
        self.spawn()

    def exited(self) -> int | None:
        """The exit status of an ExaBGP that ended by itself (crashed, killed, refused its config), else None."""
        if self._stop.is_set() or self.proc is None:
            return None
        return self.proc.poll()

    def spawn(self) -> None:
        """Start the ExaBGP process (again, after `exited`): its API child connects to our socket."""
        env = dict(os.environ)
        env.update({"exabgp.daemon.user": os.environ.get("USER", "root") if os.geteuid() else "root",
                    "exabgp.daemon.daemonize": "false", "exabgp.log.destination": "stdout",
                    "exabgp.api.ack": "false", "exabgp.daemon.drop": "false"})
        with open(self.workdir / "exabgp.log", "ab") as logf:
            self.proc = subprocess.Popen(netns_argv(self.netns, [EXABGP, str(self.conf_path)]), stdout=logf,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                         cwd=self.workdir, start_new_session=True)
        self.started_at = time.monotonic()

    def send(self, line: str) -> bool:
        with self._send_lock:
            conn = self._conn
            if conn is None:
                return False
            try:
                conn.sendall(line.encode() + b"\n")
                return True
            except OSError:
                return False

    def stop(self) -> None:
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(3)
        with contextlib.suppress(OSError):
            self._listener.close()

    def _reader(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self._conn = conn
            with conn, conn.makefile("rb") as f:
                for line in f:
                    self.lines += 1
                    event = parse_event(line)
                    if event is None:
                        self.ignored += 1
                        continue
                    try:
                        self.on_event(event)
                    except Exception:           # a bug in a handler must not stop the API reader
                        log.exception("border: error handling %s", event)
            self._conn = None


def neighbour_macs(netns: str | None) -> dict[str, str]:
    """IPv4 address -> MAC of the kernel's resolved neighbours (ARP) in `netns`."""
    argv = ["ip", "-j", "-4", "neigh", "show"] if netns is None else ["ip", "-n", netns, "-j", "-4", "neigh", "show"]
    try:
        rows = json.loads(subprocess.run(argv, capture_output=True, text=True, timeout=5).stdout or "[]")
    except (ValueError, OSError, subprocess.SubprocessError):
        return {}
    return {r["dst"]: r["lladdr"] for r in rows if isinstance(r, dict) and r.get("lladdr")
            and r.get("state") and not set(r["state"]) & {"FAILED", "INCOMPLETE"}}


class BorderSpeaker:
    """Glue between ExaBGP, `BorderCore` and the client daemon (threads: ExaBGP's API reader, a poller).

    `report(bits)`: hand `PortReport.external` to the client core (control thread); `program(routes)`:
    hand prefix -> ((port, MAC), ...) to the programmer; `fabric_prefixes()`: the switch's routed prefixes.
    """

    def __init__(self, fabric: Fabric, switch: str, workdir: Path, *, report: Callable[[int], None],
                 program: Callable[[dict], None], fabric_prefixes: Callable[[], Any],
                 netns: str | None = None, clock: Callable[[], float] = time.monotonic,
                 report_sessions: Callable[[tuple], None] | None = None,
                 set_ports: Callable[[tuple[int, ...], bool], None] | None = None) -> None:
        self.core = BorderCore(fabric, switch, clock())
        self.clock = clock
        self.netns = netns
        self._report, self._program, self._fabric_prefixes = report, program, fabric_prefixes
        self._report_sessions = report_sessions
        self._set_ports = set_ports
        self._summary: tuple = ()
        self._ports = {str(p.address): p.port for p in self.core.bgp.peers}
        self._macs: dict[str, str] = {}
        self._programmed: dict | None = None
        self._bits = 0
        self.lock = threading.Lock()
        self.exabgp = ExaBgp(fabric, switch, workdir, self._on_event, netns=netns)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.counters = {"looped": 0, "malformed": 0, "teardowns": 0, "commands": 0, "unresolved": 0,
                         "ports_down": 0, "ports_up": 0, "exabgp_exits": 0, "exabgp_restarts": 0}
        self._restart_at: float | None = None      # ExaBGP exited: when it is started again
        self._restart_delay = RESTART_MIN

    def start(self) -> None:
        self.exabgp.start()
        threading.Thread(target=self._poll, name="border-poll", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.exabgp.stop()

    def status(self) -> dict[str, Any]:
        now = self.clock()
        with self.lock:
            return {"sessions": self.core.sessions(now),
                    "provided": {str(p): list(v) for p, v in self.core.provided.routes.items()},
                    "suppressed": [[peer, str(p)] for peer, p in self.core.suppressed(now)],
                    "exabgp_pid": self.exabgp.proc.pid if self.exabgp.proc else None,
                    "exabgp_running": bool(self.exabgp.proc and self.exabgp.proc.poll() is None),
                    **self.counters}

    # ------------------------------------------------------------------------------------------ inputs
    def _on_event(self, event: SessionEvent | UpdateEvent) -> None:
        now = self.clock()
        with self.lock:
            if isinstance(event, SessionEvent):
                log.info("bgp session peer=%s up=%s %s", event.peer, event.up, event.reason)
                actions = self.core.session(event.peer, event.up, now)
            else:
                self.counters["looped"] += event.looped
                self.counters["malformed"] += event.malformed
                actions = self.core.update(event.peer, event.announced, event.withdrawn, now)
            self._sessions(now)         # first: a report the actions trigger (external bits) carries it
            self._execute(actions)

    def poke(self) -> None:
        """Look at the routes now (a fabric port changed: the aggregate may have to go at once)."""
        self._wake.set()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(POLL_INTERVAL)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._supervise()
                prefixes = self._fabric_prefixes()
                now = self.clock()
                with self.lock:
                    actions = self.core.fabric_reach(prefixes, now)
                    deadline = self.core.next_deadline(now)
                    if deadline is not None and now >= deadline:
                        actions += self.core.tick(now)
                    self._sessions(now)
                    self._execute(actions)
                    if self.core.provided.routes and self._unresolved():
                        self._macs = neighbour_macs(self.netns)
                        self._apply(self.core.provided)
                    self._sessions(now)
            except Exception:
                log.exception("border poll failed")

    def _supervise(self) -> None:
        """ExaBGP exited by itself (a crash, a kill, a refused config): its sessions are gone, so they are
        taken down at once — nothing it learnt is provided to the fabric any more, and it is not the peers'
        flap — and it is started again after a back-off (RESTART_MIN doubling to RESTART_MAX while it keeps
        exiting), logged and counted (`exabgp_exits`, `exabgp_restarts`)."""
        now = self.clock()
        if self._restart_at is not None:
            if now >= self._restart_at:
                self._restart_at = None
                self.counters["exabgp_restarts"] += 1
                log.warning("border: starting exabgp again (restart %d)", self.counters["exabgp_restarts"])
                self.exabgp.spawn()
            return
        code = self.exabgp.exited()
        if code is None:
            return
        ran = time.monotonic() - (self.exabgp.started_at or time.monotonic())
        first = self.counters["exabgp_exits"] == 0 or ran >= RESTART_STABLE
        self._restart_delay = RESTART_MIN if first else min(2 * self._restart_delay, RESTART_MAX)
        self.counters["exabgp_exits"] += 1
        self._restart_at = now + self._restart_delay
        log.error("border: exabgp exited with status %s after %.1f s (log %s): sessions down, restart in %.0f s",
                  code, ran, self.exabgp.workdir / "exabgp.log", self._restart_delay)
        with self.lock:
            actions: list = []
            for peer, view in self.core.peers.items():
                if view.established:
                    actions += self.core.session(peer, False, now, own=True)
            self._sessions(now)
            self._execute(actions)

    # ------------------------------------------------------------------------------------------ actions
    def _execute(self, actions: list) -> None:
        for a in actions:
            if isinstance(a, Announce | Withdraw | Teardown):
                if isinstance(a, Teardown):
                    self.counters["teardowns"] += 1
                    log.warning("bgp teardown peer=%s: %s", a.peer, a.reason)
                else:
                    log.info("bgp %s peer=%s prefix=%s", "announce" if isinstance(a, Announce) else "withdraw",
                             a.peer, a.prefix)
                self.counters["commands"] += 1
                if not self.exabgp.send(command(a)):
                    log.warning("exabgp API not connected: dropped %r", command(a))
            elif isinstance(a, ExternalPorts):
                log.warning("border %s: external ports %s %s", "reaches the fabric again" if a.up
                            else "reaches no fabric prefix", list(a.ports), "up" if a.up else "down")
                self.counters["ports_up" if a.up else "ports_down"] += 1
                if self._set_ports is not None:
                    self._set_ports(a.ports, a.up)
            elif isinstance(a, Provide):
                log.info("border provides bits=%#x routes=%s", a.bits,
                         {str(p): list(v) for p, v in a.routes.items()})
                if any(peer not in self._macs for peers in a.routes.values() for peer in peers):
                    self._macs = neighbour_macs(self.netns)
                self._apply(a)

    def _sessions(self, now: float) -> None:
        """Hand the sessions' summary (`BorderCore.summary`) to the client core when it changed."""
        summary = self.core.summary(now)
        if summary != self._summary and self._report_sessions is not None:
            self._summary = summary
            self._report_sessions(summary)

    def _unresolved(self) -> bool:
        return any(peer not in self._macs for peers in self.core.provided.routes.values() for peer in peers)

    def _apply(self, provide: Provide) -> None:
        """Program the external routes whose next hops ARP resolved, then report exactly those prefixes:
        the fabric is never told to send the border traffic it cannot forward yet (make before break)."""
        routes = {}
        bits = 0
        for k, prefix in enumerate(self.core.external):
            peers = provide.routes.get(prefix, ())
            hops = tuple((self._ports[p], self._macs[p]) for p in peers if p in self._macs)
            if hops:
                routes[prefix] = hops
                bits |= 1 << k
            elif peers:
                self.counters["unresolved"] += 1
        if routes != self._programmed:
            self._programmed = routes
            self._program(routes)
        if bits != self._bits:
            self._bits = bits
            self._report(bits)
