"""The fan-out encoder (controller.fanout) must produce exactly what Codec.encode produces."""

from __future__ import annotations

from controller import fanout
from controller.fanout import FanoutEncoder
from proto.auth import KeyRing
from proto.lsd import LinkStateDB
from proto.messages import Codec, DecodeError, Keepalive, LsdDelta, LsdFull, ReportAck
from tests.harness.fresh import establish

SWITCHES = [f"leaf-{i}" for i in range(20)]


def setup() -> tuple[KeyRing, Codec]:
    ring = KeyRing.from_secret(bytes(range(32)))
    return ring, Codec(ring, "m1", SWITCHES, ["m1", "m2"])


def client(ring: KeyRing, name: str, master: Codec | None = None) -> Codec:
    """A switch's Codec, verified by (and verifying) `master` if given."""
    c = Codec(ring.bundle_for_switch(name), name, SWITCHES, ["m1", "m2"])
    if master is not None:
        establish(master, c)
    return c


def test_fast_path_decodes_at_every_switch_in_sequence() -> None:
    ring, codec = setup()
    enc = FanoutEncoder(codec, ring, SWITCHES[0])
    assert enc.enabled
    enc.warm(SWITCHES)
    msgs = [LsdDelta("m1", 2, 5, 6, b"C\x01\x01\x05"),
            LsdFull("m1", 2, 6, "a" * 64, LinkStateDB(10).snapshot()), Keepalive("m1", 2, 6)]
    clients = {n: client(ring, n, codec) for n in SWITCHES}
    for msg in msgs:
        enc.reset()
        for n in SWITCHES:
            assert clients[n].decode(enc.encode(msg, n)) == ("m1", msg)
    assert enc.fast == len(msgs) * (len(SWITCHES) - 1) and enc.slow == len(msgs)
    # a datagram signed for one switch is refused by another; a replay is refused
    enc.reset()
    enc.encode(msgs[0], "leaf-1")
    data = enc.encode(msgs[0], "leaf-2")
    assert clients["leaf-2"].decode(data)[1] == msgs[0]
    for codec_, reason in ((clients["leaf-3"], "unknown_key"), (clients["leaf-2"], "replay")):
        try:
            codec_.decode(data)
        except DecodeError as e:
            assert e.reason == reason
        else:
            raise AssertionError("accepted")


def test_sequence_numbers_shared_with_codec() -> None:
    ring, codec = setup()
    enc = FanoutEncoder(codec, ring, SWITCHES[0])
    c = client(ring, "leaf-4", codec)
    ka = Keepalive("m1", 1, 1)
    enc.encode(ka, "leaf-3")
    fast = enc.encode(ka, "leaf-4")
    slow = codec.encode(Keepalive("m1", 1, 2), to="leaf-4")      # next seq through the codec itself
    assert c.decode(fast)[1] == ka and c.decode(slow)[1] == Keepalive("m1", 1, 2)
    # leaf-4's own stream: 1 and 2 were the handshake's challenges, leaf-3's frame took none of it
    assert [int.from_bytes(d[14:22], "big") for d in (fast, slow)] == [3, 4]


def test_probe_does_not_touch_the_real_codec() -> None:
    ring, codec = setup()
    FanoutEncoder(codec, ring, SWITCHES[0])
    assert codec._sessions == {} and codec.accepted == {}


def test_disabled_without_probe_falls_back_to_codec() -> None:
    ring, codec = setup()
    enc = FanoutEncoder(codec, ring, None)
    assert not enc.enabled
    ka = Keepalive("m1", 1, 1)
    assert client(ring, "leaf-1", codec).decode(enc.encode(ka, "leaf-1"))[1] == ka


def test_report_acks_equal_by_value_share_one_payload_across_batches(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Each report's ack is a new ReportAck, equal for every switch acked at one term and seq (a cold start:
    30,088 first reports, issue #18): serialised once, then only the header and tag per switch, also across
    reset() (a turn per datagram); each datagram still decodes to its own ack at its own switch only."""
    ring, codec = setup()
    clients = {n: client(ring, n, codec) for n in SWITCHES}
    acks = [ReportAck("m1", 3, 1), ReportAck("m1", 3, 1, backup=True), ReportAck("m1", 3, 2)]
    for size, slow in ((256, len(acks)), (2, len(acks) * len(SWITCHES))):   # 2: cleared before every hit
        monkeypatch.setattr(fanout, "VALUE_CACHE", size)
        enc = FanoutEncoder(codec, ring, SWITCHES[0])
        for n in SWITCHES:
            for ack in acks:
                enc.reset()
                data = enc.encode(ReportAck(ack.master, ack.term, ack.report_seq, ack.backup), n)
                assert clients[n].decode(data) == ("m1", ack)
        assert enc.slow == slow and enc.fast == len(SWITCHES) * len(acks) - slow
    enc2 = FanoutEncoder(codec, ring, SWITCHES[0])
    for n in SWITCHES:
        enc2.reset()
        assert clients[n].decode(enc2.encode(ReportAck("m1", 3, 5), n)) == ("m1", ReportAck("m1", 3, 5))
        try:
            clients[SWITCHES[0] if n != SWITCHES[0] else SWITCHES[1]].decode(enc2.encode(ReportAck("m1", 3, 5), n))
        except DecodeError as e:
            assert e.reason == "unknown_key"
        else:
            raise AssertionError("a datagram for another switch was accepted")
    assert enc2.slow == 1 and enc2.fast == 2 * len(SWITCHES) - 1
