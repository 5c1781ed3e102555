"""The fleet harness's shortcuts (issue #18) give the wire what the real codec gives: a switch's datagram
signed from a payload serialised once (`Codec.frame`) is byte for byte `Codec.encode`'s, and
the fleet worker's reports, copies and requests decode at a master as the messages a real client sends; its
switches still reject forged, corrupted and replayed datagrams and ask for a version a delta skipped."""

from __future__ import annotations

import itertools

import pytest

import proto.messages
from proto.auth import KeyKind, KeyRing
from proto.clos import clos_fabric
from proto.lsd import LinkState, LinkStateDB, encode_changes
from proto.messages import (
    Challenge,
    Codec,
    DecodeError,
    LsdDelta,
    LsdFull,
    LsdRequest,
    PortReport,
    PortStatus,
    ReportAck,
)
from proto.wire import encode_payload
from tests.harness.fleet import _Worker

RING = KeyRing.from_secret(b"s" * 32)
SWITCHES = frozenset({"tor-1", "tor-2"})
MASTERS = frozenset({"m1", "m2", "m3"})


def _twins(monkeypatch: pytest.MonkeyPatch) -> tuple[Codec, Codec]:
    """Two codecs of one switch in the same state: same incarnation, and the same challenges as long as they
    are used in turns (each draws one when it opens a stream or accepts a new incarnation: 101, 101, 102, ...)."""
    counter = itertools.count(202)
    monkeypatch.setattr(proto.messages, "_nonce", lambda: next(counter) // 2)
    return (Codec(RING, "tor-1", SWITCHES, MASTERS, incarnation=7),
            Codec(RING, "tor-1", SWITCHES, MASTERS, incarnation=7))


def test_sign_gives_the_bytes_of_codec_encode(monkeypatch: pytest.MonkeyPatch) -> None:
    master = Codec(RING, "m2", SWITCHES, MASTERS, incarnation=9)
    master.challenge("tor-1")           # its stream to tor-1 (and its challenge) drawn before the twins'
    slow, fast = _twins(monkeypatch)
    ports = tuple(PortStatus(p, True, True, True, True, False) for p in (1, 2, 3))
    msgs = [PortReport("tor-1", "ab" * 32, 1, 0, ports), LsdRequest("tor-1", 0, -1),
            PortReport("tor-1", "ab" * 32, 2, 5, ports), LsdRequest("tor-1", 5, 17)]
    last = b""
    for round_ in range(2):
        if round_:      # the master's challenge is heard: the header now reflects its offer
            with pytest.raises(DecodeError, match="stale"):
                master.decode(last)     # the master learns the switch's offer
            chal = master.challenge("tor-1")
            assert slow.decode(chal)[1] == fast.decode(chal)[1] == Challenge("m2")
        for msg in msgs:
            for to in ("m1", "m2", "m3"):
                want = slow.encode(msg, to=to)
                got = fast.frame(type(msg).TYPE, KeyKind.SWITCH, "tor-1", to, encode_payload(msg))
                assert got == want, (msg, to)
                if to == "m2":
                    last = got
    # and a master verifies it (the tag covers the destination: another master rejects it)
    data = fast.frame(PortReport.TYPE, KeyKind.SWITCH, "tor-1", "m2", encode_payload(msgs[2]))
    with pytest.raises(DecodeError) as e:
        Codec(RING, "m1", SWITCHES, MASTERS).decode(data)
    assert e.value.reason == "bad_hmac"


class _Capture:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", 0)


def test_the_workers_reports_copies_and_requests_decode_at_the_masters() -> None:
    fabric = clos_fabric(spines=2, pods=1, aggs_per_pod=2, tors_per_pod=2, hosts_per_tor=0, masters=3)
    mids = [m.id for m in fabric.masters]
    addrs = {m: ("127.0.0.1", 9 + i) for i, m in enumerate(mids)}
    w = _Worker(fabric, RING, addrs, [fabric.switches[0].name], 1, None, "127.0.0.1")
    real, cap = w.socks, _Capture()
    w.socks = [cap]
    try:
        names = frozenset(s.name for s in fabric.switches)
        masters = {m: Codec(RING, m, names, frozenset(mids)) for m in mids}
        by_addr = {a: masters[m] for m, a in addrs.items()}
        w.cold_start()
        sw = w.swl[0]
        first = cap.sent[:]
        assert sorted(a for _, a in first) == sorted(addrs.values())
        cap.sent.clear()
        now = w.g.heard_at
        for data, addr in first:        # every replica: a stale first frame -> Challenge -> the copy
            with pytest.raises(DecodeError) as e:
                by_addr[addr].decode(data)
            assert e.value.reason == "stale"
            w._dispatch(0, by_addr[addr].challenge(sw.name), now)
        assert len(cap.sent) == 3
        for data, addr in cap.sent:
            sender, msg = by_addr[addr].decode(data)
            assert sender == sw.name and msg == PortReport(sw.name, fabric.digest, 1, 0, sw.ports)
        cap.sent.clear()
        # the master of term 4 acks it: the switch follows the term and asks it for the LSD
        w._dispatch(0, masters[mids[0]].encode(ReportAck(mids[0], 4, 1), to=sw.name), now + 0.01)
        assert [(by_addr[a].decode(d)[1], a) for d, a in cap.sent] == [(LsdRequest(sw.name, 4, -1), addrs[mids[0]])]
        assert w.stats()["acked"] == 1 and w.stats()["terms"] == [4]
        cap.sent.clear()
        # a later report carries the new term and seq (the cached payload follows both)
        w._report(sw, now + 0.02, new=True)
        got = [by_addr[a].decode(d)[1] for d, a in cap.sent]
        assert got == [PortReport(sw.name, fabric.digest, 2, 4, sw.ports)] * 3
        assert w.stats()["acked"] == 0
    finally:
        for s in real:
            s.close()


def test_a_worker_switch_still_rejects_forged_and_corrupted_datagrams_and_asks_for_a_missing_version() -> None:
    """The worker's cheaper bookkeeping (counts kept as they change, no GC walks, payloads signed once) left
    the receive side as it was: every datagram is verified by the switch's own codec."""
    fabric = clos_fabric(spines=2, pods=1, aggs_per_pod=2, tors_per_pod=2, hosts_per_tor=0, masters=1)
    m = fabric.masters[0].id
    w = _Worker(fabric, RING, {m: ("127.0.0.1", 9)}, [fabric.switches[0].name], 1, None, "127.0.0.1")
    real, cap = w.socks, _Capture()
    w.socks = [cap]
    try:
        names = frozenset(s.name for s in fabric.switches)
        master = Codec(RING, m, names, frozenset({m}))
        w.cold_start()
        sw = w.swl[0]
        now = w.g.heard_at
        with pytest.raises(DecodeError):
            master.decode(cap.sent[0][0])
        w._dispatch(0, master.challenge(sw.name), now)
        master.decode(cap.sent[-1][0])                  # the copy: the pair is established both ways
        w._dispatch(0, master.encode(ReportAck(m, 1, 1), to=sw.name), now)
        db = LinkStateDB(fabric.lsd_size)
        db.apply({i: LinkState.UP for i in range(len(fabric.links))})
        full = master.encode(LsdFull(m, 1, db.version, fabric.digest, db.snapshot()), to=sw.name)
        forged = Codec(KeyRing.from_secret(b"f" * 32), m, names, frozenset({m})).encode(
            LsdFull(m, 1, db.version, fabric.digest, db.snapshot()), to=sw.name)
        corrupted = bytearray(full)
        corrupted[-40] ^= 1                             # a bit of the payload
        for bad in (forged, bytes(corrupted)):
            w._dispatch(0, bad, now + 0.1)
        assert w.counts["rejected"] == 2 and w.stats()["complete"] == 0 and sw.rep.version == -1
        w._dispatch(0, full, now + 0.2)
        assert w.stats()["complete"] == 1 and sw.rep.version == db.version
        w._dispatch(0, full, now + 0.3)                 # the same datagram again: a replay
        assert w.counts["rejected"] == 3
        # a delta that skips a version is not applied: the switch knows it misses one and asks for it
        v1 = db.version
        db.apply({0: LinkState.DOWN})
        db.apply({1: LinkState.DOWN})
        cap.sent.clear()
        w._dispatch(0, master.encode(LsdDelta(m, 1, v1 + 1, db.version, encode_changes(db.changes_since(v1 + 1))),
                                     to=sw.name), now + 0.4)
        assert sw.rep.version == v1 and w.stats()["versions"] == {(1, v1): 1}
        assert [master.decode(d)[1] for d, _ in cap.sent] == [LsdRequest(sw.name, 1, v1)]
    finally:
        for s in real:
            s.close()
