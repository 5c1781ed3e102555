"""Counts the master runtime keeps per datagram (controller.server: plain ints handed to Prometheus per turn
and before every exposition) against an in-process MasterServer on loopback."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient

from controller.server import MasterServer
from tests.test_page import _ps, _report, _run, _until


def test_per_datagram_counts_reach_metrics_without_a_turn(tmp_path: Path) -> None:
    """The runtime counts datagrams received, rejected, challenged and reports accepted as plain ints (issue
    #18: a locked Prometheus increment per datagram) and hands them over per turn and before every
    exposition: /metrics shows each datagram read, even one that ended no turn yet."""

    async def body(server: MasterServer, c: TestClient) -> None:
        def value(text: str, name: str) -> float:
            line = next((ln for ln in text.splitlines() if ln.startswith(name + " ")), None)
            return 0.0 if line is None else float(line.split()[-1])

        text = await (await c.get("/metrics")).text()
        got, bad = value(text, "firepath_master_datagrams_received_total"), value(
            text, 'firepath_master_datagrams_rejected_total{reason="bad_magic"}')
        server._batching = True                     # inside a batch: no turn ends after the datagram
        server._on_datagram(b"XX" + bytes(80), ("127.0.0.1", 9))
        server._batching = False
        text = await (await c.get("/metrics")).text()
        assert value(text, "firepath_master_datagrams_received_total") == got + 1
        assert value(text, 'firepath_master_datagrams_rejected_total{reason="bad_magic"}') == bad + 1
        _report(server, "leaf-1", [_ps(p) for p in server.fabric.fabric_ports("leaf-1")], 1)
        await _until(lambda: "leaf-1" in server.core.deriver.views)
        text = await (await c.get("/metrics")).text()
        assert value(text, "firepath_master_reports_accepted_total") >= 1
        assert value(text, "firepath_master_datagrams_received_total") >= got + 2

    _run(tmp_path, body)
