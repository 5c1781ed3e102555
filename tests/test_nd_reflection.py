"""Review 38: our own ND frames copied back onto a healthy link (a tap that injects, holding no key) must not
take the link down, nor disturb the ND session with the genuine peer.

Before the looped-cable change (tests/test_nd_loopback.py) the codec dropped every frame whose sender is the
local switch, so an injector on the wire could not touch a link: replays of the peer's frames fail the replay
window, replays of ours were ``wrong_sender``. With own ND frames accepted through the port's freshness
session, one copy of our frame makes the port reflect our own challenge in the answer it sends at once, and a
copy of that answer passes the handshake: the port's session is taken from the peer and the port is
MISCABLED by itself (sticky) while the peer is alive and cabled as configured. Pure: two client cores and
their codecs, a fake clock, the cable and the injector a map of packet-outs to packet-ins.
"""

from __future__ import annotations

from collections import deque

import pytest

from client.core import ClientCore, SendFrames
from proto.auth import KeyRing
from proto.clos import clos_fabric
from tests.fakes.clock import FakeClock, run_until

SECRET = bytes(range(3, 35))
LEAF, SPINE = "leaf-1", "spine-1"       # leaf-1:1 <-> spine-1:1


@pytest.fixture(scope="module")
def fabric():
    return clos_fabric(pods=0, leaves=2, spines=2, masters=1, liveness="nd")


class Wire:
    def __init__(self, fabric) -> None:
        ring = KeyRing.from_secret(SECRET)
        self.clock = FakeClock(100.0)
        self.cores = {n: ClientCore(fabric, n, ring.bundle_for_switch(n), now=self.clock.now) for n in (LEAF, SPINE)}
        self.cable = {(LEAF, 1): (SPINE, 1), (SPINE, 1): (LEAF, 1)}
        self.reflect: set[tuple[str, int]] = set()       # the injector: a copy of what leaves here comes back
        for name, core in self.cores.items():
            self.deliver(name, core.on_connected({1: True, 2: False}, self.clock.now))

    def deliver(self, name: str, actions: list) -> None:
        queue = deque((name, a) for a in actions)
        for _ in range(100_000):
            if not queue:
                return
            src, action = queue.popleft()
            if not isinstance(action, SendFrames):
                continue
            for po in action.frames:
                hops = [self.cable[(src, po.port)]] if (src, po.port) in self.cable else []
                hops = [(dst, port) for dst, port in hops if dst in self.cores]
                if (src, po.port) in self.reflect:
                    hops.append((src, po.port))
                for dst, port in hops:
                    queue.extend((dst, a) for a in self.cores[dst].on_packet_in(port, po.data, self.clock.now))
        raise AssertionError("frames ping-pong without end")

    def run(self, seconds: float) -> None:
        def tick(now: float) -> list:
            for name, core in self.cores.items():
                self.deliver(name, core.tick(now))
            return []
        run_until(self.clock, self.clock.now + seconds, tick,
                  lambda: min(c.next_deadline() for c in self.cores.values()), max_steps=200_000)

    def port(self, name: str, port: int) -> dict:
        return next(p for p in self.cores[name].status(self.clock.now)["ports"] if p["port"] == port)


def test_our_frames_copied_back_onto_a_healthy_link_do_not_take_it_down(fabric):
    w = Wire(fabric)
    w.run(2.0)
    assert w.port(LEAF, 1)["usable"] and w.port(SPINE, 1)["usable"]
    w.reflect.add((LEAF, 1))            # from now on every frame leaf-1 sends on port 1 also comes back to it
    for _ in range(20):
        w.run(0.25)
        p = w.port(LEAF, 1)
        assert p["nd"] == "up" and p["usable"] and p["miscabled_by"] is None, p
        assert w.port(SPINE, 1)["usable"]
    # the session with the genuine peer was never taken from it
    assert w.cores[LEAF].codec.established(1)
    w.reflect.clear()
    w.run(2.0)
    assert w.port(LEAF, 1)["usable"] and w.port(SPINE, 1)["usable"]


def test_our_frames_copied_back_do_not_end_a_peers_graceful_restart_hold(fabric):
    """The peer's client restarts hitlessly: it asks us to hold the link up and sends no more ND. Copies of our
    own frames on the wire during the hold are no loop either (a wrong peer ends a hold: client.nd)."""
    w = Wire(fabric)
    w.run(2.0)
    assert w.port(LEAF, 1)["usable"]
    w.deliver(SPINE, w.cores[SPINE].graceful_restart(5.0, w.clock.now))
    del w.cores[SPINE]                   # its client is gone (restarting): no frames from it
    w.run(1.0)
    assert w.port(LEAF, 1)["usable"]     # held
    w.reflect.add((LEAF, 1))
    for _ in range(8):
        w.run(0.25)
        p = w.port(LEAF, 1)
        assert p["usable"] and p["miscabled_by"] is None, p
