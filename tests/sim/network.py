"""Deterministic discrete-event core of the FMRP simulator: an event loop and a faulty datagram network.

Everything random comes from one `random.Random` owned by the world (seeded per run), and events at the
same instant run in scheduling order (a sequence number breaks ties), so a seed replays exactly.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class EventLoop:
    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.steps = 0

    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (max(t, self.now), self._seq, fn, args))

    def run_until(self, t_end: float, after_step: Callable[[], None], max_steps: int) -> None:
        heap = self._heap
        while heap and heap[0][0] <= t_end:
            t, _, fn, args = heapq.heappop(heap)
            self.now = t
            fn(*args)
            self.steps += 1
            if self.steps > max_steps:
                raise RuntimeError(f"simulation exceeded {max_steps} steps at t={t:.6f} (livelock?)")
            after_step()
        self.now = max(self.now, t_end)


@dataclass(slots=True)
class LinkFaults:
    """Per-run network behaviour; `blocked` holds directed (src, dst) pairs that drop everything."""

    loss: float = 0.0
    dup: float = 0.0
    delay_min: float = 0.0002
    delay_jitter: float = 0.001   # uniform extra delay: > 0 reorders datagrams
    blocked: set[tuple[str, str]] = field(default_factory=set)


class Network:
    """Datagrams between named endpoints. `deliver(dst, src, msg)` is called at arrival time unless the
    destination is down then (crashed nodes lose what arrives)."""

    def __init__(self, loop: EventLoop, rng: random.Random, deliver: Callable[[str, str, Any], None]) -> None:
        self.loop = loop
        self.rng = rng
        self.faults = LinkFaults()
        self._deliver = deliver
        self.sent = 0
        self.dropped = 0

    def send(self, src: str, dst: str, msg: Any) -> None:
        f = self.faults
        self.sent += 1
        if (src, dst) in f.blocked:
            self.dropped += 1
            return
        rng = self.rng
        copies = 2 if f.dup and rng.random() < f.dup else 1
        for _ in range(copies):
            if f.loss and rng.random() < f.loss:
                self.dropped += 1
                continue
            delay = f.delay_min + (rng.random() * f.delay_jitter if f.delay_jitter else 0.0)
            self.loop.at(self.loop.now + delay, self._deliver, dst, src, msg)
