"""A looped-back cable with software ND (`liveness: nd`): the port is MISCABLED by (us, the other port), not DOWN.

Tester finding: two fabric ports of one switch cabled to each other, or one port whose frames a loopback plug
reflects, showed the port *down* (ND silence): the codec dropped every frame whose sender is the local switch
(``wrong_sender``) before the ND core could see a wrong peer, while link OAM (MPIDs encode switch and port)
already said miscabled for the same loop. Now an ND-key NdFrame from ourselves is authenticated and accepted
if it is of our current incarnation, each once, apart from the port's session with its peer (review 38: not
through that session's handshake; tests/test_nd_reflection.py). Pure: the client core and its codec with a
fake clock, the "cable" is a map from the port a packet-out leaves by to the port it is punted on.
"""

from __future__ import annotations

from collections import deque

import pytest

from client.core import ClientCore, SendDatagram, SendFrames
from controller.topoview import MISCABLED, link_status
from proto.auth import KeyKind, KeyRing
from proto.clos import clos_fabric
from proto.config import Endpoint
from proto.lsd import LinkState
from proto.messages import Codec, DecodeError, LsdRequest, NdFrame, PortReport
from proto.wire import encode_payload
from tests.fakes.clock import FakeClock, run_until
from tests.harness.fresh import establish, establish_nd
from tests.test_messages import sign_raw

SECRET = bytes(range(7, 39))
ME = "leaf-1"       # port 1 -> spine-1:1, port 2 -> spine-2:1


@pytest.fixture(scope="module")
def fabric():
    return clos_fabric(pods=0, leaves=2, spines=2, masters=1, liveness="nd")


class LoopedSwitch:
    """One client core whose packet-outs come back as its own packet-ins through `cables` (out port -> in
    port, on the same switch), ticked at every deadline; what it sends the master is decoded there."""

    def __init__(self, fabric, cables: dict[int, int]) -> None:
        self.fabric = fabric
        self.cables = dict(cables)
        ring = KeyRing.from_secret(SECRET)
        self.clock = FakeClock(500.0)
        self.core = ClientCore(fabric, ME, ring.bundle_for_switch(ME), now=self.clock.now)
        self.master = Codec(ring, "m1", [s.name for s in fabric.switches], [m.id for m in fabric.masters])
        establish(self.master, self.core.codec)
        self.reports: list[PortReport] = []
        self.looped = 0                     # frames that came back
        self.deliver(self.core.on_connected({1: True, 2: True}, self.clock.now))

    def deliver(self, actions: list) -> None:
        queue = deque(actions)
        for _ in range(100_000):
            if not queue:
                return
            action = queue.popleft()
            if isinstance(action, SendFrames):
                for po in action.frames:
                    back = self.cables.get(po.port)
                    if back is not None:
                        self.looped += 1
                        queue.extend(self.core.on_packet_in(back, po.data, self.clock.now))
            elif isinstance(action, SendDatagram):
                try:
                    msg = self.master.decode(action.data)[1]
                except DecodeError:
                    continue
                if isinstance(msg, PortReport):
                    self.reports.append(msg)
                else:
                    assert isinstance(msg, LsdRequest), msg
        raise AssertionError("the loop does not settle: frames ping-pong without end")

    def run(self, seconds: float) -> None:
        run_until(self.clock, self.clock.now + seconds, self.core.tick, self.core.next_deadline,
                  max_steps=100_000, on_actions=lambda _now, actions: self.deliver(actions))

    def port(self, port: int) -> dict:
        return next(p for p in self.core.status(self.clock.now)["ports"] if p["port"] == port)


def assert_miscabled(sw: LoopedSwitch, port: int, by: Endpoint) -> None:
    p = sw.port(port)
    assert p["nd"] == "miscabled", p                       # not "down": ND heard a wrong peer, ourselves
    assert p["miscabled_by"] == f"{by.switch}:{by.port}", p
    assert p["discovered"] == f"{by.switch}:{by.port}", p
    assert not p["usable"], p
    # the master's view: the latest report carries it, and the topology page draws the link miscabled
    st = next(s for s in sw.reports[-1].ports if s.port == port)
    assert st.miscabled_by == by and not st.usable and not st.nd
    assert link_status(LinkState.DOWN, st, None) == MISCABLED


def test_two_ports_cabled_to_each_other_are_miscabled_by_each_other(fabric):
    sw = LoopedSwitch(fabric, {1: 2, 2: 1})
    sw.run(0.5)
    assert_miscabled(sw, 1, Endpoint(ME, 2))
    assert_miscabled(sw, 2, Endpoint(ME, 1))
    # our own frames are fresh by our incarnation, apart from the ports' sessions with their peers (review 38)
    assert not sw.core.codec.established(1) and not sw.core.codec.established(2)
    assert sw.core.codec.rejected["wrong_sender"] == 0
    assert sw.core.ports.nd.view(1).rx_wrong > 10 and sw.core.ports.nd.view(2).rx_wrong > 10
    # it stays that way (the heartbeat keeps flowing through the loop: sticky, never down)
    sw.run(2.0)
    assert_miscabled(sw, 1, Endpoint(ME, 2))
    assert_miscabled(sw, 2, Endpoint(ME, 1))
    assert sw.core.counters["nd_rejected_replay"] == 0


def test_a_port_whose_frames_are_reflected_is_miscabled_by_itself(fabric):
    sw = LoopedSwitch(fabric, {1: 1})          # a loopback plug on port 1; port 2 unplugged
    sw.run(0.5)
    assert_miscabled(sw, 1, Endpoint(ME, 1))
    assert not sw.core.codec.established(1)
    assert sw.port(2)["nd"] == "down" and sw.port(2)["miscabled_by"] is None
    sw.run(2.0)
    assert_miscabled(sw, 1, Endpoint(ME, 1))
    # the plug pulled (carrier loss resets the port): down, the miscabling forgotten
    sw.cables.clear()
    sw.deliver(sw.core.on_port_status(1, False, sw.clock.now))
    assert sw.port(1)["nd"] == "down" and sw.port(1)["miscabled_by"] is None


def test_lab_status_counts_the_loop_as_miscabled(fabric):
    """`lab status` counts a port miscabled from the client's /v1/state (lab/report.py)."""
    from types import SimpleNamespace

    from lab.report import format_status
    sw = LoopedSwitch(fabric, {1: 2, 2: 1})
    sw.run(0.5)
    state = {**sw.core.status(sw.clock.now), "routes": 0, "groups": 0, "programmed_version": -1}
    lab = SimpleNamespace(fabric=fabric, state=SimpleNamespace(external_masters=False, processes={}, faults=[]),
                          master_states=lambda: {}, client_states=lambda: {ME: state})
    row = next(line.split() for line in format_status(lab).splitlines() if line.startswith(ME))
    # columns: switch client master lsd prog usable down miscab routes groups
    assert (row[5], row[6], row[7]) == ("0", "2", "2"), row


# -- the codec alone ------------------------------------------------------------------------------------

def _codec(ring: KeyRing, name: str = ME) -> Codec:
    return Codec(ring.bundle_for_switch(name), name, ("leaf-1", "leaf-2", "spine-1"), ("m1",))


def test_codec_accepts_its_own_nd_frames_of_this_incarnation_once_per_port():
    """Our own frames need no handshake (we know our incarnation) and never go through the port's session with
    its peer (review 38: the handshake let a copy of our answer take the session from the genuine peer)."""
    ring = KeyRing.from_secret(SECRET)
    c = _codec(ring)
    f1 = NdFrame(ME, 1, Endpoint("spine-1", 1))
    f2 = NdFrame(ME, 2, Endpoint("spine-1", 2))
    one, two = c.encode(f1), c.encode(f2)
    assert c.decode(one, port=2) == (ME, f1)          # two-port loop: accepted at once
    assert c.decode(two, port=1) == (ME, f2)
    for data, port in ((one, 2), (two, 1), (two, 2), (one, 1)):   # a frame replayed is still a replay,
        with pytest.raises(DecodeError) as e:
            c.decode(data, port=port)
        assert e.value.reason == "replay"                        # on whichever port
    assert c.decode(c.encode(f1), port=2) == (ME, f1)            # the stream goes on
    assert not c.established(1) and not c.established(2)
    # a frame of another incarnation of ours (a capture from before our restart) is a replay, not a loop
    before = Codec(ring.bundle_for_switch(ME), ME, ("leaf-1", "leaf-2", "spine-1"), ("m1",), incarnation=12345)
    with pytest.raises(DecodeError) as e:
        c.decode(before.encode(f1), port=1)
    assert e.value.reason == "replay"


def test_codec_own_frames_leave_the_peer_session_alone():
    """A port established with its peer: copies of our own frames on it change nothing the peer's stream
    depends on (neither the incarnation accepted nor the offer reflected)."""
    ring = KeyRing.from_secret(SECRET)
    c = _codec(ring)
    peer = Codec(ring.bundle_for_switch("spine-1"), "spine-1", ("leaf-1", "leaf-2", "spine-1"), ("m1",))
    establish_nd(c, 1, peer, 1)
    mine = NdFrame(ME, 1, Endpoint("spine-1", 1), Endpoint("spine-1", 1))
    sess = c._sessions[1]
    before = (sess.inc, sess.peer, sess.chal, sess.offer)
    for _ in range(3):                       # copies of what we send on port 1, injected back into it
        sent = c.encode(mine)
        assert peer.decode(sent, port=1) == (ME, mine)
        c.decode(sent, port=1)
    assert (sess.inc, sess.peer, sess.chal) == before[:3] and sess.offer == before[3]
    g = NdFrame("spine-1", 1, Endpoint(ME, 1), Endpoint(ME, 1))
    assert c.decode(peer.encode(g), port=1) == ("spine-1", g)     # the peer's stream goes on
def test_codec_still_rejects_everything_else_from_ourselves():
    ring = KeyRing.from_secret(SECRET)
    c = _codec(ring)
    other = _codec(ring, "leaf-2")
    # an NdFrame under another key, and unicast, claiming to come from us: wrong_sender before any HMAC
    payload = encode_payload(NdFrame(ME, 1, Endpoint("spine-1", 1)))
    for kind, owner in ((KeyKind.SWITCH, ME), (KeyKind.GROUP, "")):
        with pytest.raises(DecodeError) as e:
            c.decode(sign_raw(NdFrame.TYPE, kind, 1, ME, owner, payload, key=b"\x00" * 32, dest=ME), port=1)
        assert e.value.reason == "wrong_sender"
    report = PortReport(ME, "ab" * 32, 1, 0, ())
    with pytest.raises(DecodeError) as e:
        c.decode(sign_raw(PortReport.TYPE, KeyKind.SWITCH, 1, ME, ME, encode_payload(report), key=b"\x00" * 32,
                          dest=ME))
    assert e.value.reason == "wrong_sender"
    # a master never takes an ND frame, its own name or not
    master = Codec(ring, "m1", ("leaf-1", "leaf-2", "spine-1"), ("m1",))
    with pytest.raises(DecodeError) as e:
        master.decode(sign_raw(NdFrame.TYPE, KeyKind.ND, 1, "m1", "", payload, key=ring.key(KeyKind.ND), dest=""))
    assert e.value.reason == "wrong_sender"
    # a genuine peer's ND frames are unaffected
    g = NdFrame("leaf-2", 1, Endpoint(ME, 1))
    with pytest.raises(DecodeError, match="stale"):
        c.decode(other.encode(g), port=1)
