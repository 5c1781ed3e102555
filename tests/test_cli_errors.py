"""User-facing errors (fresh-user findings): each bad input ends in one clear line naming the problem and a
non-zero exit, never a traceback; daemons that retry say so, with the target, at a bounded rate."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.harness.loopcluster import free_ports
from tests.test_master_integration import write_config

ROOT = Path(__file__).resolve().parent.parent


def firepath(*argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proto.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def one_clear_line(p: subprocess.CompletedProcess[str], *words: str) -> None:
    assert p.returncode != 0, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if all(w in ln for w in words)]
    assert lines, f"no line with {words}: {p.stderr}"


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("cfg"))


# ------------------------------------------------------------------------------------------ argument values
@pytest.mark.parametrize(("argv", "words"), [
    (("master", "--config", "x.yaml", "--id", "m1", "--rest-port", "99999"), ("--rest-port", "99999 is not a port")),
    (("master", "--config", "x.yaml", "--id", "m1", "--client-port", "0"), ("--client-port", "0 is not a port")),
    (("client", "--config", "x.yaml", "--switch", "s", "--rest-port", "99999"), ("--rest-port", "99999")),
    (("client", "--config", "x.yaml", "--switch", "s", "--rest-port", "http"), ("--rest-port", "not an integer")),
    # a bad --bind used to start and die with "Name or service not known", exit 1, the option unnamed
    (("master", "--config", "x.yaml", "--id", "m1", "--bind", "300.1.1.1"), ("--bind", "not an IPv4 address")),
    (("client", "--config", "x.yaml", "--switch", "s", "--bind", "nohost"), ("--bind", "not an IPv4 address")),
    (("lab", "probe", "h1", "h2", "--rate", "-5"), ("--rate", "positive")),
    (("lab", "probe", "h1", "h2", "--rate", "nan"), ("--rate", "positive")),
    # one UDP socket per flow: 100,000 ended in a ProbeError traceback
    (("lab", "probe", "h1", "h2", "--flows", "100000"), ("--flows", "at most 256")),
    (("lab", "ping", "--count", "0"), ("--count", "at least 1")),
    # a finite but huge timeout passed, then failed in socket.settimeout: OverflowError traceback
    (("lsd", "--config", "x.yaml", "--timeout", "1e300"), ("--timeout", "at most 1e+06 seconds")),
    (("master", "--config", "x.yaml", "--id", "m1", "--health", "--timeout", "1e300"), ("--timeout", "at most")),
    (("lab", "up", "--timeout", "1e20"), ("--timeout", "at most")),
    # --ovsdb garbage used to start and fall back to software ND on every port, logged as "OAM unavailable"
    (("client", "--config", "x.yaml", "--switch", "s", "--ovsdb", "garbage"), ("--ovsdb", "unix:PATH or tcp:IP:PORT")),
    (("client", "--config", "x.yaml", "--switch", "s", "--ovsdb", "tcp:1.2.3:6640"), ("--ovsdb", "unix:PATH or tcp:IP:PORT")),
    (("client", "--config", "x.yaml", "--switch", "s", "--ovsdb", "tcp:127.0.0.1:0"), ("--ovsdb", "not a port")),
    (("client", "--config", "x.yaml", "--switch", "s", "--ovsdb", "unix:"), ("--ovsdb", "unix:PATH or tcp:IP:PORT")),
    (("lab", "config", "-o", "/nonexistent-dir", "--master-address", "127.0.0.11}, {evil: 1"),
     ("--master-address", "not an IPv4 address")),
])
def test_bad_argument_values_are_refused_with_one_line(argv: tuple[str, ...], words: tuple[str, ...]) -> None:
    p = firepath(*argv)
    assert p.returncode == 2
    one_clear_line(p, *words)


def test_a_switch_key_bundle_is_refused_by_a_master_and_another_switch_in_one_line(tmp_path: Path) -> None:
    """A master given a switch's key bundle died with a traceback (ValueError from the Codec); a client given
    another switch's bundle printed the KeySet's repr."""
    from proto.auth import KeyRing

    cfg = write_config(tmp_path)
    KeyRing.load(tmp_path / "fabric.key").bundle_for_switch("leaf-2").save_bundle(tmp_path / "leaf-2.keys")
    bundled = tmp_path / "bundled.yaml"
    bundled.write_text(cfg.read_text().replace('key_file: "fabric.key"', 'key_file: "leaf-2.keys"'))
    p = firepath("master", "--config", str(bundled), "--id", "m1", "--state-dir", str(tmp_path / "st"))
    assert p.returncode == 2
    one_clear_line(p, "bundled.yaml:", "security.key_file", "key bundle of switch 'leaf-2'", "fabric secret")
    p = firepath("client", "--config", str(bundled), "--switch", "leaf-1", "--rest-port", "0", "--ovs",
                 "tcp:127.0.0.1:1")
    assert p.returncode == 2
    one_clear_line(p, "bundled.yaml:", "security.key_file", "key bundle of switch 'leaf-2'", "'leaf-1'")


def test_a_lab_timer_that_is_not_a_number_is_named(tmp_path: Path) -> None:
    """`lab up --timer nd_interval_ms=abc` said only "could not convert string to float: 'abc'"."""
    for argv in (("lab", "up", "--name", "brkq", "--timer", "nd_interval_ms=abc"),
                 ("lab", "config", "-o", str(tmp_path), "--timer", "nd_interval_ms=abc")):
        p = firepath(*argv)
        assert p.returncode == 1
        one_clear_line(p, "--timer 'nd_interval_ms=abc'", "'abc' is not a number")
    assert not (tmp_path / "fabric.yaml").exists()


def test_client_refuses_a_unix_socket_ovs_target(cfg: Path) -> None:
    p = firepath("client", "--config", str(cfg), "--switch", "leaf-1", "--ovs", "unix:/nonexistent")
    assert p.returncode == 2
    one_clear_line(p, "--ovs", "unix:/nonexistent", "tcp:IP:PORT", "unix sockets are not supported")


def test_client_says_it_retries_an_unreachable_ovs_at_a_bounded_rate(cfg: Path) -> None:
    (port,) = free_ports(1)                       # nothing listens there
    proc = subprocess.Popen([sys.executable, "-m", "proto.cli", "client", "--config", str(cfg), "--switch",
                             "leaf-1", "--ovs", f"tcp:127.0.0.1:{port}", "--rest-port", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(3.0)                           # ~6+ connection attempts at the 1 s backoff cap
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    warnings = [ln for ln in out.splitlines() if "of_unreachable" in ln]
    assert len(warnings) == 1, out               # said at once, then at most once per 10 s
    assert f"target=tcp:127.0.0.1:{port}" in warnings[0] and "retrying" in warnings[0]
    assert "level=warning" in warnings[0] and "Traceback" not in out


# ------------------------------------------------------------------------------------------ config check
def test_config_check_names_a_missing_or_bad_key_file(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    assert firepath("config", "check", str(cfg)).returncode == 0
    key = tmp_path / "fabric.key"
    key.rename(tmp_path / "elsewhere.key")
    p = firepath("config", "check", str(cfg))
    assert p.returncode == 1 and p.stdout == ""
    one_clear_line(p, str(cfg), "security.key_file", str(key), "not found")
    key.mkdir()                                   # unreadable as a file
    p = firepath("config", "check", str(cfg))
    one_clear_line(p, "security.key_file", str(key), "cannot read")
    key.rmdir()
    (tmp_path / "elsewhere.key").rename(key)
    (tmp_path / "admin.token").write_text("  \n")
    p = firepath("config", "check", str(cfg))
    one_clear_line(p, "security.admin_token_file", "admin.token", "empty")


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_a_missing_admin_token_file_is_named_with_the_config_line(tmp_path: Path) -> None:
    """Fresh-user finding: "admin token file not found" named neither the config file nor its line (every
    other config error does). `config check`, the master and the client at start and the operator commands
    say where."""
    cfg = write_config(tmp_path)
    token = tmp_path / "admin.token"
    token.unlink()
    where = f"{cfg}:{_line_of(cfg, 'admin_token_file')}: security.admin_token_file: {token}"
    p = firepath("config", "check", str(cfg))
    assert p.returncode == 1
    one_clear_line(p, where, "file not found")
    p = firepath("master", "--config", str(cfg), "--id", "m1", "--state-dir", str(tmp_path / "state"))
    assert p.returncode == 2
    one_clear_line(p, where, "file not found")
    p = firepath("client", "--config", str(cfg), "--switch", "leaf-1", "--ovs", "tcp:127.0.0.1:9")
    assert p.returncode == 2                  # was: started, and POST /v1/reload answered "no token configured"
    one_clear_line(p, where, "file not found")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIREPATH_TOKEN")}
    p = subprocess.run([sys.executable, "-m", "proto.cli", "undrain", "--config", str(cfg), "--switch", "leaf-1"],
                       cwd=ROOT, capture_output=True, text=True, timeout=30, env=env)
    assert p.returncode == 2
    one_clear_line(p, where, "file not found")


def test_config_check_names_a_bad_bgp_password_file(tmp_path: Path) -> None:
    """Issue #13: an eBGP peer's TCP MD5 key file is checked like the fabric's key files."""
    from proto.auth import write_secret_file
    from proto.clos import ClosParams, generate_clos_yaml

    write_secret_file(tmp_path / "fabric.key")
    text = generate_clos_yaml(ClosParams(spines=2, pods=1, tors_per_pod=2, border_pods=1, masters=1, external=True))
    cfg = tmp_path / "f.yaml"
    cfg.write_text(text.replace("hold_time: 3", "password_file: bgp.pw, hold_time: 3", 1))
    pw = tmp_path / "bgp.pw"
    where = f"{cfg}:{_line_of(cfg, 'password_file')}: switches["    # file:line: field, as every config error
    p = firepath("config", "check", str(cfg))
    one_clear_line(p, where, "].bgp.peers[0].password_file (switch border-1-1, peer 100.64.0.2)", str(pw),
                   "cannot read")
    pw.write_text("s3cret\n")
    pw.chmod(0o644)
    one_clear_line(firepath("config", "check", str(cfg)), where, str(pw), "mode 644", "chmod 600")
    pw.chmod(0o600)
    assert firepath("config", "check", str(cfg)).returncode == 0


# ------------------------------------------------------------------------------------------ client /metrics
def test_client_metrics_have_each_series_once() -> None:
    from client.daemon import ClientDaemon
    from client.rest import ClientCollector
    from proto.auth import KeyRing
    from proto.clos import clos_fabric
    from tests.test_client_daemon import FakeDriver

    fabric = clos_fabric(pods=0, leaves=2, spines=2, masters=1, liveness="nd")
    ring = KeyRing.from_secret(bytes(range(32)))
    d = ClientDaemon(fabric, "leaf-1", ring.bundle_for_switch("leaf-1"), ovs_target="tcp:127.0.0.1:9",
                     driver_factory=FakeDriver)
    try:
        d.core.on_datagram(b"FP\x02garbage", 0.0)          # rejected: counted by the core and the codec
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ClientCollector(d.status))  # type: ignore[arg-type]
        series = [ln.rpartition(" ")[0] for ln in generate_latest(registry).decode().splitlines()
                  if ln and not ln.startswith("#")]
        dups = {s for s in series if series.count(s) > 1}
        assert not dups, dups
        assert any("codec_rejected_" in s for s in series) and any('event="rejected_' in s for s in series)
    finally:
        d.transport.stop()


# ------------------------------------------------------------------------------------------ master REST
def test_master_rest_read_timeout_and_quiet_resets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from controller import rest
    from tests.test_controller_rest import TOKEN, make_server

    monkeypatch.setattr(rest, "READ_TIMEOUT", 0.4)
    (port,) = free_ports(1)

    async def main() -> dict[str, float | bytes]:
        server = make_server(tmp_path)
        await server.start(rest=False)
        runner = await rest.start_rest(server, "127.0.0.1", port)
        loop = asyncio.get_running_loop()

        def slow_headers() -> float:
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /v1/lsd HTTP/1.1\r\n")            # never finishes its headers
            s.settimeout(10)
            t0 = time.monotonic()
            assert s.recv(100) == b""                          # closed by the server
            s.close()
            return time.monotonic() - t0

        def slow_body() -> bytes:
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"POST /v1/drain HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                      + b"\r\nContent-Length: 100\r\n\r\n{")
            s.settimeout(10)
            data = s.recv(200)
            s.close()
            return data

        def reset_mid_body() -> None:
            s = socket.create_connection(("127.0.0.1", port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.sendall(b"POST /v1/drain HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                      + b"\r\nContent-Length: 100\r\n\r\n{")
            time.sleep(0.1)
            s.close()                                           # RST

        try:
            waited = await loop.run_in_executor(None, slow_headers)
            answer = await loop.run_in_executor(None, slow_body)
            await loop.run_in_executor(None, reset_mid_body)
            await asyncio.sleep(0.2)
            return {"waited": waited, "answer": answer}
        finally:
            await runner.cleanup()
            await server.stop()

    with caplog.at_level(logging.DEBUG):
        got = asyncio.run(main())
    assert 0.3 <= got["waited"] < 3.0, got
    assert got["answer"].startswith(b"HTTP/1.1 408"), got["answer"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert any("rest_connection_reset" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


# ------------------------------------------------------------------------------------------ lab up + Ctrl-C
@pytest.mark.ovs
def test_ctrl_c_during_lab_up_exits_cleanly_and_tears_down() -> None:
    name = "dampctrlc"                            # unique to this test (helper "damp")
    # SIGINT as a terminal delivers it: a test run started in the background (`cmd &` in a shell without job
    # control) ignores SIGINT, and a Python started with it ignored keeps ignoring it (never a Ctrl-C).
    proc = subprocess.Popen([sys.executable, "-m", "proto.cli", "lab", "up", "--name", name, "--spines", "1",
                             "--pods", "0", "--leaves", "2", "--masters", "1"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        line = proc.stdout.readline()
        while line and "plumbing ready" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
        assert "plumbing ready" in line, line
        time.sleep(0.3)                           # the daemons are starting: interrupt the bring-up there
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout   # before `down`
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        subprocess.run([sys.executable, "-m", "proto.cli", "lab", "down", "--name", name, "--purge"], cwd=ROOT,
                       capture_output=True, timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and err.strip().splitlines() == ["firepath lab: up: interrupted (Ctrl-C)"], err
    assert "tearing down what was built" in out
    assert f"fplab-{name}" not in netns           # torn down by `lab up` itself


def test_a_master_that_cannot_open_a_socket_names_it(tmp_path: Path) -> None:
    """`[Errno 99] Cannot assign requested address` named no socket, address or option; now the field, the
    protocol, host:port and a hint."""
    cfg = write_config(tmp_path)
    client_port, peer_port, rest_port = free_ports(3)
    base = ["master", "--config", str(cfg), "--id", "m1", "--state-dir", str(tmp_path / "s"),
            "--client-port", str(client_port), "--peer-port", str(peer_port), "--rest-port", str(rest_port)]
    p = firepath(*base, "--bind", "10.254.254.254")               # no address of this host
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert f"client_port: cannot open UDP 10.254.254.254:{client_port}" in p.stderr, p.stderr
    assert "not an address of this host" in p.stderr
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", rest_port))
        squatter.listen()
        p = firepath(*base, "--bind", "127.0.0.1")
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert f"rest_port: cannot open TCP 127.0.0.1:{rest_port}" in p.stderr and "--rest-port" in p.stderr, p.stderr
