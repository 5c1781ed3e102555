"""FMRP under master overload (issue #18): replicas that are slow to process a report storm.

`OverloadWorld` is the FMRP world (tests.sim.world: real `Fmrp`, minimal LSD model, every invariant of a
sticky run: the first master stays master, nobody else is elected) where each replica is a single-threaded
process with a bounded receive queue: every datagram costs CPU time (`report_cost` for a report,
`fmrp_cost` for an FMRP or replication datagram), its timer fires only between turns, and a storm of
reports (`storm_rate` per second to every replica from `storm_start` to `storm_end`) overloads it.

Two runtimes (`policy`):

- ``"fifo"``: one socket, datagrams handled in arrival order (asyncio's datagram transport before issue
  #18): hellos wait behind the reports queued before them and are dropped with them when the queue is
  full — the lease and the backups' leader check starve;
- ``"fmrp_first"``: what `controller.server` + `controller.intake` do — FMRP on its own socket, drained
  completely before every turn and before every timer, each datagram handled at the time it *arrived*;
  client datagrams in bounded batches (`batch`) per turn.

    result, world = run_overload(seed, "fmrp_first")     # raises InvariantViolation on a violation
"""

from __future__ import annotations

from collections import deque
from typing import Any

from tests.sim.world import FMRP_MESSAGES, Replica, Result, Scenario, SimLsd, SimReport, World

POLICIES = ("fifo", "fmrp_first")


def overload_scenario(seed: int) -> Scenario:
    import random

    rng = random.Random(f"overload:{seed}")
    return Scenario(
        seed=seed, sticky=True, n_replicas=3, n_clients=4, n_links=8,
        priorities=tuple(rng.choice((100, 150)) for _ in range(3)),
        clocks=tuple((rng.uniform(0.0, 1000.0), rng.uniform(0.99, 1.01)) for _ in range(3)),
        loss=0.0, dup=0.0, delay_jitter=0.001, chaos_start=0.5, chaos_end=2.5, heal_bound=2.0,
        n_faults=0, late_joiner=None,
    )


class OverloadWorld(World):

    def __init__(self, seed: int, policy: str = "fmrp_first", *, storm_rate: float = 25_000.0,
                 report_cost: float = 150e-6, fmrp_cost: float = 20e-6, queue: int = 3000, batch: int = 64,
                 storm: tuple[float, float] = (0.8, 2.0)) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy: {policy!r} is not one of {POLICIES}")
        super().__init__(seed, scenario=overload_scenario(seed))
        self.policy = policy
        self.storm_rate, self.report_cost, self.fmrp_cost = storm_rate, report_cost, fmrp_cost
        self.queue_cap, self.batch = queue, batch
        self.storm_start, self.storm_end = storm
        self.inbox: dict[str, deque[tuple[float, str, Any]]] = {r: deque() for r in self.replicas}
        self.peer_inbox: dict[str, deque[tuple[float, str, Any]]] = {r: deque() for r in self.replicas}
        self.busy_until: dict[str, float] = dict.fromkeys(self.replicas, 0.0)
        self.working: set[str] = set()
        self.dropped = 0
        self.processed_reports = 0
        self.max_wait = 0.0          # longest an FMRP datagram waited before it was handled (s)

    def run(self) -> Result:
        self.loop.at(self.storm_start, self._storm)
        return super().run()

    def _storm(self) -> None:
        now = self.loop.now
        if now >= self.storm_end:
            return
        step = 0.001
        names = list(self.clients)
        for k in range(max(1, int(self.storm_rate * step))):
            c = self.clients[names[k % len(names)]]
            rep = SimReport(c.name, tuple((i, self.truth[i]) for i in c.links))
            for rid in self.replicas:
                self.net.send(c.name, rid, rep)
        self.loop.at(now + step, self._storm)

    # ------------------------------------------------------------------------------------ a busy runtime
    def _deliver(self, dst: str, src: str, msg: Any) -> None:
        r = self.replicas.get(dst)
        if r is None:
            self._client_deliver(dst, src, msg)
            return
        if not r.up:
            return
        peer = isinstance(msg, (*FMRP_MESSAGES, SimLsd))
        q = self.peer_inbox[dst] if peer and self.policy == "fmrp_first" else self.inbox[dst]
        if q is self.inbox[dst] and len(q) >= self.queue_cap:
            self.dropped += 1                   # the kernel's receive queue is full
            return
        self.last_heard[(dst, src)] = self.loop.now
        q.append((self.loop.now, src, msg))
        self._kick(r)

    def _kick(self, r: Replica) -> None:
        if r.id not in self.working:
            self.working.add(r.id)
            self.loop.at(max(self.loop.now, self.busy_until[r.id]), self._work, r)

    def _handle(self, r: Replica, at: float, src: str, msg: Any) -> None:
        self._dirty = True
        self.max_wait = max(self.max_wait, self.loop.now - at) if isinstance(msg, FMRP_MESSAGES) else self.max_wait
        self._log(r.id, "recv", (src, msg))
        self._replica_receive(r, src, msg, r.local(at if self.policy == "fmrp_first" else self.loop.now))
        if r.up:
            self._schedule(r)

    def _work(self, r: Replica) -> None:
        self.working.discard(r.id)
        if not r.up:
            self.inbox[r.id].clear()
            self.peer_inbox[r.id].clear()
            return
        cost = 0.0
        if self.policy == "fmrp_first":
            cost += self._drain_peers(r)
            inbox = self.inbox[r.id]
            for _ in range(self.batch):
                if not inbox:
                    break
                at, src, msg = inbox.popleft()
                self._handle(r, at, src, msg)
                cost += self._cost(msg)
        else:
            inbox = self.inbox[r.id]
            if inbox:
                at, src, msg = inbox.popleft()
                self._handle(r, at, src, msg)
                cost += self._cost(msg)
        self.busy_until[r.id] = self.loop.now + cost
        if self.inbox[r.id] or self.peer_inbox[r.id]:
            self._kick(r)

    def _drain_peers(self, r: Replica) -> float:
        q = self.peer_inbox[r.id]
        cost = 0.0
        while q:
            at, src, msg = q.popleft()
            self._handle(r, at, src, msg)
            cost += self.fmrp_cost
        return cost

    def _cost(self, msg: Any) -> float:
        if isinstance(msg, SimReport):
            self.processed_reports += 1
            return self.report_cost
        return self.fmrp_cost

    def _timer(self, r: Replica, gen: int) -> None:
        """A timer fires between turns only (one thread); fmrp_first reads the peer socket first."""
        if not r.up or gen != r.timer_gen:
            return
        busy = self.busy_until[r.id]
        if busy > self.loop.now:
            self.loop.at(busy, self._timer, r, gen)
            return
        if self.policy == "fmrp_first":
            self.busy_until[r.id] = self.loop.now + self._drain_peers(r)
        super()._timer(r, gen)

    def _extra_result(self) -> dict[str, Any]:
        return {}


def run_overload(seed: int, policy: str = "fmrp_first", **kw: Any) -> tuple[Result, OverloadWorld]:
    w = OverloadWorld(seed, policy, **kw)
    return w.run(), w
