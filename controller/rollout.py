"""A fabric config change in two phases (issue #21): the pure state machine, and the link-state carry-over.

The paper's operating model is one static config for the whole fabric, pushed to every switch with a
two-phase, commit-like protocol. Here:

- **prepare(next)**: the masters hold the current config and the next one. Reports are accepted under
  either digest (a report's digest says which config the switch holds); clients restarted (or reloaded)
  on the next config report under it and program nothing until the masters serve it.
- **commit**: allowed when every switch of the next config that is alive (heard within `switch_dead`)
  holds it. The masters switch: a new LSD version on the next config's link index, every link carried
  over by name (`carry_states`), sent as a full snapshot under the next digest.
- **abort**: back to the current config only; nothing was published under the next one.

    ro = Rollout(current)
    ro.prepare(next_fabric, now)             # RolloutError if refused (e.g. another rollout in progress)
    ro.note(switch, digest, now)             # for every accepted report
    ro.blockers(now)                         # {switch: why} — what stops a commit
    fabric = ro.commit(now)                  # RolloutError with the blockers; then the caller switches

Pure: `now` in, no I/O. The master core (controller.core) wires it to reports, the LSD and distribution.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from enum import StrEnum

from proto.config import Fabric
from proto.lsd import LinkState

__all__ = ["Carry", "IncompatibleConfig", "Phase", "Rollout", "RolloutError", "carry_states", "check_compatible",
           "link_key", "mixed_routing_hazard"]


class RolloutError(ValueError):
    """A prepare/commit/abort that cannot be done now (the message says why); nothing changed."""


class Phase(StrEnum):
    IDLE = "idle"
    PREPARED = "prepared"


def link_key(link) -> frozenset[tuple[str, int]]:  # noqa: ANN001 - proto.config.Link
    """A link's identity across configs: its two ends (switch, port), in either orientation."""
    return frozenset(((link.a.switch, link.a.port), (link.b.switch, link.b.port)))


def carry_states(old: Fabric, old_states: bytes, new: Fabric,
                 end_up: Callable[[str, int], bool | None]) -> bytearray:
    """LSD states (one LinkState byte per link of `new`) for the first version on `new`'s link index.

    A link present in both configs (same two ends) keeps its state, DRAINED included. A new link is UP only
    if both ends are known usable (`end_up(switch, port)` -> True), else DOWN: it starts down until both
    ends report. A removed link disappears. The borders' external slots (issue #13: `Fabric.external_slots`,
    after the links) keep their state by (border, prefix), so a commit does not withdraw the default route
    for the time until the borders report again; a new slot starts DOWN. (`Carry` is the same rule with
    the index map built once: the prepared master's LSD for moved switches uses it on every version.)"""
    return Carry(old, new)(old_states, end_up)


def mixed_routing_hazard(old: Fabric, new: Fabric, from_old: list[int] | None = None) -> str | None:
    """Why switches routing on `new` next to switches routing on `old` may loop traffic, or None.

    Moved switches (controller.nextlsd) compute routes on the next config's metric while the others still
    route on the running one's. A loop needs two relays sending a packet back and forth, so it needs a link
    between two switches that relay (transit); without one (a leaf-spine: spines meet only leaves) nothing
    can loop. With one (3 tiers: agg -- spine) a metric that differs can: a link re-weighted (tester, 3-tier
    lab: tor-1-1 -- agg-1-1 to weight 10, agg-1-1 alone moved: it sent tor-1-1's traffic up to the spines,
    which sent half of it back to it; 34 % of the flows to tor-1-1 lost, no failure anywhere), a switch's
    transit role changed, a prefix that moves to other switches, a new link between two switches of the
    running config (a path only the moved switches know). New switches and their links (a ToR added),
    removed links and timers change no metric the others use. `from_old`: per link of `new` its index in
    `old` (-1: new), as Carry builds it."""
    transit_old = {s.name: bool(s.transit) for s in old.switches}
    transit_new = {s.name: bool(s.transit) for s in new.switches}
    relay = next((x for f, t in ((old, transit_old), (new, transit_new)) for x in f.links
                  if t[x.a.switch] and t[x.b.switch]), None)
    if relay is None:
        return None
    why = f"relays meet (link {relay.name}), and "
    for name, was in transit_old.items():
        if name in transit_new and transit_new[name] != was:
            return why + f"switch {name} {'relays' if transit_new[name] else 'no longer relays'} traffic in the next config"
    if from_old is None:
        by_key = {link_key(x): i for i, x in enumerate(old.links)}
        from_old = [by_key.get(link_key(x), -1) for x in new.links]
    for j, i in enumerate(from_old):
        link = new.links[j]
        if i >= 0 and old.links[i].weight != link.weight:
            return why + f"link {link.name} is re-weighted ({old.links[i].weight} -> {link.weight})"
        if i < 0 and link.a.switch in transit_old and link.b.switch in transit_old:
            return why + f"link {link.name} is new between two switches of the running config"

    def origins(f: Fabric) -> dict[object, frozenset[str]]:
        out: dict[object, set[str]] = {}
        for sw in f.switches:
            for pfx in sw.prefixes:
                out.setdefault(pfx, set()).add(sw.name)
        return {p: frozenset(v) for p, v in out.items()}

    now_at = origins(new)
    for pfx, at in origins(old).items():
        if pfx in now_at and now_at[pfx] != at:
            return why + f"prefix {pfx} moves ({', '.join(sorted(at))} -> {', '.join(sorted(now_at[pfx]))})"
    return None


class Carry:
    """`carry_states` from `old` to `new` with the link index map built once (O(links) per call, no dict of
    link identities per call): `Carry(old, new)(old_states, end_up) -> bytearray` of `new.lsd_size` bytes.
    `identity`: same links in the same order and the same external slots (a re-weight, new timers): the
    states are copied. `hazard`: why moved switches must not route on `new` before the commit
    (`mixed_routing_hazard`), or None."""

    __slots__ = ("_from", "_new", "_slots", "hazard", "identity", "key", "n", "new_link_switches")

    def __init__(self, old: Fabric, new: Fabric) -> None:
        def ends(links) -> list[tuple[str, int, str, int]]:  # noqa: ANN001
            return [(x.a.switch, x.a.port, x.b.switch, x.b.port) for x in links]

        self.key = (old.digest, new.digest)     # which two configs it maps (Rollout.prepare checks it)
        self.n = new.lsd_size
        new_ends = ends(new.links)
        if len(old.links) == len(new.links) and ends(old.links) == new_ends:
            # the same links in the same order (a re-weight, new timers): no identity map to build (~0.35 s for
            # the 134,400 links of the Jupiter preset, in the master's turn)
            self._from, self._new = list(range(len(new.links))), []
        else:
            by_key = {link_key(link): i for i, link in enumerate(old.links)}
            #: per link of `new`: its index in `old`, or -1 (new in `new`)
            self._from = [by_key.get(link_key(link), -1) for link in new.links]
        #: the new links: (index in `new`, end a, end b)
        self._new = [(j, (e[0], e[1]), (e[2], e[3])) for j, e in enumerate(new_ends) if self._from[j] < 0]
        #: the switches at an end of a new link: only their usable ports (`end_up`) can change what a call gives
        #: for the same `old_states`
        self.new_link_switches = frozenset(end[0] for _j, a, b in self._new for end in (a, b))
        old_slots = {slot: i for i, slot in enumerate(old.external_slots, start=len(old.links))}
        self._slots = [old_slots.get(slot, -1) for slot in new.external_slots]
        self.hazard = mixed_routing_hazard(old, new, self._from)
        self.identity = (len(old.links) == len(new.links) and not self._new
                         and self._from == list(range(len(new.links))) and old.external_slots == new.external_slots)

    def __call__(self, old_states: bytes, end_up: Callable[[str, int], bool | None]) -> bytearray:
        if self.identity and len(old_states) == self.n:
            return bytearray(old_states)
        out = bytearray(old_states[i] if i >= 0 else LinkState.DOWN for i in self._from)
        for j, a, b in self._new:
            if end_up(*a) and end_up(*b):
                out[j] = LinkState.UP
        n_old = len(old_states)
        out.extend(old_states[i] if 0 <= i < n_old else LinkState.DOWN for i in self._slots)
        return out


class IncompatibleConfig(RolloutError):
    """A next config that changes what a rollout cannot; `field` is named as the config file names it
    (`masters[2].rest_port`, `distribution.mode`), `problem` says what differs. Nothing changed."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source, self.field, self.problem = source, field, problem
        super().__init__(f"{source}: {field}: {problem}")


def _differs(section: str, old: object, new: object) -> tuple[str, object, object] | None:
    """The first field of dataclass `new` whose value differs from `old`'s: (field path, old, new)."""
    for f in fields(new):  # type: ignore[arg-type]
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a != b:
            return f"{section}.{f.name}", a, b
    return None


def check_compatible(current: Fabric, nxt: Fabric) -> None:
    """What a rollout cannot change (a restart of the replicas can): the masters (every field, in order) and
    the distribution. Raises IncompatibleConfig naming the first field that differs."""
    why = "a rollout cannot change the replicas (restart them on the new config instead)"
    if len(current.masters) != len(nxt.masters):
        raise IncompatibleConfig(nxt.source, "masters", f"{len(nxt.masters)} replica(s), the running config has "
                                                        f"{len(current.masters)}: {why}")
    for i, (old, new) in enumerate(zip(current.masters, nxt.masters, strict=True)):
        diff = _differs(f"masters[{i}]", old, new)
        if diff is not None:
            raise IncompatibleConfig(nxt.source, diff[0], f"{diff[2]} here, {diff[1]} in the running config: {why}")
    diff = _differs("distribution", current.distribution, nxt.distribution)
    if diff is not None:
        raise IncompatibleConfig(nxt.source, diff[0], f"{diff[2]} here, {diff[1]} in the running config: a "
                                                      f"rollout cannot change the distribution (restart the "
                                                      f"replicas and clients on the new config instead)")


@dataclass(frozen=True, slots=True)
class Held:
    digest: str
    at: float


class Rollout:
    """Which configs exist (current, next) and which switch holds which. See the module docstring."""

    def __init__(self, current: Fabric) -> None:
        self.current = current
        self.next: Fabric | None = None
        self._carry: Carry | None = None       # the index map current -> next (`carry()`), built once
        self.phase = Phase.IDLE
        self.prepared_at: float | None = None
        self.held: dict[str, Held] = {}
        #: the last outcome, for operators: ("committed"|"aborted", digest, at)
        self.last: tuple[str, str, float] | None = None
        #: a config this replica was restarted on while it had it prepared (controller.durable.RolloutStore):
        #: it runs the recorded running config and takes this one only if its leader runs it (the commit
        #: happened while it was down: `pending_for`); a prepare or an abort drops it
        self.pending: Fabric | None = None

    @property
    def digests(self) -> tuple[str, ...]:
        """The digests reports are accepted under: current, then next while prepared."""
        return (self.current.digest,) if self.next is None else (self.current.digest, self.next.digest)

    def prepare(self, nxt: Fabric, now: float, carry: Carry | None = None) -> bool:
        """Hold `nxt` as the next config. Returns False if it already is (idempotent: every replica can be
        told again). RolloutError if it is the current config, another next one is prepared, or it
        changes what a rollout cannot (check_compatible). `carry`: `Carry(current, nxt)` if the caller built
        it already (off the event loop: a few tenths of a second at Jupiter size), else built when needed."""
        if nxt.digest == self.current.digest:
            raise RolloutError(f"{nxt.source}: is the running config (digest {nxt.digest[:12]}...): nothing to roll out")
        if self.next is not None:
            if self.next.digest == nxt.digest:
                return False
            raise RolloutError(f"a rollout to {self.next.digest[:12]}... is prepared: commit or abort it first")
        check_compatible(self.current, nxt)
        self.pending = None
        self.next, self.phase, self.prepared_at = nxt, Phase.PREPARED, now
        self._carry = carry if carry is not None and carry.key == (self.current.digest, nxt.digest) else None
        return True

    def carry(self) -> Carry:
        """The index map from the current config to the prepared next one (built once per prepare).
        RolloutError if nothing is prepared."""
        if self.next is None:
            raise RolloutError("no rollout prepared")
        if self._carry is None:
            self._carry = Carry(self.current, self.next)
        return self._carry

    def note(self, switch: str, digest: str, now: float) -> None:
        """`switch` reported under `digest` at `now` (any digest: REST shows what each switch holds)."""
        self.held[switch] = Held(digest, now)

    def holds(self, switch: str) -> str | None:
        h = self.held.get(switch)
        return None if h is None else h.digest

    def blockers(self, now: float, alive: Callable[[str], bool] | None = None) -> dict[str, str]:
        """Switches of the next config that stop a commit: switch -> why. A switch blocks when it is alive
        (heard within switch_dead, or `alive(switch)` if given) and does not hold the next config."""
        if self.next is None:
            return {}
        dead = self.next.timers.switch_dead
        out: dict[str, str] = {}
        for sw in self.next.switches:
            h = self.held.get(sw.name)
            live = alive(sw.name) if alive is not None else (h is not None and now - h.at < dead)
            if h is None or not live or h.digest == self.next.digest:
                continue
            out[sw.name] = "holds the current config" if h.digest == self.current.digest \
                else f"holds another config ({h.digest[:12]}...)"
        return out

    def commit(self, now: float, alive: Callable[[str], bool] | None = None) -> Fabric:
        """Make the next config current and return it. RolloutError if nothing is prepared or a live switch
        does not hold it yet (the message lists them)."""
        if self.next is None:
            raise RolloutError("no rollout prepared")
        blocking = self.blockers(now, alive)
        if blocking:
            names = ", ".join(f"{sw} ({why})" for sw, why in sorted(blocking.items())[:8])
            more = f" and {len(blocking) - 8} more" if len(blocking) > 8 else ""
            raise RolloutError(f"commit refused: {len(blocking)} live switch(es) do not hold the next config: "
                               f"{names}{more}")
        nxt = self.next
        self._finish("committed", now)
        self.current = nxt
        return nxt

    def adopt(self, nxt: Fabric, now: float) -> None:
        """A backup follows its leader's commit (an LSD snapshot under the prepared next digest)."""
        if self.next is None or self.next.digest != nxt.digest:
            raise RolloutError("adopt: not the prepared next config")
        self._finish("committed", now)
        self.current = nxt

    def pending_for(self, digest: str, now: float) -> Fabric | None:
        """The pending config, prepared now, if `digest` is its (the leader runs it: a commit this replica
        missed while down); else None."""
        pending = self.pending
        if pending is None or self.next is not None or pending.digest != digest:
            return None
        self.prepare(pending, now)
        return pending

    def abort(self, now: float) -> bool:
        """Drop the next config, and a pending one. False if there was none (idempotent)."""
        pending, self.pending = self.pending, None
        if self.next is None:
            if pending is not None:
                self.last = ("aborted", pending.digest, now)
            return pending is not None
        self._finish("aborted", now)
        return True

    def _finish(self, outcome: str, now: float) -> None:
        assert self.next is not None
        self.last = (outcome, self.next.digest, now)
        self.next, self.phase, self.prepared_at, self._carry = None, Phase.IDLE, None, None

    def status(self, now: float, switches: Iterable[str] | None = None,
               alive: Callable[[str], bool] | None = None) -> dict:
        """JSON-ready: phase, digests, which switch holds which config (current/next/other/unheard) and what
        blocks a commit."""
        names = list(switches) if switches is not None else sorted(
            {s.name for s in self.current.switches} | ({s.name for s in self.next.switches} if self.next else set()))
        def label(sw: str) -> str:
            d = self.holds(sw)
            if d is None:
                return "unheard"
            if d == self.current.digest:
                return "current"
            if self.next is not None and d == self.next.digest:
                return "next"
            return "other"
        return {
            "phase": self.phase.value,
            "current": self.current.digest,
            "next": self.next.digest if self.next else None,
            "next_source": self.next.source if self.next else None,
            "pending": self.pending.digest if self.pending else None,
            "switches": {sw: label(sw) for sw in names},
            "blockers": self.blockers(now, alive),
            "last": None if self.last is None else {"outcome": self.last[0], "digest": self.last[1]},
        }
