"""The simulated world: N FMRP replicas (the real `controller.fmrp.Fmrp`), M LSD clients, a faulty network,
per-replica skewed clocks, a seeded fault schedule, and the invariants checked after every event.

LSD replication and the clients are a deliberately MINIMAL MODEL (labelled `Sim*` below), not the real
`controller.core.MasterCore` / `client.replica.LsdReplica`: a master's LSD is a tuple of link states with a
version that grows by one per effective change of the reports it receives; it streams (term, version,
states) to the clients and to the backups (which apply it, tell FMRP their version and ack with a real
`ReplicationAck`); a client follows the highest term it has seen and applies newer (term, version) pairs.
What is under test is the election: who is master when, with which term, and what that does to the
LSD sequence the clients see.

Invariants (a violation raises `InvariantViolation` with the seed and the trace):
- at most one master per term, ever (also: no replica is master twice in one term, across restarts);
- a durable term never decreases and every FMRP message sent carries a term already persisted;
- no two LSDs share a (term, version) — the content for a (term, version) is unique fabric-wide;
- a client never applies an LSD of a term lower than one it has seen, nor an older version of its term;
- sticky runs (no fault ever touches the master): the first master stays master, nobody else is elected;
- after the faults heal, within `heal_bound` seconds: every replica up, exactly one master, all others its
  backups in its term, and every client's LSD equal to the true link state (and still so at the end).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from controller.fmrp import (
    BecomeBackup,
    BecomeInactive,
    BecomeMaster,
    Fmrp,
    FmrpState,
    PersistTerm,
    SendPeer,
)
from proto.config import Master, Timers
from proto.messages import Hello, ReplicationAck, StepDown, Vote, VoteRequest
from tests.sim.network import EventLoop, Network

FMRP_MESSAGES = (Hello, VoteRequest, Vote, ReplicationAck, StepDown)


# ------------------------------------------------------------------------------------------ sim-only model
@dataclass(frozen=True, slots=True)
class SimLsd:
    """SIM-ONLY stand-in for LsdFull/Keepalive: a master's whole LSD (minimal replication model)."""

    master: str
    term: int
    version: int
    states: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SimReport:
    """SIM-ONLY stand-in for PortReport: (link index, state) of every link the client owns."""

    client: str
    states: tuple[tuple[int, int], ...]


class InvariantViolation(AssertionError):
    pass


@dataclass(slots=True)
class Replica:
    id: str
    offset: float
    rate: float
    fmrp: Fmrp | None = None
    up: bool = False
    durable_term: int = 0
    role: str = "inactive"  # what the (model) master core was told: master / backup / inactive
    lsd_term: int = -1
    lsd_version: int = -1
    lsd_states: tuple[int, ...] | None = None
    timer_gen: int = 0
    timer_at: float = float("inf")
    incarnation: int = 0
    masterships: set[int] = field(default_factory=set)

    def local(self, t: float) -> float:
        return self.offset + self.rate * t


@dataclass(slots=True)
class Client:
    """SIM-ONLY minimal LSD client: follows the highest term, applies newer (term, version) pairs."""

    name: str
    links: tuple[int, ...]
    max_term: int = -1
    applied_term: int = -1
    applied_version: int = -1
    applied_states: tuple[int, ...] | None = None
    seen_term: int = -1  # checker's own record: highest term delivered to this client so far


@dataclass(frozen=True, slots=True)
class Scenario:
    seed: int
    sticky: bool
    n_replicas: int
    n_clients: int
    n_links: int
    priorities: tuple[int, ...]
    clocks: tuple[tuple[float, float], ...]  # (offset, rate) per replica
    loss: float
    dup: float
    delay_jitter: float
    chaos_start: float
    chaos_end: float
    heal_bound: float
    n_faults: int
    late_joiner: int | None  # sticky runs: index of a misconfigured replica that starts late
    failover: str | None = None  # clean failover run: no faults but one master "crash" or "stepdown"
    gray: str | None = None  # clean gray-failure run (real cores only): "deaf", "mute" or "cut" on the master

    @staticmethod
    def from_seed(seed: int, sticky: bool | None = None, failover: str | None = None,
                  gray: str | None = None) -> Scenario:
        rng = random.Random(f"scenario:{seed}")
        if gray is not None:  # loopback-like network, skewed clocks, one one-way CPN fault on the master
            n = rng.choice((3, 3, 5))
            return Scenario(
                seed=seed, sticky=False, n_replicas=n, n_clients=2, n_links=4,
                priorities=tuple(rng.choice((100, 150)) for _ in range(n)),
                clocks=tuple((rng.uniform(0.0, 1000.0), rng.uniform(0.99, 1.01)) for _ in range(n)),
                loss=0.0, dup=0.0, delay_jitter=0.001, chaos_start=2.0, chaos_end=5.5, heal_bound=2.0,
                n_faults=0, late_joiner=None, gray=gray,
            )
        if failover is not None:  # a loopback-like network (0.2-1.2 ms), skewed clocks, nothing else
            n = rng.choice((3, 5))
            return Scenario(
                seed=seed, sticky=False, n_replicas=n, n_clients=2, n_links=4,
                priorities=tuple(rng.choice((100, 150)) for _ in range(n)),
                clocks=tuple((rng.uniform(0.0, 1000.0), rng.uniform(0.99, 1.01)) for _ in range(n)),
                loss=0.0, dup=0.0, delay_jitter=0.001, chaos_start=0.5, chaos_end=2.0, heal_bound=1.0,
                n_faults=0, late_joiner=None, failover=failover,
            )
        if sticky is None:
            sticky = rng.random() < 0.3
        n = rng.choice((3, 3, 3, 5, 5, 4, 1, 2)) if not sticky else rng.choice((3, 3, 5))
        skew = 0.02 if sticky else 0.05
        clocks = tuple((rng.uniform(0.0, 1000.0), rng.uniform(1 - skew, 1 + skew)) for _ in range(n))
        return Scenario(
            seed=seed,
            sticky=sticky,
            n_replicas=n,
            n_clients=rng.randint(2, 4),
            n_links=rng.randint(4, 12),
            priorities=tuple(rng.choice((100, 100, 150, 200)) for _ in range(n)),
            clocks=clocks,
            loss=rng.uniform(0.0, 0.08 if sticky else 0.3),
            dup=rng.uniform(0.0, 0.1),
            delay_jitter=rng.choice((0.0, 0.001, 0.005, 0.02 if not sticky else 0.01)),
            chaos_start=0.5,
            chaos_end=2.5,
            heal_bound=2.5,
            n_faults=rng.randint(2, 10),
            late_joiner=rng.randrange(n) if sticky and n >= 3 else None,
        )


@dataclass(frozen=True, slots=True)
class Result:
    seed: int
    sticky: bool
    n_replicas: int
    steps: int
    elections: int          # BecomeMaster events
    max_term: int
    converge_after: float   # seconds after the heal
    faults: int
    failovers: tuple[tuple[str, float], ...] = ()  # (crash|stepdown, seconds until the next master)
    gray_latencies: tuple[float, ...] = ()  # gray runs: truth change -> every switch's LSD has it (s)
    handovers: int = 0                      # reachability hand-overs (real cores)
    gray_held: int = 0                      # gray runs: changes the drastic-change guard held (alarmed)


TIMERS = Timers()
KEEPALIVE = 0.05
REPORT_INTERVAL = 0.1
#: sim seconds a master may go on without hearing from a majority: master_dead (+5% clock skew) + a hello
LEASE_SLACK = TIMERS.master_dead * 1.06 + TIMERS.hello_interval + 0.01


class World:
    REPLAY_FLAG = ""
    def __init__(
        self, seed: int, *, sticky: bool | None = None, failover: str | None = None, timers: Timers = TIMERS,
        gray: str | None = None, scenario: Scenario | None = None,
    ) -> None:
        self.sc = sc = scenario if scenario is not None else Scenario.from_seed(seed, sticky, failover, gray)
        self.seed = seed
        self.timers = timers
        self.rng = random.Random(f"world:{seed}")
        self.loop = EventLoop()
        self.net = Network(self.loop, self.rng, self._deliver)
        self.net.faults.loss = 0.0  # clean cold start; the chaos phase sets the run's faults
        self.net.faults.delay_jitter = sc.delay_jitter
        self.masters = tuple(
            Master(f"m{i + 1}", IPv4Address("127.0.0.1"), 6600 + i, 6700 + i, 8600 + i, sc.priorities[i])
            for i in range(sc.n_replicas)
        )
        self.replicas = {
            m.id: Replica(m.id, *sc.clocks[i]) for i, m in enumerate(self.masters)
        }
        links = list(range(sc.n_links))
        self.clients = {
            f"c{j + 1}": Client(f"c{j + 1}", tuple(links[j :: sc.n_clients])) for j in range(sc.n_clients)
        }
        self.truth = [0] * sc.n_links
        self.trace: list[tuple[float, str, str, Any]] = []
        self.registry: dict[tuple[int, int], tuple[int, ...]] = {}
        self.master_of_term: dict[int, str] = {}
        self.elections = 0
        self.sticky_master: str | None = None
        self.faults_done = 0
        self.healed = False
        self.converged_at: float | None = None
        self.last_heard: dict[tuple[str, str], float] = {}  # (dst, src) -> sim time of the last delivery
        self.master_since: dict[str, float] = {}
        self._dirty = True
        self.failover_from: tuple[str, float] | None = None
        self.failovers: list[tuple[str, float]] = []

    # ================================================================================== running
    def run(self) -> Result:
        sc = self.sc
        for i, r in enumerate(self.replicas.values()):
            if i == sc.late_joiner:
                self.loop.at(sc.chaos_start + 0.1, self._start_replica, r, 1000, 10**6)
            else:
                self._start_replica(r, 0)
        self.loop.at(0.0, self._keepalives)
        self.loop.at(0.0, self._reports)
        t = sc.chaos_start
        self._schedule_truth_changes()
        self.loop.at(sc.chaos_start, self._begin_chaos)
        for _ in range(sc.n_faults):
            t = self.rng.uniform(sc.chaos_start, sc.chaos_end - 0.05)
            self.loop.at(t, self._fault)
        if sc.failover is not None:
            self.loop.at(self.rng.uniform(1.0, 1.5), self._kill_master, sc.failover)
        self.loop.at(sc.chaos_end, self._heal)
        self.loop.run_until(sc.chaos_end + sc.heal_bound, self._check, max_steps=400_000)
        if self.converged_at is None:
            self._fail(f"no convergence within {sc.heal_bound}s after heal: {self._convergence_problem()}")
        end = self.converged_at + 0.3
        self.loop.run_until(end, self._check, max_steps=400_000)
        problem = self._convergence_problem()
        if problem:
            self._fail(f"converged at {self.converged_at:.3f} but not at the end: {problem}")
        return Result(
            seed=self.seed,
            sticky=sc.sticky,
            n_replicas=sc.n_replicas,
            steps=self.loop.steps,
            elections=self.elections,
            max_term=max((r.durable_term for r in self.replicas.values()), default=0),
            converge_after=self.converged_at - sc.chaos_end,
            faults=self.faults_done,
            failovers=tuple(self.failovers),
            **self._extra_result(),
        )

    def _extra_result(self) -> dict[str, Any]:
        return {}

    def _schedule_truth_changes(self) -> None:
        for _ in range(self.rng.randint(3, 20)):
            self.loop.at(self.rng.uniform(0.05, self.sc.chaos_end), self._truth_change)

    # ================================================================================== replicas
    def _start_replica(self, r: Replica, extra_term: int = 0, bogus_version: int | None = None) -> None:
        if r.up:
            return
        r.durable_term += extra_term
        r.incarnation += 1
        r.up = True
        r.role = "inactive"
        self._log(r.id, "start", f"durable_term={r.durable_term} incarnation={r.incarnation}")
        self._boot(r, bogus_version)
        if r.up:
            self._schedule(r)

    def _boot(self, r: Replica, bogus_version: int | None) -> None:
        """Create the replica's state machine(s) for a new life (durable_term survives, nothing else)."""
        r.lsd_term, r.lsd_version, r.lsd_states = -1, -1, None
        r.fmrp = Fmrp(r.id, self.masters, self.timers, r.durable_term, r.local(self.loop.now), seed=self.seed)
        if bogus_version is not None:
            r.fmrp.set_lsd_version(bogus_version)  # misconfigured: claims a huge LSD version

    def _crash(self, r: Replica) -> None:
        if not r.up:
            return
        r.up = False
        r.fmrp = None
        r.role = "down"
        r.timer_gen += 1
        r.timer_at = float("inf")
        self._log(r.id, "crash", "")

    def _schedule(self, r: Replica) -> None:
        """Arm the replica's timer for its next deadline (its local clock). An armed earlier timer is kept
        (ticking early is harmless: it re-arms), so the heap does not fill with superseded timers."""
        deadline = self._next_deadline(r)
        if deadline is None:
            return
        t = max((deadline - r.offset) / r.rate + 1e-9, self.loop.now)
        if t < r.timer_at:
            r.timer_gen += 1
            r.timer_at = t
            self.loop.at(t, self._timer, r, r.timer_gen)

    def _timer(self, r: Replica, gen: int) -> None:
        if not r.up or gen != r.timer_gen:
            return
        r.timer_at = float("inf")
        self._dirty = True
        self._on_timer(r, r.local(self.loop.now))
        if r.up:
            self._schedule(r)

    def _next_deadline(self, r: Replica) -> float | None:
        assert r.fmrp is not None
        return r.fmrp.next_deadline()

    def _on_timer(self, r: Replica, now: float) -> None:
        assert r.fmrp is not None
        self._execute(r, r.fmrp.tick(now))

    # Checked effects, shared by every replica model: a send, a durable write, a role change.
    def _sent(self, r: Replica, dest: str, msg: Any) -> None:
        term = getattr(msg, "term", None)
        if dest in self.replicas and term is not None and term > r.durable_term:
            self._fail(f"{r.id} sent {msg} with term {term} > durable term {r.durable_term}")
        self.net.send(r.id, dest, msg)
        self._maybe_crash_after_vote(r, msg)

    def _persisted(self, r: Replica, a: PersistTerm) -> bool:
        if a.term < r.durable_term:
            self._fail(f"{r.id} persisted term {a.term} < durable {r.durable_term}")
        r.durable_term = a.term
        self._log(r.id, "persist", a)
        return True

    def _became_master(self, r: Replica, term: int) -> None:
        self.elections += 1
        self._elected()
        prev = self.master_of_term.get(term)
        if prev is not None:
            self._fail(f"two masterships in term {term}: {prev} and {r.id} (incarnation {r.incarnation})")
        self.master_of_term[term] = r.id
        if self.sc.sticky:
            if self.sticky_master is None:
                self.sticky_master = r.id
            elif self.sticky_master != r.id:
                self._fail(f"sticky run: {r.id} elected in term {term} while {self.sticky_master} is master")
        r.role = "master"
        self.master_since[r.id] = self.loop.now

    def _left_master(self, r: Replica, role: str, what: Any) -> None:
        if self.sc.sticky and r.id == self.sticky_master:
            self._fail(f"sticky run: master {r.id} lost mastership ({what})")
        r.role = role

    def _execute(self, r: Replica, actions: list[Any]) -> None:
        """The minimal model's runtime: Fmrp's actions executed in order."""
        for a in actions:
            if isinstance(a, SendPeer):
                self._sent(r, a.to, a.msg)
            elif isinstance(a, PersistTerm):
                self._persisted(r, a)
            elif isinstance(a, BecomeMaster):
                self._log(r.id, "BECOME_MASTER", a)
                self._became_master(r, a.term)
                if r.lsd_states is None:
                    r.lsd_version, r.lsd_states = 0, tuple([0] * self.sc.n_links)
                r.lsd_term = a.term
                self._register(r)
                self._push(r)
            elif isinstance(a, BecomeBackup | BecomeInactive):
                self._log(r.id, type(a).__name__, a)
                self._left_master(r, "backup" if isinstance(a, BecomeBackup) else "inactive", a)
            else:
                self._fail(f"unknown action {a!r}")

    def _elected(self) -> None:
        if self.failover_from is not None:
            kind, t0 = self.failover_from
            self.failovers.append((kind, self.loop.now - t0))
            self.failover_from = None

    def _register(self, r: Replica) -> None:
        key = (r.lsd_term, r.lsd_version)
        assert r.lsd_states is not None
        old = self.registry.get(key)
        if old is None:
            self.registry[key] = r.lsd_states
        elif old != r.lsd_states:
            self._fail(f"two different LSDs with (term, version) = {key}: {old} vs {r.lsd_states} ({r.id})")

    def _push(self, r: Replica) -> None:
        assert r.lsd_states is not None
        msg = SimLsd(r.id, r.lsd_term, r.lsd_version, r.lsd_states)
        for c in self.clients:
            self.net.send(r.id, c, msg)
        for p in self.replicas:
            if p != r.id:
                self.net.send(r.id, p, msg)

    # ================================================================================== delivery
    def _deliver(self, dst: str, src: str, msg: Any) -> None:
        r = self.replicas.get(dst)
        if r is None:
            self._client_deliver(dst, src, msg)
            return
        if not r.up:
            return
        self._log(dst, "recv", (src, msg))
        self._dirty = True
        self.last_heard[(dst, src)] = self.loop.now
        self._replica_receive(r, src, msg, r.local(self.loop.now))
        if r.up:
            self._schedule(r)

    def _client_deliver(self, dst: str, src: str, msg: Any) -> None:
        self._client_receive(self.clients[dst], msg)

    def _replica_receive(self, r: Replica, src: str, msg: Any, now: float) -> None:
        assert r.fmrp is not None
        if isinstance(msg, FMRP_MESSAGES):
            self._execute(r, r.fmrp.on_message(src, msg, now))
        elif isinstance(msg, SimLsd):
            self._replica_lsd(r, src, msg, now)
        elif isinstance(msg, SimReport):
            self._master_report(r, msg)

    def _replica_lsd(self, r: Replica, src: str, m: SimLsd, now: float) -> None:
        f = r.fmrp
        assert f is not None
        if m.term > f.master_term:  # what MasterCore reports as TermSeen
            self._execute(r, f.observe_term(m.term, now))
        if f.state is not FmrpState.BACKUP or src != f.leader or m.term != f.leader_term:
            return
        if (m.term, m.version) > (r.lsd_term, r.lsd_version):
            r.lsd_term, r.lsd_version, r.lsd_states = m.term, m.version, m.states
            f.set_lsd_version(m.version)
        self.net.send(r.id, src, ReplicationAck(r.id, m.term, r.lsd_version))

    def _master_report(self, r: Replica, rep: SimReport) -> None:
        if r.role != "master" or r.lsd_states is None:
            return
        states = list(r.lsd_states)
        for i, s in rep.states:
            states[i] = s
        new = tuple(states)
        if new != r.lsd_states:
            r.lsd_states = new
            r.lsd_version += 1
            assert r.fmrp is not None
            r.fmrp.set_lsd_version(r.lsd_version)
            self._register(r)
            self._push(r)

    def _client_receive(self, c: Client, m: Any) -> None:
        if not isinstance(m, SimLsd):
            return
        seen = c.seen_term
        c.seen_term = max(seen, m.term)
        # --- the minimal client model
        if m.term < c.max_term:
            return
        if m.term > c.max_term:
            c.max_term = m.term
            self._report(c)  # a new master: resync by reporting at once
        if (m.term, m.version) <= (c.applied_term, c.applied_version):
            return
        # --- checks on what the client applies
        if m.term < seen:
            self._fail(f"client {c.name} applied term {m.term} after seeing term {seen}")
        if m.term == c.applied_term and m.version < c.applied_version:
            self._fail(f"client {c.name}: version went back in term {m.term}: {c.applied_version} -> {m.version}")
        if self.registry.get((m.term, m.version)) != m.states:
            self._fail(f"client {c.name} applied an LSD nobody registered: {m}")
        c.applied_term, c.applied_version, c.applied_states = m.term, m.version, m.states
        self._dirty = True
        self._log(c.name, "apply", (m.master, m.term, m.version))

    def _report(self, c: Client) -> None:
        rep = SimReport(c.name, tuple((i, self.truth[i]) for i in c.links))
        for rid in self.replicas:
            self.net.send(c.name, rid, rep)

    # ================================================================================== periodic + faults
    def _keepalives(self) -> None:
        for r in self.replicas.values():
            if r.up and r.role == "master":
                self._push(r)
        self.loop.at(self.loop.now + KEEPALIVE, self._keepalives)

    def _reports(self) -> None:
        for c in self.clients.values():
            self._report(c)
        self.loop.at(self.loop.now + REPORT_INTERVAL, self._reports)

    def _truth_change(self) -> None:
        if self.healed:
            return
        i = self.rng.randrange(self.sc.n_links)
        self.truth[i] ^= 1
        self._log("truth", "change", (i, self.truth[i]))
        for c in self.clients.values():
            if i in c.links:
                self._report(c)

    def _begin_chaos(self) -> None:
        f = self.net.faults
        f.loss, f.dup = self.sc.loss, self.sc.dup
        self._log("net", "chaos", f"loss={f.loss:.3f} dup={f.dup:.3f} jitter={f.delay_jitter}")

    def _current_master(self) -> Replica | None:
        ms = [r for r in self.replicas.values() if r.up and r.fmrp is not None and r.fmrp.state is FmrpState.MASTER]
        return max(ms, key=lambda r: r.fmrp.leader_term) if ms else None  # type: ignore[union-attr]

    def _fault(self) -> None:
        rng = self.rng
        ids = list(self.replicas)
        master = self._current_master()
        if self.sc.sticky:
            protected = self.sticky_master
            if protected is None:
                return
            victims = [i for i in ids if i != protected]
            impaired = [i for i in victims if not self.replicas[i].up or self._is_cut(i)]
            if len(impaired) >= (self.sc.n_replicas - 1) // 2 or not victims:
                return  # keep a majority around the master
            candidates = [i for i in victims if i not in impaired]
            if not candidates:
                return
            victim = rng.choice(candidates)
            kind = rng.choice(("crash", "isolate", "oneway_in", "oneway_out"))
        else:
            victim = master.id if master is not None and rng.random() < 0.5 else rng.choice(ids)
            kind = rng.choice(
                ("crash", "crash", "stepdown", "isolate", "oneway_in", "oneway_out", "split", "link", "clients",
                 "deaf", "mute", "client_cut")
            )
        r = self.replicas[victim]
        dur = rng.uniform(0.001, 0.03) if rng.random() < 0.25 else rng.uniform(0.05, 0.8)  # quick restarts too
        if master is not None and victim == master.id and kind in ("crash", "stepdown"):
            self.failover_from = (kind, self.loop.now)
        self.faults_done += 1
        self._log(victim, f"FAULT {kind}", f"for {dur:.3f}s")
        if kind == "crash":
            self._crash(r)
            extra = 1000 if rng.random() < 0.1 and not self.sc.sticky else 0  # restored from a newer backup
            self.loop.at(self.loop.now + dur, self._start_replica, r, extra)
        elif kind == "stepdown":
            if r.up and r.fmrp is not None:
                self._step_down(r)
                self.loop.at(self.loop.now + 0.005, self._crash, r)
                self.loop.at(self.loop.now + dur, self._start_replica, r)
        else:
            others = [i for i in ids if i != victim]
            if kind == "split":
                rng.shuffle(ids)
                k = rng.randint(1, max(1, len(ids) - 1))
                a, b = ids[:k], ids[k:]
                pairs = {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}
            elif kind == "link":
                pairs = {(victim, rng.choice(others))} if others else set()
            elif kind == "clients":
                cs = self._client_names()
                pairs = {(victim, c) for c in cs} | {(c, victim) for c in cs}
            elif kind == "deaf":        # one-way CPN faults (issue #16): the replica hears no client ...
                pairs = {(c, victim) for c in self._client_names()}
            elif kind == "mute":        # ... or no client hears it
                pairs = {(victim, c) for c in self._client_names()}
            elif kind == "client_cut":  # one client and this replica only, one or both directions
                c = rng.choice(self._client_names())
                pairs = rng.choice(({(c, victim)}, {(victim, c)}, {(c, victim), (victim, c)}))
            elif kind == "oneway_in":
                pairs = {(o, victim) for o in others}
            elif kind == "oneway_out":
                pairs = {(victim, o) for o in others}
            else:
                pairs = {(o, victim) for o in others} | {(victim, o) for o in others}
            new = pairs - self.net.faults.blocked
            self.net.faults.blocked |= new
            self.loop.at(self.loop.now + dur, self._unblock, new)

    def _maybe_crash_after_vote(self, r: Replica, msg: Any) -> None:
        """Targeted fault (chaos runs): a voter crashes right after granting and restarts within ms, while
        the election of that term may still be running — the case where a forgotten vote would elect two."""
        if (
            isinstance(msg, Vote) and msg.granted and self.net.faults.loss > 0 and not self.sc.sticky
            and self.rng.random() < 0.2
        ):
            self._log(r.id, "FAULT crash_after_vote", msg)
            self.loop.at(self.loop.now, self._crash, r)
            self.loop.at(self.loop.now + self.rng.uniform(0.001, 0.02), self._start_replica, r)

    def _kill_master(self, kind: str) -> None:
        master = self._current_master()
        if master is None:
            self._fail("clean failover run: no master to kill")
        assert master is not None
        self.failover_from = (kind, self.loop.now)
        self._log(master.id, f"FAULT {kind}", "(failover run)")
        if kind == "stepdown":
            self._step_down(master)
            self.loop.at(self.loop.now + 0.005, self._crash, master)
        else:
            self._crash(master)
        self.loop.at(self.loop.now + 0.3, self._start_replica, master)

    def _client_names(self) -> list[str]:
        return list(self.clients)

    def _step_down(self, r: Replica) -> None:
        """SIGTERM: the replica announces its step-down (then the fault crashes it a few ms later)."""
        assert r.fmrp is not None
        self._execute(r, r.fmrp.step_down(r.local(self.loop.now)))

    def _is_cut(self, rid: str) -> bool:
        return any(rid in pair for pair in self.net.faults.blocked)

    def _unblock(self, pairs: set[tuple[str, str]]) -> None:
        self.net.faults.blocked -= pairs

    def _heal(self) -> None:
        self.healed = True
        f = self.net.faults
        f.blocked.clear()
        f.loss = f.dup = 0.0
        self._log("net", "HEAL", "")
        for r in self.replicas.values():
            if not r.up:
                self._start_replica(r)

    # ================================================================================== invariants
    def _check(self) -> None:
        if not self._dirty:  # nothing a replica or the network could have changed (e.g. a stale timer)
            return
        self._dirty = False
        masters: dict[int, str] = {}
        now = self.loop.now
        for r in self.replicas.values():
            f = r.fmrp
            if f is not None and f.state is FmrpState.MASTER:
                other = masters.setdefault(f.leader_term, r.id)
                if other != r.id:
                    self._fail(f"{other} and {r.id} are both master in term {f.leader_term}")
                # No master without a majority: one cut off from most replicas must give up (lease).
                if now - self.master_since[r.id] > LEASE_SLACK:
                    heard = sum(1 for p in self.replicas if now - self.last_heard.get((r.id, p), -1e9) <= LEASE_SLACK)
                    if 1 + heard < len(self.replicas) // 2 + 1:
                        self._fail(f"{r.id} is still master in term {f.leader_term} but heard only {heard} peers lately")
        if self.healed and self.converged_at is None and not self._convergence_problem():
            self.converged_at = self.loop.now
            self._log("world", "CONVERGED", f"{self.loop.now - self.sc.chaos_end:.3f}s after heal")

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
            if r is m:
                continue
            f = r.fmrp
            assert f is not None
            if f.state is not FmrpState.BACKUP or f.leader != m.id or f.leader_term != m.fmrp.leader_term:
                return f"{r.id} is {f.state} (leader {f.leader}, term {f.leader_term})"
        return self._lsd_problem(m)

    def _lsd_problem(self, m: Replica) -> str:
        """After the election converged on master `m`: what still differs from the truth ("" if nothing)."""
        assert m.fmrp is not None
        truth = tuple(self.truth)
        if m.lsd_states != truth:
            return f"master {m.id} LSD {m.lsd_states} != truth {truth}"
        for c in self.clients.values():
            if c.applied_states != truth or c.applied_term != m.fmrp.leader_term:
                return f"client {c.name} at term {c.applied_term} has {c.applied_states}, truth {truth}"
        return ""

    # ================================================================================== trace
    def _log(self, who: str, what: str, detail: Any) -> None:
        self.trace.append((self.loop.now, who, what, detail))

    def format_trace(self, last: int | None = None) -> str:
        rows = self.trace if last is None else self.trace[-last:]
        return "\n".join(f"{t:10.6f} {who:>6} {what} {detail}" for t, who, what, detail in rows)

    def _fail(self, problem: str) -> None:
        raise InvariantViolation(
            f"seed {self.seed} ({'sticky' if self.sc.sticky else 'chaos'}, {self.sc}) at t={self.loop.now:.6f}: "
            f"{problem}\nreplay: python -m tests.sim --seed {self.seed} --trace{self.REPLAY_FLAG}\n"
            f"--- last events ---\n{self.format_trace(last=60)}"
        )


def run_seed(seed: int, *, sticky: bool | None = None, failover: str | None = None) -> Result:
    return World(seed, sticky=sticky, failover=failover).run()
