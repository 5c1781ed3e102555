"""Rejected input is logged, not only counted: one line naming the source and the reason, within a budget
(black-box test, 2026-12-05: 3,000 forged, truncated and badly signed datagrams at a lab master's client
port and 500 at a switch client's socket moved the rejection counters and wrote no line at INFO or above,
so an operator reading the logs could not tell that, or from where, hostile input arrived).

proto.bounded.RejectLog, the switch client's both paths (masters' datagrams, ND frames) and a master's
client and peer ports (real sockets on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from client.core import ClientCore
from controller.server import MasterServer
from proto.auth import KeyRing
from proto.bounded import RejectLog
from proto.clos import clos_fabric
from proto.lsd import LinkStateDB
from proto.messages import (
    MAGIC,
    WIRE_VERSION,
    Codec,
    LsdFull,
    LsdRequest,
    PortReport,
    PortStatus,
    encode_nd_ethernet,
)
from tests.harness.fresh import establish

SECRET = bytes(range(32))


def _lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= level and r.getMessage().startswith("event=datagram_rejected")]


def test_reject_log_budget_levels_and_one_line_per_note(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("firepath.test.rejectlog")
    rl = RejectLog(logger, "m1", "client", rate=1.0, burst=3)
    caplog.set_level(logging.DEBUG, logger=logger.name)
    for i in range(10):
        rl.note(100.0, "bad_hmac", f"127.0.0.{i}:5", 'PortReport from "leaf-1"\n')
    warn = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warn) == 3 and rl.suppressed == 7
    first = warn[0].getMessage()
    assert "local=m1" in first and "path=client" in first and "source=127.0.0.0:5" in first
    assert "reason=bad_hmac" in first and "\n" not in first          # a name with a newline stays one line
    # A routine rejection (a restarted peer's first frame) has a budget of its own, at INFO.
    assert rl.note(100.0, "stale", "127.0.0.9:5")
    assert caplog.records[-1].levelno == logging.INFO
    # The budget refills: the next warning says how many were suppressed before it.
    assert rl.note(102.0, "truncated", "127.0.0.1:5", "3 bytes")
    assert "suppressed=7" in caplog.records[-1].getMessage()
    # Logged by the Codec with the key ids already: not twice.
    assert not rl.note(200.0, "unknown_key_id", "127.0.0.1:5")
    rl.note(200.0, "x" * 10, "s", "d" * 1000)
    assert len(caplog.records[-1].getMessage()) < 400


def test_client_logs_rejected_master_datagrams_and_nd_frames(caplog: pytest.LogCaptureFixture) -> None:
    fabric = clos_fabric(pods=0, leaves=2, spines=2, masters=1, liveness="nd")
    ring = KeyRing.from_secret(SECRET)
    core = ClientCore(fabric, "leaf-1", ring.bundle_for_switch("leaf-1"), now=1000.0)
    names, masters = [s.name for s in fabric.switches], [m.id for m in fabric.masters]
    master = Codec(ring, "m1", names, masters)
    establish(master, core.codec)
    caplog.set_level(logging.INFO)
    db = LinkStateDB(len(fabric.links))
    full = master.encode(LsdFull("m1", 1, db.version, fabric.digest, db.snapshot()), to="leaf-1")
    forged = bytearray(full)
    forged[-1] ^= 1
    assert core.on_datagram(bytes(forged), 1000.0, ("127.0.0.7", 4242)) == []
    assert core.on_datagram(MAGIC + bytes((WIRE_VERSION,)) + b"\x00" * 10, 1000.0, ("127.0.0.8", 1)) == []
    assert core.replica.version == -1 or not core.replica.has_data        # no state change
    lines = _lines(caplog, logging.WARNING)
    assert len(lines) == 2, lines
    assert "path=master" in lines[0] and "source=127.0.0.7:4242" in lines[0] and "reason=bad_hmac" in lines[0]
    assert "'m1'" in lines[0] and "reason=truncated" in lines[1]
    assert core.counters["rejected_bad_hmac"] == 1 and core.counters["rejected_truncated"] == 1
    # ND: garbage under the ND ethertype on fabric port 1.
    frame = encode_nd_ethernet("02:00:00:00:00:99", MAGIC + bytes((WIRE_VERSION,)) + b"garbage")
    assert core.on_packet_in(1, frame, 1000.0) == []
    lines = _lines(caplog, logging.WARNING)
    assert len(lines) == 3 and "path=nd" in lines[2] and "port 1" in lines[2] and "02:00:00:00:00:99" in lines[2]
    # A burst: counted in full, logged within the budget.
    for _ in range(500):
        core.on_datagram(b"\x00" * 60, 1000.0, ("127.0.0.9", 9))
    assert core.counters["rejected_bad_magic"] == 500
    assert len(_lines(caplog, logging.WARNING)) <= 20 + 1


def test_master_logs_rejected_datagrams_with_source_and_reason(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    fabric = clos_fabric(pods=0, leaves=2, spines=2, masters=1)
    ring = KeyRing.from_secret(SECRET)
    caplog.set_level(logging.INFO)

    async def main() -> tuple[list[str], dict[str, float], int]:
        server = MasterServer(fabric, "m1", ring, tmp_path, bind="127.0.0.1", client_port=0, peer_port=0,
                              rest_port=0)
        await server.start(rest=False)
        try:
            names, masters = [s.name for s in fabric.switches], [m.id for m in fabric.masters]
            leaf = Codec(ring.bundle_for_switch("leaf-1"), "leaf-1", names, masters)
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx.bind(("127.0.0.1", 0))
            src = tx.getsockname()
            client_addr = ("127.0.0.1", server._client_sock.getsockname()[1])
            peer_addr = ("127.0.0.1", server._peer_in.main.getsockname()[1])
            good = leaf.encode(LsdRequest("leaf-1", 0, -1), to="m1")
            bad = bytearray(good)
            bad[-1] ^= 1
            tx.sendto(bytes(bad), client_addr)                       # badly signed
            tx.sendto(good[:30], client_addr)                        # truncated
            tx.sendto(b"XX" + good[2:], peer_addr)                   # not ours at all, at the peer port
            # A correctly signed report naming a port leaf-1 does not have: authenticated, still refused.
            other = Codec(ring.bundle_for_switch("leaf-2"), "leaf-2", names, masters)
            establish(other, server.codec)
            report = PortReport("leaf-2", fabric.digest, 1, 0, (PortStatus(999, True, True, True, True, False),))
            tx.sendto(other.encode(report, to="m1"), client_addr)
            version = server.core.version
            for _ in range(100):
                await asyncio.sleep(0.02)
                if len(_lines(caplog, logging.WARNING)) >= 4:
                    break
            tx.close()
            server._flush_counts()
            counts = {r: server.metrics.rejected.labels(r)._value.get()
                      for r in ("bad_hmac", "truncated", "bad_magic", "unknown_port")}
            assert server.core.version == version
            return _lines(caplog, logging.WARNING), counts, src[1]
        finally:
            await server.stop()

    lines, counts, port = asyncio.run(main())
    assert counts == {"bad_hmac": 1, "truncated": 1, "bad_magic": 1, "unknown_port": 1}, counts
    by_reason = {r: next((ln for ln in lines if f"reason={r}" in ln), "") for r in counts}
    for reason, line in by_reason.items():
        assert line and "local=m1" in line and f"source=127.0.0.1:{port}" in line, (reason, lines)
    assert "path=client" in by_reason["bad_hmac"] and "path=peer" in by_reason["bad_magic"]
    assert "'leaf-2'" in by_reason["unknown_port"] and "PortReport" in by_reason["unknown_port"]


def test_a_flood_of_rejected_nd_frames_renders_no_source_or_detail_past_the_budget(
        caplog: pytest.LogCaptureFixture) -> None:
    """Review 39: the master renders a rejected datagram's (ip, port) only when a line is written, but the
    switch client formatted "port N src_mac aa:bb:..." (and the not-ND detail) for every rejected ND frame,
    written or not: a keyless sender on a fabric port paid that per frame. RejectLog.note takes the source
    and the detail as callables too, called only for a line written; the ND paths pass them so."""
    logger = logging.getLogger("firepath.test.rejectlog.lazy")
    rl = RejectLog(logger, "leaf-1", "nd", rate=1.0, burst=2)
    caplog.set_level(logging.INFO, logger=logger.name)
    calls: list[str] = []

    def source() -> str:
        calls.append("source")
        return "port 1"

    def detail() -> str:
        calls.append("detail")
        return "why"

    assert [rl.note(10.0, "bad_hmac", source, detail) for _ in range(50)] == [True, True] + [False] * 48
    line = caplog.records[-1].getMessage()
    assert calls == ["source", "detail"] * 2 and 'source="port 1"' in line and "detail=why" in line
    caplog.set_level(logging.ERROR, logger=logger.name)     # WARNING off: nothing rendered at all
    calls.clear()
    assert not rl.note(100.0, "bad_hmac", source, detail) and calls == []

    # the client's ND path hands it nothing rendered
    fabric = clos_fabric(pods=0, leaves=2, spines=2, masters=1, liveness="nd")
    ring = KeyRing.from_secret(SECRET)
    core = ClientCore(fabric, "leaf-1", ring.bundle_for_switch("leaf-1"), now=1000.0)
    seen: list[tuple] = []

    class Spy:
        def note(self, now: float, reason: str, source: object, detail: object = "") -> bool:
            seen.append((reason, source, detail))
            return False

    core._nd_reject_log = Spy()     # type: ignore[assignment]
    frame = encode_nd_ethernet("02:00:00:00:00:99", MAGIC + bytes((WIRE_VERSION,)) + b"garbage")
    assert core.on_packet_in(1, frame, 1000.0) == []
    assert seen and all(not isinstance(s, str) for _r, s, _d in seen), seen
    assert callable(seen[0][1]) and seen[0][1]() == "port 1 src_mac 02:00:00:00:00:99"
