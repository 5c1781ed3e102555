"""Link OAM of the fabric ports: what ovs-vswitchd's CFM says about each port, as a verdict (pure).

With `liveness: oam` (proto.config) every fabric port runs IEEE 802.1ag CFM continuity checks inside
ovs-vswitchd, in OVS's *extended* mode (64-bit MPIDs, `other_config:cfm_interval` in whole ms). The
datapath reacts by itself: a CFM fault clears the port's OFPPS_LIVE, so `watch_port` buckets fail over
without the client, and a PortStatus tells the client. This module judges the second source, the OVSDB
`Interface` row (`cfm_mpid`, `cfm_fault`, `cfm_remote_mpids`, `bfd_status`), which the runtime
(`client.liveness`) monitors and hands in as `OamObservation`s.

MPIDs encode identity: `mpid(switch id, port) = id << 16 | port`. A port expects exactly the MPID of its
configured peer (switch id, port) in `cfm_remote_mpids`; any other MPID is a miscabling, flagged at
datapath speed (one CCM interval after the peer's first CCM), before ND says so.

Per port, `OamState`:

- ``OFF``        not an OAM port (`liveness: nd`): software ND is the heartbeat.
- ``PENDING``    CFM asked for; ovs-vswitchd has not reported a status with our MPID yet.
- ``UP``         no fault and the expected peer's MPID (and only it) is heard; BFD, if someone enabled it,
                 says forwarding.
- ``FAULT``      CFM fault (no CCMs within 3.5 intervals, or the peer signals RDI: one-way links fault at
                 both ends), no remote MPID, or BFD not forwarding.
- ``MISCABLED``  a remote MPID other than the expected one (`remote` names what it decodes to).
- ``FAILED``     OAM could not be set up on this port: OVSDB refused the change, the schema has no CFM, no
                 OVSDB was given, or no CFM status appeared within `setup_timeout` (an OVS or datapath
                 without OAM). Sticky for the life of the process: the port falls back to software ND
                 (`uses_oam` False), so it is never usable without a liveness check.

`oam_ok(port)` is the OAM term of the usable bit (client.ports): True for UP, and for ports that use
software ND instead (OFF, FAILED), whose liveness ND itself checks. No sockets, no clocks: `now` in,
actions out.

**A fresh CFM on a returning carrier.** After a carrier loss both ends' CFM have forgotten each other and flag
RDI in every CCM until they hear one; a CCM with RDI faults the receiver's whole fault interval (3.5 CCM
intervals, OVS lib/cfm.c), so a repaired link was usable only at the end of the *second* fault interval after
the carrier returned. So a port whose carrier stays down `restart_after` has its CFM removed
(`ConfigureOam.disable`; the datapath's liveness is then the carrier, and the port is unusable anyway), and
configured again once the carrier is back and ND identity is two-way (`set_identity`). A new CFM reports no
fault and sends no RDI until its first fault interval ends; that state alone is no evidence, but ND has just
proved the link two-way, so such a *booting* CFM counts as UP until its first verdict, which hears the peer:
both ends reach two-way ND within an ND round trip of each other and configure their CFM then. The port is UP
from that two-way identity on, not from OVSDB's first row of the new CFM: ND's proof is the same one, and
waiting for ovs-vswitchd to apply the transaction (a bridge reconfiguration, ~8-11 ms on the 3-tier lab) only
kept a repaired link out of use. Rows that arrive meanwhile (the removed CFM's, or the new one's before it has
a status) change nothing; if the new CFM does not show within `boot_grace` (`CFM_BOOT_GRACE`) the port is
PENDING (out of use) until it does, so a port never runs long without its CFM. If the peer's CFM came more
than ~2.5 CCM intervals later, that first verdict is a fault and the port goes out until CFM clears (one extra
flap, never traffic on a dead link: CFM and ND keep watching). A silent failure (a CFM fault with the carrier
up) that lasts `restart_after` is treated the same way: CFM removed, ND re-checks the link from scratch
(probing at the heartbeat cadence while it is not two-way), and CFM comes back afresh with ND's two-way
identity — there is no `readd_after` without it, since a silent link would fault again and cycle. At most once
per `silent_every` per port (`CFM_SILENT_RESTART_EVERY`): a restart faults the peer's CFM until the fresh one
speaks, and two ends must not keep restarting each other; past the budget the fault clears as CFM clears. Nor
when more than half of the switch's ports fault at once: a stall of ovs-vswitchd or the CPU, which CFM
rewrites (each one a bridge reconfiguration) would only prolong. A carrier blip shorter than `restart_after`
keeps CFM as it is (no OVSDB write, so no bridge reconfiguration in ovs-vswitchd while the fabric reroutes).
Without ND identity within `readd_after` (the peer's client is not running) CFM is configured again anyway,
untrusted until it hears the peer; if ND identity comes after all while it still hears nobody, it is removed
and configured afresh too (it has been sending RDI, which would fault the peer's fresh CFM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from proto.config import Endpoint, Fabric

__all__ = [
    "CFM_READD_AFTER",
    "CFM_RESTART_AFTER",
    "CFM_SILENT_RESTART_EVERY",
    "MAX_MPID",
    "OAM_SETUP_TIMEOUT",
    "ConfigureOam",
    "OamChanged",
    "OamObservation",
    "OamObserved",
    "OamSetupFailed",
    "OvsdbConnection",
    "OamPorts",
    "OamState",
    "decode_mpid",
    "mpid",
]

#: How long ovs-vswitchd may take to report CFM status for a configured port before the port falls
#: back to software ND. An idle lab's first status arrives within one OVSDB round trip, but a bring-up of
#: 48-64 clients on 2 cores (or two CPU hogs) delayed it past the former 3 s: ports fell back to ND at one
#: end while CFM stayed faulted at the other, i.e. links stayed out of use. Falling back is for an OVS that
#: cannot do CFM, which shows at once (schema, refused transaction); 20 s only bounds the silent case.
OAM_SETUP_TIMEOUT = 20.0
#: How long a port's carrier must stay down before its CFM is removed, to start afresh when the carrier
#: returns (see the module docstring); at least two fault intervals, so the old CFM has reported its fault.
CFM_RESTART_AFTER = 0.25
#: How long a returning carrier waits for ND identity before its CFM is configured again anyway (a peer
#: whose client does not run: its switch forwards fail-static and may use the link once CFM says so).
CFM_READD_AFTER = 1.0
#: A port's CFM is restarted for a silent failure at most once per this many seconds. A restart at one end
#: faults the other end's CFM until the fresh one speaks (after ND's two-way identity, up to an ND round
#: trip); if that took longer than `restart_after`, the other end would restart in turn, and the two could
#: keep restarting each other. Past the budget the fault clears as CFM clears (two fault intervals).
CFM_SILENT_RESTART_EVERY = 5.0
#: How long a port is UP on ND's two-way identity alone while OVSDB applies its fresh CFM (see the module
#: docstring); past it, PENDING until the CFM shows. Ten fault intervals at the lab's 7 ms, and far beyond
#: the OVSDB round trip of an idle lab.
CFM_BOOT_GRACE = 0.25
#: OVSDB integers are signed 64-bit; switch ids (< 2**31) and ports (< 2**16) fit in 47 bits.
MAX_MPID = 2**63 - 1


def mpid(switch_id: int, port: int) -> int:
    """The CFM MPID of `port` on switch `switch_id` (extended mode): `switch_id << 16 | port`."""
    if not 0 < switch_id < 2**31 or not 0 < port < 2**16:
        raise ValueError(f"mpid: switch id {switch_id} / port {port} out of range")
    return switch_id << 16 | port


def decode_mpid(value: int) -> tuple[int, int]:
    """(switch id, port) encoded in an MPID by `mpid`."""
    return value >> 16, value & 0xFFFF


class OamState(StrEnum):
    OFF = "off"
    PENDING = "pending"
    UP = "up"
    FAULT = "fault"
    MISCABLED = "miscabled"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class OamObservation:
    """One port's OVSDB `Interface` row as the monitor saw it.

    `mpid`: the `cfm_mpid` column (None if unset). `fault`: `cfm_fault` (None while CFM reports no status).
    `remote_mpids`: `cfm_remote_mpids`. `bfd_forwarding`: `bfd_status:forwarding` (None without BFD).
    """

    port: int
    mpid: int | None
    fault: bool | None
    remote_mpids: tuple[int, ...] = ()
    bfd_forwarding: bool | None = None


# Events of the OVSDB runtime (client.liveness) for the control thread.
@dataclass(frozen=True, slots=True)
class OamObserved:
    obs: OamObservation


@dataclass(frozen=True, slots=True)
class OamSetupFailed:
    """OAM cannot be set up on `ports` (None: on every port), for `reason`."""

    ports: tuple[int, ...] | None
    reason: str


@dataclass(frozen=True, slots=True)
class OvsdbConnection:
    up: bool


@dataclass(frozen=True, slots=True)
class ConfigureOam:
    """Runtime: make OVSDB say `cfm_mpid` = `mpids[port]`, extended mode, `interval_ms`, on those ports,
    and remove CFM from the ports in `disable` (ports that fell back to software ND)."""

    mpids: dict[int, int]
    interval_ms: int
    disable: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class OamChanged:
    """The OAM verdict of `port` changed. `remote`: who a MISCABLED port hears; `reason`: why FAILED."""

    port: int
    state: OamState
    remote: Endpoint | None = None
    reason: str = ""


class _Port:
    __slots__ = ("boot_until", "booting", "carrier", "deadline", "expected_remote", "local", "readd_at", "reason",
                 "rebooting", "remote", "restart_at", "silent_ok_at", "state", "stopped", "untrusted")

    def __init__(self, local: int, expected_remote: int, oam: bool) -> None:
        self.local = local
        self.expected_remote = expected_remote
        self.state = OamState.PENDING if oam else OamState.OFF
        self.remote: Endpoint | None = None
        self.reason = ""
        self.deadline = math.inf        # setup timeout of a PENDING port
        self.carrier: bool | None = None
        self.stopped = False            # CFM removed while the carrier is down (configured again on its return)
        self.restart_at = math.inf      # when a carrier-down port's CFM is removed
        self.readd_at = math.inf        # carrier back, ND identity not (yet): CFM configured anyway then
        self.booting = False            # CFM configured afresh once ND identity was two-way (see set_identity)
        self.boot_until = math.inf      # UP on ND's word until the fresh CFM shows in OVSDB (CFM_BOOT_GRACE)
        self.untrusted = False          # CFM configured again without ND identity, has heard nobody yet
        self.rebooting = False          # such a CFM being removed to start afresh with the peer's
        self.silent_ok_at = -math.inf   # the next silent-failure restart allowed (CFM_SILENT_RESTART_EVERY)


Action = ConfigureOam | OamChanged


class OamPorts:
    """OAM verdicts for the fabric ports of one switch. Methods take `now` and return actions."""

    def __init__(self, fabric: Fabric, switch: str, *, setup_timeout: float = OAM_SETUP_TIMEOUT,
                 boot_grace: float = CFM_BOOT_GRACE) -> None:
        self.fabric = fabric
        me = fabric.switch(switch)
        self.enabled = fabric.liveness == "oam"
        self.interval_ms = round(fabric.timers.oam_interval * 1000)
        self.setup_timeout = setup_timeout
        self.boot_grace = boot_grace
        self._ports: dict[int, _Port] = {}
        for port in fabric.fabric_ports(switch):
            peer = fabric.peer_of(switch, port)
            assert peer is not None
            self._ports[port] = _Port(mpid(me.id, port), mpid(fabric.switch(peer.switch).id, peer.port),
                                      self.enabled)
        self.failures = 0          # ports that fell back to software ND (metric)
        self.restarts = 0          # CFM configured afresh on a returning carrier (metric)
        self.silent_restarts = 0   # CFM removed during a silent failure (metric)
        self.silent_skipped = 0    # silent failures past the restart budget or in a stall, left to CFM (metric)
        self._silent: list[int] = []   # ports stopped during a silent failure, for take_silent_stops
        self.restart_after = max(CFM_RESTART_AFTER, 2 * 3.5 * fabric.timers.oam_interval)
        self.readd_after = max(CFM_READD_AFTER, 2 * fabric.timers.nd_interval)
        self.silent_every = max(CFM_SILENT_RESTART_EVERY, 4 * fabric.timers.nd_interval)

    # ------------------------------------------------------------------------------------------ queries
    def state(self, port: int) -> OamState:
        return self._ports[port].state

    def remote(self, port: int) -> Endpoint | None:
        return self._ports[port].remote

    def reason(self, port: int) -> str:
        return self._ports[port].reason

    def uses_oam(self, port: int) -> bool:
        """True if the port's liveness comes from OAM (else software ND at nd_interval is the heartbeat)."""
        return self._ports[port].state not in (OamState.OFF, OamState.FAILED)

    def oam_ok(self, port: int) -> bool:
        """The OAM term of the usable bit: UP, or a port that uses software ND instead."""
        state = self._ports[port].state
        return state in (OamState.UP, OamState.OFF, OamState.FAILED)

    def local_mpid(self, port: int) -> int:
        return self._ports[port].local

    def take_silent_stops(self) -> list[int]:
        """Ports whose CFM `tick` removed during a silent failure (carrier up) since the last call: their ND
        must verify the link afresh (client.ports resets it), since the fresh CFM follows ND identity."""
        out, self._silent = self._silent, []
        return out

    def next_deadline(self) -> float:
        return min((min(p.deadline, p.restart_at, p.readd_at, p.boot_until) for p in self._ports.values()),
                   default=math.inf)

    # ------------------------------------------------------------------------------------------ inputs
    def start(self, now: float) -> list[Action]:
        """Ask the runtime for CFM on every OAM port; each must show a status within `setup_timeout`."""
        if not self.enabled:
            return []
        for p in self._ports.values():
            if p.state is OamState.PENDING:
                p.deadline = now + self.setup_timeout
        return [self._configure()]

    def on_observation(self, obs: OamObservation, now: float) -> list[Action]:
        """The monitor saw `obs.port`'s Interface row change (or saw it for the first time)."""
        p = self._ports.get(obs.port)
        if p is None or p.state in (OamState.OFF, OamState.FAILED):
            return []
        if p.boot_until < math.inf:
            if obs.mpid != p.local or obs.fault is None:
                return []                   # the removed CFM's row, or ours without a status yet: wait for it
            p.boot_until = math.inf
        remote = None
        if p.stopped and obs.mpid != p.local:
            if p.rebooting and obs.mpid is None:    # removed: now configure it afresh, trusted
                p.rebooting = False
                return self._readd(p, obs.port, now, booting=True)
            state = OamState.FAULT          # removed on purpose (carrier down, or to start afresh)
        elif p.booting and obs.mpid == p.local and obs.fault is False and not obs.remote_mpids:
            state = OamState.UP             # our fresh CFM before its first verdict, ND two-way just now
        elif obs.mpid != p.local or obs.fault is None:
            state = OamState.PENDING
        else:
            wrong = [m for m in obs.remote_mpids if m != p.expected_remote]
            if wrong:
                state = OamState.MISCABLED
                sid, port = decode_mpid(wrong[0])
                try:
                    name = self.fabric.switch_by_id(sid).name
                except KeyError:
                    name = f"id{sid}"
                remote = Endpoint(name, port)
            elif obs.fault or not obs.remote_mpids or obs.bfd_forwarding is False:
                state = OamState.FAULT
            else:
                state = OamState.UP
        if p.booting and obs.mpid == p.local and (obs.fault or obs.remote_mpids):
            p.booting = False               # the first verdict: from now on CFM alone speaks
        if state is OamState.UP:
            p.untrusted = False
        if p.carrier and not p.stopped:
            # a working link's fault with the carrier up (a silent failure) that lasts restart_after: CFM is
            # restarted too. Not at bring-up (PENDING -> FAULT while the peer's CFM is not there yet): that
            # would rewrite every port's CFM of a slow bring-up.
            if state is OamState.FAULT and p.state is OamState.UP:
                p.restart_at = now + self.restart_after
            elif state is not OamState.FAULT:
                p.restart_at = math.inf
        out: list[Action] = []
        if state is OamState.PENDING:
            if p.state is not OamState.PENDING:
                p.deadline = now + self.setup_timeout   # configuration lost: the runtime restores it
        else:
            p.deadline = math.inf
        self._set(p, obs.port, state, remote, "", out)
        return out

    def set_carrier(self, port: int, up: bool, now: float) -> list[Action]:
        """The carrier of `port` went up or down (OpenFlow PortStatus). Down for `restart_after`: CFM is
        removed (by `tick`). Up again after that: CFM is configured afresh once ND identity is two-way
        (`set_identity`), or after `readd_after` without it (a peer whose client is not running)."""
        p = self._ports.get(port)
        if p is None or p.carrier == up:
            return []
        p.carrier = up
        p.booting = p.untrusted = p.rebooting = False
        p.boot_until = math.inf
        if up:
            p.restart_at = math.inf
            if p.stopped:
                p.readd_at = now + self.readd_after
        else:
            p.readd_at = math.inf
            if not p.stopped and p.state not in (OamState.OFF, OamState.FAILED):
                p.restart_at = now + self.restart_after
        return []

    def set_identity(self, port: int, up: bool, now: float) -> list[Action]:
        """ND identity of `port` became two-way (`up`) or not. A port whose CFM was removed while its carrier
        was down gets it back now, and its fresh CFM counts as UP until its first verdict (about 3.5 CCM
        intervals later): ND just proved the link two-way, and both ends configure their CFM within an ND
        round trip of each other, so that verdict hears the peer (see the module docstring)."""
        p = self._ports.get(port)
        if p is None or not up or not p.carrier:
            return []
        if p.stopped and not p.rebooting:
            return self._readd(p, port, now, booting=True)
        if p.untrusted and p.state is OamState.FAULT:
            # Configured again without ND (readd_after) and still hearing nobody: it has been sending RDI,
            # which would fault the first verdict of the fresh CFM the peer configures now. Start afresh too:
            # removed first (a second transaction once OVSDB shows it gone, `on_observation`).
            p.untrusted, p.stopped, p.rebooting = False, True, True
            p.readd_at = now + self.readd_after        # OVSDB never showing it gone: back untrusted
            return [self._configure()]
        return []

    def _readd(self, p: _Port, port: int, now: float, *, booting: bool) -> list[Action]:
        """CFM configured again; `booting`: with ND's two-way identity, so the port is UP at once (for at
        most `boot_grace` before the new CFM shows in OVSDB, then until its first verdict)."""
        p.stopped = p.rebooting = False
        p.readd_at = math.inf
        self.restarts += 1
        if p.state in (OamState.OFF, OamState.FAILED):
            return []
        p.booting, p.untrusted = booting, not booting
        out: list[Action] = []
        if booting:
            p.boot_until = now + self.boot_grace
            p.deadline = math.inf
            self._set(p, port, OamState.UP, None, "", out)
        out.append(self._configure())
        return out

    def on_failed(self, ports: list[int] | tuple[int, ...] | None, reason: str, now: float) -> list[Action]:
        """OAM cannot be set up on `ports` (None: all): OVSDB refused, no CFM in the schema, no OVSDB."""
        out: list[Action] = []
        for port in self._ports if ports is None else ports:
            p = self._ports.get(port)
            if p is None or p.state in (OamState.OFF, OamState.FAILED):
                continue
            self._fail(port, p, reason, out)
        if out:
            out.append(self._configure())
        return out

    def tick(self, now: float) -> list[Action]:
        """Ports still without a CFM status after `setup_timeout` fall back to software ND; CFM removed from
        ports whose carrier stayed down `restart_after`, configured again where `readd_after` ran out."""
        out: list[Action] = []
        reconfigure = False          # a port's CFM is to be removed or configured again
        correlated: bool | None = None      # most ports faulted at once with the carrier up (computed once)
        for port, p in self._ports.items():
            if now >= p.readd_at and p.carrier and p.stopped:
                reconfigure = bool(self._readd(p, port, now, booting=False)) or reconfigure
            if now >= p.boot_until:
                # the fresh CFM never showed: out of use until it does (or setup_timeout: software ND)
                p.boot_until = math.inf
                p.booting = False
                p.deadline = now + self.setup_timeout
                self._set(p, port, OamState.PENDING, None, "", out)
            if now >= p.restart_at:
                p.restart_at = math.inf
                if p.carrier is False and p.state not in (OamState.OFF, OamState.FAILED):
                    p.stopped, reconfigure = True, True
                    p.deadline = math.inf
                    self._set(p, port, OamState.FAULT, None, "", out)
                elif p.carrier and p.state is OamState.FAULT and not p.stopped:
                    if correlated is None:
                        correlated = self._correlated_faults()
                    if now < p.silent_ok_at or correlated:
                        self.silent_skipped += 1        # past the budget, or a stall: CFM clears by itself
                    else:
                        # silent failure: removed; ND re-checks the link from scratch (client.ports) and the
                        # fresh CFM comes with its two-way identity (set_identity), never without it
                        p.silent_ok_at = now + self.silent_every
                        p.stopped, reconfigure = True, True
                        self.silent_restarts += 1
                        self._silent.append(port)
            if now >= p.deadline and p.state is OamState.PENDING:
                self._fail(port, p, f"no CFM status from ovs-vswitchd within {self.setup_timeout:g}s "
                                    "(OVS or datapath without OAM?)", out)
        if out or reconfigure:
            out.append(self._configure())
        return out

    # ------------------------------------------------------------------------------------------ internals
    def _correlated_faults(self) -> bool:
        """More than half of the OAM ports (at least two) faulted at once with the carrier up: that is this
        switch's ovs-vswitchd or CPU stalling, not silent links, and rewriting their CFM would reconfigure
        the bridge on top of it. A single silent link, or one of two, is not correlated."""
        live = [p for p in self._ports.values() if p.state not in (OamState.OFF, OamState.FAILED) and p.carrier]
        faulted = sum(1 for p in live if p.state is OamState.FAULT and not p.stopped)
        return faulted >= 2 and 2 * faulted > len(live)

    def _configure(self) -> ConfigureOam:
        mpids = {port: p.local for port, p in self._ports.items() if self.uses_oam(port) and not p.stopped}
        disable = tuple(port for port, p in self._ports.items() if p.state is OamState.FAILED or p.stopped)
        return ConfigureOam(mpids, self.interval_ms, disable)

    def _fail(self, port: int, p: _Port, reason: str, out: list[Action]) -> None:
        p.deadline = p.boot_until = math.inf
        self.failures += 1
        self._set(p, port, OamState.FAILED, None, reason, out)

    @staticmethod
    def _set(p: _Port, port: int, state: OamState, remote: Endpoint | None, reason: str,
             out: list[Action]) -> None:
        if state is p.state and remote == p.remote and reason == p.reason:
            return
        p.state, p.remote, p.reason = state, remote, reason
        out.append(OamChanged(port, state, remote, reason))
