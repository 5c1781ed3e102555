"""The master sends bad news in the turn that read the report causing it (issue #20, "link down, remote
switches"): a real `MasterServer` on loopback, scripted switches over real UDP, the event loop stepped by
hand so that "the same turn" is observable without timing."""

from __future__ import annotations

import asyncio
import contextlib
import select
import time
from collections.abc import Iterator
from pathlib import Path

from controller.server import MasterServer
from proto.auth import KeyRing, write_secret_file
from proto.clos import ClosParams, generate_clos_yaml
from proto.config import Fabric, load_fabric
from proto.lsd import LinkState
from tests.harness.simclient import SimFleet


@contextlib.contextmanager
def _master(tmp_path: Path) -> Iterator[tuple[Fabric, asyncio.AbstractEventLoop, MasterServer, SimFleet]]:
    """A master of the 2 x 4 fabric on loopback, master of term 1 with no hold, and every switch reported."""
    write_secret_file(tmp_path / "fabric.key")
    (tmp_path / "f.yaml").write_text(generate_clos_yaml(ClosParams(pods=0, spines=2, leaves=4, masters=1)))
    f = load_fabric(tmp_path / "f.yaml")
    ring = KeyRing.load(tmp_path / "fabric.key")
    loop = asyncio.new_event_loop()
    server = MasterServer(f, "m1", ring, tmp_path / "state", bind="127.0.0.1", client_port=0, peer_port=0,
                          rest_port=0)
    loop.run_until_complete(server.start(rest=False))
    fleet = SimFleet(f, ring, {"m1": ("127.0.0.1", server._client_sock.getsockname()[1])})
    try:
        server._run(server.core.become_master(1, server.now()) + server.core.end_hold(server.now()))
        fleet.report()
        yield f, loop, server, fleet
    finally:
        loop.run_until_complete(server.stop())
        loop.close()
        for sock in fleet.socks:
            sock.close()


def _serve(loop: asyncio.AbstractEventLoop, fleet: SimFleet, until, rounds: int = 300) -> None:
    """Alternate the master's event loop and the scripted switches until `until()`."""
    for _ in range(rounds):
        loop.run_until_complete(asyncio.sleep(0.005))
        fleet.pump(0.005)
        if until():
            return
    raise AssertionError("condition not reached")


def test_a_link_down_reaches_every_switch_in_the_turn_that_read_its_report(tmp_path: Path) -> None:
    with _master(tmp_path) as (f, loop, server, fleet):
        link = f.link_at("leaf-1", 1).index

        def in_sync() -> bool:
            return (server.core.lsd.state(link) == LinkState.UP
                    and all(sw.version == server.core.version for sw in fleet.switches.values()))

        _serve(loop, fleet, in_sync)
        loop.run_until_complete(asyncio.sleep(0.1))      # past the distribution's rate limit
        fleet.pump(0.01)
        assert in_sync()
        version = server.core.version
        fleet.set_usable("leaf-1", {2})
        fleet.report(["leaf-1"])
        assert select.select([server._client_sock], [], [], 2.0)[0]
        server._pump()                                   # one turn: the report, and nothing of the loop after it
        assert server.core.version == version + 1 and server.core.lsd.state(link) == LinkState.DOWN
        # The event loop does not run meanwhile: whatever the switches get was sent in that turn.
        fleet.pump(5.0, until=lambda: all(sw.version == version + 1 for sw in fleet.switches.values()))
        behind = [sw.name for sw in fleet.switches.values() if sw.version != version + 1]
        assert behind == []


def test_bad_news_leaves_before_the_rest_of_the_batch_is_read(tmp_path: Path) -> None:
    """Both ends report the link down; the first report's version is sent before the master reads the second
    (which changes no link state): one turn per urgent version, the rest in the next turn."""
    with _master(tmp_path) as (f, loop, server, fleet):
        link = f.links[f.link_at("leaf-1", 1).index]
        (a, pa), (b, pb) = (link.a.switch, link.a.port), (link.b.switch, link.b.port)
        _serve(loop, fleet, lambda: all(sw.version == server.core.version for sw in fleet.switches.values())
               and server.core.lsd.state(link.index) == LinkState.UP)
        loop.run_until_complete(asyncio.sleep(0.1))
        fleet.pump(0.01)
        version = server.core.version
        for sw, port in ((a, pa), (b, pb)):
            fleet.set_usable(sw, set(f.fabric_ports(sw)) - {port})
            fleet.report([sw])
        time.sleep(0.05)                                 # both reports wait in the master's socket
        server._pump()
        assert server.core.version == version + 1
        assert select.select([server._client_sock], [], [], 0)[0]      # the second end's report: not read yet
        fleet.pump(5.0, until=lambda: all(sw.version == version + 1 for sw in fleet.switches.values()))
        assert [sw.name for sw in fleet.switches.values() if sw.version != version + 1] == []
        server._pump()
        assert server.core.version == version + 1 and not select.select([server._client_sock], [], [], 0)[0]
