"""FMRP replicas electing on a slow disk: a discrete-event run of real `controller.fmrp.Fmrp` objects where
every term write holds its replica's turn (shared by tests/test_fmrp.py and bench/bench_election_disk.py)."""

from __future__ import annotations

import heapq
import itertools
from ipaddress import IPv4Address
from typing import Any

from controller.fmrp import BecomeMaster, Fmrp, PersistTerm, SendPeer
from proto.config import Master, Timers


def elect_with_a_slow_disk(write: float, seed: int, horizon: float = 60.0, timers: Timers | None = None,
                           report_took: bool = True) -> float | None:
    """Replicas m1, m2 of three (m3 is dead) electing while every term write blocks its replica's turn for
    `write` seconds, as the runtime does (controller.node: nothing after a PersistTerm is sent before the
    write ends; the replica reads nothing meanwhile; `persisted` is told how long it took). Messages take
    1 ms. When a master is elected (s), or None by `horizon`. `report_took=False`: `persisted` is not told
    how long the write took (the rule before rounds covered two writes)."""
    timers = timers or Timers()
    cfg = tuple(Master(f"m{i}", IPv4Address("127.0.0.1"), 6600 + i, 6700 + i, 8600 + i, 100) for i in (1, 2, 3))

    live = ("m1", "m2")
    nodes = {rid: Fmrp(rid, cfg, timers, 5, 0.0, seed=seed) for rid in live}
    for f in nodes.values():
        f.set_lsd_version(10)
    busy = dict.fromkeys(live, 0.0)
    events: list[tuple[float, int, str, Any]] = []
    order = itertools.count()
    for rid in live:
        heapq.heappush(events, (0.0, next(order), rid, None))
    while events:
        t, _, rid, msg = heapq.heappop(events)
        if t > horizon:
            return None
        if t < busy[rid]:                   # the replica is still waiting for its write
            heapq.heappush(events, (busy[rid], next(order), rid, msg))
            continue
        f = nodes[rid]
        actions = f.tick(t) if msg is None else f.on_message(msg[0], msg[1], t)
        end = t
        for a in actions:
            if isinstance(a, PersistTerm):
                end += write
                f.persisted(a.term, write if report_took else 0.0)
            elif isinstance(a, SendPeer) and a.to in nodes:
                heapq.heappush(events, (end + 0.001, next(order), a.to, (rid, a.msg)))
            elif isinstance(a, BecomeMaster):
                return end
        busy[rid] = end
        heapq.heappush(events, (max(end, f.next_deadline()), next(order), rid, None))
    return None
