"""The simulator with the REAL cores: every replica is a `controller.core.MasterCore` driven by
`controller.fmrp.FmrpDriver` (executed exactly like `controller.server` does: actions in order, PersistTerm
before what follows, core events fed back to the driver), and every switch of a small Clos fabric runs the
real client cores `client.reporter.Reporter` + `client.replica.LsdReplica`. Same fault schedule, clocks and
invariants as `tests.sim.world.World`, plus on the real LSD stream:

- a client applies (`LsdApplied`) only a (term, version) whose content is the one the master of that term
  had at that version; never a term lower than one delivered to it, never an older version of its term;
- after the heal, every switch's LSD equals the true link state (a link is UP iff it is up in the truth),
  from the one master's term.
"""

from __future__ import annotations

from typing import Any

from client.replica import LsdApplied, LsdReplica
from client.reporter import Reporter, SendToMaster
from controller.actions import PersistTerm, RoleChanged, Send
from controller.core import MasterCore, Role
from controller.fmrp import FmrpDriver, FmrpState
from proto.clos import clos_fabric
from proto.config import Fabric
from proto.lsd import LinkState
from proto.messages import Keepalive, LsdDelta, LsdFull, PortStatus, ReportAck
from tests.sim.world import Replica, Result, World


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
    def __init__(self, seed: int, *, sticky: bool | None = None, failover: str | None = None) -> None:
        super().__init__(seed, sticky=sticky, failover=failover)
        sc = self.sc
        self.fabric = clos_fabric(pods=0, spines=2, leaves=3, masters=sc.n_replicas)
        self.timers = self.fabric.timers
        self.masters = self.fabric.masters
        assert list(self.replicas) == [m.id for m in self.masters]
        self.clients = {}
        self.switches = {s.name: Switch(self.fabric, s.name) for s in self.fabric.switches}
        self.truth = [1] * len(self.fabric.links)
        self.cores: dict[str, MasterCore] = {}
        self.drivers: dict[str, FmrpDriver] = {}

    def run(self) -> Result:
        for sw in self.switches.values():
            self._sw_execute(sw, sw.reporter.update(self._ports(sw.name), 0.0))
        return super().run()

    # ------------------------------------------------------------------------------------ replicas
    def _start_replica(self, r: Replica, extra_term: int = 0, bogus_version: int | None = None) -> None:
        if r.up:
            return
        r.durable_term += extra_term
        r.incarnation += 1
        r.up = True
        r.role = "inactive"
        core = MasterCore(self.fabric, r.id)
        driver = FmrpDriver(core, r.durable_term, seed=self.seed)
        self.cores[r.id], self.drivers[r.id] = core, driver
        self._log(r.id, "start", f"durable_term={r.durable_term} incarnation={r.incarnation}")
        actions = driver.start(r.local(self.loop.now))
        r.fmrp = driver.fmrp
        del bogus_version  # the real core's LSD version cannot be faked; the bogus term is kept
        self._execute(r, actions)
        self._schedule(r)

    def _crash(self, r: Replica) -> None:
        if r.up:
            self.cores.pop(r.id, None)
            self.drivers.pop(r.id, None)
        super()._crash(r)

    def _schedule(self, r: Replica) -> None:
        times = [t for t in (self.drivers[r.id].next_deadline(), self.cores[r.id].next_deadline()) if t is not None]
        t = max((min(times) - r.offset) / r.rate + 1e-9, self.loop.now)
        if t < r.timer_at:
            r.timer_gen += 1
            r.timer_at = t
            self.loop.at(t, self._timer, r, r.timer_gen)

    def _timer(self, r: Replica, gen: int) -> None:
        if not r.up or gen != r.timer_gen:
            return
        r.timer_at = float("inf")
        self._dirty = True
        now = r.local(self.loop.now)
        self._execute(r, self.drivers[r.id].tick(now) + self.cores[r.id].tick(now))
        self._schedule(r)

    def _step_down(self, r: Replica) -> None:
        self._execute(r, self.drivers[r.id].stop(r.local(self.loop.now)))

    def _execute(self, r: Replica, actions: list[Any]) -> None:
        driver, core = self.drivers[r.id], self.cores[r.id]
        while actions:
            events = []
            for a in actions:
                if isinstance(a, Send):
                    term = getattr(a.msg, "term", None)
                    if a.dest in self.replicas and term is not None and term > r.durable_term:
                        self._fail(f"{r.id} sent {a.msg} with term {term} > durable term {r.durable_term}")
                    self.net.send(r.id, a.dest, a.msg)
                    self._maybe_crash_after_vote(r, a.msg)
                elif isinstance(a, PersistTerm):
                    if a.term < r.durable_term:
                        self._fail(f"{r.id} persisted term {a.term} < durable {r.durable_term}")
                    r.durable_term = a.term
                    self._log(r.id, "persist", a)
                else:
                    if isinstance(a, RoleChanged):
                        self._role_changed(r, a)
                    events.append(a)
            actions = driver.observe(events, r.local(self.loop.now)) if events else []
        if core.role is Role.MASTER:
            key = (core.term, core.version)
            states = core.lsd.states()
            old = self.registry.setdefault(key, states)
            if old != states:
                self._fail(f"two different LSDs with (term, version) = {key} ({r.id})")

    def _role_changed(self, r: Replica, a: RoleChanged) -> None:
        self._log(r.id, f"ROLE {a.role}", a)
        if a.role == Role.MASTER.value and r.role != "master":
            self.elections += 1
            self._elected()
            self.master_since[r.id] = self.loop.now
            prev = self.master_of_term.get(a.term)
            if prev is not None:
                self._fail(f"two masterships in term {a.term}: {prev} and {r.id} (incarnation {r.incarnation})")
            self.master_of_term[a.term] = r.id
            if self.sc.sticky:
                if self.sticky_master is None:
                    self.sticky_master = r.id
                else:
                    self._fail(f"sticky run: {r.id} elected in term {a.term} while {self.sticky_master} is master")
        elif a.role != Role.MASTER.value and self.sc.sticky and r.id == self.sticky_master:
            self._fail(f"sticky run: master {r.id} lost mastership ({a})")
        r.role = a.role

    # ------------------------------------------------------------------------------------ delivery
    def _deliver(self, dst: str, src: str, msg: Any) -> None:
        sw = self.switches.get(dst)
        if sw is not None:
            self._sw_receive(sw, src, msg)
            return
        r = self.replicas[dst]
        if not r.up:
            return
        self._log(dst, "recv", (src, msg))
        self.last_heard[(dst, src)] = self.loop.now
        self._dirty = True
        driver, now = self.drivers[dst], r.local(self.loop.now)
        if isinstance(msg, driver.handles):  # routed like controller.server does
            actions = driver.handle(src, msg, now)
        else:
            actions = self.cores[dst].handle(src, msg, now)
            if isinstance(msg, driver.observes):
                actions += driver.handle(src, msg, now)
        self._execute(r, actions)
        if r.up:
            self._schedule(r)

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

    # ------------------------------------------------------------------------------------ convergence
    def _convergence_problem(self) -> str:
        rs = list(self.replicas.values())
        if not all(r.up for r in rs):
            return "a replica is down"
        ms = [r for r in rs if r.fmrp is not None and r.fmrp.state is FmrpState.MASTER]
        if len(ms) != 1:
            return f"{len(ms)} masters"
        m = ms[0]
        assert m.fmrp is not None
        for r in rs:
            f = r.fmrp
            assert f is not None
            if r is not m and (f.state is not FmrpState.BACKUP or f.leader != m.id or f.leader_term != m.fmrp.term):
                return f"{r.id} is {f.state} (leader {f.leader}, term {f.leader_term})"
        want = bytes(LinkState.UP if t else LinkState.DOWN for t in self.truth)
        core = self.cores[m.id]
        if core.lsd.states() != want:
            return f"master {m.id} LSD {core.lsd.states()!r} != truth {want!r}"
        for sw in self.switches.values():
            if sw.replica.states() != want or sw.replica.data_term != m.fmrp.term:
                return f"switch {sw.name} at term {sw.replica.data_term} has {sw.replica.states()!r}, truth {want!r}"
        return ""


def run_real_seed(seed: int, *, sticky: bool | None = None, failover: str | None = None) -> Result:
    return RealWorld(seed, sticky=sticky, failover=failover).run()
