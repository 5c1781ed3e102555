"""Issue #13, hostile outside input at the wire: a peer that sends a malformed BGP UPDATE to a border's real
ExaBGP (the border client's `BorderSpeaker`, no fabric). The peer is a scripted BGP speaker on 127.0.0.2
(loopback only): it opens a session, announces 0.0.0.0/0, then sends an UPDATE whose attribute list runs
past the end of the message. ExaBGP refuses it (NOTIFICATION, session closed); the border stops providing
the default, keeps running, and takes the route again from a clean session afterwards."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from client.bgpspeaker import BorderSpeaker
from lab.fabric import wait_until

PEER, LOCAL, PORT = "127.0.0.2", "127.0.0.1", 17979
DEFAULT = IPv4Network("0.0.0.0/0")
MARKER = b"\xff" * 16

CONFIG = f"""\
name: garbage
security:
  key_file: "fabric.key"
masters:
  - {{id: m1, address: 127.0.0.1, client_port: 6601, peer_port: 6701, rest_port: 6801}}
switches:
  - name: b1
    id: 1
    role: border
    prefixes: [0.0.0.0/0]
    bgp:
      local_as: 64512
      damping: false
      peers:
        - {{address: {PEER}, peer_as: 65000, port: 7, local_address: {LOCAL}/8, hold_time: 3, keepalive: 1}}
links: []
"""


def message(kind: int, body: bytes) -> bytes:
    return MARKER + struct.pack(">HB", 19 + len(body), kind) + body


def open_msg() -> bytes:
    return message(1, struct.pack(">BHH4sB", 4, 65000, 3, socket.inet_aton(PEER), 0))


def update_default() -> bytes:
    attrs = (bytes([0x40, 1, 1, 0])                                         # ORIGIN IGP
             + bytes([0x40, 2, 4, 2, 1]) + struct.pack(">H", 65000)         # AS_PATH: SEQUENCE [65000]
             + bytes([0x40, 3, 4]) + socket.inet_aton(PEER))                # NEXT_HOP
    return message(2, struct.pack(">H", 0) + struct.pack(">H", len(attrs)) + attrs + b"\x00")   # NLRI 0/0


def update_garbage() -> bytes:
    """Total path attribute length 200 in a message that carries 4 bytes of attributes."""
    return message(2, struct.pack(">H", 0) + struct.pack(">H", 200) + bytes([0x40, 1, 1, 0]))


def read_msg(conn: socket.socket) -> tuple[int, bytes]:
    head = b""
    while len(head) < 19:
        chunk = conn.recv(19 - len(head))
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    length, kind = struct.unpack(">HB", head[16:19])
    body = b""
    while len(body) < length - 19:
        chunk = conn.recv(length - 19 - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return kind, body


class ScriptedPeer:
    """Accepts ExaBGP's connections; per connection: OPEN, KEEPALIVEs, the default (while `announce` is
    set), then once `garbage` is set the malformed UPDATE (and `announce` cleared). Records what ExaBGP sent
    (message types)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((PEER, PORT))
        self.sock.listen(4)
        self.sock.settimeout(0.5)
        self.garbage = threading.Event()
        self.announce = threading.Event()      # announce the default on a new session
        self.announce.set()
        self.stop = threading.Event()
        self.received: list[int] = []
        self.sessions = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn, contextlib.suppress(ConnectionError, OSError):
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        conn.settimeout(0.3)
        conn.sendall(open_msg())
        self.sessions += 1
        sent_default = False
        while not self.stop.is_set():
            try:
                kind, _body = read_msg(conn)
                self.received.append(kind)
                if kind == 3:               # NOTIFICATION: ExaBGP closes the session
                    return
            except TimeoutError:
                pass
            conn.sendall(message(4, b""))
            if not sent_default and self.announce.is_set():
                conn.sendall(update_default())
                sent_default = True
            elif sent_default and self.garbage.is_set():
                self.garbage.clear()
                self.announce.clear()       # ExaBGP reconnects at once: the next session stays quiet
                conn.sendall(update_garbage())

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def speaker(tmp_path: Path) -> Iterator[tuple[BorderSpeaker, ScriptedPeer]]:
    from proto.config import parse_fabric

    fabric = parse_fabric(CONFIG, source="<garbage>")
    try:
        peer = ScriptedPeer()
    except OSError as e:
        pytest.fail(f"cannot listen on {PEER}:{PORT} for the scripted BGP peer: {e}", pytrace=False)
    sp = BorderSpeaker(fabric, "b1", tmp_path / "bgp", report=lambda bits: None, program=lambda routes: None,
                       fabric_prefixes=lambda: [])
    conf = sp.exabgp.conf_path
    conf.write_text(conf.read_text().replace("    hold-time 3;", f"    hold-time 3;\n    connect {PORT};"))
    sp.start()
    try:
        yield sp, peer
    finally:
        sp.stop()
        peer.close()


def test_a_malformed_update_is_refused_and_the_border_recovers(speaker: tuple[BorderSpeaker, ScriptedPeer]) -> None:
    sp, peer = speaker

    def provided() -> bool:
        return DEFAULT in sp.core.provided.routes

    assert wait_until(provided, 20.0), (sp.status(), (sp.exabgp.workdir / "exabgp.log").read_text()[-2000:])
    sessions = peer.sessions
    peer.garbage.set()
    assert wait_until(lambda: not provided(), 10.0), (sp.status(), peer.received,
                                                      (sp.exabgp.workdir / "exabgp.log").read_text()[-3000:])
    assert 3 in peer.received                           # ExaBGP answered with a NOTIFICATION
    status = sp.status()
    # the session was closed (ExaBGP reconnects at once: a new, quiet session may already be up)
    assert status["exabgp_running"] and status["sessions"][0]["prefixes_in"] == 0
    assert status["sessions"][0]["state"] == "idle" or peer.sessions > sessions
    # a clean session afterwards brings the route back: nothing of the garbage stuck
    peer.announce.set()
    assert wait_until(lambda: peer.sessions > sessions and provided(), 30.0), sp.status()
    assert sp.status()["sessions"][0]["prefixes_in"] == 1
    time.sleep(0.1)
