"""Rollout and reload over the master's REST (controller.rollout_rest) against an in-process MasterServer."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

import controller.rest
from controller.server import MasterServer
from proto.clos import ClosParams, generate_clos_yaml
from tests.test_controller_rest import TOKEN, run

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def next_config(tmp: Path, leaves: int = 3) -> Path:
    """The server's config (tests.test_controller_rest.make_server) with `leaves` leaves."""
    text = generate_clos_yaml(ClosParams(pods=0, spines=2, leaves=leaves, masters=2))
    text = text.replace('  key_file: "fabric.key"\n', '  key_file: "fabric.key"\n  admin_token_file: admin.token\n')
    path = tmp / f"next-{leaves}.yaml"
    path.write_text(text)
    return path


def test_prepare_commit_abort_over_rest(tmp_path: Path) -> None:
    nxt = next_config(tmp_path)

    async def body(server: MasterServer, c: TestClient) -> None:
        st = await (await c.get("/v1/rollout")).json()
        assert st["phase"] == "idle" and st["next"] is None
        r = await c.post("/v1/rollout/prepare", json={"config": str(nxt)})
        assert r.status == 401                                   # the admin token, as for drains
        r = await c.post("/v1/rollout/prepare", json={"config": str(nxt)}, headers=AUTH)
        out = await r.json()
        assert r.status == 200 and out["outcome"] == "prepared", out
        assert out["rollout"]["phase"] == "prepared" and out["rollout"]["switches"]["leaf-3"] == "unheard"
        assert "leaf-3" in server.codec.switches                 # the new switch may speak to us now
        r = await c.post("/v1/rollout/prepare", json={"config": str(nxt)}, headers=AUTH)
        assert (await r.json())["outcome"] == "already_prepared"
        for o in server.observers:                               # the page ignores it until the commit
            o.reported("leaf-3", ())
        # no switch heard at all: nothing blocks ("every switch still alive" holds the next config)
        r = await c.post("/v1/rollout/commit", headers=AUTH)
        out = await r.json()
        assert r.status == 200 and out["outcome"] == "committed", out
        assert server.fabric.digest == out["digest"] and len(server.fabric.links) == 6
        lsd = await (await c.get("/v1/lsd")).json()
        assert "leaf-3:1-spine-1:3" in lsd["links"]
        view = await (await c.get("/v1/view")).text()              # the page follows the new config
        assert "leaf-3" in view
        r = await c.post("/v1/rollout/abort", headers=AUTH)
        assert (await r.json())["outcome"] == "nothing_prepared"

    run(tmp_path, body)


def test_an_invalid_next_config_is_refused_with_file_line_field_and_changes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(next_config(tmp_path).read_text().replace("weight", "weight").replace(
        '{a: "leaf-3:1", b: "spine-1:3"}', '{a: "leaf-3:1", b: "spine-9:3"}'))

    async def body(server: MasterServer, c: TestClient) -> None:
        digest = server.fabric.digest
        r = await c.post("/v1/rollout/prepare", json={"config": str(bad)}, headers=AUTH)
        err = (await r.json())["error"]
        assert r.status == 400 and "bad.yaml:" in err and "spine-9" in err, err
        r = await c.post("/v1/rollout/prepare", json={"config": str(tmp_path / "missing.yaml")}, headers=AUTH)
        assert r.status == 400
        st = await (await c.get("/v1/rollout")).json()
        assert st["phase"] == "idle" and server.fabric.digest == digest
        r = await c.post("/v1/rollout/commit", headers=AUTH)
        assert r.status == 409 and "no rollout prepared" in (await r.json())["error"]

    run(tmp_path, body)


def test_reload_of_the_same_file_changes_nothing_and_of_an_edited_one_prepares(tmp_path: Path) -> None:
    async def body(server: MasterServer, c: TestClient) -> None:
        own = Path(server.fabric.source)
        r = await c.post("/v1/reload", headers=AUTH)
        assert (await r.json())["outcome"] == "unchanged"
        own.write_text(own.read_text().replace('{a: "leaf-1:1", b: "spine-1:1"}',
                                               '{a: "leaf-1:1", b: "spine-1:1", weight: 4}'))
        r = await c.post("/v1/reload", headers=AUTH)
        out = await r.json()
        assert out["outcome"] == "prepared" and out["rollout"]["phase"] == "prepared"
        # the link index map came with the reload's check (built off the event loop), not rebuilt on it
        carry = server.core.rollout._carry
        assert carry is not None and carry.key == (server.core.fabric.digest, out["digest"])
        r = await c.post("/v1/rollout/abort", headers=AUTH)
        assert (await r.json())["rollout"]["phase"] == "idle"

    run(tmp_path, body)


def test_commit_on_a_backup_names_the_leader(tmp_path: Path) -> None:
    nxt = next_config(tmp_path)

    async def body(server: MasterServer, c: TestClient) -> None:
        await c.post("/v1/rollout/prepare", json={"config": str(nxt)}, headers=AUTH)
        r = await c.post("/v1/rollout/commit", headers=AUTH)
        assert r.status == 409 and "not the master" in (await r.json())["error"]

    run(tmp_path, body, master=False)


def test_reload_swaps_the_key_set_without_a_rollout(tmp_path: Path) -> None:
    """Key rollover step 1 by reload (issue #21): the edited security section (a second accepted key) is in
    force at once — GET /v1/keys shows it — and, the digest being unchanged, no rollout is prepared."""
    from proto import cli

    async def body(server: MasterServer, c: TestClient) -> None:
        own = Path(server.fabric.source)
        before = await (await c.get("/v1/keys")).json()
        assert before["accepted"] == [1]
        assert cli.main(["config", "keygen", "--add", str(own), "--write"]) == 0
        out = await (await c.post("/v1/reload", headers=AUTH)).json()
        assert out["outcome"] == "unchanged" and out["rollout"]["phase"] == "idle"
        after = await (await c.get("/v1/keys")).json()
        assert after["send_key"] == 1 and after["accepted"] == [1, 2]
        # a key set naming a missing key file is refused and changes nothing
        own.write_text(own.read_text().replace("send_key: 1", "send_key: 7"))
        r = await c.post("/v1/reload", headers=AUTH)
        assert r.status == 400 and "send_key" in (await r.json())["error"]
        assert (await (await c.get("/v1/keys")).json())["accepted"] == [1, 2]

    run(tmp_path, body)


@pytest.mark.timeout(60)
def test_prepare_of_a_fifo_a_nul_path_or_a_stalled_body_answers_4xx_and_never_wedges(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A FIFO as the next config used to block the master's event loop for good (no FMRP, no LSD), a NUL in
    the path to answer 500, and a body that never arrives to hold the request open forever."""
    monkeypatch.setattr(controller.rest, "READ_TIMEOUT", 0.5)
    fifo = tmp_path / "next.fifo"
    os.mkfifo(fifo)

    async def body(server: MasterServer, c: TestClient) -> None:
        digest = server.fabric.digest
        for path, status in ((str(fifo), 400), (str(tmp_path) + "/a\u0000b.yaml", 400)):
            r = await asyncio.wait_for(c.post("/v1/rollout/prepare", json={"config": path}, headers=AUTH), 10)
            out = await r.json()
            assert r.status == status and "error" in out, out
        reader, writer = await asyncio.open_connection(c.host, c.port)
        writer.write(b"POST /v1/rollout/prepare HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH["Authorization"].encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"config\"")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 408") and b"application/json" in head, head
        writer.close()
        assert (await (await c.get("/v1/rollout")).json())["phase"] == "idle" and server.fabric.digest == digest

    run(tmp_path, body)


def test_a_reload_naming_a_switch_key_bundle_is_a_400_and_changes_nothing(tmp_path: Path) -> None:
    """The master's Codec refused the bundle with a ValueError the reload did not expect: a 500, and on
    SIGHUP an exception in the signal callback."""
    from proto.auth import KeyRing

    async def body(server: MasterServer, c: TestClient) -> None:
        KeyRing.load(tmp_path / "fabric.key").bundle_for_switch("leaf-1").save_bundle(tmp_path / "leaf-1.keys")
        keys = server.codec.keys
        # another file naming it: refused as a key change from another file than the running one
        nxt = tmp_path / "bundled.yaml"
        nxt.write_text((tmp_path / "f.yaml").read_text().replace('key_file: "fabric.key"', 'key_file: "leaf-1.keys"'))
        r = await c.post("/v1/rollout/prepare", json={"config": str(nxt)}, headers=AUTH)
        err = (await r.json())["error"]
        assert r.status == 400 and "from another file than" in err and "bundled.yaml:" in err, err
        # the running file itself edited to name it (a key-only change): refused as a switch's bundle
        running = tmp_path / "f.yaml"
        running.write_text(nxt.read_text())
        r = await c.post("/v1/rollout/prepare", json={"config": str(running)}, headers=AUTH)
        err = (await r.json())["error"]
        assert r.status == 400 and "key bundle of switch 'leaf-1'" in err and "f.yaml:" in err, err
        assert server.codec.keys is keys and (await (await c.get("/v1/rollout")).json())["phase"] == "idle"

    run(tmp_path, body)


def _switch_codec(server: MasterServer, tmp: Path, switch: str = "leaf-1"):  # noqa: ANN202
    """A switch's Codec on the running key (its bundle), its incarnation accepted by `server` both ways."""
    from proto.auth import KeyRing
    from proto.messages import Codec
    from tests.harness.fresh import establish

    sw = Codec(KeyRing.load(tmp / "fabric.key").bundle_for_switch(switch), switch,
               [s.name for s in server.fabric.switches], [m.id for m in server.fabric.masters])
    establish(server.codec, sw)
    return sw


def _report(server: MasterServer, sw, seq: int) -> bytes:  # noqa: ANN001
    from proto.messages import PortReport, PortStatus

    return sw.encode(PortReport(sw.local_id, server.fabric.digest, seq, 1, (PortStatus(1, True, True, True, True, False),)),
                     to="m1")


def test_a_rollout_naming_another_key_set_is_refused_and_the_switches_keep_being_heard(tmp_path: Path) -> None:
    """The tester's repro: next.yaml (one weight changed) beside ANOTHER fabric.key. The prepare swapped the
    masters' keys at once (event=keys_reloaded): every switch of the running config was rejected as
    bad_hmac (fail-static fabric), and the abort did not bring the old keys back. Now the prepare is refused
    naming `security` at its line, the key set is untouched, a switch's report still verifies; the same
    edit made in place (reload of the own file) too."""
    from proto.auth import write_secret_file

    async def body(server: MasterServer, c: TestClient) -> None:
        other = tmp_path / "x"
        other.mkdir()
        write_secret_file(other / "fabric.key")
        (other / "admin.token").write_text(TOKEN + "\n")
        nxt = other / "next.yaml"
        nxt.write_text((tmp_path / "f.yaml").read_text().replace('{a: "leaf-1:1", b: "spine-1:1"}',
                                                                 '{a: "leaf-1:1", b: "spine-1:1", weight: 4}'))
        sw = _switch_codec(server, tmp_path)
        keys, digest = server.codec.keys, server.fabric.digest
        r = await c.post("/v1/rollout/prepare", json={"config": str(nxt)}, headers=AUTH)
        out = await r.json()
        assert r.status == 400, out
        assert "next.yaml:" in out["error"] and ": security: " in out["error"] and "key set" in out["error"], out
        assert server.codec.keys is keys and (await (await c.get("/v1/rollout")).json())["phase"] == "idle"
        assert server.codec.decode(_report(server, sw, 1))[0] == "leaf-1"      # not bad_hmac
        # the abort has nothing to restore: still the running keys
        await c.post("/v1/rollout/abort", headers=AUTH)
        assert server.codec.keys is keys and server.codec.decode(_report(server, sw, 2))[0] == "leaf-1"
        # the same edit in place: the own file with the weight changed and the other key
        own = Path(server.fabric.source)
        own.write_text(nxt.read_text().replace('key_file: "fabric.key"', f'key_file: "{other / "fabric.key"}"'))
        r = await c.post("/v1/reload", headers=AUTH)
        assert r.status == 400 and "security" in (await r.json())["error"]
        assert server.codec.keys is keys and server.fabric.digest == digest
        assert (await (await c.get("/v1/rollout")).json())["phase"] == "idle"
        assert server.codec.decode(_report(server, sw, 3))[0] == "leaf-1"

    run(tmp_path, body)


def test_a_rollout_keeping_the_key_set_is_prepared_and_its_abort_leaves_the_keys(tmp_path: Path) -> None:
    """The rule's other side: another config naming the same key set (other paths, same key material) is
    prepared, and neither prepare nor abort changes what the master signs and verifies with."""
    async def body(server: MasterServer, c: TestClient) -> None:
        other = tmp_path / "y"
        other.mkdir()
        (other / "fabric.key").write_bytes((tmp_path / "fabric.key").read_bytes())
        (other / "admin.token").write_text(TOKEN + "\n")
        nxt = other / "next.yaml"
        nxt.write_text((tmp_path / "f.yaml").read_text().replace('{a: "leaf-1:1", b: "spine-1:1"}',
                                                                 '{a: "leaf-1:1", b: "spine-1:1", weight: 4}'))
        sw = _switch_codec(server, tmp_path)
        keys = server.codec.keys
        out = await (await c.post("/v1/rollout/prepare", json={"config": str(nxt)}, headers=AUTH)).json()
        assert out["outcome"] == "prepared" and server.codec.keys is keys, out
        assert server.codec.decode(_report(server, sw, 1))[0] == "leaf-1"
        await c.post("/v1/rollout/abort", headers=AUTH)
        assert server.codec.keys is keys and server.codec.decode(_report(server, sw, 2))[0] == "leaf-1"

    run(tmp_path, body)


@pytest.mark.parametrize(("old", "new", "field"), [
    ("rest_port: 6802", "rest_port: 6902", "masters[1].rest_port"),
    ("client_port: 6601", "client_port: 6611", "masters[0].client_port"),
    ("rest_port: 6802}", "rest_port: 6802, priority: 200}", "masters[1].priority"),
])
def test_a_rollout_changing_a_master_is_refused_naming_the_field_at_its_line(
        tmp_path: Path, old: str, new: str, field: str) -> None:
    """m3's rest_port changed in next.yaml was prepared by every replica (the check compared id, address,
    client and peer ports only). Every field of every master is compared now: 400 with file:line: field."""
    nxt = next_config(tmp_path, leaves=2)
    text = nxt.read_text()
    assert old in text
    nxt.write_text(text.replace(old, new).replace('{a: "leaf-1:1", b: "spine-1:1"}',
                                                  '{a: "leaf-1:1", b: "spine-1:1", weight: 4}'))
    line = next(i for i, ln in enumerate(nxt.read_text().splitlines(), 1) if new in ln)

    async def body(server: MasterServer, c: TestClient) -> None:
        r = await c.post("/v1/rollout/prepare", json={"config": str(nxt)}, headers=AUTH)
        err = (await r.json())["error"]
        assert r.status == 400 and f"next-2.yaml:{line}: {field}: " in err and "cannot change" in err, err
        st = await (await c.get("/v1/rollout")).json()
        assert st["phase"] == "idle" and st["next"] is None

    run(tmp_path, body)


def test_one_prepare_at_a_time_and_the_loop_keeps_answering_while_a_file_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is read on a worker thread (a 9 MB config stalled the loop into a failover): while one is
    read, GETs answer, and a second prepare or reload is a 429 with Retry-After, nothing done."""
    import threading

    nxt = next_config(tmp_path)
    release, reading = threading.Event(), threading.Event()

    async def body(server: MasterServer, c: TestClient) -> None:
        real = server.reload_check

        def slow(path=None):  # noqa: ANN001, ANN202
            reading.set()
            assert release.wait(20)
            return real(path)

        monkeypatch.setattr(server, "reload_check", slow)
        first = asyncio.ensure_future(c.post("/v1/rollout/prepare", json={"config": str(nxt)}, headers=AUTH))
        assert await asyncio.to_thread(reading.wait, 10)
        r = await asyncio.wait_for(c.get("/v1/lsd/version"), 5)             # the loop is free
        assert r.status == 200
        for route, body_ in (("/v1/rollout/prepare", {"config": str(nxt)}), ("/v1/reload", None)):
            r = await c.post(route, json=body_, headers=AUTH)
            out = await r.json()
            assert r.status == 429 and r.headers["Retry-After"] == "1" and "one at a time" in out["error"], out
        release.set()
        r = await asyncio.wait_for(first, 20)
        assert r.status == 200 and (await r.json())["outcome"] == "prepared"

    run(tmp_path, body)


def test_a_prepare_reads_only_fabric_configs_in_the_config_directory_and_never_quotes_a_file(
        tmp_path: Path) -> None:
    """Tester: the admin token read any file: `{"config": ".../fabric.key"}` answered 400 quoting the HMAC
    secret (`expected a mapping, got the string 'fbc5...'`), /etc/shadow likewise. Now PATH must resolve in
    the config directory (or below), the running config's secret files are refused by path and by inode,
    and a file that is not a fabric config is named by its type, not its text."""
    outside = tmp_path.parent / f"{tmp_path.name}-outside.yaml"
    outside.write_text("hunter2-outside-secret\n")

    async def body(server: MasterServer, c: TestClient) -> None:
        key = (tmp_path / "fabric.key").read_text().strip()
        os.link(tmp_path / "fabric.key", tmp_path / "innocent.yaml")
        (tmp_path / "escape.yaml").symlink_to(outside)
        (tmp_path / "notes.txt").write_text("hunter2-inside-secret\n")
        (tmp_path / "other.yaml").write_text("password: hunter2-value\n")
        (tmp_path / "mixed.yaml").write_text("hunter2_line_here: 1\nname: clos\n")     # tester F7: one fabric key
        nxt = next_config(tmp_path)
        cases = [
            (str(tmp_path / "fabric.key"), "secret file"),
            ("fabric.key", "secret file"),                            # relative: in the config directory
            (str(tmp_path / "admin.token"), "secret file"),
            (str(tmp_path / "innocent.yaml"), "secret file"),         # a hard link of the key
            (str(tmp_path / "escape.yaml"), "config directory"),      # a symlink out
            (str(outside), "config directory"),
            ("/etc/shadow", "config directory"),
            (str(tmp_path / ".." / tmp_path.name / ".." / outside.name), "config directory"),
            (str(tmp_path / "state"), "not a regular file"),
            (str(tmp_path / "notes.txt"), "not a fabric config (a string)"),
            (str(tmp_path / "other.yaml"), "not a fabric config (a mapping with none of the keys"),
            (str(tmp_path / "mixed.yaml"), "not a fabric config (a mapping without security, masters, switches"),
        ]
        for path, why in cases:
            r = await c.post("/v1/rollout/prepare", json={"config": path}, headers=AUTH)
            err = (await r.json())["error"]
            assert r.status == 400 and why in err, (path, err)
            assert key not in err and TOKEN not in err and "hunter2" not in err and "root:" not in err, err
        assert (await (await c.get("/v1/rollout")).json())["phase"] == "idle"
        r = await c.post("/v1/rollout/prepare", json={"config": nxt.name}, headers=AUTH)   # relative, beside
        assert r.status == 200 and (await r.json())["outcome"] == "prepared"

    run(tmp_path, body)


def test_a_reload_of_the_running_config_reads_its_admin_token_file_again(tmp_path: Path) -> None:
    """Tester: masters started from a config without `security.admin_token_file`; the operator added one and
    sent SIGHUP (reload: "unchanged", the security section is outside the digest); every drain was still a 403
    "drains are disabled: no security.admin_token_file in the config", and a token could not be rotated
    without a restart. A reload of the running config now reads the token file again (as it swaps keys); a
    prepared next config does not change it, nor does an unusable token file."""

    async def body(server: MasterServer, c: TestClient) -> None:
        drain = {"switch": "spine-1", "reason": "t"}
        r = await c.post("/v1/drain", json=drain, headers=AUTH)
        assert r.status == 403 and "no security.admin_token_file" in (await r.json())["error"]
        config = Path(server.fabric.source)
        text = config.read_text()
        (tmp_path / "admin.token").write_text(TOKEN + "\n")
        config.write_text(text.replace('  key_file: "fabric.key"\n',
                                       '  key_file: "fabric.key"\n  admin_token_file: admin.token\n'))
        assert server.reload()["outcome"] == "unchanged"
        r = await c.post("/v1/drain", json=drain, headers=AUTH)
        assert r.status == 200, await r.text()
        (tmp_path / "admin.token").write_text("tok-new\n")              # rotated
        server.reload()
        assert (await c.delete("/v1/drain", json=drain, headers=AUTH)).status == 403
        new = {"Authorization": "Bearer tok-new"}
        assert (await c.delete("/v1/drain", json=drain, headers=new)).status == 200
        (tmp_path / "admin.token").write_text("")                      # unusable: the token in force stays
        server.reload()
        assert (await c.post("/v1/drain", json=drain, headers=new)).status == 200
        (tmp_path / "admin.token").write_text("tok-new\n")
        (tmp_path / "other.token").write_text("tok-other\n")            # a prepared next config: no change
        nxt = next_config(tmp_path).read_text().replace("admin.token", "other.token")
        (tmp_path / "next-3.yaml").write_text(nxt)
        assert server.reload(tmp_path / "next-3.yaml")["outcome"] == "prepared"
        assert (await c.delete("/v1/drain", json=drain, headers=new)).status == 200

    run(tmp_path, body, token=False)
