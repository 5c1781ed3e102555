"""Tester bb40 F17 on loopback: a real `firepath master` process and two real client daemons for leaf-1
(ClientDaemon over a fake OpenFlow driver, on 127.0.0.2 and 127.0.0.3). The master says so once, naming
both sources, counts it and shows it in /v1/clients; the newer client is served (not fail-static) while
the older is refused; once the newer stops, the older is served again."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from client.daemon import ClientDaemon
from client.of.events import Connected
from proto.auth import KeyRing
from tests.harness.loopcluster import LoopCluster
from tests.test_client_daemon import FakeDriver

pytestmark = pytest.mark.timeout(90)


def _client(cluster: LoopCluster, host: str) -> tuple[ClientDaemon, FakeDriver]:
    ring = KeyRing.load(cluster.dir / "fabric.key")
    d = ClientDaemon(cluster.fabric, "leaf-1", ring.bundle_for_switch("leaf-1"), ovs_target="tcp:127.0.0.1:9",
                     bind=host, driver_factory=FakeDriver)
    d.start()
    drv: FakeDriver = d.driver     # type: ignore[assignment]
    drv.connected = True
    drv.emit(Connected(dpid=1, ports=dict.fromkeys(cluster.fabric.fabric_ports("leaf-1"), True)))
    return d, drv


def _leaf1(cluster: LoopCluster) -> dict[str, Any] | None:
    doc = cluster.get("m1", "/v1/clients")
    if not isinstance(doc, dict):
        return None
    return next((r for r in doc["clients"] if r["switch"] == "leaf-1"), None)


def _served(d: ClientDaemon) -> bool:
    with d.lock:
        st = d.core.status(d.clock())
    return st["report_acked"] and not st["fail_static"] and st["master"] == "m1"


def test_two_client_daemons_for_one_switch(tmp_path: Path) -> None:
    cluster = LoopCluster(tmp_path, masters=1, liveness="nd")
    daemons: list[ClientDaemon] = []
    try:
        cluster.start_all()
        # master (its first LSD held for switch_dead: no replica had one; acks and keepalives go out at once)
        assert cluster.wait(lambda: cluster.masters_now(), timeout=20), cluster.log_path("m1").read_text()[-2000:]
        old, _ = _client(cluster, "127.0.0.2")
        daemons.append(old)
        assert cluster.wait(lambda: (r := _leaf1(cluster)) and (r["address"] or "").startswith("127.0.0.2:")
                            and _served(old), timeout=15)
        new, _ = _client(cluster, "127.0.0.3")
        daemons.append(new)
        row = cluster.wait(lambda: (r := _leaf1(cluster)) and r["duplicate"] and r, timeout=15)
        assert row, _leaf1(cluster)
        # the newer client keeps the switch: served, its address the switch's; the older refused
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.0:
            row = _leaf1(cluster)
            assert row and row["address"].startswith("127.0.0.3:") and row["duplicate"]["active"], row
            time.sleep(0.1)
        assert _served(new) and not _served(old)
        assert row["duplicate"]["serving"]["address"].startswith("127.0.0.3:")
        assert [o["address"].split(":")[0] for o in row["duplicate"]["others"]] == ["127.0.0.2"]
        assert row["duplicate"]["episodes"] == 1 and row["duplicate"]["refused"] >= 1
        log = cluster.log_path("m1").read_text()
        lines = [ln for ln in log.splitlines() if "event=duplicate_client" in ln]
        assert len(lines) == 1 and "level=warning" in lines[0], lines
        assert "switch=leaf-1 sources=127.0.0.2:" in lines[0] and ",127.0.0.3:" in lines[0]
        assert "kept=127.0.0.3:" in lines[0] and "refused=127.0.0.2:" in lines[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{cluster.rest_port['m1']}/metrics", timeout=2) as r:
            text = r.read().decode()
        assert 'firepath_master_duplicate_clients_total{switch="leaf-1"} 1.0' in text
        # the operator stops the newer one: the older is served again once the newer is silent
        new.stop()
        daemons.remove(new)
        assert cluster.wait(lambda: _served(old) and (r := _leaf1(cluster)) and r["address"].startswith("127.0.0.2:"),
                            timeout=15), _leaf1(cluster)
        assert sum("event=duplicate_client" in ln for ln in cluster.log_path("m1").read_text().splitlines()) == 1
    finally:
        for d in daemons:
            d.stop()
        cluster.stop_all()
