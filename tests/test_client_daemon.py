"""The client daemon's threads around its core, with a fake OpenFlow driver (no os-ken, no switch):
the control loop keeps reading its inbox whatever the order of connections and the first report."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from client.daemon import ClientDaemon
from client.of.events import Connected, Disconnected, DriverEvent, NotConnected
from proto.auth import KeyRing
from proto.clos import clos_fabric

pytestmark = pytest.mark.timeout(60)


class FakeDriver:
    """Records batches; events are pushed by the test through `emit` (as OfDriver's dispatcher would)."""

    def __init__(self, target: str, on_event: Callable[[DriverEvent], None], netns: str | None) -> None:
        self.target = target
        self.emit = on_event
        self.connected = False
        self.batches: list[list] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 5.0) -> None:
        pass

    def send(self, messages: list) -> int:
        if not self.connected:
            raise NotConnected("fake")
        with self.lock:
            self.batches.append(list(messages))
            return len(self.batches)

    def dump_state(self, timeout: float = 5.0):
        return [], []

    def dump_meters(self, timeout: float = 5.0):
        return []

    def sent_since(self, n: int) -> int:
        with self.lock:
            return len(self.batches) - n


def wait_for(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.005)
    raise AssertionError("condition not reached in time")


def leaf_daemon() -> tuple[ClientDaemon, FakeDriver]:
    """leaf-1's daemon on a 2 x 2 fabric (software ND) over a FakeDriver, not started."""
    fabric = clos_fabric(pods=0, leaves=2, spines=2, masters=1, liveness="nd")
    ring = KeyRing.from_secret(bytes(range(32)))
    d = ClientDaemon(fabric, "leaf-1", ring.bundle_for_switch("leaf-1"), ovs_target="tcp:127.0.0.1:9",
                     driver_factory=FakeDriver)
    return d, d.driver  # type: ignore[return-value]


def test_disconnect_before_the_first_report_then_reconnect_is_handled():
    d, drv = leaf_daemon()
    d.start()
    try:
        ports = {1: True, 2: True}
        drv.connected = True
        drv.emit(Connected(dpid=1, ports=ports))
        wait_for(lambda: d.connected)
        drv.connected = False
        drv.emit(Disconnected("test"))
        wait_for(lambda: not d.connected)
        time.sleep(d.core.report_grace * 1.5)   # the hold would have expired while disconnected
        assert not d.core.report_released
        drv.connected = True
        drv.emit(Connected(dpid=1, ports=ports))  # stayed queued forever before the fix
        wait_for(lambda: d.connected)
        n = len(drv.batches)
        wait_for(lambda: drv.sent_since(n) > 0)   # ND runs again
        wait_for(lambda: d.core.report_released, timeout=d.core.report_grace + 5)
        assert d.status()["report_released"]
        # The REST metrics carry the programmer's error counters and meter state.
        from client.rest import ClientCollector

        names = {(m.name, tuple(s.labels.get("event", "") for s in m.samples)) for m in ClientCollector(d.status).collect()}
        events = {e for _, labels in names for e in labels}
        assert {"of_errors", "of_retries"} <= events
        assert any(n == "firepath_client_nd_meters" for n, _ in names)
    finally:
        d.stop()


def test_the_control_thread_reads_the_master_socket_itself():
    """issue #20: no receiver thread hands datagrams over; the control thread waits on the socket and its
    inbox together, so a datagram is decoded by the thread it wakes, and inbox items still wake it."""
    import socket

    fabric = clos_fabric(pods=0, leaves=2, spines=2, masters=1, liveness="nd")
    ring = KeyRing.from_secret(bytes(range(32)))
    d = ClientDaemon(fabric, "leaf-1", ring.bundle_for_switch("leaf-1"), ovs_target="tcp:127.0.0.1:9",
                     driver_factory=FakeDriver)
    d.start()
    try:
        assert not [t for t in threading.enumerate() if t.name.startswith("udp-")]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for _ in range(3):
                sock.sendto(b"not a firepath datagram", d.transport.address)
        finally:
            sock.close()
        wait_for(lambda: sum(v for k, v in d.core.counters.items() if k.startswith("rejected_")) == 3)
        ran = threading.Event()
        names: list[str] = []
        d.call(lambda now: (names.append(threading.current_thread().name), ran.set()))
        assert ran.wait(5.0) and names == ["control"]
    finally:
        d.stop()


def test_a_port_status_is_handled_by_the_thread_that_delivers_it_when_nothing_waits():
    """issue #20: the driver's receive thread runs the port status through the core itself (report and
    local repair leave at once) when the inbox holds nothing before it; otherwise it is queued in order."""
    from client.of.events import PortStatusChanged

    d, drv = leaf_daemon()
    d.start()
    try:
        drv.connected = True
        drv.emit(Connected(dpid=1, ports={1: True, 2: True}))
        wait_for(lambda: d.connected and d._pending == 0)
        drv.emit(PortStatusChanged(1, False, "p1", carrier=False))
        assert not d.core.ports.view(1, d.clock()).phy          # handled before emit() returned
        # Something queued before it (an operator call held behind the lock): the port status waits its turn.
        order: list[str] = []
        with d.lock:
            d.call(lambda now: order.append("call"))
            drv.emit(PortStatusChanged(2, False, "p2", carrier=False))
            assert d.core.ports.view(2, d.clock()).phy          # queued, not handled ahead of the call
        wait_for(lambda: not d.core.ports.view(2, d.clock()).phy)
        assert order == ["call"]
    finally:
        d.stop()
