"""controller.peerinput on loopback sockets: each peer on its own queue, strangers within a budget."""

from __future__ import annotations

import socket
import time

import pytest

from controller.peerinput import STRANGER_BATCH, PeerInput


def _sender() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    return s


def test_a_peer_is_read_even_behind_a_flood_of_strangers() -> None:
    peer, stranger = _sender(), _sender()
    pin = PeerInput.open("127.0.0.1", 0, {"m2": peer.getsockname()})
    try:
        port = pin.main.getsockname()[1]
        for _ in range(2000):
            stranger.sendto(b"junk", ("127.0.0.1", port))
        peer.sendto(b"hello", ("127.0.0.1", port))      # sent after the whole flood
        time.sleep(0.05)
        got: list[tuple[bytes, tuple[str, int]]] = []
        n = pin.read(time.monotonic, lambda data, addr, at: got.append((data, addr)))
        assert got[0] == (b"hello", peer.getsockname())     # the peer's queue first
        assert n == len(got) <= 1 + STRANGER_BATCH            # strangers within their budget this turn
        assert pin.stranger_datagrams == n - 1
        turns = 1
        while pin.read(time.monotonic, lambda *a: None) and turns < 1000:
            turns += 1                                          # the rest over the next turns
        assert pin.stranger_datagrams == 2000
    finally:
        pin.close()
        peer.close()
        stranger.close()


def test_arrival_times_never_go_back_and_a_peer_elsewhere_is_a_stranger() -> None:
    peer, moved = _sender(), _sender()
    pin = PeerInput.open("127.0.0.1", 0, {"m2": peer.getsockname()})
    try:
        port = pin.main.getsockname()[1]
        moved.sendto(b"from another port", ("127.0.0.1", port))   # not its configured address: still read
        peer.sendto(b"hello", ("127.0.0.1", port))
        time.sleep(0.05)
        got: list[tuple[bytes, float]] = []
        pin.read(time.monotonic, lambda data, addr, at: got.append((data, at)))
        assert [d for d, _ in got] == [b"hello", b"from another port"]
        assert got[1][1] >= got[0][1]
        assert pin.stranger_datagrams == 1
    finally:
        pin.close()
        peer.close()
        moved.close()


def test_a_port_in_use_is_refused_as_before() -> None:
    holder = _sender()
    try:
        with pytest.raises(OSError):
            PeerInput.open("127.0.0.1", holder.getsockname()[1], {})
    finally:
        holder.close()
    first = PeerInput.open("127.0.0.1", 0, {})
    try:                                # a second replica on the same port: refused despite SO_REUSEPORT
        with pytest.raises(OSError):
            PeerInput.open("127.0.0.1", first.main.getsockname()[1], {})
    finally:
        first.close()
