"""lab.probe: gap/loss/reorder accounting (pure) and a real sender/receiver pair on loopback."""

from __future__ import annotations

import socket
import time

import pytest

from lab.probe import HEADER, MAGIC, FlowStats, Probe, Receiver, merge_results


def test_in_order_stream_has_no_loss_and_gap_is_the_interval() -> None:
    stats = FlowStats("f")
    for seq in range(100):
        stats.on_packet(seq, 10.0 + seq * 0.001)
    assert stats.unique == 100
    assert stats.lost == 0
    assert stats.reordered == 0
    assert stats.max_gap == pytest.approx(0.001)


def test_hole_counts_as_loss_and_gap_measured_on_receiver_clock() -> None:
    stats = FlowStats("f")
    times = {}
    t = 0.0
    for seq in [*range(0, 10), *range(40, 50)]:      # 30 packets missing, 31 ms silence
        t = seq * 0.001
        times[seq] = t
        stats.on_packet(seq, t)
    assert stats.lost == 30
    assert stats.max_gap == pytest.approx(0.031)
    assert stats.max_gap_end == pytest.approx(times[40])
    doc = stats.to_json(start=0.0)
    assert doc["lost"] == 30 and doc["max_gap_ms"] == pytest.approx(31.0)


def test_holes_are_a_loss_timeline_longest_kept_in_order() -> None:
    stats = FlowStats("f")
    missing = {5, 6, 7, 20, 50, 51}
    for seq in range(60):
        if seq not in missing:
            stats.on_packet(seq, seq * 0.001)
    assert stats.holes() == [[5, 3], [20, 1], [50, 2]]
    assert stats.holes(limit=2) == [[5, 3], [50, 2]]
    doc = stats.to_json(start=0.0)
    assert doc["holes"] == [[5, 3], [20, 1], [50, 2]] and doc["hole_runs"] == 3
    assert FlowStats("empty").holes() == []


def test_net_gap_discounts_a_late_sender_but_not_a_lost_burst() -> None:
    interval = 0.001
    stalled = FlowStats("stall")      # sender descheduled 20 ms, nothing lost
    for seq in range(10):
        sent = seq * interval + (0.020 if seq >= 5 else 0.0)
        stalled.on_packet(seq, 100.0 + sent, sent, interval)    # receiver clock: another origin
    assert stalled.max_gap == pytest.approx(0.021)
    assert stalled.max_net_gap == pytest.approx(0.001)
    lossy = FlowStats("loss")         # network drops 20 packets, sender on time
    for seq in [*range(5), *range(25, 30)]:
        sent = seq * interval
        lossy.on_packet(seq, 100.0 + sent, sent, interval)
    assert lossy.max_net_gap == pytest.approx(0.021)
    assert lossy.lost == 20


def test_reordering_and_duplicates_are_not_loss() -> None:
    stats = FlowStats("f")
    for i, seq in enumerate([0, 1, 3, 2, 4, 4, 5]):
        stats.on_packet(seq, i * 0.001)
    assert stats.reordered == 1
    assert stats.duplicates == 1
    assert stats.unique == 6
    assert stats.lost == 0


def test_receiver_keys_flows_by_source_and_id_and_counts_junk() -> None:
    rx = Receiver(start=0.0)
    rx.on_datagram(HEADER.pack(MAGIC, 1, 0, 0, 1000), "10.0.0.1", 0.1)
    rx.on_datagram(HEADER.pack(MAGIC, 1, 0, 0, 1000), "10.0.0.2", 0.1)
    rx.on_datagram(HEADER.pack(MAGIC, 2, 5, 0, 1000), "10.0.0.1", 0.2)
    rx.on_datagram(b"nope", "10.0.0.1", 0.3)
    rx.on_datagram(HEADER.pack(b"XXXX", 1, 1, 0, 1000), "10.0.0.1", 0.3)
    doc = rx.to_json()
    assert sorted(doc["flows"]) == ["10.0.0.1/1", "10.0.0.1/2", "10.0.0.2/1"]
    assert doc["malformed"] == 2


def test_merge_counts_tail_loss_from_sender_counts() -> None:
    rx = Receiver(start=0.0)
    for seq in range(90):                            # last 10 of 100 never arrive: no hole to see
        rx.on_datagram(HEADER.pack(MAGIC, 0, seq, 0, 1000), "10.0.0.1", seq * 0.001)
    merged = merge_results(rx.to_json(), {"rate": 1000.0, "sent": {"0": 100, "1": 5}}, "10.0.0.1")
    assert merged["flows"][0]["lost"] == 10
    assert merged["flows"][0]["loss_ms"] == pytest.approx(10.0)
    assert merged["flows"][1]["received"] == 0 and merged["flows"][1]["lost"] == 5
    assert merged["lost"] == 15


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_loopback_probe_subprocesses_see_every_packet() -> None:
    probe = Probe(dst_ip="127.0.0.1", src_ip="127.0.0.1", port=_free_udp_port(), flows=4, rate=1000.0)
    probe.start()
    try:
        time.sleep(0.4)          # the length of the run being measured, not a wait for a condition
        result = probe.stop()
    finally:
        probe.close()
    assert len(result["flows"]) == 4
    assert result["sent"] >= 4 * 100
    assert result["lost"] == 0
    assert result["received"] == result["sent"]
    assert all(f["max_gap_ms"] is not None and f["max_gap_ms"] < 1000 for f in result["flows"])
