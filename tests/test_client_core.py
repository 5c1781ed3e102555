"""The pure client core with a fake clock: dispatch, urgency, the first-report hold in every order of
connect / disconnect / ND up / time passing, graceful restart. No threads, no sockets, no switch."""

from __future__ import annotations

import itertools

import pytest

from client.core import ClientCore, LsdApplied, SendDatagram, SendFrames, UsableChanged
from proto.auth import KeyRing
from proto.clos import clos_fabric
from proto.config import Endpoint
from proto.lsd import LinkStateDB
from proto.messages import (
    Challenge,
    Codec,
    DecodeError,
    Keepalive,
    LsdFull,
    LsdRequest,
    NdFrame,
    PortReport,
    ReportAck,
    encode_nd_ethernet,
)
from tests.fakes.clock import FakeClock, run_until
from tests.harness.fresh import establish, establish_nd

SECRET = bytes(range(32))
ME = "leaf-1"


@pytest.fixture(scope="module")
def fabric():
    return clos_fabric(pods=0, leaves=2, spines=2, masters=1, liveness="nd")   # leaf-1: port 1 -> spine-1, 2 -> spine-2


class World:
    """The core plus what surrounds it: the two spines' ND and the master, each with its own codec."""

    def __init__(self, fabric) -> None:
        self.fabric = fabric
        self.ring = KeyRing.from_secret(SECRET)
        self.clock = FakeClock(1000.0)
        self.core = ClientCore(fabric, ME, self.ring.bundle_for_switch(ME), now=self.clock.now)
        switches = [s.name for s in fabric.switches]
        masters = [m.id for m in fabric.masters]
        self.master = Codec(self.ring, "m1", switches, masters)
        self.peers = {name: Codec(self.ring.bundle_for_switch(name), name, switches, masters)
                      for name in ("spine-1", "spine-2")}
        self.actions: list[tuple[float, object]] = []
        self._decoded: dict[bytes, object] = {}    # the master's codec refuses a replay: decode once
        # The freshness handshakes the runtime does with challenges and the first ND frames.
        establish(self.master, self.core.codec)
        for port in fabric.fabric_ports(ME):
            link = fabric.link_at(ME, port)
            far = link.b if link.a.switch == ME else link.a
            if far.switch in self.peers:
                establish_nd(self.peers[far.switch], far.port, self.core.codec, port)

    # inputs ------------------------------------------------------------------------------------------
    def feed(self, actions: list) -> list:
        self.actions.extend((self.clock.now, a) for a in actions)
        return actions

    def connect(self, live: bool = True, live2: bool | None = None) -> list:
        ports = {1: live, 2: live if live2 is None else live2, 10: True}
        return self.feed(self.core.on_connected(ports, self.clock.now))

    def disconnect(self) -> list:
        return self.feed(self.core.on_disconnected(self.clock.now))

    def nd_frame(self, port: int, *, two_way: bool = True, hold_ms: int = 0) -> bytes:
        peer = self.fabric.link_at(ME, port)
        far = peer.b if peer.a.switch == ME else peer.a
        frame = NdFrame(far.switch, far.port, Endpoint(ME, port), Endpoint(ME, port) if two_way else None,
                        hold_ms=hold_ms)
        data = self.peers[far.switch].encode(frame)
        return encode_nd_ethernet(self.fabric.switch(far.switch).mac, data)

    def nd_up(self, ports=(1, 2)) -> list:
        out = []
        for port in ports:
            out += self.feed(self.core.on_packet_in(port, self.nd_frame(port), self.clock.now))
        return out

    def run(self, seconds: float) -> list:
        """Let time pass with the peers silent; tick at every deadline like the runtime."""
        got = run_until(self.clock, self.clock.now + seconds, self.core.tick, self.core.next_deadline,
                        max_steps=10_000)
        assert self.core.next_deadline() > self.clock.now      # never a deadline in the past
        self.actions.extend(got)
        return [a for _, a in got]

    # outputs -----------------------------------------------------------------------------------------
    def decode(self, data: bytes) -> object:
        if data not in self._decoded:
            self._decoded[data] = self.master.decode(data)[1]
        return self._decoded[data]

    def reports(self, actions=None) -> list[PortReport]:
        items = self.actions if actions is None else [(0.0, a) for a in actions]
        out = []
        for _, a in items:
            if isinstance(a, SendDatagram):
                msg = self.decode(a.data)
                if isinstance(msg, PortReport):
                    out.append(msg)
        return out

    def first_report_time(self) -> float | None:
        for t, a in self.actions:
            if isinstance(a, SendDatagram) and isinstance(self.decode(a.data), PortReport):
                return t
        return None


@pytest.fixture
def world(fabric) -> World:
    return World(fabric)


def test_first_report_waits_for_nd_then_goes_at_once(world):
    assert world.connect() == [] or not world.reports()
    world.run(0.005)
    assert world.reports() == []                       # held: ND is not up yet
    out = world.nd_up()
    reports = world.reports(out)
    assert reports and all(p.usable for p in reports[-1].ports)
    assert UsableChanged(1, True) in out and UsableChanged(2, True) in out
    assert world.core.report_released


def test_first_report_released_by_the_grace_when_nd_stays_silent(world):
    world.connect()
    t0 = world.clock.now
    world.run(world.core.report_grace - 0.001)
    assert world.reports() == []
    world.run(0.002)
    assert world.first_report_time() == pytest.approx(t0 + world.core.report_grace)
    assert not any(p.usable for p in world.reports()[0].ports)


def test_disconnect_before_release_does_not_spin_and_reconnect_restarts_the_hold(world):
    """The bug of issue #20: the hold deadline stayed in the past while disconnected, so the runtime
    spun on ticks and never read its inbox. `run` fails (StuckCore) if the core asks for the past."""
    world.connect()
    world.run(0.01)
    world.disconnect()
    world.run(3 * world.core.report_grace)             # would raise StuckCore before the fix
    assert world.reports() == []                       # nothing reported while disconnected
    world.connect()
    t1 = world.clock.now
    world.run(world.core.report_grace + 0.01)
    assert world.first_report_time() == pytest.approx(t1 + world.core.report_grace)


def test_nd_frames_go_out_only_while_connected(world):
    frames = [a for a in world.run(0.05) if isinstance(a, SendFrames)]
    assert frames == []
    world.connect()
    frames = [a for a in world.run(0.05) if isinstance(a, SendFrames)]
    assert frames and {f.port for a in frames for f in a.frames} == {1, 2}
    world.disconnect()
    assert [a for a in world.run(0.05) if isinstance(a, SendFrames)] == []


EVENTS = ("connect", "disconnect", "nd", "wait")


@pytest.mark.parametrize("order", list(itertools.product(EVENTS, repeat=4)), ids="-".join)
def test_every_order_of_connect_disconnect_nd_and_time(fabric, order):
    """In any order: no deadline in the past; the first report only while connected, and only when every
    live port has ND up or the grace since the last connection ran out; a connected client always
    reports in the end."""
    w = World(fabric)
    connected, connected_at = False, None
    checked = False
    for ev in order:
        released_before = w.core.report_released
        if ev == "connect":
            if not connected:
                connected, connected_at = True, w.clock.now
            out = w.connect()
        elif ev == "disconnect":
            connected = False
            out = w.disconnect()
        elif ev == "nd":
            out = w.nd_up()
        else:
            out = w.run(w.core.report_grace * 0.6)
        if not released_before and w.core.report_released and not checked:
            checked = True
            t = w.first_report_time()
            assert t is not None and connected, f"released while disconnected after {order}"
            nd_ready = ev == "nd" or (ev == "connect" and "nd" in order)
            assert nd_ready or t >= connected_at + w.core.report_grace - 1e-9, order
        assert bool(w.reports()) == w.core.report_released
        assert not (out and not connected and any(isinstance(a, SendFrames) for a in out))
    w.run(0.01)
    if connected:
        w.run(w.core.report_grace + 0.01)
        assert w.core.report_released and w.reports(), order


def test_master_messages_are_dispatched_and_forgeries_counted(world, fabric):
    world.connect()
    world.nd_up()
    db = LinkStateDB(len(fabric.links))
    full = world.master.encode(LsdFull("m1", 1, db.version, fabric.digest, db.snapshot()), to=ME)
    out = world.core.on_datagram(full, world.clock.now)
    applied = [a for a in out if isinstance(a, LsdApplied)]
    assert len(applied) == 1 and applied[0].full and applied[0].term == 1
    assert world.core.replica.version == db.version
    # A keepalive from the same master: the reporter now follows m1 in term 1.
    world.core.on_datagram(world.master.encode(Keepalive("m1", 1, db.version), to=ME), world.clock.now)
    assert world.core.reporter.master == "m1" and world.core.reporter.term == 1
    seq = world.core.reporter.report_seq
    world.core.on_datagram(world.master.encode(ReportAck("m1", 1, seq), to=ME), world.clock.now)
    assert world.core.reporter.acked
    # Forged (bit flipped) and replayed datagrams change nothing and are counted.
    forged = bytearray(full)
    forged[-1] ^= 1
    assert world.core.on_datagram(bytes(forged), world.clock.now) == []
    assert world.core.on_datagram(full, world.clock.now) == []
    rejected = world.core.codec.rejected  # (its "stale" ones are the handshakes' first frames)
    assert rejected["bad_hmac"] == 1 and rejected["replay"] == 1 and world.core.counters
    assert world.core.on_packet_in(1, b"\x00" * 20, world.clock.now) == []
    assert any(k.startswith("nd_rejected_") for k in world.core.counters)


def test_usable_change_is_urgent_other_changes_wait_for_the_refresh(world):
    world.connect(live=True, live2=False)
    world.nd_up(ports=(1,))                            # port 2 has no PHY: settled, released at once
    assert world.core.report_released
    n = len(world.reports())
    # Port 2 is not usable; taking it admin down changes its report but not its usable bit.
    out = world.feed(world.core.set_admin(2, False, world.clock.now))
    assert world.reports(out) == []
    # Port 1 losing PHY flips usable: reported at once, and local repair for the programmer.
    out = world.feed(world.core.on_port_status(1, False, world.clock.now))
    assert UsableChanged(1, False) in out
    (report,) = world.reports(out)
    assert len(world.reports()) == n + 1
    assert {p.port: (p.usable, p.admin) for p in report.ports}[2] == (False, False)


def test_carrier_loss_of_an_unusable_port_is_reported_at_once(world):
    """The master's guard outvotes a live switch only with carrier loss at every neighbour (a power loss):
    a port already out of use (liveness lost first) that then loses its carrier is news, not a refresh."""
    world.connect()
    world.nd_up()
    n = len(world.reports())
    out = world.feed(world.core.on_port_status(1, False, world.clock.now, carrier=True))   # liveness lost
    (report,) = world.reports(out)
    assert {p.port: (p.usable, p.phy) for p in report.ports}[1] == (False, True)
    out = world.feed(world.core.on_port_status(1, False, world.clock.now, carrier=False))  # then the carrier
    (report,) = world.reports(out)
    assert {p.port: (p.usable, p.phy) for p in report.ports}[1] == (False, False)
    assert len(world.reports()) == n + 2


def test_graceful_restart_sends_hold_frames_then_silences_nd(world):
    world.connect()
    world.nd_up()
    out = world.core.graceful_restart(5.0, world.clock.now)
    (batch,) = [a for a in out if isinstance(a, SendFrames)]
    assert {f.port for f in batch.frames} == {1, 2}
    assert [a for a in world.run(0.1) if isinstance(a, SendFrames)] == []


def test_peer_restart_hold_keeps_the_port_up(world):
    world.connect()
    world.nd_up()
    held = world.core.on_packet_in(1, world.nd_frame(1, hold_ms=1000), world.clock.now)
    assert not any(isinstance(a, UsableChanged) for a in held)
    world.run(0.5)                                     # far beyond nd_dead; port 2 goes down, 1 is held
    assert world.core.ports.usable(1) and not world.core.ports.usable(2)


def test_a_restarted_master_is_challenged_and_the_open_report_resent_within_one_exchange(world, fabric):
    """Issue #19: after the master restarts (new incarnation), its frames are stale at the client; the
    client answers with a Challenge, and a Challenge from the master makes it resend its open report."""
    world.connect()
    world.nd_up()
    assert world.reports() and not world.core.reporter.acked
    master2 = Codec(world.ring, "m1", [s.name for s in fabric.switches], [m.id for m in fabric.masters])
    keepalive = master2.encode(Keepalive("m1", 2, 0), to=ME)
    out = world.core.on_datagram(keepalive, world.clock.now)
    assert world.core.codec.rejected["stale"] >= 1 and world.core.reporter.term == 0   # no state change
    assert len(out) == 1 and isinstance(out[0], SendDatagram) and out[0].master == "m1"
    assert master2.decode(out[0].data) == (ME, Challenge(ME))          # the restarted master verifies us
    assert world.core.on_datagram(keepalive, world.clock.now) == []     # a second stale one: rate-limited
    # the master's next frame reflects our offer: accepted; its Challenge makes the open report go now
    out = world.core.on_datagram(master2.challenge(ME), world.clock.now)
    resent = [a for a in out if isinstance(a, SendDatagram)]
    assert resent and all(isinstance(master2.decode(a.data)[1], PortReport) for a in resent)
    assert world.core.on_datagram(master2.encode(Keepalive("m1", 2, 0), to=ME), world.clock.now) is not None
    assert world.core.reporter.term == 2


def test_a_request_waits_for_the_freshness_handshake_with_its_master(fabric):
    """Issue #18: an LsdRequest sent before the handshake with a master is a stale frame the master verifies,
    rejects and answers with a second Challenge. The core holds the newest one per master and sends it the
    moment the master's first frame is accepted — it then decodes at the master."""
    ring = KeyRing.from_secret(SECRET)
    core = ClientCore(fabric, ME, ring.bundle_for_switch(ME), now=1000.0)
    master = Codec(ring, "m1", [s.name for s in fabric.switches], [m.id for m in fabric.masters])
    out = core.tick(1000.0) + core.tick(1001.0)                    # the replica wants the LSD: held
    assert not [a for a in out if isinstance(a, SendDatagram)]
    assert core.counters["requests_held"] >= 1
    # our first frame reaches the master (stale there, but it learns our offer); its Challenge reflects it
    with pytest.raises(DecodeError):
        master.decode(core.codec.challenge("m1"))
    out = core.on_datagram(master.challenge(ME), 1001.5)
    sent = [a for a in out if isinstance(a, SendDatagram)]
    assert len(sent) == 1 and sent[0].master == "m1"
    sender, msg = master.decode(sent[0].data)                      # accepted: no second round trip
    assert sender == ME and isinstance(msg, LsdRequest) and msg.version == -1
    assert master.rejected["stale"] == 1


# ------------------------------------------------------------------- no deadline stays due after its tick
STEPS = {
    "connect": lambda core, now: core.on_connected({1: True, 2: True, 10: True}, now),
    "read_back": lambda core, now: core.on_kept_routes(False, now),
    "read_back_kept": lambda core, now: core.on_kept_routes(True, now),
    "disconnect": lambda core, now: core.on_disconnected(now),
    "oam_failed": lambda core, now: core.on_oam_failed(None, "no OVSDB target", now),
    "start_oam": lambda core, now: core.start_oam(now),
}


@pytest.mark.parametrize("liveness", ["nd", "oam"])
@pytest.mark.parametrize("read_back", [False, True], ids=["daemon", "standalone"])
@pytest.mark.parametrize("steps", [
    (),                                                    # the switch never answers (its OVS unreachable)
    ("start_oam", "oam_failed"),                           # the daemon's start without --ovsdb
    ("connect", "disconnect"),                             # lost before it was read back
    ("connect", "read_back", "disconnect"),
    ("connect", "read_back_kept", "disconnect", "connect"),
    ("start_oam", "connect", "disconnect", "oam_failed", "connect", "read_back"),
], ids=lambda s: "+".join(s) or "nothing")
def test_after_a_tick_no_deadline_is_due(liveness: str, read_back: bool, steps: tuple[str, ...]) -> None:
    """The core's contract with the runtime's control loop: after `tick(now)`, `next_deadline()` is later
    than `now` (the loop waits until then; a deadline left due is a busy loop). New user: a client whose OVS
    was unreachable, with no master up, spun at 70-90 % of a core — the LSD request deadline stayed due while
    the switch, never read back, allowed no request. Every step order, each followed by 3 s of ticks, no master
    heard (fail-static), as the daemon builds the core (`switch_read_back=False`) and standalone."""
    fabric = clos_fabric(pods=0, leaves=2, spines=2, masters=3, liveness=liveness)
    clock = FakeClock(1000.0)
    core = ClientCore(fabric, ME, KeyRing.from_secret(SECRET).bundle_for_switch(ME), now=clock.now,
                      switch_read_back=read_back)
    for step in ("", *steps):
        if step:
            STEPS[step](core, clock.now)
        end = clock.now + 3.0
        turns = 0
        while clock.now < end and turns < 10_000:
            turns += 1
            core.tick(clock.now)
            due = core.next_deadline()
            assert due > clock.now, (f"after {step or 'start'}: a deadline {clock.now - due:.3f}s past is still due "
                                     f"(ports {core.ports.next_deadline() - clock.now:.3f}, reporter "
                                     f"{core.reporter.next_deadline() - clock.now:.3f}, replica "
                                     f"{core.replica.next_deadline() - clock.now:.3f})")
            clock.advance(min(due - clock.now, 0.25))
