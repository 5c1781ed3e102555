"""Config rollout on the master core (issue #21; controller.core.MasterCore mixes this in): prepare the next
config, commit it as a new LSD version on its link index (states carried by link identity,
controller.rollout.carry_states), abort, and the status view. While prepared, the master serves switches
that moved to the next config the LSD carried to it on every version (controller.nextlsd, `_next_refresh`).
The state machine is controller.rollout."""

from __future__ import annotations

from controller.actions import (
    Action,
    NextVersion,
    VersionChanged,
)
from controller.coretypes import NotMaster, Role
from controller.damping import Damper
from controller.drains import DrainBook
from controller.guard import Guard
from controller.linkstate import LinkStateDeriver
from controller.nextlsd import NextLsd
from controller.rollout import Carry, RolloutError, link_key
from proto.config import Fabric
from proto.lsd import DRAINED_STATES, LinkState, LinkStateDB
from proto.lsd import encode_snapshot as _encode


class RolloutOps:
    """MasterCore's rollout operations (a mixin: every attribute it uses is MasterCore's)."""

    # ============================================================================ config rollout (#21)
    def rollout_prepare(self, nxt: Fabric, now: float, carry: Carry | None = None) -> bool:
        """Hold `nxt` as the next config (any role: every replica is told). False if already prepared.
        Raises RolloutError (nothing changed). New switches of `nxt` may report from now on. `carry`: the
        index map to it, if built off the event loop (controller.rollout.Rollout.prepare)."""
        changed = self.rollout.prepare(nxt, now, carry)
        self.switch_names = frozenset(s.name for s in self.fabric.switches) | {s.name for s in nxt.switches}
        return changed

    def rollout_abort(self, now: float) -> bool:
        """Drop the next config (any role). False if none was prepared."""
        done = self.rollout.abort(now)
        self._next_usable.clear()
        # moved switches are due the running config's LSD again, which they refuse: as before the rollout
        self._next_lsd = None
        self.dist.clear_next(now)
        self.switch_names = frozenset(s.name for s in self.fabric.switches)
        return done

    def rollout_status(self, now: float) -> dict:
        return {**self.rollout.status(now, alive=self._switch_alive(now)), "role": self.role.value,
                "term": self.term, "version": self.version, "master": self.id, "leader": self.leader,
                "next_version": self.next_lsd_version(), "next_withheld": self.next_withheld()}

    def _switch_alive(self, now: float):  # noqa: ANN202
        dead = self.fabric.timers.switch_dead
        def alive(sw: str) -> bool:
            h = self.rollout.held.get(sw)
            return h is not None and now - h.at < dead
        return alive

    def rollout_commit(self, now: float) -> list[Action]:
        """Switch to the prepared next config (MASTER only): a new LSD version on its link index, link states
        carried by name (controller.rollout.carry_states), a full snapshot to every peer under the next
        digest. Raises NotMaster, RolloutError (a live switch does not hold it yet; held LSD)."""
        if self.role != Role.MASTER:
            raise NotMaster(f"{self.id} is {self.role.value} (term {self.term}, leader {self.leader})")
        if self.held:
            raise RolloutError("commit refused: this master still holds its first LSD (it has not heard the "
                               "switches yet)")
        old_fabric, old_states = self.fabric, self.lsd.states()
        carry = self.rollout.carry()            # RolloutError if nothing is prepared, as commit's
        nxt = self.rollout.commit(now, self._switch_alive(now))
        usable = self._usable_views(now)
        states = carry(old_states, lambda sw, port: self._end_usable(sw, port, now))
        # above every version taken, the moved switches' LSD under the next config included (`_next_refresh`):
        # they hold one of those, and take this snapshot as newer
        version = self.lsd.next_version
        self.dist.clear_next(now)
        self._adopt_fabric(nxt, now, usable)
        # The first version on the new index: carried states, then what the reports say about every link.
        drained = {i for i, st in enumerate(states) if st in DRAINED_STATES}
        self.drains.inherit(drained, {i for i in drained if states[i] == LinkState.DRAINED_DOWN})
        self.deriver.drained = set(drained)
        self.deriver.drained_alone = self.drains.drained_alone() & drained
        changes = self.deriver.changes(range(len(nxt.links)), bytes(states), now)
        for i, st in changes.items():
            states[i] = st
        self.lsd.load_snapshot(version, _encode(bytes(states)))
        self.dist.activate(self.term, now)          # every peer: a full snapshot of the new index, now
        # changes: links added or removed, and carried links whose state the reports changed
        keys_old, keys_new = ({link_key(x) for x in f.links} for f in (old_fabric, nxt))
        n = len(keys_old ^ keys_new) + len(changes)
        out: list[Action] = [VersionChanged(version, n, "rollout")]
        out.extend(self.tick(now))
        return out

    def _end_usable(self, switch: str, port: int, now: float) -> bool:
        """`_usable_views(now)[switch]` holds `port`, for one end (the next config's new links only: O(1) each,
        not a view of every switch per LSD version)."""
        nxt = self._next_usable.get(switch)
        if nxt is not None and now - nxt[2] < self.fabric.timers.switch_dead:
            return port in nxt[0]
        view = self.deriver.views.get(switch)
        return view is not None and self.deriver.alive(switch, now) and port in view.usable

    def _usable_views(self, now: float) -> dict[str, frozenset[int]]:
        """Per live switch, the fabric ports its last report says usable (under the next config if it
        reported under it, else under the current one)."""
        out = {sw: v.usable for sw, v in self.deriver.views.items() if self.deriver.alive(sw, now)}
        dead = self.fabric.timers.switch_dead
        for sw, (ports, _seq, at) in self._next_usable.items():
            if now - at < dead:
                out[sw] = ports
        return out

    def _adopt_fabric(self, nxt: Fabric, now: float, usable: dict[str, frozenset[int]] | None = None) -> None:
        """Make `nxt` this replica's config: every table derived from the fabric is rebuilt; switch views
        carry over (ports by number), drains carry over as LSD states (the notes' who/why do not)."""
        old_views = self.deriver.views
        seqs = {sw: v.report_seq for sw, v in old_views.items()}
        seqs.update({sw: seq for sw, (_p, seq, _at) in self._next_usable.items()})
        ats = {sw: v.reported_at for sw, v in old_views.items()}
        ats.update({sw: at for sw, (_p, _s, at) in self._next_usable.items()})
        self.fabric = nxt
        self.switch_names = frozenset(s.name for s in nxt.switches)
        self.deriver = LinkStateDeriver(nxt)
        for sw, ports in (usable or {}).items():
            if sw in self.switch_names:
                self.deriver.set_report(sw, ports, seqs.get(sw, -1), ats.get(sw, now))
        self.guard = Guard(nxt)
        self._links_of = {s.name: nxt.links_of(s.name) for s in nxt.switches}
        self._link_by_end = {}
        for link in nxt.links:
            self._link_by_end[(link.a.switch, link.a.port)] = link.index
            self._link_by_end[(link.b.switch, link.b.port)] = link.index
        self.lsd = LinkStateDB(nxt.lsd_size, history=nxt.lsd.history, version=self.lsd.version)
        self._slots_of = {s.name: nxt.slots_of(s.name) for s in nxt.switches if s.bgp is not None}
        self.damper = Damper(nxt.damping, len(nxt.links), [(k.a.switch, k.b.switch) for k in nxt.links])  # new index: clean
        self.drains = DrainBook(nxt)
        self._unnoted = set()
        self.dist.digest = nxt.digest
        self._next_usable.clear()
        self._other_config.clear()
        self._next_lsd = self.dist.next = None

    # ============================================================================ moved switches' LSD
    def _holds_next(self, switch: str) -> bool:
        """`switch`'s last report (heard by this replica in any role) carried the prepared next config, and
        the next config is one a switch may route on before the others (`next_withheld`): it is then served
        the LSD under it. Otherwise it is served the running LSD, which it refuses: it keeps the routes it
        holds until the commit, as before moved switches were served."""
        nxt = self.rollout.next
        return nxt is not None and self.rollout.holds(switch) == nxt.digest and self.next_withheld() is None

    def next_withheld(self) -> str | None:
        """Why switches moved to the prepared next config are not served its LSD before the commit
        (controller.rollout.mixed_routing_hazard: a metric change where relays meet could loop traffic), or
        None (also when nothing is prepared)."""
        return None if self.rollout.next is None else self.rollout.carry().hazard

    def _ends_new_link(self, switch: str) -> bool:
        """A report of `switch` under the next config may change the moved switches' LSD without a new running
        version: it ends a link new in the next config (or no LSD was carried yet). Any other switch's ports
        reach that LSD through the running one (a new version of it refreshes the view anyway)."""
        view = self._next_lsd
        return view is None or switch in view.new_link_switches

    def _next_refresh(self, now: float, out: list[Action]) -> None:
        """While prepared and some client reports under the next config (MASTER): carry the LSD to the next
        config (controller.nextlsd.NextLsd, the commit's rule with the ports the reports say usable) when the
        LSD has a new version or the evidence about the next config's new links changed, and make it a new
        version of this master's sequence (the LSD's next version goes above it: LinkStateDB.reserve). The
        moved clients are due it: at once if a link went out of use, else paced (Distributor.on_next_version).
        O(links) per new version; nothing while nobody moved."""
        nxt = self.rollout.next
        if self.role != Role.MASTER or nxt is None or not self.dist.moved:
            return
        view = self._next_lsd
        if view is None or view.fabric is not nxt:
            view = self._next_lsd = NextLsd(nxt, self.rollout.carry())
            self.dist.set_next(view, nxt.digest)
        elif view.from_version == self.lsd.version and not self._next_dirty:
            return
        self._next_dirty = False
        states = view.carry(self.lsd.states(), lambda sw, port: self._end_usable(sw, port, now))
        if view.from_version == self.lsd.version and states == view.states:
            return                      # the evidence moved, the content did not: no version for nothing
        version = self.lsd.next_version
        self.lsd.reserve(version)
        n, urgent = view.publish(version, self.lsd.version, states)
        self.dist.on_next_version(now, urgent)
        out.append(NextVersion(version, self.lsd.version, n, urgent))

    def next_lsd_version(self) -> int | None:
        """The version of the LSD served to moved switches (None: none; REST `rollout`)."""
        view = self._next_lsd
        return None if view is None or view.version < 0 else view.version
