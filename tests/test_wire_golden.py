"""Golden datagrams: the encoding of every message type is fixed byte for byte (wire v3).

Each case is signed by a Codec whose incarnation, challenge and reflected offer are pinned, so the whole
datagram (framing, msgpack payload, HMAC tag) is deterministic. A change of the codec library or of the
structs that changes one byte fails here: such a change needs a new WIRE_VERSION. Every golden datagram
also decodes back to the message at a receiver whose current challenge it reflects.
"""

from __future__ import annotations

import pytest

from proto.auth import KeyRing
from proto.config import Endpoint
from proto.messages import (
    MESSAGE_TYPES,
    WIRE_VERSION,
    Challenge,
    Codec,
    DrainNotes,
    DrainNotesAck,
    Hello,
    Keepalive,
    LsdDelta,
    LsdFull,
    LsdRequest,
    Message,
    NdFrame,
    PortReport,
    PortStatus,
    RelayedReport,
    ReplicationAck,
    ReportAck,
    StepDown,
    Vote,
    VoteRequest,
)

RING = KeyRing.from_secret(bytes(range(32)))
SWITCHES, MASTERS = ("tor-1", "agg-1"), ("m1", "m2")
INC, PEER_INC = 0x0102030405060708, 0x7766554433221100
OFFER = 0x0A0B0C0D0E0F1011   # the sender's challenge to the receiver
CHAL = 0x1122334455667788    # the receiver's challenge, reflected by the sender
ND_RX_PORT = 7               # the receiver's local port an ND frame arrives on
D = "0123456789abcdef" * 4
PS = (PortStatus(1, True, True, True, True, False),
      PortStatus(2, True, False, False, True, True, Endpoint("agg-2", 65279)),
      PortStatus(65279, False, False, False, False, False))

CASES: list[tuple[str, str | None, Message]] = [
    ("tor-1", "m1", PortReport("tor-1", D, 7, 3, PS, reach=5, external=2**63 - 1)),
    ("tor-1", "m1", PortReport("tor-1", D, 0, 0, ())),
    ("tor-1", "m1", LsdRequest("tor-1", 4, -1)),
    ("tor-1", None, NdFrame("tor-1", 3, Endpoint("agg-1", 7), Endpoint("agg-1", 7), hold_ms=60_000)),
    ("tor-1", None, NdFrame("tor-1", 3, Endpoint("agg-1", 7))),
    ("tor-1", "m1", Challenge("tor-1")),
    ("m1", "tor-1", ReportAck("m1", 3, 7, backup=True)),
    ("m1", "tor-1", LsdFull("m1", 3, 12, D, b"\x00\x01snapshot" * 4, backup=True)),
    ("m1", "tor-1", LsdDelta("m1", 3, 11, 12, b"changes")),
    ("m1", "tor-1", Keepalive("m1", 2**63 - 1, 0)),
    ("m1", "m2", Hello("m1", "master", 3, -1, 2**32 - 1, "m1", (0, 1, 2**63 - 1))),
    ("m1", "m2", Hello("m1", "init", 0, 5, 0)),
    ("m1", "m2", VoteRequest("m1", 4, 12, 100)),
    ("m1", "m2", Vote("m1", 4, "m2", True)),
    ("m1", "m2", ReplicationAck("m1", 4, -1)),
    ("m1", "m2", StepDown("m1", 4, successor="m2")),
    ("m1", "m2", StepDown("m1", 4)),
    ("m1", "m2", RelayedReport.of("m1", 4, PortReport("tor-1", D, 9, 3, PS[:2], reach=1))),
    ("m1", "m2", DrainNotes("m1", 4, 17, b"\x91\x95notes")),
    ("m1", "m2", DrainNotesAck("m1", 4, 17)),
    ("m1", "tor-1", Challenge("m1")),
]

GOLDEN = [
    "465003010101010203040506070800000000000000010a0b0c0d0e0f1011112233445566778800000000000000000574"
    "6f722d3105746f722d3197a5746f722d31d9403031323334353637383961626364656630313233343536373839616263"
    "64656630313233343536373839616263646566303132333435363738396162636465660703939701c3c3c3c3c2c09702"
    "c3c2c2c3c392a56167672d32cdfeff97cdfeffc2c2c2c2c2c005cf7fffffffffffffffcac4c018fb7bcaaf489a1fd1e6"
    "4bc06cea81a5bc717bf5cb1cdb72c708ba328f",
    "465003010101010203040506070800000000000000010a0b0c0d0e0f1011112233445566778800000000000000000574"
    "6f722d3105746f722d3197a5746f722d31d9403031323334353637383961626364656630313233343536373839616263"
    "646566303132333435363738396162636465663031323334353637383961626364656600009000000994c5aa4a76296c"
    "e04edc937f522880d92ba622e0af2e1f87094bef5774cb6f",
    "465003030101010203040506070800000000000000010a0b0c0d0e0f1011112233445566778800000000000000000574"
    "6f722d3105746f722d3193a5746f722d3104ff64f7161be2a8e7bb59d2542db85f97de49e3b4edca1a0c22df298468f1"
    "3a5985",
    "4650030c0401010203040506070800000000000000010a0b0c0d0e0f1011112233445566778800000000000000000574"
    "6f722d310095a5746f722d310392a56167672d310792a56167672d3107cdea606f7dc00d34fe57d6008ff84edfa3c06f"
    "80990ffdedef8afe7eb9890c0a78873a",
    "4650030c0401010203040506070800000000000000010a0b0c0d0e0f1011112233445566778800000000000000000574"
    "6f722d310095a5746f722d310392a56167672d3107c0005b7e02be5a79a556d4b2f32c4dfa3b907534d16cc921cd3571"
    "ba84f01f51d483",
    "465003100101010203040506070800000000000000010a0b0c0d0e0f1011112233445566778800000000000000000574"
    "6f722d3105746f722d3191a5746f722d31bc410ffbe5defc6bb29befce0361c5988633e860266fa5508d8639576a69a6"
    "0f",
    "465003020101010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "3105746f722d3194a26d310307c3109d59b56bb8599f4f06fee454b0a062ebe5c9ac2e98c253d57aaabfcd1061cd",
    "465003040101010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "3105746f722d3196a26d31030cd940303132333435363738396162636465663031323334353637383961626364656630"
    "31323334353637383961626364656630313233343536373839616263646566c4280001736e617073686f740001736e61"
    "7073686f740001736e617073686f740001736e617073686f74c3b3e5cda56b9101f978d53190adbd87e28f1f44339984"
    "3be91ecc84ed3e839547",
    "465003050101010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "3105746f722d3196a26d31030b0cc4076368616e676573c21010fc1205c0e79521dae76b926c22eb98518c438703b5ad"
    "3073cdcb1bd0490d",
    "465003060101010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "3105746f722d3194a26d31cf7fffffffffffffff00c222f0d71b473c511fd5822c6c221a26ff7d00868fc75afd77ad9c"
    "0669f897a4e7",
    "465003070201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3197a26d31a66d617374657203ffceffffffffa26d31930001cf7fffffffffffffff2d68736a0a21cb536e6473"
    "8d1511a7f33626e884c2023de9c911db0aa7ef00b3",
    "465003070201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3197a26d31a4696e6974000500c09001d0abbd81ff80c6c367341e464993ed6931f271ccb90051b418f486efc4"
    "b3a4",
    "465003080201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3194a26d31040c6497bcb069c52385906d404d16bd95e1e97a10fccdd7703ae00e9355557bf133cb",
    "465003090201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3194a26d3104a26d32c3e1856da098396347450c589012cb58589bc7534cd6f95a35f363e8a718363cbd",
    "4650030a0201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3193a26d3104ffff556b6cc7d6f6418e6a4b6aa67490c27ffb0bf32544abb931feffd4ca304fea",
    "4650030b0201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3193a26d3104a26d3293c0dba37dfd5a6c9d1db37e76c81da4d59c2c8a847524de3e9a418a565de26f",
    "4650030b0201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3193a26d3104c0c7353c9bdb5c5cce2b451daeb945022079fb67025467150dda370e6c9dfd40ee",
    "4650030d0201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3199a26d3104a5746f722d31d94030313233343536373839616263646566303132333435363738396162636465"
    "6630313233343536373839616263646566303132333435363738396162636465660903929701c3c3c3c3c2c09702c3c2"
    "c2c3c392a56167672d32cdfeff010082ef83fe08c06fe1c38d932b856cb18a9207285f0f585aed66539b2cd887bf2b",
    "4650030e0201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3194a26d310411c40791956e6f746573ec332db373f81124ccce1eaffee947a342fde69271f47b31e2a6d2c0b3"
    "6e1f18",
    "4650030f0201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3193a26d310411225359d63118c035da2d2ca0dcc344f2fba75dd33bb580ab6ef9857d44597ba7",
    "465003100101010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "3105746f722d3191a26d312260293fb3c08c8996e1f5e001a791d6c79406af670056894953b4223342c8b3",
]


def codec(name: str, inc: int) -> Codec:
    ring = RING if name in MASTERS else RING.bundle_for_switch(name)
    return Codec(ring, name, SWITCHES, MASTERS, incarnation=inc)


def datagram(sender: str, to: str | None, msg: Message) -> bytes:
    """`msg` as the first frame of `sender`'s stream to `to` (the ND port for an NdFrame), pinned."""
    c = codec(sender, INC)
    sess = c._session(to if to is not None else msg.port)  # type: ignore[attr-defined]
    sess.chal, sess.offer = OFFER, CHAL
    return c.encode(msg, to=to)


def test_every_message_type_has_a_golden_case():
    assert WIRE_VERSION == 3
    assert {type(m) for _, _, m in CASES} == set(MESSAGE_TYPES.values())
    assert len(GOLDEN) == len(CASES)


@pytest.mark.parametrize(("case", "golden"), list(zip(CASES, GOLDEN, strict=True)),
                         ids=[f"{i}-{type(m).__name__}" for i, (_, _, m) in enumerate(CASES)])
def test_golden_datagram(case, golden):
    sender, to, msg = case
    assert datagram(sender, to, msg).hex() == golden
    receiver = codec(to if to is not None else "agg-1", PEER_INC)
    receiver._session(sender if to is not None else ND_RX_PORT).chal = CHAL
    assert receiver.decode(bytes.fromhex(golden), port=ND_RX_PORT) == (sender, msg)
