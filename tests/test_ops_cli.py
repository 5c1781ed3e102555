"""The operator commands without a lab: parsing, target checks, token lookup, errors and exit codes, rendering.
(Against a real lab: tests/test_ops_lab.py.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from controller.ops import api
from controller.ops.cli import render_impact, render_routes, resolve
from controller.ops.dryrun import drain_impact
from proto.cli import build_parser, main
from proto.clos import ClosParams, clos_fabric, generate_clos_yaml
from proto.lsd import LinkState
from proto.messages import WIRE_VERSION
from tests.harness.loopcluster import free_ports

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fabric():
    return clos_fabric(pods=2, spines=2, aggs_per_pod=2, tors_per_pod=2, masters=3)


def cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proto.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=env)


def dead_config(tmp_path: Path, token: str | None = "secret") -> Path:
    """A config whose masters listen nowhere (free loopback ports), with an admin token file."""
    text = generate_clos_yaml(ClosParams(pods=2, spines=2, masters=3, rest_base_port=9900,
                                         admin_token_file="admin.token" if token else None))
    ports = iter(free_ports(3))          # masters' REST ports that nothing listens on
    text = re.sub(r"rest_port: 680\d", lambda _m: f"rest_port: {next(ports)}", text)
    if token:
        (tmp_path / "admin.token").write_text(token + "\n")
    (tmp_path / "fabric.key").write_text("00" * 32 + "\n")
    (tmp_path / "f.yaml").write_text(text)
    return tmp_path / "f.yaml"


def test_every_command_parses_and_version(capsys) -> None:
    parser = build_parser("drain")
    assert parser is not None
    for argv in (["drain", "--config", "f", "--switch", "s", "--dry-run"], ["undrain", "--lab", "x", "--link", "a:1-b:2"],
                 ["drains", "--config", "f", "--json"], ["routes", "--config", "f", "tor-1-1", "10.0.0.0/24"],
                 ["lsd", "--config", "f", "--since", "3"], ["clients", "--config", "f"], ["masters", "--lab", "x"]):
        args = build_parser(argv[0]).parse_args(argv)
        assert callable(args.func), argv
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("firepath ") and f"wire protocol {WIRE_VERSION}" in out
    assert main(["drain", "--config", "f"]) == 2                # neither --link nor --switch: usage


@pytest.mark.parametrize(("argv", "words"), [
    (["--version", "extra"], "argument COMMAND: invalid choice: 'extra'"),
    (["--vers", "extra"], "argument COMMAND: invalid choice: 'extra'"),
    (["--version", "config"], "--version takes no other argument, got 'config'"),
    (["--version", "lab"], "--version takes no other argument, got 'lab'"),
    (["--version", "config", "check", "f.yaml"], "unrecognized arguments: check f.yaml"),
])
def test_version_with_another_argument_is_a_usage_error(capsys, argv: list[str], words: str) -> None:
    """argparse's "version" action printed the version and exited 0 as soon as it saw --version, so
    `firepath --version extra` succeeded; the other argument is a usage error now (2, stderr, no version)."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "usage: firepath" in captured.err and f"firepath: error: {words}" in captured.err
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("firepath ")


def test_version_entry_point_exit_statuses() -> None:
    run = [sys.executable, "-m", "proto.cli"]
    alone = subprocess.run([*run, "--version"], capture_output=True, text=True, timeout=60)
    assert (alone.returncode, alone.stderr) == (0, "") and f"wire protocol {WIRE_VERSION}" in alone.stdout
    extra = subprocess.run([*run, "--version", "extra"], capture_output=True, text=True, timeout=60)
    assert (extra.returncode, extra.stdout) == (2, "") and "error: argument COMMAND: invalid choice: 'extra'" in extra.stderr


def test_resolve_names_what_is_wrong(fabric) -> None:
    assert resolve(fabric, None, "spine-1") == ("switch", "spine-1", fabric.links_of("spine-1"))
    link = fabric.links[0]
    rev = f"{link.b.switch}:{link.b.port}-{link.a.switch}:{link.a.port}"
    assert resolve(fabric, rev, None) == ("link", link.name, (0,))
    for bad, words in (("nosuch:1-tor-1-1:1", "unknown switch 'nosuch'"), ("tor-1-1:1", "expected SWITCH:PORT"),
                       (f"{link.a.switch}:{link.a.port}-spine-2:9", "no link between"),
                       (f"{link.a.switch}:{link.a.port}-{link.a.switch}:{link.a.port}", "no link between"),
                       (f"{link.b.switch}:{link.b.port}-{link.b.switch}:{link.b.port}", "no link between")):
        with pytest.raises(api.OpsError, match=words) as e:
            resolve(fabric, bad, None)
        assert e.value.code == (api.USAGE if words.startswith("expected") else api.UNKNOWN)
    with pytest.raises(api.OpsError) as e:
        resolve(fabric, None, "spine-9")
    assert e.value.code == api.UNKNOWN and "spine-9" in str(e.value)


def test_token_lookup_order(fabric, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(api.TOKEN_ENV, raising=False)
    monkeypatch.delenv(api.TOKEN_FILE_ENV, raising=False)
    with pytest.raises(api.OpsError) as e:
        api.read_token(fabric, None)                         # the fabric names no token file
    assert e.value.code == api.DENIED and "--token-file" in str(e.value)
    f = tmp_path / "t"
    f.write_text(" abc \n")
    assert api.read_token(fabric, str(f)) == "abc"
    monkeypatch.setenv(api.TOKEN_FILE_ENV, str(f))
    assert api.read_token(fabric, None) == "abc"
    monkeypatch.setenv(api.TOKEN_ENV, "from-env")
    assert api.read_token(fabric, None) == "from-env"
    assert api.read_token(fabric, str(f)) == "abc"           # an explicit file wins
    with pytest.raises(api.OpsError) as e:
        api.read_token(fabric, str(tmp_path / "missing"))
    assert e.value.code == api.USAGE and "missing" in str(e.value)


@pytest.mark.parametrize("token", ["a\nb", "t\u00f8ken\u20ac", "\x01x", "a\tb"])
def test_a_token_no_http_header_can_carry_is_a_usage_error(fabric, tmp_path: Path, monkeypatch,
                                                            token: str) -> None:
    """A newline or a non-ASCII character in the token used to fail inside urllib ("Invalid header value",
    "ordinal not in range(256)") and be reported as an unreachable master (exit 3)."""
    monkeypatch.delenv(api.TOKEN_FILE_ENV, raising=False)
    monkeypatch.setenv(api.TOKEN_ENV, token)
    with pytest.raises(api.OpsError) as e:
        api.read_token(fabric, None)
    assert e.value.code == api.USAGE and f"${api.TOKEN_ENV}" in str(e.value) and "printable ASCII" in str(e.value)
    monkeypatch.delenv(api.TOKEN_ENV)
    f = tmp_path / "t"
    f.write_text(token + "\n")
    with pytest.raises(api.OpsError) as e:
        api.read_token(fabric, str(f))
    assert e.value.code == api.USAGE and str(f) in str(e.value) and "printable ASCII" in str(e.value)


def test_errors_are_one_line_with_their_exit_code(tmp_path: Path) -> None:
    cfg = str(dead_config(tmp_path))
    cases = [
        (["drains", "--config", cfg, "--timeout", "0.5"], api.UNREACHABLE, "no master serving"),
        (["drain", "--config", cfg, "--switch", "spine-1"], api.UNREACHABLE, "Connection refused"),
        (["drain", "--config", cfg, "--switch", "spine-9"], api.UNKNOWN, "unknown switch 'spine-9'"),
        (["undrain", "--config", cfg, "--link", "tor-1-1:1-spine-1:1"], api.UNKNOWN, "no link between"),
        # a malformed argument is a usage error (2), like every other one, not an unknown name (5)
        (["drain", "--config", cfg, "--link", "tor-1-1:1/spine-1:1"], api.USAGE, "expected SWITCH:PORT-SWITCH:PORT"),
        (["routes", "--config", cfg, "nosuch"], api.UNKNOWN, "unknown switch"),
        (["routes", "--config", cfg, "tor-1-1", "10.0.0.300"], api.USAGE, "not an IPv4 address"),
        (["routes", "--config", cfg, "tor-1-1"], api.UNREACHABLE, "switch client REST"),
        # host bits set: refused before the client is asked, as its REST refuses it (was read as 10.0.0.0/8)
        (["routes", "--config", cfg, "tor-1-1", "10.0.0.1/8"], api.USAGE,
         "prefix 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8"),
        (["masters", "--config", cfg], api.UNREACHABLE, "no master serving"),
        (["lsd", "--config", str(tmp_path / "nope.yaml")], api.USAGE, "nope.yaml"),
        (["lsd", "--lab", "UPPER"], api.USAGE, "lab name"),
        (["drain", "--config", cfg, "--switch", "spine-1", "--reason", "x" * 201], api.USAGE,
         "--reason: 201 characters, at most 200"),
        # tester: a tab said "at most 200 printable characters (got 3)", as if the length were wrong
        (["drain", "--config", cfg, "--switch", "spine-1", "--reason", "a\tb"], api.USAGE,
         "--reason: the non-printable character '\\t' at position 2"),
        (["drain", "--config", cfg, "--switch", "spine-1", "--who", "me\x1b[2J"], api.USAGE,
         "--who: the non-printable character '\\x1b' at position 3"),
    ]
    for argv, code, words in cases:
        r = cli(*argv)
        assert r.returncode == code, (argv, r.returncode, r.stderr)
        assert words in r.stderr and r.stderr.count("\n") == 1, (argv, r.stderr)
    (tmp_path / "no-token").mkdir()
    cfg2 = str(dead_config(tmp_path / "no-token", token=None))
    r = cli("undrain", "--config", cfg2, "--switch", "spine-1", env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == api.DENIED and "no admin token" in r.stderr


def test_render_impact_and_routes(fabric) -> None:
    states = bytes([LinkState.UP]) * len(fabric.links)
    text = render_impact(drain_impact(fabric, states, fabric.links_of("spine-1")), {"version": 7}, "m2")
    assert "from LSD version 7 of master m2: 4 of 16 UP links out (25%)" in text
    assert "tor-1-1    tor-2-1    2 -> 2" in text and "8 -> 4" in text and "DISCONNECTED" not in text
    down = bytearray(states)
    down[fabric.links_of("tor-1-1")[0]] = LinkState.DOWN           # one uplink down, drain the other
    text = render_impact(drain_impact(fabric, bytes(down), fabric.links_of("tor-1-1")[1:2]), {"version": 7}, "m2")
    assert text.count("DISCONNECTED") == 6
    both = [*fabric.links_of("agg-1-1"), *fabric.links_of("agg-1-2")]
    text = render_impact(drain_impact(fabric, states, both), {"version": 7}, "m2")
    assert "no ToR pair changes" in text and "warning: agg-1-1 stays in the path of" in text
    view = {"switch": "tor-1-1", "lsd_version": 3, "programmed_version": 3, "ovs_read": True, "excluded_ports": [],
            "routes": [{"prefix": "10.0.1.0/24", "status": "differs", "detail": "not in OVS: port(s) [2]",
                        "computed": {"group": 5, "next_hops": [{"port": 1, "neighbour": "agg-1-1"},
                                                               {"port": 2, "neighbour": "agg-1-2"}]},
                        "installed": {"group": 5, "type": "select",
                                      "buckets": [{"port": 1, "neighbour": "agg-1-1", "weight": 1}]}}]}
    text = render_routes(view)
    assert "1 difference(s) marked !" in text and "!10.0.1.0/24" in text
    assert "agg-1-1 (port 1), agg-1-2 (port 2)" in text and "agg-1-1 (port 1) w=1" in text
    assert "refuses the masters' LSD" not in text
    # a switch moved to a next config its masters withhold until the commit: its kept flows, nothing computed
    view.update(lsd_version=-1, programmed_version=-1, config_mismatch="c0ffee" * 10)
    assert "\nrefuses the masters' LSD: they serve config c0ffeec0ffee..., not the one this client runs; its " \
           "switch forwards on the flows it kept" in render_routes(view)


def test_drain_follows_the_leader_on_409(tmp_path: Path, capsys) -> None:
    """m1 says it serves but has just lost mastership (409, leader m2): the drain goes to m2."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    fabric = clos_fabric(pods=2, spines=2, aggs_per_pod=2, tors_per_pod=2, masters=3)
    seen: list[tuple[str, str, str, dict]] = []

    def handler(mid: str) -> type:
        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                head = {"master": mid, "role": "master" if mid == "m1" else "backup", "term": 1, "leader": "m1",
                        "version": 4, "held": False}
                if self.path == "/v1/lsd":
                    head["links"] = {link.name: "up" for link in fabric.links}
                self.reply(200, head)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                seen.append((mid, self.path, self.headers.get("Authorization", ""), body))
                if mid == "m1":
                    self.reply(409, {"error": "not the master: m1 is backup", "leader": "m2"})
                else:
                    self.reply(200, {"master": "m2", "role": "master", "term": 2, "version": 5, "drained": True,
                                     "target": "spine-1", "links": ["a", "b", "c", "d"], "still_drained": {}})
        return H

    servers = {m: ThreadingHTTPServer(("127.0.0.1", 0), handler(m)) for m in ("m1", "m2")}
    for s in servers.values():
        threading.Thread(target=s.serve_forever, daemon=True).start()
    try:
        text = generate_clos_yaml(ClosParams(pods=2, spines=2, masters=3, admin_token_file="t"))
        ports = iter([servers["m1"].server_address[1], servers["m2"].server_address[1], free_ports(1)[0]])
        text = re.sub(r"rest_port: 680\d", lambda _m: f"rest_port: {next(ports)}", text)
        (tmp_path / "t").write_text("tok\n")
        (tmp_path / "f.yaml").write_text(text)
        code = main(["drain", "--config", str(tmp_path / "f.yaml"), "--switch", "spine-1", "--reason", "r",
                     "--who", "me", "--timeout", "2"])
        out = capsys.readouterr().out
        assert code == 0 and "on master m2 (term 2)" in out
        assert [(m, p, a) for m, p, a, _b in seen] == [("m1", "/v1/drain", "Bearer tok"), ("m2", "/v1/drain", "Bearer tok")]
        assert seen[-1][3] == {"switch": "spine-1", "who": "me", "reason": "r"}
    finally:
        for s in servers.values():
            s.shutdown()
            s.server_close()


def test_lab_name_finds_a_lab_started_with_its_own_config_from_anywhere(tmp_path: Path, monkeypatch) -> None:
    """Fresh-user finding: `--lab NAME` looked for /tmp/fplab-NAME/fabric.yaml, which a lab started with
    `lab up --config FILE` does not have. The lab's record names the config it runs and its namespace."""
    from controller.ops import cli as ops_cli
    from lab.state import LabState

    own = tmp_path / "mine"
    own.mkdir()
    cfg = dead_config(own)                                   # the user's config, outside the lab dir
    lab_dir = tmp_path / "fplab-ux1"
    monkeypatch.setattr("lab.state.default_dir", lambda name: tmp_path / f"fplab-{name}")
    entered: list[str] = []
    monkeypatch.setattr(ops_cli, "_enter_netns", entered.append)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv(api.TOKEN_ENV, raising=False)
    monkeypatch.delenv(api.TOKEN_FILE_ENV, raising=False)
    args = build_parser("masters").parse_args(["masters", "--lab", "ux1"])
    with pytest.raises(api.OpsError) as e:                   # not up: says so
        ops_cli.load_target(args)
    assert e.value.code == api.USAGE and "lab ux1: no " in str(e.value) and "firepath lab up" in str(e.value)
    LabState(name="ux1", dir=str(lab_dir), config=str(cfg), netns="fplab-ux1").save()
    fabric = ops_cli.load_target(args)
    assert fabric.source == str(cfg) and entered == ["fplab-ux1"]
    assert api.read_token(fabric, None) == "secret"          # the token named by that config


@pytest.mark.parametrize("body", ["[]", "null", '{"routes": 5}', '{"routes": [{"prefix": 1}]}', '"x"',
                                  '{"role": 5, "term": [], "links": 3, "clients": 7, "drains": 9}'])
def test_an_answer_that_is_not_what_firepath_serves_is_one_line_not_a_traceback(tmp_path: Path, body: str) -> None:
    """Something else (or another version) on a master's or a client's REST port: the commands used to die
    with AttributeError/TypeError/KeyError tracebacks on its JSON."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        text = re.sub(r"rest_port: 680\d", f"rest_port: {port}", generate_clos_yaml(ClosParams(pods=0, masters=1)))
        cfg = tmp_path / "f.yaml"
        cfg.write_text(text)
        (tmp_path / "fabric.key").write_text("00" * 32)
        for argv in (["routes", "--config", str(cfg), "leaf-1", "--address", f"127.0.0.1:{port}"],
                     ["lsd", "--config", str(cfg)], ["clients", "--config", str(cfg)],
                     ["masters", "--config", str(cfg)], ["drains", "--config", str(cfg)],
                     ["status", "--config", str(cfg)],
                     ["config", "rollout", str(cfg), "--config", str(cfg), "--status"]):
            p = cli(*argv)
            assert "Traceback" not in p.stderr, (argv, p.stderr)
            assert p.returncode in (api.BAD_NEWS, api.UNREACHABLE), (argv, p.returncode, p.stderr)
            if p.returncode == api.UNREACHABLE:
                assert p.stderr.startswith("firepath ") and p.stderr.count("\n") == 1, (argv, p.stderr)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("address, why", [("localhost:abc", "port 'abc' is not a number"),
                                          ("evil host:1", "expected HOST:PORT"),
                                          ("127.0.0.1:99999", "port '99999' is not a number in 1..65535"),
                                          (":8080", "expected HOST:PORT"),
                                          # was 'nohost:None': no port given and the config has none
                                          ("nohost", "has no port and switch leaf-1 has no rest_port")])
def test_a_bad_routes_address_is_a_usage_error_naming_it(tmp_path: Path, address: str, why: str) -> None:
    """A tester got http.client.InvalidURL tracebacks (and 'Connection refused' for port 99999)."""
    cfg = tmp_path / "f.yaml"
    cfg.write_text(generate_clos_yaml(ClosParams(pods=0, masters=1)))
    (tmp_path / "fabric.key").write_text("00" * 32)
    p = cli("routes", "--config", str(cfg), "leaf-1", "--address", address)
    assert "Traceback" not in p.stderr and p.returncode == api.USAGE, (p.returncode, p.stderr)
    assert f"--address {address!r}" in p.stderr and why in p.stderr, p.stderr


def test_master_note_names_links_the_guard_holds() -> None:
    """Tester: with two spines failed (half the links down on single witnesses) the drastic-change guard held
    them, and `firepath status` / `firepath masters` said nothing (only GET /v1/guard did): the note column
    now names it, with what to read and how to confirm."""
    from controller.ops.api import master_note

    assert master_note({"role": "master", "guard_held": 0}) == ""
    assert master_note({"role": "master", "guard_held": 8, "held": True}) == (
        "holding first LSD; guard holds 8 link(s) down-reported (`firepath guard` lists them, "
        "`--confirm` publishes them)")
    assert master_note({"guard_held": True}) == "" and master_note({"guard_held": "8"}) == ""
