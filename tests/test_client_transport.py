"""client.transport on loopback: each master's datagrams on a queue of its own, ahead of a junk flood."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from client.transport import STRANGER_BATCH, UdpTransport
from proto.config import load_fabric
from tests.harness.loopcluster import write_cluster_config


def test_a_masters_datagrams_are_read_ahead_of_a_junk_flood(tmp_path: Path) -> None:
    fabric = load_fabric(write_cluster_config(tmp_path, masters=2))
    m1 = fabric.masters[0]
    master = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)       # plays m1: sends from its client port
    master.bind((str(m1.address), m1.client_port))
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    t = UdpTransport(fabric, None, bind="127.0.0.1")
    t.start()
    try:
        for _ in range(3000):
            junk.sendto(b"junk", t.address)
        master.sendto(b"keepalive", t.address)                     # after the whole flood
        time.sleep(0.05)
        got = t.read(512)
        assert got[0] == b"keepalive"
        assert len(got) == 1 + STRANGER_BATCH                        # strangers within their share
        t.send(m1.id, b"report")                                     # sends still leave from its one port
        data, src = master.recvfrom(100)
        assert data == b"report" and src == t.address
        rest, calls = 0, 0
        while calls < 1000 and (batch := t.read(512)):
            rest, calls = rest + len(batch), calls + 1
        assert rest == 3000 - STRANGER_BATCH                         # nothing lost, read over later calls
    finally:
        t.stop()
        master.close()
        junk.close()


def test_the_clients_port_is_its_own(tmp_path: Path) -> None:
    fabric = load_fabric(write_cluster_config(tmp_path, masters=1))
    t = UdpTransport(fabric, None, bind="127.0.0.1")
    try:                    # SO_REUSEPORT on its sockets, yet another process cannot take the port
        with pytest.raises(OSError):
            UdpTransport(fabric, None, bind="127.0.0.1", port=t.address[1])
    finally:
        t.stop()
