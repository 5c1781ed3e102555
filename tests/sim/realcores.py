"""The simulator with the REAL cores: every replica is a `controller.node.MasterNode` (a
`controller.core.MasterCore` driven by `controller.roles.FmrpDriver`, with the routing, feedback and
persist-before-send rules of that one object: the asyncio server drives the same node), and every switch of a small Clos fabric runs the
real client cores `client.reporter.Reporter` + `client.replica.LsdReplica`. Same fault schedule, clocks and
invariants as `tests.sim.world.World`, plus on the real LSD stream:

- a client applies (`LsdApplied`) only a (term, version) whose content is the one the master of that term
  had at that version; never a term lower than one delivered to it, never an older version of its term;
- after the heal, every switch's LSD equals the true link state (a link is UP iff it is up in the truth),
  from the one master's term;
- issue #16, silence is not evidence: a master changes a link in a new version only to a state the truth
  had within `EVIDENCE_WINDOW` before (a report said so) — never because a switch went quiet;
- gray runs (`gray="deaf"|"mute"|"cut"`): one one-way control-network fault on the master for 3.5 s
  (it hears no client / no client hears it / one client and it are cut, one or both ways) while links
  change; every change reaches every switch's LSD within `GRAY_BOUND` (a majority of replicas reaches
  every switch throughout; the reports of a switch that does not hear the master are relayed by the
  backups), except what the drastic-change guard holds (a single witness beyond its budget: 25 % of this
  6-link fabric is 1 link), which is alarmed by design.
"""

from __future__ import annotations

from typing import Any

from client.replica import LsdApplied, LsdReplica
from client.reporter import Reporter, SendToMaster
from controller.actions import Action, Handover, RoleChanged, Send
from controller.core import MasterCore, Role
from controller.node import MasterNode, Step, run_turn
from controller.roles import FmrpDriver
from proto.clos import clos_fabric
from proto.config import Fabric
from proto.lsd import LinkState
from proto.messages import Keepalive, LsdDelta, LsdFull, PortStatus, ReportAck
from tests.sim.world import Replica, Result, World

#: a report is sent when the truth changes and delivered within the network delay (<= 21 ms here)
EVIDENCE_WINDOW = 0.05
#: issue #16 target: a real link failure during a one-way fault reaches every switch within 1 s
GRAY_BOUND = 1.0


class Switch:
    def __init__(self, fabric: Fabric, name: str) -> None:
        self.name = name
        self.reporter = Reporter(fabric, name, now=0.0, initial_seq=1)
        self.replica = LsdReplica(fabric, name, now=0.0)
        self.seen_term = -1
        self.applied: tuple[int, int] = (-1, -1)
        self.timer_gen = 0
        self.timer_at = float("inf")


class RealWorld(World):
    REPLAY_FLAG = " --real"
    def __init__(self, seed: int, *, sticky: bool | None = None, failover: str | None = None,
                 gray: str | None = None) -> None:
        super().__init__(seed, sticky=sticky, failover=failover, gray=gray)
        sc = self.sc
        # switch_dead 1 s (the minimum above report_refresh): silences long enough to matter happen in a run
        self.fabric = clos_fabric(pods=0, spines=2, leaves=3, masters=sc.n_replicas,
                                  timers=(("switch_dead_ms", 1000),))
        self.timers = self.fabric.timers
        self.masters = self.fabric.masters
        assert list(self.replicas) == [m.id for m in self.masters]
        self.clients = {}
        self.switches = {s.name: Switch(self.fabric, s.name) for s in self.fabric.switches}
        self.truth = [1] * len(self.fabric.links)
        self.nodes: dict[str, MasterNode] = {}
        self.truth_log: list[list[tuple[float, int]]] = [[(0.0, 1)] for _ in self.fabric.links]
        self.pending: list[tuple[float, int, int]] = []      # gray runs: (time, link, state) to reach everyone
        self.gray_latencies: list[float] = []
        self.gray_excluded: set[int] = set()                 # links only the cut switch can bring UP
        self.handovers = 0
        self.held_seen: set[tuple[float, int, int]] = set()
        #: (term, version) keys of the LSD served under a prepared next config (issue #21)
        self.next_keys: set[tuple[int, int]] = set()

    def run(self) -> Result:
        for sw in self.switches.values():
            self._sw_execute(sw, sw.reporter.update(self._ports(sw.name), 0.0))
        return super().run()

    # ------------------------------------------------------------------------------------ replicas
    @property
    def cores(self) -> dict[str, MasterCore]:
        return {rid: n.core for rid, n in self.nodes.items()}

    def _boot(self, r: Replica, bogus_version: int | None) -> None:
        del bogus_version  # the real core's LSD version cannot be faked; the bogus term is kept
        core = MasterCore(self.fabric, r.id)
        driver = FmrpDriver(core, r.durable_term, seed=self.seed)
        node = self.nodes[r.id] = MasterNode(core, driver)
        step = node.start(r.local(self.loop.now))
        r.fmrp = driver.fmrp
        self._turn(r, step)

    def _crash(self, r: Replica) -> None:
        if r.up:
            self.nodes.pop(r.id, None)
        super()._crash(r)

    def _next_deadline(self, r: Replica) -> float | None:
        return self.nodes[r.id].next_deadline()

    def _on_timer(self, r: Replica, now: float) -> None:
        self._turn(r, self.nodes[r.id].timer(now))

    def _step_down(self, r: Replica) -> None:
        self._turn(r, self.nodes[r.id].stop(r.local(self.loop.now)))

    def _replica_receive(self, r: Replica, src: str, msg: Any, now: float) -> None:
        self._turn(r, self.nodes[r.id].datagram(src, msg, now))

    def _turn(self, r: Replica, step: Step) -> None:
        """Execute one turn of the replica's node like the server does; then check the LSD it serves."""
        node = self.nodes[r.id]
        run_turn(node, step, r.local(self.loop.now), lambda actions: self._effects(r, actions),
                 lambda p: self._persisted(r, p))
        core = node.core
        if core.role is Role.MASTER:
            key = (core.term, core.version)
            states = core.lsd.states()
            fresh = key not in self.registry
            old = self.registry.setdefault(key, states)
            if old != states:
                self._fail(f"two different LSDs with (term, version) = {key} ({r.id})")
            before = core.version - 1
            while (core.term, before) in self.next_keys:     # taken by the LSD under a prepared next config
                before -= 1
            prev = self.registry.get((core.term, before))
            if fresh and prev is not None:
                self._check_evidence(r.id, key, prev, states)
            view = getattr(core, "_next_lsd", None)
            if view is not None and view.version >= 0:
                # issue #21: the LSD served to switches that moved to the next config shares the version
                # sequence: one content per (term, version) across both configs
                nkey = (core.term, view.version)
                self.next_keys.add(nkey)
                if self.registry.setdefault(nkey, view.states) != view.states:
                    self._fail(f"two different LSDs with (term, version) = {nkey} ({r.id}, next config)")
                self._check_next(r.id, view, self.registry.get((core.term, view.from_version)))

    def _check_next(self, rid: str, view: Any, base: bytes | None) -> None:
        """The LSD under the next config carries the running one it names (`from_version`) link by link
        (controller.nextlsd). A hook: the rollout world (tests/test_rollout_sim.py) checks it."""

    def _effects(self, r: Replica, actions: list[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                self._sent(r, a.dest, a.msg)
            elif isinstance(a, RoleChanged):
                self._role_changed(r, a)
            elif isinstance(a, Handover):
                self.handovers += 1
                self._log(r.id, "HANDOVER", a)

    def _check_evidence(self, rid: str, key: tuple[int, int], prev: bytes, states: bytes) -> None:
        """Silence is not evidence: every link a new version changes took that state in the truth within
        EVIDENCE_WINDOW (some switch reported it)."""
        now = self.loop.now
        for i, (a, b) in enumerate(zip(prev, states, strict=True)):
            if a == b:
                continue
            want = 1 if b == LinkState.UP else 0
            log = self.truth_log[i]
            recent = [st for t, st in log if t >= now - EVIDENCE_WINDOW]
            before = [st for t, st in log if t < now - EVIDENCE_WINDOW]
            if want not in recent and (not before or before[-1] != want):
                self._fail(f"{rid} changed link {self.fabric.links[i].name} to {LinkState(b).name} in {key} "
                           f"without evidence: truth log {log}")

    def _extra_result(self) -> dict[str, Any]:
        return {"gray_latencies": tuple(self.gray_latencies), "handovers": self.handovers,
                "gray_held": len({i for _, i, _ in self.held_seen})}

    def _role_changed(self, r: Replica, a: RoleChanged) -> None:
        self._log(r.id, f"ROLE {a.role}", a)
        if a.role == Role.MASTER.value and (r.role != "master" or a.term not in r.masterships):
            r.masterships.add(a.term)   # a master re-anchoring in a higher term (#19) is a new mastership
            self._became_master(r, a.term)
        elif a.role != Role.MASTER.value:
            self._left_master(r, a.role, a)

    # ------------------------------------------------------------------------------------ delivery
    def _client_deliver(self, dst: str, src: str, msg: Any) -> None:
        self._sw_receive(self.switches[dst], src, msg)

    def _client_names(self) -> list[str]:
        return list(self.switches)

    def _keepalives(self) -> None:  # the real cores send their own
        pass

    def _reports(self) -> None:  # the real reporters send their own
        pass

    # ------------------------------------------------------------------------------------ switches
    def _ports(self, switch: str) -> tuple[PortStatus, ...]:
        out = []
        for p in self.fabric.fabric_ports(switch):
            link = self.fabric.link_at(switch, p)
            up = link is not None and self.truth[link.index] == 1
            out.append(PortStatus(p, up, up, up, True, False))
        return tuple(out)

    def _truth_change(self) -> None:
        if self.healed:
            return
        link = self.fabric.links[self.rng.randrange(len(self.fabric.links))]
        self.truth[link.index] ^= 1
        self._log("truth", "change", (link.name, self.truth[link.index]))
        now = self.loop.now
        self.truth_log[link.index].append((now, self.truth[link.index]))
        if self.sc.gray is not None and not (self.truth[link.index] and link.index in self.gray_excluded):
            self.pending.append((now, link.index, self.truth[link.index]))
        for end in (link.a.switch, link.b.switch):
            sw = self.switches[end]
            self._sw_execute(sw, sw.reporter.update(self._ports(end), now))

    def _sw_receive(self, sw: Switch, src: str, msg: Any) -> None:
        now = self.loop.now
        out: list[Any] = []
        if isinstance(msg, LsdFull | LsdDelta | Keepalive):
            seen_before = sw.seen_term
            sw.seen_term = max(sw.seen_term, msg.term)
            out += sw.reporter.on_master_heard(msg.master, msg.term, now, msg.backup)
            if isinstance(msg, LsdFull):
                out += sw.replica.on_full(msg, now)
            elif isinstance(msg, LsdDelta):
                out += sw.replica.on_delta(msg, now)
            else:
                out += sw.replica.on_keepalive(msg, now)
            for a in out:
                if isinstance(a, LsdApplied):
                    self._check_applied(sw, a, seen_before)
        elif isinstance(msg, ReportAck):
            out += sw.reporter.on_ack(msg, now)
        self._sw_execute(sw, out)

    def _check_applied(self, sw: Switch, a: LsdApplied, seen: int) -> None:
        self._dirty = True
        self._log(sw.name, "apply", (a.master, a.term, a.version, a.full))
        if a.term < seen:
            self._fail(f"switch {sw.name} applied term {a.term} after seeing term {seen}")
        if a.term == sw.applied[0] and a.version < sw.applied[1]:
            self._fail(f"switch {sw.name}: version went back in term {a.term}: {sw.applied[1]} -> {a.version}")
        want = self.registry.get((a.term, a.version))
        if want != a.states:
            self._fail(f"switch {sw.name} applied ({a.term}, {a.version}) = {a.states!r}, the master had {want!r}")
        sw.applied = (a.term, a.version)

    def _sw_execute(self, sw: Switch, actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, SendToMaster):
                self.net.send(sw.name, a.master, a.msg)
        self._sw_schedule(sw)

    def _sw_schedule(self, sw: Switch) -> None:
        t = max(min(sw.reporter.next_deadline(), sw.replica.next_deadline()), self.loop.now)
        if t < sw.timer_at and t != float("inf"):
            sw.timer_gen += 1
            sw.timer_at = t
            self.loop.at(t, self._sw_timer, sw, sw.timer_gen)

    def _sw_timer(self, sw: Switch, gen: int) -> None:
        if gen != sw.timer_gen:
            return
        sw.timer_at = float("inf")
        now = self.loop.now
        out = sw.reporter.tick(now) + sw.replica.tick(now)
        for a in out:
            if isinstance(a, LsdApplied):
                self._check_applied(sw, a, sw.seen_term)
        self._sw_execute(sw, out)

    # ------------------------------------------------------------------------------------ gray runs
    def _schedule_truth_changes(self) -> None:
        sc = self.sc
        if sc.gray is None:
            super()._schedule_truth_changes()
            return
        self.loop.at(sc.chaos_start, self._gray_fault, sc.gray)
        t = sc.chaos_start
        while True:   # link changes spaced beyond the bound, from the fault's start until a bound before its end
            t += self.rng.uniform(0.0, 0.4) if t == sc.chaos_start else self.rng.uniform(GRAY_BOUND + 0.05, 1.6)
            if t > sc.chaos_end - GRAY_BOUND - 0.05:
                break
            self.loop.at(t, self._truth_change)

    def _gray_fault(self, kind: str) -> None:
        master = self._current_master()
        if master is None:
            self._fail("gray run: no master when the fault starts")
        assert master is not None
        m = master.id
        names = list(self.switches)
        if kind == "deaf":
            pairs = {(c, m) for c in names}
        elif kind == "mute":
            pairs = {(m, c) for c in names}
        else:
            c = self.rng.choice(names)
            pairs = self.rng.choice(({(c, m)}, {(m, c)}, {(c, m), (m, c)}))
        self.net.faults.blocked |= pairs
        self._log(m, f"FAULT gray {kind}", sorted(pairs))

    def _check(self) -> None:
        if self.pending:
            now = self.loop.now
            keep = []
            for t, i, st in self.pending:
                if self.truth[i] != st:
                    continue                         # changed again: the newer change is tracked
                if any(i in c.guard.held for c in self.cores.values() if c.role is Role.MASTER):
                    self.held_seen.add((t, i, st))   # the drastic-change guard holds it (alarmed): by design
                    continue
                if all(sw.replica.states()[i] == (LinkState.UP if st else LinkState.DOWN)
                       for sw in self.switches.values()):
                    self.gray_latencies.append(now - t)
                elif now - t > GRAY_BOUND:
                    self._fail(f"gray {self.sc.gray}: link {self.fabric.links[i].name} -> {st} at {t:.3f} "
                               f"not on every switch after {GRAY_BOUND}s")
                else:
                    keep.append((t, i, st))
            self.pending = keep
        super()._check()

    # ------------------------------------------------------------------------------------ convergence
    def _lsd_problem(self, m: Replica) -> str:
        assert m.fmrp is not None
        want = bytes(LinkState.UP if t else LinkState.DOWN for t in self.truth)
        core = self.nodes[m.id].core
        if core.lsd.states() != want:
            return f"master {m.id} LSD {core.lsd.states()!r} != truth {want!r}"
        for sw in self.switches.values():
            if sw.replica.states() != want or sw.replica.data_term != m.fmrp.leader_term:
                return f"switch {sw.name} at term {sw.replica.data_term} has {sw.replica.states()!r}, truth {want!r}"
        return ""


def run_real_seed(seed: int, *, sticky: bool | None = None, failover: str | None = None,
                  gray: str | None = None) -> Result:
    return RealWorld(seed, sticky=sticky, failover=failover, gray=gray).run()
