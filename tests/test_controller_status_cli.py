"""`firepath status` against a real master process on loopback (and against masters that are down)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from proto.auth import KeyRing
from tests.harness.loopcluster import ROOT, LoopCluster, free_ports, write_cluster_config
from tests.harness.simclient import SimFleet

pytestmark = pytest.mark.timeout(90)


def status(cfg: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "proto.cli", "status", "--config", str(cfg), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)


@contextmanager
def serving(tmp_path: Path, ack_updates: bool = True) -> Iterator[tuple[LoopCluster, int]]:
    """One master on loopback serving a simulated fleet that reported and was acknowledged: (cluster, term)."""
    cluster = LoopCluster(tmp_path, masters=1)
    fleet = SimFleet(cluster.fabric, KeyRing.load(cluster.fabric.security.key_file), cluster.client_addr,
                     ack_updates=ack_updates)
    try:
        cluster.start_all()
        fleet.report()
        got = cluster.wait(lambda: cluster.single_master(), 40.0, fleet.pump)
        assert got, cluster.versions()
        term = got[1]["term"]
        assert cluster.wait(lambda: fleet.on_term(term) and fleet.all_acked(), 15.0, fleet.pump)
        fleet.pump(0.2)                  # the acknowledging LsdRequests (if any) reach the master
        yield cluster, term
    finally:
        cluster.stop_all()
        fleet.close()


def test_status_of_a_serving_master_and_its_clients(tmp_path: Path) -> None:
    with serving(tmp_path) as (cluster, term):
        res = status(cluster.config, "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        state = json.loads(res.stdout)
        assert state["leader"] == "m1" and state["serving"] == ["m1"]
        assert state["masters"]["m1"]["version"]["term"] == term
        c = state["clients"]
        assert c["total"] == c["alive"] == c["on_term"] == len(cluster.fabric.switches)
        assert c["max_lag"] == 0 and c["behind"] == [] and c["silent"] == []
        assert c["confirmed"] == len(cluster.fabric.switches) and c["unconfirmed"] == 0   # they all acked
        text = status(cluster.config)
        assert text.returncode == 0
        assert "m1" in text.stdout and "master" in text.stdout
        assert f"{len(cluster.fabric.switches)}/{len(cluster.fabric.switches)} alive" in text.stdout


def test_status_never_shows_an_unconfirmed_lag(tmp_path: Path) -> None:
    """Fresh-user finding: clients that never confirm a version (real clients ask only on a gap) made
    `status` say "max lag 0" from what the master had merely sent. Now the lag is unknown, the count of
    clients sent the current version without confirming it is shown, and the fabric is still healthy."""
    with serving(tmp_path, ack_updates=False) as (cluster, _term):
        n = len(cluster.fabric.switches)
        res = status(cluster.config, "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        c = json.loads(res.stdout)["clients"]
        assert c["max_lag"] is None and c["confirmed"] == 0 and c["unconfirmed"] == n and c["behind"] == [], c
        text = status(cluster.config).stdout
        assert f"{n} sent its current version; lag not known here" in text and "--client-rest" in text, text
        assert "max lag" not in text and "unknown" not in text
        res = subprocess.run([sys.executable, "-m", "proto.cli", "clients", "--config", str(cluster.config)],
                             cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stdout + res.stderr
        rows = [line.split() for line in res.stdout.splitlines() if line.startswith(("leaf", "spine", "tor"))]
        assert len(rows) == n and all(r[-1] == "unknown" for r in rows), res.stdout


def test_status_with_every_master_down(tmp_path: Path) -> None:
    cfg = write_cluster_config(tmp_path, masters=3)          # free ports, nothing listening
    res = status(cfg, "--timeout", "0.5")
    assert res.returncode == 3                 # tester: not "NO MASTER SERVING" when none could be asked
    assert "NO MASTER ANSWERED from here" in res.stdout and "NO MASTER SERVING" not in res.stdout
    assert res.stdout.count("unreachable") == 3            # as `masters` and `lab status` say
    state = json.loads(status(cfg, "--json", "--timeout", "0.5").stdout)
    assert state["leader"] is None and all("error" in m for m in state["masters"].values())


def test_status_bad_config(tmp_path: Path) -> None:
    res = status(tmp_path / "missing.yaml")
    assert res.returncode == 2 and "firepath status" in res.stderr


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "x"])
def test_status_timeout_must_be_positive(tmp_path: Path, bad: str) -> None:
    """Tester finding 7: --timeout 0 / -1 were accepted (every request then failed as "down")."""
    cfg = write_cluster_config(tmp_path, masters=1)
    res = status(cfg, f"--timeout={bad}")
    assert res.returncode == 2 and "--timeout" in res.stderr, res.stderr
    assert "positive" in res.stderr or "not a number" in res.stderr, res.stderr


@pytest.mark.parametrize("command", [["drains"], ["lsd"], ["masters"], ["config", "rollout", "x.yaml"]])
def test_operator_commands_timeout_must_be_positive(tmp_path: Path, command: list[str]) -> None:
    cfg = write_cluster_config(tmp_path, masters=1)
    res = subprocess.run([sys.executable, "-m", "proto.cli", *command, "--config", str(cfg), "--timeout", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "--timeout" in res.stderr and "positive" in res.stderr, res.stderr


def test_status_takes_lab_like_the_other_commands(tmp_path: Path) -> None:
    """Tester finding 6: `firepath status` lacked --lab. A lab that is not up: a clear error, exit 2; --lab
    and --config together: a usage error."""
    res = subprocess.run([sys.executable, "-m", "proto.cli", "status", "--lab", "nosuchlab7"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "lab nosuchlab7: no " in res.stderr and "firepath lab up" in res.stderr, res.stderr
    cfg = write_cluster_config(tmp_path, masters=1)
    res = subprocess.run([sys.executable, "-m", "proto.cli", "status", "--lab", "x", "--config", str(cfg)],
                         cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and "not allowed with argument" in res.stderr, res.stderr


@contextmanager
def client_rest(states: dict[str, dict]) -> Iterator[dict[str, int]]:
    """One HTTP server per switch on loopback answering `GET /v1/state` with `states[switch]`, as a client's
    REST does: yields {switch: port}."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    servers = {}
    for name, body in states.items():
        class Handler(BaseHTTPRequestHandler):
            doc = json.dumps(body).encode()

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                self.send_response(200 if self.path == "/v1/state" else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(self.doc)

            def log_message(self, *args: object) -> None:
                pass

        servers[name] = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=servers[name].serve_forever, daemon=True).start()
    try:
        yield {name: srv.server_address[1] for name, srv in servers.items()}
    finally:
        for srv in servers.values():
            srv.shutdown()
            srv.server_close()


def test_status_shows_each_clients_own_lag_read_from_its_rest(tmp_path: Path) -> None:
    """Tester: the lag `firepath status` showed was always "unknown": the master learns a client's version
    only from an LsdRequest, sent on a gap. The clients' own REST has it (what `lab status` shows as lsd and
    prog): read there (--lab, --client-rest), a client behind is named even though the master sent it all."""
    from controller.status_cli import gather, healthy, render

    with serving(tmp_path, ack_updates=False) as (cluster, _term):
        version = cluster.get("m1", "/v1/lsd/version")["version"]
        names = [sw.name for sw in cluster.fabric.switches]
        behind, unheard = names[0], names[-1]
        states = {n: {"lsd_version": version, "programmed_version": version} for n in names[:-1]}
        states[behind] = {"lsd_version": 0, "programmed_version": 0}
        master_only = gather(cluster.fabric, 1.0)["clients"]
        assert master_only["lag_source"] == "master" and master_only["max_lag"] is None
        assert master_only["behind"] == []                         # all sent: the master cannot tell
        with client_rest(states) as ports:
            ports[unheard] = free_ports(1)[0]                      # nothing listens there
            state = gather(cluster.fabric, 1.0, ports)
    c = state["clients"]
    assert c["lag_source"] == "clients" and c["read"] == len(names) - 1, c
    assert c["max_lag"] == version and c["max_programmed_lag"] == version, c
    assert c["behind"] == [behind] and c["unread"] == [unheard], c
    assert c["own"][names[1]] == {"lsd_version": version, "programmed_version": version, "lag": 0,
                                  "programmed_lag": 0}
    assert not healthy(state)
    text = render(state)
    assert f"from their own REST ({len(names) - 1} read): max lag {version}, max programmed lag {version}" in text
    assert f"behind: {behind} (holds 0, programmed 0)" in text and f"no REST answer: {unheard}" in text, text


def test_own_lag_of_a_client_that_holds_nothing_or_is_ahead() -> None:
    from controller.status_cli import own_lag

    assert own_lag(7, {"lsd_version": -1, "programmed_version": -1})["lag"] is None      # nothing yet
    assert own_lag(7, {"lsd_version": 8, "programmed_version": 7})["lag"] == 0           # read after a change
    assert own_lag(7, "URLError: refused") == {"error": "URLError: refused"}
    assert "unexpected answer" in own_lag(7, {"lsd_version": "x", "programmed_version": 1})["error"]


def test_client_rest_ports_from_the_config_or_as_the_lab_assigns_them() -> None:
    from controller.status_cli import client_ports
    from lab.labports import REST_BASE_PORT
    from proto.clos import clos_fabric

    with_ports = clos_fabric(pods=0, spines=1, leaves=2, masters=1, rest_base_port=9900)
    assert client_ports(with_ports, lab=False) == {sw.name: 9900 + sw.id for sw in with_ports.switches}
    bare = clos_fabric(pods=0, spines=1, leaves=2, masters=1)
    assert client_ports(bare, lab=False) == {}
    assert client_ports(bare, lab=True) == {sw.name: REST_BASE_PORT + sw.id for sw in bare.switches}


def test_clients_reads_each_clients_own_version(tmp_path: Path, monkeypatch, capsys) -> None:
    """`firepath clients` showed "unknown" in its lag column for nearly every client (the master learns a
    version only from an LsdRequest); with --client-rest (implied by --lab) it reads each client's own REST:
    what it holds and programmed, its lag, and a client behind or silent makes the exit status 1."""
    import controller.ops.clientrest as clientrest
    from proto.cli import main

    with serving(tmp_path, ack_updates=False) as (cluster, _term):
        version = cluster.get("m1", "/v1/lsd/version")["version"]
        names = [sw.name for sw in cluster.fabric.switches]
        states = {n: {"lsd_version": version, "programmed_version": version} for n in names}
        with client_rest(states) as ports:
            monkeypatch.setattr(clientrest, "client_ports", lambda fabric, lab: ports)
            capsys.readouterr()
            assert main(["clients", "--config", str(cluster.config), "--client-rest"]) == 0
            out = capsys.readouterr().out
            rows = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.split()[:1] and ln.split()[0] in names}
            assert set(rows) == set(names) and all(r[-4:] == [str(version), str(version), "0", "0"]
                                                   for r in rows.values()), out
            assert "unknown" not in out and "holds / programmed" in out
        states[names[0]] = {"lsd_version": version, "programmed_version": 0}
        with client_rest(states) as ports:
            ports[names[1]] = free_ports(1)[0]                       # nothing listens there
            monkeypatch.setattr(clientrest, "client_ports", lambda fabric, lab: ports)
            capsys.readouterr()
            assert main(["clients", "--config", str(cluster.config), "--client-rest"]) == 1
            out = capsys.readouterr().out
            line0 = next(ln for ln in out.splitlines() if ln.startswith(names[0] + " "))
            assert line0.split()[-4:] == [str(version), "0", "0", str(version)], out
            assert "no answer" in next(ln for ln in out.splitlines() if ln.startswith(names[1] + " ")), out
            assert main(["clients", "--config", str(cluster.config), "--client-rest", "--json"]) == 0
            doc = json.loads(capsys.readouterr().out)
            assert doc["own"][names[0]]["programmed_lag"] == version and "error" in doc["own"][names[1]], doc
