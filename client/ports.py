"""Fabric port state of one switch: PHY + OAM + ND + admin + damping folded into the `usable` bit (pure).

A fabric port is *usable* for routing iff

    PHY up (carrier: no OFPPS_LINK_DOWN, not admin down)
    and  live (OFPPS_LIVE, which OVS clears on carrier loss and on a CFM/BFD fault: what the datapath's
         `watch_port` buckets follow)
    and  datapath liveness (client.oam: CFM up with the expected peer's MPID, as OVSDB reports it; for a
         port on software ND, the ND heartbeat below is the liveness check)
    and  ND is UP with the expected peer, two-way (identity)
    and  admin up (config / operator)  and  not damped (client.damping)

`PortTable` owns the port's `NeighborDiscovery`, `OamPorts` and `FlapDamper` so that the rules that tie
them together live in one place:

- PHY down makes the port unusable *at once* (the returned `PortChanged` is the local-repair trigger:
  prune the port from ECMP groups without waiting for the master) and resets ND for the port (stop
  sending, forget the neighbour, forget a miscabling). PHY up restarts ND with an immediate frame.
- Liveness lost with the carrier up (a CFM fault: a silent failure) makes the port unusable at once too,
  but keeps ND's identity: a cable cannot be moved without the carrier dropping, so the neighbour verified
  on this PHY session is still the one at the other end. ND keeps running (its own dead interval still
  applies), and when liveness returns an ND frame goes out at once; the port is usable again as soon as
  OAM says so, without a new ND round trip. ND also starts on carrier up while OAM is still faulted, so a
  repaired cable's identity check runs in parallel with CFM's fault clearing (not after it).
- The damper sees only the health bit (PHY, OAM and ND up); admin changes are not flaps.
- ND cadence follows OAM: a port whose liveness OVS checks runs ND at the identity cadence and sends a
  frame at once on every OAM change; a port that falls back to software ND (OAM FAILED, or `liveness: nd`)
  runs ND at the heartbeat cadence. A remote MPID of the wrong peer marks the port miscabled, like ND.
- Every change of any field of the port's `PortStatus` yields one `PortChanged`; the runtime then hands
  `statuses()` to the reporter (which re-sends the full report), and on `usable_changed` does local repair.

Only fabric ports (ports with a link in the config) are tracked; events for other ports are ignored.
ND actions (`SendNd`), OAM config requests (`ConfigureOam`) and OAM verdict changes (`OamChanged`, for
logs and metrics) pass through in the returned list; ND state changes are folded into `PortChanged`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from client.damping import FlapDamper
from client.nd import NdChanged, NdState, NeighborDiscovery, SendNd
from client.oam import ConfigureOam, OamChanged, OamObservation, OamPorts, OamState
from proto.config import Endpoint, Fabric
from proto.messages import NdFrame, PortStatus

__all__ = ["PortChanged", "PortTable", "PortView"]


@dataclass(frozen=True, slots=True)
class PortChanged:
    """A field of `port`'s reported status changed. `usable_changed`: the usable bit itself flipped;
    `phy_changed`: the carrier did (news for the master's guard: only carrier loss at every neighbour
    outvotes a live switch, controller.core)."""

    port: int
    usable: bool
    usable_changed: bool
    status: PortStatus
    phy_changed: bool = False


@dataclass(frozen=True, slots=True)
class PortView:
    """Everything known about a fabric port, for REST/metrics."""

    port: int
    expected: Endpoint
    phy: bool
    nd: NdState
    discovered: Endpoint | None
    miscabled_by: Endpoint | None
    admin: bool
    damped: bool
    damped_until: float | None
    usable: bool
    since: float            # last change of the usable bit
    oam: OamState = OamState.OFF
    oam_remote: Endpoint | None = None    # who CFM hears on a MISCABLED port
    nd_fast: bool = True                  # ND is the heartbeat (else: identity cadence)
    live: bool = False                    # OFPPS_LIVE (phy is the carrier)


class _Port:
    __slots__ = ("admin", "discovered", "expected", "live", "miscabled_by", "nd", "phy", "port", "since",
                 "status")

    def __init__(self, port: int, expected: Endpoint, admin: bool, now: float) -> None:
        self.port = port
        self.expected = expected
        self.phy = False                   # carrier; unknown until port-desc / PortStatus
        self.live = False                  # OFPPS_LIVE
        self.nd = NdState.DOWN
        self.discovered: Endpoint | None = None
        self.miscabled_by: Endpoint | None = None
        self.admin = admin
        self.since = now
        self.status = PortStatus(port=port, phy=False, nd=False, usable=False, admin=admin, damped=False,
                                 miscabled_by=None)


Action = SendNd | PortChanged | ConfigureOam | OamChanged


class PortTable:
    """The fabric ports of one switch. Methods take `now` and return actions (SendNd, PortChanged)."""

    def __init__(self, fabric: Fabric, switch: str, *, now: float = 0.0, admin_down: Collection[int] = (),
                 nd: NeighborDiscovery | None = None, damper: FlapDamper | None = None,
                 oam: OamPorts | None = None) -> None:
        self.switch = switch
        self.oam = oam if oam is not None else OamPorts(fabric, switch)
        self.nd = nd if nd is not None else NeighborDiscovery(fabric, switch, now=now,
                                                              fast=not self.oam.enabled)
        self.damper = damper if damper is not None else FlapDamper(fabric.timers, len(fabric.fabric_ports(switch)))
        self._ports: dict[int, _Port] = {}
        for port in fabric.fabric_ports(switch):
            self._ports[port] = _Port(port, self.nd.expected(port), port not in admin_down, now)
            self.nd.set_phy(port, False, now)    # no frames until the switch says the port is live
        self._statuses: tuple[PortStatus, ...] | None = None

    # ------------------------------------------------------------------------------------------ queries
    @property
    def ports(self) -> tuple[int, ...]:
        return tuple(self._ports)

    def statuses(self) -> tuple[PortStatus, ...]:
        """The `ports` field of a PortReport: every fabric port, sorted by port number."""
        if self._statuses is None:
            self._statuses = tuple(self._ports[p].status for p in sorted(self._ports))
        return self._statuses

    def status(self, port: int) -> PortStatus:
        return self._ports[port].status

    def usable(self, port: int) -> bool:
        p = self._ports.get(port)
        return p is not None and p.status.usable

    def live(self, port: int) -> bool:
        """OFPPS_LIVE as last reported (the carrier is `status(port).phy`)."""
        p = self._ports.get(port)
        return p is not None and p.live

    def usable_ports(self) -> frozenset[int]:
        return frozenset(p.port for p in self._ports.values() if p.status.usable)

    def view(self, port: int, now: float) -> PortView:
        p = self._ports[port]
        s = p.status
        return PortView(port, p.expected, s.phy, p.nd, p.discovered, s.miscabled_by, s.admin, s.damped,
                        self.damper.damped_until(port, now), s.usable, p.since, self.oam.state(port),
                        self.oam.remote(port), self.nd.fast(port), p.live)

    def next_deadline(self) -> float:
        """When `tick` must run next (ND sends/expiries, OAM setup, end of a damping hold); inf if never."""
        return min(self.nd.next_deadline(), self.damper.next_deadline(), self.oam.next_deadline())

    # ------------------------------------------------------------------------------------------ inputs
    def on_phy(self, port: int, live: bool, now: float, carrier: bool | None = None) -> list[Action]:
        """OpenFlow PortStatus for `port`: `live` = OFPPS_LIVE, `carrier` = no OFPPS_LINK_DOWN (None: the
        same as `live`, for a switch that cannot tell them apart). Live implies carrier."""
        p = self._ports.get(port)
        if p is None:
            return []
        carrier = live if carrier is None else carrier
        live = live and carrier
        # OAM hears every carrier report, the first one too: a client that starts with a carrier down (a
        # restart) must remove that port's CFM like one that saw it go down (a returning carrier's fresh CFM).
        out: list[Action] = list(self.oam.set_carrier(port, carrier, now))
        if p.phy == carrier and p.live == live:
            return out
        nd: list[SendNd | NdChanged] = []
        if p.phy != carrier:
            p.phy = carrier
            nd.extend(self.nd.set_phy(port, carrier, now))
        elif live:
            nd.extend(self.nd.send_now(port))     # liveness back on the same PHY session: re-check identity
        p.live = live
        self._fold(nd, out, now, touched={port})
        return out

    def on_port_desc(self, live: Mapping[int, bool], now: float,
                     carrier: Mapping[int, bool] | None = None) -> list[Action]:
        """A full port description (on connect): fabric ports missing from `live` are PHY down; a port
        missing from `carrier` has carrier iff it is live."""
        out: list[Action] = []
        carrier = carrier or {}
        for port in self._ports:
            up = bool(live.get(port, False))
            out.extend(self.on_phy(port, up, now, carrier.get(port, up)))
        return out

    def settled(self) -> bool:
        """No port awaits verification (hitless restart): every fabric port is usable, or has really
        failed (no carrier, not live: a CFM/BFD fault, miscabled by ND or OAM), or is admin down or
        damped. A port with carrier and liveness whose peer (ND two-way, OAM status) is not confirmed yet
        is unverified, not failed: reporting it would take a working link down."""
        return not self.unverified()

    def unverified(self) -> tuple[int, ...]:
        """The ports that could be usable but are not verified yet (see `settled`)."""
        return tuple(p.port for p in self._ports.values()
                     if p.phy and p.live and p.admin and not p.status.usable and not p.status.damped
                     and p.status.miscabled_by is None)

    def start_oam(self, now: float) -> list[Action]:
        """Ask for CFM on the OAM ports (a `ConfigureOam` for the runtime); [] with `liveness: nd`."""
        out: list[Action] = []
        self._fold_oam(self.oam.start(now), out, now)
        return out

    def on_oam(self, obs: OamObservation, now: float) -> list[Action]:
        """The OVSDB monitor saw a fabric port's CFM/BFD status change."""
        out: list[Action] = []
        self._fold_oam(self.oam.on_observation(obs, now), out, now)
        return out

    def on_oam_failed(self, ports: tuple[int, ...] | None, reason: str, now: float) -> list[Action]:
        """OAM cannot run on `ports` (None: all): they fall back to software ND."""
        out: list[Action] = []
        self._fold_oam(self.oam.on_failed(ports, reason, now), out, now)
        return out

    def on_nd_frame(self, port: int, sender_switch: str, frame: NdFrame, now: float) -> list[Action]:
        """An authenticated ND frame arrived on `port` (sender as established by the codec)."""
        out: list[Action] = []
        self._fold(self.nd.on_frame(port, sender_switch, frame, now), out, now)
        return out

    def set_admin(self, port: int, up: bool, now: float) -> list[Action]:
        """Operator/config admin state of a fabric port. KeyError for a non-fabric port."""
        p = self._ports[port]
        if p.admin == up:
            return []
        p.admin = up
        out: list[Action] = []
        self._fold([], out, now, touched={port})
        return out

    def on_stall(self, start: float, end: float, now: float) -> list[Action]:
        """This client's process did not run from `start` to `end` (client.stallwatch): the damper counts
        port drops on both sides of it as that much closer (a correlated storm, client.damping)."""
        self.damper.note_stall(start, end, now)
        out: list[Action] = []
        self._fold([], out, now)      # recompute ports whose hold the storm refund cancelled
        return out

    def tick(self, now: float) -> list[Action]:
        """Run ND (sends, expiries) and end damping holds that ran out."""
        out: list[Action] = []
        self._fold_oam(self.oam.tick(now), out, now)
        nd: list[SendNd | NdChanged] = []
        for port in self.oam.take_silent_stops():   # its fresh CFM waits for ND identity verified anew
            nd.extend(self.nd.reset(port, now))
        nd.extend(self.nd.tick(now))
        self._fold(nd, out, now, touched=set(self.damper.tick(now)))
        return out

    # ------------------------------------------------------------------------------------------ internals
    def _fold_oam(self, actions: list[ConfigureOam | OamChanged], out: list[Action], now: float) -> None:
        """Pass OAM actions through; on a verdict change set the ND cadence, re-check identity at once."""
        touched: set[int] = set()
        nd: list[SendNd | NdChanged] = []
        for action in actions:
            out.append(action)
            if isinstance(action, OamChanged) and action.port in self._ports:
                touched.add(action.port)
                fast = not self.oam.uses_oam(action.port)
                if self.nd.fast(action.port) != fast:
                    nd.extend(self.nd.set_fast(action.port, fast, now))
                else:
                    nd.extend(self.nd.send_now(action.port))
        self._fold(nd, out, now, touched=touched)

    def _fold(self, nd_actions: list[SendNd | NdChanged], out: list[Action], now: float,
              touched: set[int] | None = None) -> None:
        """Apply ND changes to the ports, pass sends through, then recompute every touched port once."""
        touched = set() if touched is None else touched
        for action in nd_actions:
            if isinstance(action, NdChanged):
                p = self._ports.get(action.port)
                if p is None:
                    continue
                if action.state is NdState.UP and p.nd is not NdState.UP:
                    out.extend(self.oam.set_identity(action.port, True, now))   # a removed CFM comes back
                p.nd = action.state
                p.discovered = action.discovered
                p.miscabled_by = action.miscabled_by
                touched.add(action.port)
            else:
                out.append(action)
        for port in sorted(touched):
            p = self._ports.get(port)
            if p is not None:
                self._recompute(p, now, out)
        # A correlated storm refunds flaps: a port held because of one is usable again at once.
        for port in self.damper.take_released():
            p = self._ports.get(port)
            if p is not None:
                self._recompute(p, now, out)

    def _recompute(self, p: _Port, now: float, out: list[Action]) -> None:
        healthy = p.phy and p.live and self.oam.oam_ok(p.port) and p.nd == NdState.UP
        self.damper.observe(p.port, healthy, now)
        damped = self.damper.damped(p.port, now)
        usable = healthy and p.admin and not damped
        old = p.status
        miscabled_by = p.miscabled_by
        if miscabled_by is None and self.oam.state(p.port) is OamState.MISCABLED:
            miscabled_by = self.oam.remote(p.port)
        status = PortStatus(port=p.port, phy=p.phy, nd=p.nd == NdState.UP, usable=usable, admin=p.admin,
                            damped=damped, miscabled_by=miscabled_by)
        if status == old:
            return
        p.status = status
        self._statuses = None
        usable_changed = usable != old.usable
        if usable_changed:
            p.since = now
        out.append(PortChanged(p.port, usable, usable_changed, status, status.phy != old.phy))
