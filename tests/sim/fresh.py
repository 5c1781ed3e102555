"""The simulator with real wire freshness (issue #19): FMRP between replicas goes through real `Codec`s as
signed datagrams, every (re)start of a replica gets a new Codec (memory lost), and an attacker replays any
FMRP datagram it ever saw, to any replica, at any time (also during the heal phase).

Extra invariants (on top of World's: at most one master per term, convergence after the faults heal, ...):
- a replica accepts a datagram only if it was created during the replica's current life (nothing captured
  before a restart of the receiver is ever accepted) and never accepts the same datagram twice in one life;
- a rejected datagram changes no freshness state of the receiving Codec (what it accepts next).

    from tests.sim.fresh import run_fresh_seed
    run_fresh_seed(7)      # raises InvariantViolation or returns a Result
"""

from __future__ import annotations

import random
from typing import Any

from proto.auth import KeyRing
from proto.messages import Challenge, Codec, DecodeError
from tests.sim.world import FMRP_MESSAGES, Replica, Result, World

_RING = KeyRing.from_secret(bytes(range(40, 72)))


def _fresh_state(c: Codec) -> dict:
    return {k: (s.inc, s.peer, s.chal, s.win.top, s.win._bitmap, s.gwin.top, s.gwin._bitmap)
            for k, s in c._sessions.items()}


class FreshWorld(World):
    REPLAY_FLAG = " --fresh"

    def __init__(self, seed: int, **kw: Any) -> None:
        super().__init__(seed, **kw)
        self.codecs: dict[str, Codec] = {}
        self.born: dict[str, float] = {}
        self.life: dict[str, int] = {}
        self.seen: list[bytes] = []
        self.created: dict[bytes, float] = {}
        self.accepted_in_life: set[tuple[str, int, bytes]] = set()
        self.attack_rng = random.Random(f"attacker:{seed}")
        self.replays = self.stale = 0
        self._net_send = self.net.send
        self.net.send = self._send  # type: ignore[method-assign]

    def run(self) -> Result:
        sc = self.sc
        t = 0.0
        while t < sc.chaos_end + sc.heal_bound + 1.0:
            t += self.attack_rng.uniform(0.002, 0.03)
            self.loop.at(t, self._attack)
        return super().run()

    # ------------------------------------------------------------------------------ replicas' codecs
    def _start_replica(self, r: Replica, extra_term: int = 0, bogus_version: int | None = None) -> None:
        was_up = r.up
        super()._start_replica(r, extra_term, bogus_version)
        if r.up and not was_up:
            self.codecs[r.id] = Codec(_RING, r.id, (), [m.id for m in self.masters],
                                      incarnation=self.rng.getrandbits(64) or 1)
            self.born[r.id] = self.loop.now
            self.life[r.id] = self.life.get(r.id, 0) + 1

    def _crash(self, r: Replica) -> None:
        super()._crash(r)
        self.codecs.pop(r.id, None)

    # ------------------------------------------------------------------------------ wire
    def _send(self, src: str, dst: str, msg: Any) -> None:
        codec = self.codecs.get(src)
        if codec is not None and dst in self.replicas and isinstance(msg, (*FMRP_MESSAGES, Challenge)):
            data = codec.encode(msg, to=dst)
            self.created[data] = self.loop.now
            self.seen.append(data)
            msg = data
        self._net_send(src, dst, msg)

    def _attack(self) -> None:
        if not self.seen:
            return
        data = self.seen[self.attack_rng.randrange(len(self.seen))]
        dst = self.attack_rng.choice(list(self.replicas))
        self.replays += 1
        self._deliver(dst, "attacker", data)

    def _deliver(self, dst: str, src: str, msg: Any) -> None:
        if not isinstance(msg, bytes):
            super()._deliver(dst, src, msg)
            return
        r = self.replicas.get(dst)
        codec = self.codecs.get(dst)
        if r is None or not r.up or codec is None:
            return
        before = _fresh_state(codec)
        try:
            sender, m = codec.decode(msg)
        except DecodeError as e:
            after = _fresh_state(codec)
            if {k: after[k] for k in before} != before or any(after[k][0] is not None for k in after.keys() - before.keys()):
                self._fail(f"{dst}: a rejected datagram ({e.reason}) changed the Codec's freshness state")
            if e.reason == "stale":
                self.stale += 1
                answer = codec.answer(e.sender, self.loop.now)
                if answer is not None and e.sender is not None:
                    self.created[answer] = self.loop.now
                    self.seen.append(answer)
                    self._net_send(dst, e.sender, answer)
            return
        if self.created.get(msg, -1.0) < self.born[dst]:
            self._fail(f"{dst} accepted a datagram created before its current life (a stale frame)")
        key = (dst, self.life[dst], msg)
        if key in self.accepted_in_life:
            self._fail(f"{dst} accepted the same datagram twice")
        self.accepted_in_life.add(key)
        if isinstance(m, Challenge):
            return
        super()._deliver(dst, sender, m)


def run_fresh_seed(seed: int, **kw: Any) -> Result:
    return FreshWorld(seed, **kw).run()
