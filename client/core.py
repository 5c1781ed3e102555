"""The switch client's control policy as a pure object: events and `now` in, actions out.

`ClientCore` owns the codec (HMAC, replay windows), the port table (PHY + ND + admin + damping), the
reporter and the LSD replica, and the rules that tie them together:

- **dispatch**: master datagrams (ReportAck, Keepalive, LsdFull, LsdDelta) and ND frames are decoded and
  handed to the right part; anything malformed, forged or stale is dropped and counted by reason;
- **urgency**: a change of a port's usable bit, or a miscabling, is reported at once; other port changes
  (ND flapping on a damped port, ...) ride on the next refresh, so a flapping port cannot flood the master;
- **first-report hold** (hitless restart): after a (re)start the first report waits until every live
  fabric port is verified (usable) or has really failed (`PortTable.settled`: PHY/liveness down,
  miscabled, admin down), or `report_grace` after the switch connection, so a restarting client never
  tells the master its links are down merely because it has not verified them yet. `report_grace`
  defaults to `verification_bound(fabric)`: how long verifying a port can take, which with link OAM is
  paced by the peer's ND *identity* cadence (~1 s: a peer holding our link answers at that cadence),
  not by `nd_dead`. The hold runs only while the switch is connected: a connection
  that drops before the report is released cancels the deadline, the next connection starts it again.
  `next_deadline()` is therefore never in the past after `tick(now)` (the runtime never spins);
- **graceful restart**: `graceful_restart(hold)` asks every ND peer to hold its link, then silences ND.

- **link OAM** (client.oam): `start_oam` asks for CFM on the fabric ports, OVSDB observations and setup
  failures come back through `on_oam_observed` / `on_oam_failed`; a port where OAM cannot run falls back
  to software ND, with one log line per cause and the `oam_fallback_ports` counter.

Actions for the runtime (`client.daemon`): `SendFrames` (ND packet-outs, one batch per call), `SendDatagram`
(to a master), `UsableChanged` and `LsdApplied` (for the programmer), `ConfigureOam` (for the OVSDB runtime). The core never touches a socket,
a thread or a clock.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from client.nd import SendNd
from client.oam import ConfigureOam, OamChanged, OamObservation, OamState
from client.ofmsg import PacketOut
from client.ports import PortChanged, PortTable
from client.replica import ConfigMismatchChanged, FailStaticChanged, LsdApplied, LsdReplica
from client.reporter import Reporter, SendToMaster
from proto.auth import KeyRing
from proto.bounded import RejectLog
from proto.config import Fabric
from proto.logsetup import kv
from proto.messages import (
    Challenge,
    Codec,
    DecodeError,
    EncodeError,
    Keepalive,
    LsdDelta,
    LsdFull,
    LsdRequest,
    NdFrame,
    ReportAck,
    decode_nd_ethernet,
    encode_nd_ethernet,
)

log = logging.getLogger("firepath.client")

__all__ = ["Action", "ClientCore", "LsdApplied", "SendDatagram", "SendFrames", "UsableChanged",
           "verification_bound"]


def verification_bound(fabric: Fabric) -> float:
    """How long verifying a live fabric port can take after the switch connection (s): the default
    first-report hold of a (re)started client.

    Our first ND frame goes out at once and a port not yet UP keeps probing at the heartbeat cadence, so
    the wait is for the peer's answer. A peer on software ND answers within `nd_interval`; with link OAM
    the peer's port is UP (it holds our link through the graceful restart) and sends at the *identity*
    cadence only, so its answer can take a whole `nd_identity_interval`. Allow one lost answer (two of
    the peer's intervals) plus the software-ND margin max(5 x nd_dead, 0.2 s) for the round trip, the
    OVSDB monitor's first CFM status and a loaded runtime. A port still unverified after that has a
    problem and is reported unusable.
    """
    t = fabric.timers
    margin = max(5 * t.nd_dead, 0.2)
    if fabric.liveness == "oam":
        return 2 * t.nd_identity_interval + margin
    return margin


@dataclass(frozen=True, slots=True)
class SendFrames:
    """ND frames to send as packet-outs, in one batch (one hand-off to the OpenFlow driver)."""

    frames: tuple[PacketOut, ...] = field(repr=False)


@dataclass(frozen=True, slots=True)
class SendDatagram:
    """An encoded, signed datagram for master `master` (by id)."""

    master: str
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class UsableChanged:
    """A fabric port's usable bit flipped: local repair (or its end) for the programmer."""

    port: int
    usable: bool


Action = SendFrames | SendDatagram | UsableChanged | LsdApplied | ConfigureOam


class ClientCore:
    """One switch's control state. Every input method returns the actions it caused, in order.

    `report_grace` (s): longest first-report hold after the switch connection; default
    `verification_bound(fabric)` (2 x nd_identity_interval + max(5 x nd_dead, 0.2 s) with link OAM). `initial_seq`: first report sequence number (the runtime passes wall-clock
    ms so a restarted client's reports are newer than its previous life's).
    """

    def __init__(self, fabric: Fabric, switch: str, keyring: KeyRing, *, now: float, initial_seq: int = 0,
                 report_grace: float | None = None, switch_read_back: bool = True) -> None:
        self.fabric = fabric
        self.name = switch
        self.switch = fabric.switch(switch)
        self.codec = Codec(keyring, switch, [s.name for s in fabric.switches], [m.id for m in fabric.masters],
                           accept_group=fabric.distribution.mode == "multicast")
        # Rejected input: counted in `counters`, and one line each naming source and reason, within a budget
        # per path (proto.bounded.RejectLog; a black-box test of hostile datagrams found none at INFO).
        self._reject_log = RejectLog(log, switch, "master")
        self._nd_reject_log = RejectLog(log, switch, "nd")
        self.ports = PortTable(fabric, switch, now=now)
        self.reporter = Reporter(fabric, switch, now=now, initial_seq=initial_seq)
        self.replica = LsdReplica(fabric, switch, now=now)
        if not switch_read_back:
            # No LSD request before the switch is read back (`on_kept_routes`): a restarted client's switch
            # forwards on kept routes, and its request says so (LsdRequest.kept: a new master's unheard LSD
            # must not replace them)
            self.replica.kept_routes = None
        self.report_grace = verification_bound(fabric) if report_grace is None else report_grace
        self.connected = False
        self.report_released = False
        self._hold_until = math.inf       # armed only while connected and not released
        self._nd_silenced = False
        self.ovsdb_connected = False      # set by the runtime (client.liveness events)
        self.counters: Counter[str] = Counter()
        #: master -> the newest LsdRequest waiting for the freshness handshake with it (_encode_to_master)
        self._held_requests: dict[str, SendToMaster] = {}
        # Every ND frame has the same Ethernet header (dst, our MAC, ethertype): built once, not per frame.
        self._nd_header = encode_nd_ethernet(self.switch.mac, b"")

    # ------------------------------------------------------------------------------------------ time
    def next_deadline(self) -> float:
        """When `tick` must run next (inf: only inputs can change anything)."""
        d = min(self.ports.next_deadline(), self.reporter.next_deadline(), self.replica.next_deadline())
        if not self.report_released and self.connected:
            d = min(d, self._hold_until)
        return d

    def set_external(self, bits: int, now: float) -> list[Action]:
        """eBGP border (issue #13, client.border): the external prefixes it provides now, as the bitmap of
        `PortReport.external`; a change is reported at once."""
        out: list[Action] = []
        self._run(self.reporter.set_external(bits, now), now, out)
        return out

    def set_bgp(self, sessions: tuple, now: float) -> list[Action]:
        """eBGP border (issue #13): its sessions' summary for the master (`Reporter.set_bgp`)."""
        out: list[Action] = []
        self._run(self.reporter.set_bgp(sessions, now), now, out)
        return out

    def tick(self, now: float) -> list[Action]:
        out: list[Action] = []
        self._run(self.ports.tick(now), now, out)
        self._maybe_release_report(now, out)
        self._run(self.reporter.tick(now), now, out)
        self._run(self.replica.tick(now), now, out)
        return out

    # ------------------------------------------------------------------------------------------ switch
    def on_connected(self, ports: Mapping[int, bool], now: float,
                     carrier: Mapping[int, bool] | None = None) -> list[Action]:
        """The OpenFlow connection is ready; `ports`: OpenFlow port -> live (OFPPS_LIVE); `carrier`: port ->
        PHY up (missing: same as live; client.ports)."""
        self.connected = True
        if not self.report_released:
            self._hold_until = now + self.report_grace
        return self._port_input(self.ports.on_port_desc(ports, now, carrier), now)

    def on_kept_routes(self, kept: bool, now: float) -> list[Action]:
        """The switch was read back while we hold no LSD: whether it forwards on routes it kept (a restarted
        client). Until this is known no LSD request goes out (client.replica `kept_routes`)."""
        out: list[Action] = []
        self._run(self.replica.set_kept_routes(kept, now), now, out)
        return out

    def on_disconnected(self, now: float) -> list[Action]:
        self.connected = False
        if not self.report_released:
            self._hold_until = math.inf   # the hold starts again with the next connection
        return []

    def on_port_status(self, port: int, live: bool, now: float, carrier: bool | None = None) -> list[Action]:
        """A PortStatus: `live` = OFPPS_LIVE, `carrier` = PHY up (None: same as live; client.ports)."""
        return self._port_input(self.ports.on_phy(port, live, now, carrier), now)

    def on_packet_in(self, port: int, data: bytes, now: float) -> list[Action]:
        """A frame punted by the switch (the ND flow): decode, authenticate, hand to ND."""
        try:
            sender, msg = self.codec.decode(decode_nd_ethernet(data), port=port)
        except DecodeError as e:
            self.counters[f"nd_rejected_{e.reason}"] += 1
            # rendered only if a line is written: a flood of garbage frames formats nothing per frame
            self._nd_reject_log.note(now, e.reason, lambda: f"port {port} src_mac {data[6:12].hex(':')}", e.detail)
            if e.reason != "stale":
                return []
            # A new incarnation of the peer (its client restarted) that has not heard our challenge yet: the
            # codec learnt its offer, so our next frame on this port lets the peer verify us in one exchange.
            # Send it now (at most once per nd_interval), not at the identity cadence (~1 s): the restarted
            # client holds its first report until it has verified its ports (hitless restart).
            answered: list[Action] = []
            self._run(self.ports.nd.answer(port, now), now, answered)
            return answered
        if not isinstance(msg, NdFrame):
            self.counters["nd_rejected_not_nd"] += 1
            self._nd_reject_log.note(now, "not_nd", lambda: f"port {port}",
                                     lambda: f"{type(msg).__name__} from {sender!r}")
            return []
        if msg.hold_ms:
            log.info("graceful restart of peer %s:%d: holding port %d up for %d ms", msg.switch, msg.port,
                     port, msg.hold_ms)
        out: list[Action] = []
        self._run(self.ports.on_nd_frame(port, sender, msg, now), now, out)
        return out

    def set_admin(self, port: int, up: bool, now: float) -> list[Action]:
        """Operator admin state of a fabric port (KeyError for another port)."""
        return self._port_input(self.ports.set_admin(port, up, now), now)

    def graceful_restart(self, hold: float, now: float) -> list[Action]:
        """Ask every ND peer to keep its link up for `hold` s, then send no more ND (a normal frame after
        the hold frame would end the hold at the peer). Returns the frames (empty if not connected)."""
        out: list[Action] = []
        self._run(self.ports.nd.restart_frames(hold), now, out)
        self._nd_silenced = True
        return out

    # ------------------------------------------------------------------------------------------ masters
    def on_datagram(self, data: bytes, now: float, source: tuple[str, int] | None = None) -> list[Action]:
        """A datagram at the client's socket (`source`: its sender's (ip, port), for the log line of a
        rejection; None if unknown). Returns what to do; a rejected one is counted and logged (budgeted)."""
        try:
            sender, msg = self.codec.decode(data)
        except DecodeError as e:
            self.counters[f"rejected_{e.reason}"] += 1
            self._reject_log.note(now, e.reason, source, e.detail)
            if e.reason == "stale" and e.sender is not None:
                # A master of an incarnation we have not verified (it or we restarted, or a replay): answer
                # with our challenge at its configured address, so its next frame is accepted. One allowance
                # per master (no address): whichever frame drew it, replayed or not, it reaches the genuine
                # master, so replays from elsewhere cannot starve it (tests/test_unauth_bounds.py).
                answer = self.codec.answer(e.sender, now)
                if answer is not None:
                    self.counters["challenges_sent"] += 1
                    return [SendDatagram(e.sender, answer)]
            return []
        out: list[Action] = []
        held = self._held_requests.pop(sender, None) if self._held_requests else None
        if held is not None:            # the handshake with this master is done: the request can go now
            self._encode_to_master(held, out)
        if isinstance(msg, Challenge):
            # The master verified us or asks us to verify it: our unacked report was probably rejected as
            # stale, so send it again now (reflecting the offer just heard) instead of at the next retry —
            # to that master only.
            self._run(self.reporter.retransmit_now(now, sender), now, out)
        elif isinstance(msg, ReportAck):
            self._run(self.reporter.on_ack(msg, now), now, out)      # on_master_heard included
            self._run(self.replica.on_report_ack(msg.master, msg.term, msg.backup, now), now, out)
        elif isinstance(msg, Keepalive | LsdFull | LsdDelta):
            self._run(self.reporter.on_master_heard(msg.master, msg.term, now, msg.backup), now, out)
            if isinstance(msg, Keepalive):
                self._run(self.replica.on_keepalive(msg, now), now, out)
            elif isinstance(msg, LsdFull):
                self._run(self.replica.on_full(msg, now), now, out)
            else:
                self._run(self.replica.on_delta(msg, now), now, out)
        else:
            self.counters["unexpected_message"] += 1
        return out

    # ------------------------------------------------------------------------------------------ link OAM
    def start_oam(self, now: float) -> list[Action]:
        """Ask for CFM on every fabric port (a `ConfigureOam`); [] with `liveness: nd`."""
        out: list[Action] = []
        self._run(self.ports.start_oam(now), now, out)
        return out

    def on_oam_observed(self, obs: OamObservation, now: float) -> list[Action]:
        self.counters["oam_observations"] += 1
        return self._port_input(self.ports.on_oam(obs, now), now)

    def on_stall(self, start: float, end: float, now: float) -> list[Action]:
        """The client's process did not run from `start` to `end` (seconds, its clock; client.stallwatch):
        counted, and port drops on either side of it may be one correlated event (client.damping)."""
        self.counters["process_stalls"] += 1
        self.counters["process_stalled_ms"] += round((end - start) * 1000)
        out: list[Action] = []
        self._run(self.ports.on_stall(start, end, now), now, out)
        return out

    def on_oam_failed(self, ports: tuple[int, ...] | None, reason: str, now: float) -> list[Action]:
        return self._port_input(self.ports.on_oam_failed(ports, reason, now), now)

    # ------------------------------------------------------------------------------------------ actions
    def _run(self, actions: list[Any], now: float, out: list[Action]) -> None:
        """Fold the parts' actions into runtime actions, applying the cross-part rules."""
        ports_changed = False
        urgent = False
        nd_frames: list[SendNd] = []
        local_repair: list[UsableChanged] = []
        failed: dict[str, list[int]] = {}
        for action in actions:
            if isinstance(action, SendNd):
                nd_frames.append(action)
            elif isinstance(action, ConfigureOam):
                out.append(action)
            elif isinstance(action, OamChanged):
                self.counters[f"oam_{action.state}"] += 1
                if action.state is OamState.FAILED:
                    failed.setdefault(action.reason, []).append(action.port)
                elif action.state is OamState.MISCABLED:
                    log.warning("oam port=%d miscabled: CFM hears %s", action.port, action.remote)
                else:
                    log.debug("oam port=%d state=%s", action.port, action.state)
            elif isinstance(action, PortChanged):
                ports_changed = True
                urgent = (urgent or action.usable_changed or action.phy_changed
                          or action.status.miscabled_by is not None)
                st = action.status
                log.info(kv("port_state", port=action.port, usable=st.usable, phy=st.phy,
                            live=self.ports.live(action.port), nd=st.nd, admin=st.admin, damped=st.damped,
                            miscabled_by=st.miscabled_by))
                if action.usable_changed:
                    local_repair.append(UsableChanged(action.port, action.usable))
            elif isinstance(action, SendToMaster):
                self._encode_to_master(action, out)
            elif isinstance(action, LsdApplied):
                out.append(action)
            elif isinstance(action, ConfigMismatchChanged):
                if action.digest is not None:
                    log.warning("config-mismatch: the masters serve config %s..., this switch runs %s...: "
                                "programming nothing from them, forwarding on what is installed",
                                action.digest[:12], self.fabric.digest[:12])
                else:
                    log.info("config-mismatch ended: the masters serve this switch's config again")
            elif isinstance(action, FailStaticChanged):
                level = logging.WARNING if action.fail_static else logging.INFO
                log.log(level, "fail-static=%s: %s", action.fail_static,
                        "no master heard, forwarding on the last LSD" if action.fail_static else "master back")
        for reason, ports in failed.items():
            # One line per cause, however many ports: those ports fall back to software ND heartbeats.
            self.counters["oam_fallback_ports"] += len(ports)
            log.warning("oam unavailable ports=%s reason=%s: falling back to software ND (nd_interval %g ms)",
                        sorted(ports), reason, self.fabric.timers.nd_interval * 1000)
        if nd_frames:
            self._encode_nd(nd_frames, out)
        if ports_changed:
            self._maybe_release_report(now, out)
            if self.report_released:
                self._run(self.reporter.update(self.ports.statuses(), now, send_now=urgent), now, out)
        # After the report: sending it takes microseconds, while local repair wakes the programmer thread,
        # which would otherwise compete with the report for the interpreter first.
        out.extend(local_repair)

    def _port_input(self, actions: list[Any], now: float) -> list[Action]:
        """The port table's actions for one input, then the first-report hold's check: a port may have been
        verified or really failed without a status change (a miscabling, a CFM fault, admin down)."""
        out: list[Action] = []
        self._run(actions, now, out)
        self._maybe_release_report(now, out)
        return out

    def _maybe_release_report(self, now: float, out: list[Action]) -> None:
        """Hitless restart: report only once every live port is verified or really failed (or the hold ran
        out): a port is never reported unusable merely because it has not been verified yet."""
        if self.report_released or not self.connected:
            return
        statuses = self.ports.statuses()
        unverified = self.ports.unverified()
        if not unverified or now >= self._hold_until:
            if unverified:
                log.warning(kv("report_hold_expired", grace_s=round(self.report_grace, 3),
                               unverified=",".join(map(str, unverified))))
            self.report_released = True
            self._hold_until = math.inf
            self._run(self.reporter.update(statuses, now), now, out)

    def _encode_nd(self, frames: list[SendNd], out: list[Action]) -> None:
        if not self.connected or self._nd_silenced:
            return
        try:
            batch = tuple(PacketOut(a.port, self._nd_header + self.codec.encode(a.frame)) for a in frames)
        except EncodeError:
            self.counters["encode_errors"] += 1
            log.exception("cannot encode an ND frame")
            return
        out.append(SendFrames(batch))

    def _encode_to_master(self, action: SendToMaster, out: list[Action]) -> None:
        if isinstance(action.msg, LsdRequest) and not self.codec.established(action.master):
            # Issue #18: before the freshness handshake with this master (our first report starts it) a
            # request is a stale frame it verifies, rejects and answers with a second Challenge: hold the
            # newest one and send it when the master's Challenge arrives (on_datagram).
            self._held_requests[action.master] = action
            self.counters["requests_held"] += 1
            return
        try:
            data = self.codec.encode(action.msg, to=action.master)
        except EncodeError:
            self.counters["encode_errors"] += 1
            log.exception("cannot encode %s", type(action.msg).__name__)
            return
        out.append(SendDatagram(action.master, data))

    # ------------------------------------------------------------------------------------------ status
    def status(self, now: float) -> dict[str, Any]:
        """A JSON-ready view of the control state (REST `GET /v1/state`, metrics)."""
        ports = []
        for port in self.ports.ports:
            v = self.ports.view(port, now)
            ports.append({
                "port": port, "peer": f"{v.expected.switch}:{v.expected.port}", "phy": v.phy, "live": v.live,
                "nd": str(v.nd), "usable": v.usable, "admin": v.admin, "damped": v.damped,
                "miscabled_by": (f"{v.miscabled_by.switch}:{v.miscabled_by.port}"
                                 if v.miscabled_by is not None else None),
                "discovered": (f"{v.discovered.switch}:{v.discovered.port}"
                               if v.discovered is not None else None),
                "oam": str(v.oam), "oam_remote": None if v.oam_remote is None else str(v.oam_remote),
                "nd_mode": "heartbeat" if v.nd_fast else "identity",
            })
        replica = self.replica
        return {
            "switch": self.name, "term": replica.term, "master": replica.master,
            "lsd_version": replica.version, "replica_state": replica.state,
            "fail_static": replica.fail_static, "config_mismatch": replica.config_mismatch,
            "digest": self.fabric.digest, "connected": self.connected, "ports": ports,
            # issue #16: a backup serving the LSD while the master is silent; the masters that hear us
            "served_by": replica.server if replica.served(now) else None,
            "reach": [m for i, m in enumerate(self.reporter.masters) if self.reporter.reach >> i & 1],
            "liveness": self.fabric.liveness, "ovsdb_connected": self.ovsdb_connected,
            "report_released": self.report_released,
            "reports_sent": self.reporter.reports, "report_retransmits": self.reporter.retransmits,
            "report_seq": self.reporter.report_seq, "report_acked": self.reporter.acked,
            "replica": dict(replica.counters),
            "counters": {**self.counters, "oam_cfm_restarts": self.ports.oam.restarts,
                         "oam_silent_restarts": self.ports.oam.silent_restarts,
                         "oam_silent_restarts_skipped": self.ports.oam.silent_skipped},
            "codec_rejected": dict(self.codec.rejected),
            "keys": self.codec.keys.status(),   # key rollover: send key, accepted and retired ids
        }
