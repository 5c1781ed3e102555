"""The border's redistribution between eBGP and the fabric (issue #13; pure: events and `now` in, actions out).

Firepath's cluster border routers run standard eBGP with the outside and a small proxy redistributes
(Jupiter Rising, section 5): one default route into the fabric while the outside provides it, the cluster
prefix to the outside while the fabric reaches it. This object is that proxy's logic; the BGP protocol
itself is a real speaker's (ExaBGP, driven by `client.bgpspeaker`), which feeds it:

    core = BorderCore(fabric, "border-1-1")
    core.session(peer, up, now)                     # a session Established (True) or lost (False)
    core.update(peer, announced, withdrawn, now)    # prefixes -> next hop, prefixes (one BGP UPDATE)
    core.fabric_reach(prefixes, now)                # the fabric prefixes this border routes now
    core.tick(now)                                  # at core.next_deadline(): damping reuse
    -> [Announce | Withdraw | Teardown | Provide | ExternalPorts]

Rules:
- **Origination into the fabric** (`Provide`): the border provides each of its external prefixes
  (`proto.config.external_prefixes`, the LSD slots `Fabric.slots_of`) while at least one Established,
  usable peer announces exactly that prefix and it is not damped. `Provide.bits` is what the client
  reports (`PortReport.external`); `Provide.routes` maps each provided prefix to the peers that provide it
  (their addresses: the next hops of the border's ECMP group towards the outside).
- **Announcement to the outside**: each cluster aggregate (`bgp.announce`) is announced to every
  Established peer while the fabric reaches at least one fabric prefix inside it (a border cut off from the
  fabric stops attracting traffic it could only drop), and withdrawn otherwise.
- **Link-state tracking** (`bgp.track_fabric`, on by default): when the border stops reaching every fabric
  prefix it takes its external ports down (`ExternalPorts(up=False)`), and up again when it reaches one
  (also the first time it does, so ports a previous client left down come back). The router outside loses
  carrier and drops the border from its ECMP at once — a BGP withdraw alone waits for the router's route
  processing (FRR: a fixed 50 ms work-queue hold in bgpd, then zebra's 10 ms). The sessions go down with
  the ports and come back after the fabric does; losing them that way does not count as a flap (damping).
- **Max-prefix** (RFC 4271 section 6.7 / RFC 4486 cease subcode 1): a peer announcing more distinct
  prefixes than its `max_prefix` is torn down (`Teardown`) and ignored until `MAX_PREFIX_RESTART`
  seconds have passed; its routes are forgotten at once.
- **Damping** (RFC 2439, the usual Cisco/Juniper figures): every withdraw of a (peer, prefix) that was
  announced adds `PENALTY` (1000); the penalty halves every `HALF_LIFE` s; above `SUPPRESS` (2000) the
  route is not used until it decays below `REUSE` (750), at most `MAX_SUPPRESS` s. A session loss counts
  as a withdraw of its routes. Off with `bgp.damping: false`.

Peers are keyed by their address as text (what ExaBGP's JSON names them by). Unknown peers are ignored
and counted (`ignored`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from proto.config import BgpPeer, Fabric, external_prefixes

__all__ = ["Announce", "BorderCore", "ExternalPorts", "PeerView", "Provide", "Teardown", "Withdraw"]

PENALTY = 1000.0
SUPPRESS = 2000.0
REUSE = 750.0
HALF_LIFE = 15.0        # s
MAX_SUPPRESS = 60.0     # s
MAX_PREFIX_RESTART = 30.0  # s before a peer torn down for max-prefix is listened to again


@dataclass(frozen=True, slots=True)
class Announce:
    """Announce `prefix` to `peer` (next hop self)."""

    peer: str
    prefix: IPv4Network


@dataclass(frozen=True, slots=True)
class Withdraw:
    peer: str
    prefix: IPv4Network


@dataclass(frozen=True, slots=True)
class Teardown:
    """Close the session with `peer` (NOTIFICATION cease, `subcode`: 1 = maximum number of prefixes)."""

    peer: str
    subcode: int
    reason: str


@dataclass(frozen=True, slots=True)
class ExternalPorts:
    """Take the border's external (peer-facing) ports down or up (link-state tracking, `bgp.track_fabric`)."""

    up: bool
    ports: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Provide:
    """What the border originates into the fabric now: `bits` for `PortReport.external` (bit k = its k-th
    external prefix) and, per provided prefix, the peers (addresses) that provide it, sorted."""

    bits: int
    routes: Mapping[IPv4Network, tuple[str, ...]]


@dataclass(slots=True)
class PeerView:
    """One peer as the core sees it (also the REST view)."""

    config: BgpPeer
    established: bool = False
    since: float | None = None                     # when it last changed state
    rib: dict[IPv4Network, str] = field(default_factory=dict)   # prefix -> next hop (as announced)
    blocked_until: float = -math.inf               # max-prefix: ignored until then
    teardowns: int = 0
    announced: set[IPv4Network] = field(default_factory=set)    # aggregates we announced to it

    def state(self, now: float) -> dict:
        return {"peer": str(self.config.address), "peer_as": self.config.peer_as,
                "state": "established" if self.established else "idle",
                "uptime_s": None if self.since is None or not self.established else round(now - self.since, 3),
                "prefixes_in": len(self.rib), "prefixes_out": sorted(str(p) for p in self.announced),
                "max_prefix": self.config.max_prefix, "teardowns": self.teardowns,
                "blocked": now < self.blocked_until}


@dataclass(slots=True)
class _Damp:
    penalty: float
    at: float
    suppressed_since: float | None = None

    def value(self, now: float) -> float:
        return self.penalty * 0.5 ** ((now - self.at) / HALF_LIFE)


class BorderCore:
    def __init__(self, fabric: Fabric, switch: str, now: float = 0.0) -> None:
        sw = fabric.switch(switch)
        if sw.bgp is None:
            raise ValueError(f"{fabric.source}: switch {switch}: no bgp: section (not an eBGP border)")
        self.switch = switch
        self.bgp = sw.bgp
        self.external = external_prefixes(sw)
        self.aggregates = sw.bgp.announce
        self.peers: dict[str, PeerView] = {str(p.address): PeerView(p, since=now) for p in sw.bgp.peers}
        self._damp: dict[tuple[str, IPv4Network], _Damp] = {}
        self._reach: dict[IPv4Network, bool] = {a: False for a in self.aggregates}
        self._isolated: bool | None = None        # no fabric prefix reachable (None: not known yet)
        self.ports = tuple(sorted({p.port for p in sw.bgp.peers}))
        self._provided = Provide(0, {})
        self.ignored = 0          # events about unknown peers / bad prefixes
        self.flaps = 0

    # ------------------------------------------------------------------------------------------ inputs
    def session(self, peer: str, up: bool, now: float, *, own: bool = False) -> list:
        """`peer`'s session went up or down. `own`: lost through no fault of the peer (our BGP speaker
        exited): its routes are not charged as flaps."""
        view = self.peers.get(peer)
        if view is None:
            self.ignored += 1
            return []
        out: list = []
        if up == view.established:
            return out
        view.established, view.since = up, now
        if up:
            if now < view.blocked_until:
                return [Teardown(peer, 1, "max-prefix: still held down")]
            view.announced.clear()
            out += self._announcements(view)
        else:
            # a session lost because the border took its own external ports down is not the peer's flap
            self._forget(view, now, flap=not own and not (self._isolated and self.bgp.track_fabric))
            view.announced.clear()
        return out + self._provide(now)

    def update(self, peer: str, announced: Mapping[IPv4Network, str] | Iterable[tuple[IPv4Network, str]],
               withdrawn: Iterable[IPv4Network], now: float) -> list:
        """One UPDATE from `peer`: `announced` prefix -> next hop, `withdrawn` prefixes."""
        view = self.peers.get(peer)
        if view is None or not view.established or now < view.blocked_until:
            self.ignored += 1
            return []
        items = announced.items() if isinstance(announced, Mapping) else announced
        for prefix in withdrawn:
            if view.rib.pop(prefix, None) is not None:
                self._flap(peer, prefix, now)
        for prefix, next_hop in items:
            if not isinstance(prefix, IPv4Network):
                self.ignored += 1
                continue
            view.rib[prefix] = next_hop
        if len(view.rib) > view.config.max_prefix:
            view.teardowns += 1
            view.blocked_until = now + MAX_PREFIX_RESTART
            n = len(view.rib)
            view.rib.clear()            # no flap: the peer broke its limit, it did not flap
            view.established = False
            view.since = now
            view.announced.clear()
            return [Teardown(peer, 1, f"max-prefix: {n} prefixes > {view.config.max_prefix}"),
                    *self._provide(now)]
        return self._provide(now)

    def fabric_reach(self, prefixes: Iterable[IPv4Network], now: float) -> list:
        """The fabric prefixes this border currently routes (its route table's keys, own ones included)."""
        fabric = [p for p in prefixes if p.prefixlen > 0]
        out: list = []
        isolated = not fabric
        # down only from a known reach (a client starting has no routes yet); up from any state
        if isolated != self._isolated and self.bgp.track_fabric and (not isolated or self._isolated is not None):
            out.append(ExternalPorts(not isolated, self.ports))
        self._isolated = isolated
        reach = {a: any(p.subnet_of(a) for p in fabric) for a in self.aggregates}
        if reach == self._reach:
            return out
        self._reach = reach
        for view in self.peers.values():
            if view.established:
                out += self._announcements(view)
        return out

    def tick(self, now: float) -> list:
        """Damping: routes whose penalty decayed below REUSE (or suppressed for MAX_SUPPRESS) come back."""
        return self._provide(now)

    def next_deadline(self, now: float) -> float | None:
        """When a suppressed route may be reused (None: nothing suppressed)."""
        times = []
        for d in self._damp.values():
            if d.suppressed_since is not None:
                reuse = d.at + HALF_LIFE * math.log2(max(d.penalty, REUSE) / REUSE)
                times.append(min(reuse, d.suppressed_since + MAX_SUPPRESS))
        return min(times) if times else None

    # ------------------------------------------------------------------------------------------ views
    @property
    def provided(self) -> Provide:
        return self._provided

    def sessions(self, now: float) -> list[dict]:
        return [v.state(now) for v in self.peers.values()]

    def summary(self, now: float) -> tuple[tuple[int, int, float, int, int, int], ...]:
        """Per peer, in config order: (index, state, since, prefixes in, prefixes out, teardowns), state as
        `proto.messages.BgpSession` (0 idle, 1 established, 2 held down after max-prefix) — what the
        border's reports carry to the master (`PortReport.bgp`)."""
        out = []
        for k, v in enumerate(self.peers.values()):
            state = 2 if now < v.blocked_until else 1 if v.established else 0
            since = v.blocked_until - MAX_PREFIX_RESTART if state == 2 else v.since if v.since is not None else now
            out.append((k, state, since, len(v.rib), len(v.announced), v.teardowns))
        return tuple(out)

    def suppressed(self, now: float) -> list[tuple[str, IPv4Network]]:
        return sorted((k for k in self._damp if self._suppressed(k, now)), key=lambda k: (k[0], int(k[1].network_address)))

    # ------------------------------------------------------------------------------------------ internals
    def _announcements(self, view: PeerView) -> list:
        out: list = []
        peer = str(view.config.address)
        for agg in self.aggregates:
            want = self._reach.get(agg, False)
            if want and agg not in view.announced:
                view.announced.add(agg)
                out.append(Announce(peer, agg))
            elif not want and agg in view.announced:
                view.announced.discard(agg)
                out.append(Withdraw(peer, agg))
        return out

    def _forget(self, view: PeerView, now: float, flap: bool = True) -> None:
        peer = str(view.config.address)
        for prefix in list(view.rib) if flap else ():
            self._flap(peer, prefix, now)
        view.rib.clear()

    def _flap(self, peer: str, prefix: IPv4Network, now: float) -> None:
        if not self.bgp.damping or prefix not in self.external:
            return
        self.flaps += 1
        key = (peer, prefix)
        d = self._damp.get(key)
        if d is None:
            d = self._damp[key] = _Damp(0.0, now)
        d.penalty, d.at = d.value(now) + PENALTY, now
        if d.penalty > SUPPRESS and d.suppressed_since is None:
            d.suppressed_since = now

    def _suppressed(self, key: tuple[str, IPv4Network], now: float) -> bool:
        d = self._damp.get(key)
        if d is None or d.suppressed_since is None:
            return False
        if d.value(now) < REUSE or now >= d.suppressed_since + MAX_SUPPRESS:
            d.suppressed_since = None
            d.penalty, d.at = min(d.value(now), REUSE), now
            return False
        return True

    def _provide(self, now: float) -> list:
        bits = 0
        routes: dict[IPv4Network, tuple[str, ...]] = {}
        for k, prefix in enumerate(self.external):
            peers = tuple(sorted(
                peer for peer, v in self.peers.items()
                if v.established and now >= v.blocked_until and prefix in v.rib
                and not self._suppressed((peer, prefix), now)))
            if peers:
                bits |= 1 << k
                routes[prefix] = peers
        new = Provide(bits, routes)
        if new == self._provided:
            return []
        self._provided = new
        return [new]


def parse_prefix(text: str) -> IPv4Network | None:
    """A prefix from a BGP speaker's text, None if it is not an IPv4 prefix (counted, never raised)."""
    try:
        return IPv4Network(text)
    except ValueError:
        return None


def is_address(text: str) -> bool:
    try:
        IPv4Address(text)
    except ValueError:
        return False
    return True
