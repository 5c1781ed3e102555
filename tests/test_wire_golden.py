"""Golden datagrams: the encoding of every message type is fixed byte for byte (wire v4).

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
    BgpSession,
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
    ("tor-1", "m1", PortReport("tor-1", D, 8, 3, PS[:1], external=1, bgp=(          # an eBGP border (#13)
        BgpSession(0, BgpSession.STATE_ESTABLISHED, 2**32 - 1, 7, 1, 0), BgpSession(255, BgpSession.STATE_HELD, 30, 0, 0, 3)))),
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
    "465004010101010203040506070800000000000000010a0b0c0d0e0f1011112233445566778800000000000000000574"
    "6f722d3105746f722d3198a5746f722d31d9403031323334353637383961626364656630313233343536373839616263"
    "64656630313233343536373839616263646566303132333435363738396162636465660703939701c3c3c3c3c2c09702"
    "c3c2c2c3c392a56167672d32cdfeff97cdfeffc2c2c2c2c2c005cf7fffffffffffffff90913f307f352fae9e69fa2c16"
    "052e76a8934d354cac768143e8cd31a54c4c3c70",
    "465004010101010203040506070800000000000000010a0b0c0d0e0f1011112233445566778800000000000000000574"
    "6f722d3105746f722d3198a5746f722d31d9403031323334353637383961626364656630313233343536373839616263"
    "64656630313233343536373839616263646566303132333435363738396162636465660000900000906ef587966c91b7"
    "a0cfb3d14cdeaae62ad93a83e7d42a2e5cad1f65bd1436431b",
    "465004010101010203040506070800000000000000010a0b0c0d0e0f1011112233445566778800000000000000000574"
    "6f722d3105746f722d3198a5746f722d31d9403031323334353637383961626364656630313233343536373839616263"
    "64656630313233343536373839616263646566303132333435363738396162636465660803919701c3c3c3c3c2c00001"
    "92960001ceffffffff07010096ccff021e00000379a1a0404f228b3a7cd16d72a3d60f91d75ed8ca3ab4abeb97535e72"
    "177a2fcb",
    "465004030101010203040506070800000000000000010a0b0c0d0e0f1011112233445566778800000000000000000574"
    "6f722d3105746f722d3193a5746f722d3104ffb7f25e1ab74fa06398839fb323206baf353f53b9b3a92253976381a432"
    "c7d920",
    "4650040c0401010203040506070800000000000000010a0b0c0d0e0f1011112233445566778800000000000000000574"
    "6f722d310095a5746f722d310392a56167672d310792a56167672d3107cdea6070e994767e89bd74be5bdb4a8f1a8b21"
    "49094f73f4d325e4ce0d9ca9e4d7dd04",
    "4650040c0401010203040506070800000000000000010a0b0c0d0e0f1011112233445566778800000000000000000574"
    "6f722d310095a5746f722d310392a56167672d3107c000e8cd0cb0c6b7d736f439d6f69e3c755f70ab634e19de5d5894"
    "80e686acac9ae9",
    "465004100101010203040506070800000000000000010a0b0c0d0e0f1011112233445566778800000000000000000574"
    "6f722d3105746f722d3191a5746f722d311fa74ca9af59456c2b05d8f6d80bb7ab9b496927f317b821a92438d3f88129"
    "73",
    "465004020101010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "3105746f722d3194a26d310307c37eb82677fc1bc585fb7b3b2129ed7a5e456ec9bdd3decb15d6e4c223c88c1549",
    "465004040101010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "3105746f722d3196a26d31030cd940303132333435363738396162636465663031323334353637383961626364656630"
    "31323334353637383961626364656630313233343536373839616263646566c4280001736e617073686f740001736e61"
    "7073686f740001736e617073686f740001736e617073686f74c3dbe26f713bf8cc9b2fa5b4bebced131e8515c1cde2b4"
    "4edfa3114a440c3545a3",
    "465004050101010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "3105746f722d3196a26d31030b0cc4076368616e676573c21c6499a8df6017963d014763695453070afbe0a3b6c0702b"
    "5daf14b2e2ac705a",
    "465004060101010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "3105746f722d3194a26d31cf7fffffffffffffff00c2bc46fe57195600365734920961e1736a356b9a1f614edc522062"
    "777a40a7ddbc",
    "465004070201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3197a26d31a66d617374657203ffceffffffffa26d31930001cf7fffffffffffffffdb48f338d7a4fb81b850f8"
    "1080a167025da56eb611849b97d06d8a1a1fab46aa",
    "465004070201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3197a26d31a4696e6974000500c0909c3037a7f84b9ca3a70ade13df53b9794cbcdc86bfd30fb932ae0287ad5f"
    "f2e3",
    "465004080201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3194a26d31040c64910f2b7538aaf34bbad8d5100aa859025a5f47daf674e64b8a34227e6c61fdf4",
    "465004090201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3194a26d3104a26d32c344e26b0481fcc46a6da28ca66439ff7136dff1ff926179f4dc31c74427c63e25",
    "4650040a0201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3193a26d3104ff36878837332be207a789fa4c6ea9f28d4691daf01db82d528ca0c854a85da148",
    "4650040b0201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3193a26d3104a26d32ff4a34bf1c933737881024564a6f62c21fc4be258ef3e7b77acfe8f7e3ec2e13",
    "4650040b0201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3193a26d3104c0c4431c0e7b07fd967d4705f6896b057d42b3da6e80e3f2b7bf69ef7728262c55",
    "4650040d0201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d319aa26d3104a5746f722d31d94030313233343536373839616263646566303132333435363738396162636465"
    "6630313233343536373839616263646566303132333435363738396162636465660903929701c3c3c3c3c2c09702c3c2"
    "c2c3c392a56167672d32cdfeff010090881ecd8c76100afb10523bc985c2ae4c386340d3678b96cee218797dbbcf7a94",
    "4650040e0201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3194a26d310411c40791956e6f74657353dc3ecb93c60bd4a03c7fdf7009c59bc88bd12d05188fce4168a8d6ba"
    "3260b5",
    "4650040f0201010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "31026d3193a26d31041165fc262a9c183f44aa40adb1439c9a275317f90f543930ff54bbc9b63e39e431",
    "465004100101010203040506070800000000000000010a0b0c0d0e0f101111223344556677880000000000000001026d"
    "3105746f722d3191a26d3131ec0cd3d45f28ce4ce0957dd9d2cc8c89c7b6b80bef90b36ba1c53483f49785",
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
    assert WIRE_VERSION == 4
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
