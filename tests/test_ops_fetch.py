"""Operator commands against a REST port that answers garbage (controller.ops.fetch): every command ends in
one line and an exit code (3: no usable answer), never a traceback, never a hang, never a huge allocation;
the admin token goes to no proxy and follows no redirect. Fake servers on 127.0.0.x (real sockets)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.ops import fetch as fetchmod
from controller.ops.api import request
from controller.ops.clientrest import get_json
from tests.harness.loopcluster import free_ports

ROOT = Path(__file__).resolve().parent.parent


def _http(status: int, body: bytes, extra: bytes = b"") -> bytes:
    return (f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n").encode() + extra + b"\r\n" + body


ANSWERS: dict[str, bytes] = {
    "garbage": b"\x00\x01garbage\r\n\r\n",
    "badline": b"HTTP/1.1 2000000 OK\r\n\r\n",
    "longheader": b"HTTP/1.1 200 OK\r\nX: " + b"a" * 100_000 + b"\r\n\r\n",
    "manyheaders": b"HTTP/1.1 200 OK\r\n" + b"X: a\r\n" * 200 + b"\r\n{}",
    "hugecl": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n{",
    "deep": _http(200, b"[" * 100_000 + b"]" * 100_000),
    "list": _http(200, b"[1, 2]"),
    "bigdoc": _http(200, json.dumps({"role": "master", "term": 1, "version": 7, "leader": "m1",
                                     "pad": "x" * (2 << 20)}).encode()),
    "redirect": b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%d/v1/lsd/version\r\nContent-Length: 0\r\n\r\n",
}


class FakeRest:
    """Answers every connection on `addresses`:`port` with `mode` (see ANSWERS; `trickle`: a valid answer one
    byte every 0.2 s; `endless`: a body that never ends), recording each request it read."""

    def __init__(self, mode: str, port: int, addresses: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.mode, self.port = mode, port
        self.requests: list[bytes] = []
        self.socks = []
        for a in addresses:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((a, port))
            s.listen(16)
            s.settimeout(0.2)
            self.socks.append(s)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._serve, args=(s,), daemon=True) for s in self.socks]
        for t in self.threads:
            t.start()

    def _serve(self, ls: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                c, _ = ls.accept()
            except OSError:
                continue
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c: socket.socket) -> None:
        with c:
            try:
                c.settimeout(2)
                self.requests.append(c.recv(65536))
                if self.mode == "trickle":
                    data = _http(200, json.dumps({"role": "master", "term": 1, "pad": "x" * 100}).encode())
                    for i in range(len(data)):
                        if self.stop.is_set():
                            return
                        c.sendall(data[i:i + 1])
                        time.sleep(0.2)
                elif self.mode == "endless":
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n[")
                    while not self.stop.is_set():
                        c.sendall(b"1," * 65536)
                else:
                    c.sendall(ANSWERS[self.mode].replace(b"%d", str(self.port).encode()))
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        for s in self.socks:
            s.close()
        for t in self.threads:
            t.join(2)


@contextlib.contextmanager
def fake(mode: str, addresses: tuple[str, ...] = ("127.0.0.1",)) -> Iterator[FakeRest]:
    (port,) = free_ports(1)
    server = FakeRest(mode, port, addresses)
    try:
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("mode", ["garbage", "badline", "longheader", "manyheaders"])
def test_an_answer_that_is_not_http_is_an_oserror_naming_it(mode: str) -> None:
    with fake(mode) as f, pytest.raises(OSError, match="not an HTTP answer"):
        request(f"http://127.0.0.1:{f.port}/v1/lsd/version", timeout=2)


def test_a_huge_content_length_or_an_endless_body_is_refused_past_the_limit() -> None:
    # read() allocated the announced 100 GB: MemoryError
    with fake("hugecl") as f, pytest.raises(OSError, match="answer cut short: 1 bytes of the 99999999999 announced"):
        request(f"http://127.0.0.1:{f.port}/v1/lsd/version", timeout=2)
    with fake("endless") as f, pytest.raises(OSError, match="answer of more than 1000 bytes"):
        fetchmod.fetch(f"http://127.0.0.1:{f.port}/", limit=1000, timeout=2)
    with fake("endless") as f:
        assert get_json(f"http://127.0.0.1:{f.port}/v1/state", 2, limit=1 << 16).endswith(
            f"answer of more than {1 << 16} bytes (refused)")


def test_a_trickle_is_cut_at_the_deadline() -> None:
    with fake("trickle") as f:
        t0 = time.monotonic()
        with pytest.raises(OSError, match="no complete answer within 1.5 s"):
            request(f"http://127.0.0.1:{f.port}/v1/lsd/version", timeout=0.5)
        assert time.monotonic() - t0 < 3.0


def test_json_nested_too_deep_is_a_value_error() -> None:
    with fake("deep") as f, pytest.raises(ValueError, match="nested too deep"):
        request(f"http://127.0.0.1:{f.port}/v1/drains", timeout=2)


def test_the_token_follows_no_redirect_and_goes_to_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    with fake("list") as proxy:
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("no_proxy", "")
        with fake("redirect") as f:
            status, body = request(f"http://127.0.0.1:{f.port}/v1/drain", "POST", {"switch": "s"}, "secret", 2)
            time.sleep(0.2)
        assert status == 302 and len(f.requests) == 1, (status, body, f.requests)   # not followed
        assert b"Authorization: Bearer secret" in f.requests[0]
        assert proxy.requests == []                                                # nothing via the proxy


def _config(tmp: Path, port: int) -> Path:
    from proto.clos import ClosParams, generate_clos_yaml

    text = generate_clos_yaml(ClosParams(pods=0, spines=2, leaves=2, masters=3))
    lines = []
    for line in text.splitlines():
        if line.startswith("  - {id: m"):
            k = int(line.split("id: m")[1].split(",")[0])
            line = f"  - {{id: m{k}, address: 127.0.0.{k}, client_port: 1, peer_port: 2, rest_port: {port}}}"
        lines.append(line)
    (tmp / "fabric.key").write_bytes(b"k" * 32)
    (tmp / "fabric.key").chmod(0o600)
    (tmp / "admin.token").write_text("tok\n")
    (tmp / "admin.token").chmod(0o600)
    (tmp / "f.yaml").write_text("\n".join(lines) + "\n")
    return tmp / "f.yaml"


@pytest.mark.parametrize("mode", ["garbage", "hugecl", "deep", "list", "trickle"])
def test_operator_commands_against_garbage_masters_exit_3_in_one_line(tmp_path: Path, mode: str) -> None:
    with fake(mode, ("127.0.0.1", "127.0.0.2", "127.0.0.3")) as f:
        cfg = _config(tmp_path, f.port)
        for argv in (("drains",), ("lsd",), ("masters",), ("drain", "--switch", "spine-1", "--token-file",
                                                           str(tmp_path / "admin.token"))):
            t0 = time.monotonic()
            p = subprocess.run([sys.executable, "-m", "proto.cli", *argv, "--config", str(cfg), "--timeout", "0.5"],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
            took = time.monotonic() - t0
            assert "Traceback" not in p.stderr + p.stdout, (argv, p.stderr[-2000:])
            assert p.returncode == 3, (argv, p.returncode, p.stdout[-500:], p.stderr[-500:])
            assert took < 20, (argv, took)


@pytest.mark.parametrize("mode", ["garbage", "hugecl", "deep", "trickle", "redirect"])
def test_the_lab_reads_masters_and_clients_the_same_bounded_way(mode: str) -> None:
    """`firepath lab` reads the masters' REST (lab.external, also external masters) and the clients' (lab.fabric)
    with the same fetch: a traceback (BadStatusLine, MemoryError, RecursionError) or a wait without end
    before; now an OSError or ValueError, which its callers report as that endpoint's failure."""
    from types import SimpleNamespace

    from lab import external, fabric

    with fake(mode) as f:
        for read in (lambda: external.get_json(SimpleNamespace(address="127.0.0.1", rest_port=f.port), "/v1/lsd", 0.5),
                     lambda: fabric._get_json(f.port, "/v1/state", 0.5)):
            t0 = time.monotonic()
            with pytest.raises((OSError, ValueError)):
                read()
            assert time.monotonic() - t0 < 3.0


def test_status_reads_a_big_master_answer(tmp_path: Path) -> None:
    """`firepath status` read the masters with the 1 MiB bound of a client's state: a fabric of ~3,000
    switches (its /v1/clients) was 'answer of more than 1048576 bytes (refused)'."""
    from controller.status_cli import gather
    from proto.config import load_fabric

    with fake("bigdoc", ("127.0.0.1", "127.0.0.2", "127.0.0.3")) as f:
        got = gather(load_fabric(_config(tmp_path, f.port)), timeout=2.0)
    assert all("error" not in row for row in got["masters"].values()), got["masters"]["m1"].get("error")
    assert got["masters"]["m1"]["version"]["term"] == 1
