"""The pieces of the containerised cluster that need no Docker and no root: the CPN link plan
(lab/external.py), per-master addresses in generated configs, `lab config`, `firepath master --health`
and its environment defaults, and the compose file's contract with them."""

from __future__ import annotations

import json
import os
import stat
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Network
from pathlib import Path

import pytest
import yaml

from controller.cli import main as master_main
from lab import external
from lab.cli import COMPOSE_MASTERS, IMAGE_UID
from proto.cli import main as firepath_main
from proto.clos import ClosParams, generate_clos_yaml
from proto.config import load_fabric, parse_fabric
from tests.harness import compose
from tests.harness.loopcluster import ROOT, write_cluster_config

# ---------------------------------------------------------------------------------------------- CPN link plan


def test_subnet_is_a_stable_link_local_slash30_outside_reserved_ranges() -> None:
    a = external.pick_subnet("ctr1", [])
    assert a == external.pick_subnet("ctr1", [])
    assert a.prefixlen == 30 and a.subnet_of(IPv4Network("169.254.0.0/16"))
    for reserved in ("169.254.0.0/24", "169.254.169.0/24", "169.254.255.0/24"):
        assert not a.overlaps(IPv4Network(reserved))
    assert len({external.pick_subnet(f"lab{i}", []) for i in range(50)}) > 45     # names spread out


def test_subnet_skips_networks_in_use() -> None:
    first = external.pick_subnet("ctr1", [])
    second = external.pick_subnet("ctr1", [first])
    assert second != first and not second.overlaps(first)
    # an address in a wider network covering the candidate also blocks it
    assert not external.pick_subnet("ctr1", [IPv4Network(f"{first.network_address}/24", strict=False)]).overlaps(first)


def test_link_routes_every_master_over_the_link_in_the_local_table() -> None:
    fabric = parse_fabric(generate_clos_yaml(ClosParams(pods=0, leaves=2, masters=3,
                                                        master_address="127.0.0.11,127.0.0.12,127.0.0.13")))
    link = external.plan("fplab-x1", "x1", fabric, [])
    assert link.masters == ("127.0.0.11", "127.0.0.12", "127.0.0.13")
    assert len(link.root_if.encode()) <= 15 and link.root_if == external.root_ifname("x1")
    assert external.root_ifname("abcdefghijkl") == "fpmabcdefghijkl" and len("fpmabcdefghijkl") == 15
    root = [" ".join(c) for c in link.root_commands()]
    lab = [" ".join(c) for c in link.lab_commands()]
    assert root[0].startswith(f"ip link add {link.root_if} type veth peer name cpn0 netns fplab-x1")
    assert any(f"net.ipv4.conf.{link.root_if}.route_localnet=1" in c for c in root)
    assert any("net.ipv4.conf.cpn0.route_localnet=1" in c for c in lab)
    assert not any("conf.all." in c for c in root + lab)        # only the two interfaces we create
    for m in link.masters:
        assert f"ip route replace {m}/32 via {link.root_addr} dev cpn0 src {link.lab_addr} table local" in lab
    assert link.record()["lab_addr"] == str(link.lab_addr) == str(link.subnet.network_address + 2)


def test_multicast_distribution_is_refused_with_the_reason(tmp_path: Path) -> None:
    text = generate_clos_yaml(ClosParams(pods=0, leaves=2))
    text += "distribution: {mode: multicast, group: 239.1.1.1, port: 7999}\n"
    path = tmp_path / "f.yaml"
    path.write_text(text)
    with pytest.raises(external.ExternalMastersError, match="multicast"):
        external.plan("fplab-x1", "x1", load_fabric(path), [])


def test_a_master_on_the_labs_own_127_0_0_1_is_refused_naming_file_line_and_field(tmp_path: Path) -> None:
    """Tester: `lab up --external-masters` of a config with its masters at 127.0.0.1 (`config clos`'s default)
    routed the lab namespace's own 127.0.0.1 over the link: every client died at once ('cannot serve REST on
    127.0.0.1:...') and lab up said 'REST TimeoutError' after its timeout. Refused before anything is built."""
    text = generate_clos_yaml(ClosParams(pods=0, leaves=2, masters=3,
                                         master_address="127.0.0.11,127.0.0.1,127.0.0.13"))
    path = tmp_path / "f.yaml"
    path.write_text(text)
    fabric = load_fabric(path)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "id: m2" in t)
    with pytest.raises(external.ExternalMastersError,
                       match=rf"f\.yaml:{line}: masters\[1\]\.address: master m2 at 127\.0\.0\.1: .*127\.0\.0\.11-13"):
        external.check_fabric(fabric)
    path.write_text(text.replace("address: 127.0.0.1,", "address: 127.0.0.12,"))
    external.check_fabric(load_fabric(path))       # other loopback addresses are what the link routes


# ---------------------------------------------------------------------------------------------- configs


def test_clos_masters_get_one_address_each() -> None:
    fabric = parse_fabric(generate_clos_yaml(ClosParams(pods=0, leaves=2, masters=3,
                                                        master_address="127.0.0.11, 127.0.0.12,127.0.0.13")))
    assert [str(m.address) for m in fabric.masters] == ["127.0.0.11", "127.0.0.12", "127.0.0.13"]
    one = parse_fabric(generate_clos_yaml(ClosParams(pods=0, leaves=2, masters=2, master_address="10.9.0.1")))
    assert {str(m.address) for m in one.masters} == {"10.9.0.1"}
    with pytest.raises(ValueError, match="one address or one per master"):
        ClosParams(masters=3, master_address="127.0.0.11,127.0.0.12")
    with pytest.raises(ValueError, match="master_address"):
        ClosParams(masters=1, master_address="127.0.0.300")


def test_lab_config_writes_a_lab_ready_config_and_a_private_key(tmp_path: Path, capsys, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("SUDO_GID", raising=False)       # under sudo the token would be the operator group's too
    out = tmp_path / "cfg"
    assert firepath_main(["lab", "config", "-o", str(out), "--name", "t1", "--key-owner", str(os.getuid()),
                          "--master-base-port", "7400"]) == 0
    fabric = load_fabric(out / "fabric.yaml")
    assert [str(m.address) for m in fabric.masters] == list(COMPOSE_MASTERS)
    assert [m.rest_port for m in fabric.masters] == [7601, 7602, 7603]
    assert all(sw.ovs and sw.rest_port for sw in fabric.switches)     # the lab can drive it
    assert fabric.timers.master_dead == pytest.approx(0.4)           # the lab's timers
    key = (out / "fabric.key").stat()
    assert stat.S_IMODE(key.st_mode) == 0o400 and key.st_uid == os.getuid()
    # the drain/rollout token (tester: the containerised cluster had none, so no drain could be sent to it)
    token = (out / "admin.token").stat()
    assert stat.S_IMODE(token.st_mode) == 0o400 and token.st_uid == os.getuid()
    assert fabric.security.admin_token_file == out / "admin.token"
    assert len((out / "admin.token").read_text().strip()) == 64
    # refused as an option value (usage error, status 2), before anything is generated
    assert firepath_main(["lab", "config", "-o", str(tmp_path / "bad"), "--master-address", "127.0.0.1,nope"]) == 2
    assert "--master-address: 'nope' is not an IPv4 address" in capsys.readouterr().err


def test_lab_config_lets_the_operators_group_read_the_admin_token(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """Review 38: admin.token was 0400 for the masters' uid (10001), so an operator who is not root could not read
    it to drain or roll out. `--token-group GID` (default under sudo: $SUDO_GID) makes it 0440 for that group;
    the key stays 0400."""
    if os.geteuid() != 0:
        pytest.skip("changing a file's group to another gid needs root (CI runs as root)")
    out = tmp_path / "cfg"
    assert firepath_main(["lab", "config", "-o", str(out), "--key-owner", "10001", "--token-group", "12345"]) == 0
    token, key = (out / "admin.token").stat(), (out / "fabric.key").stat()
    assert (stat.S_IMODE(token.st_mode), token.st_uid, token.st_gid) == (0o440, 10001, 12345)
    assert stat.S_IMODE(key.st_mode) == 0o400 and key.st_uid == 10001
    monkeypatch.setenv("SUDO_GID", "23456")
    (out / "fabric.key").unlink()
    assert firepath_main(["lab", "config", "-o", str(out), "--key-owner", "10001"]) == 0
    token = (out / "admin.token").stat()
    assert (stat.S_IMODE(token.st_mode), token.st_gid) == (0o440, 23456)
    monkeypatch.delenv("SUDO_GID")
    (out / "fabric.key").unlink()
    assert firepath_main(["lab", "config", "-o", str(out), "--key-owner", "10001"]) == 0
    assert stat.S_IMODE((out / "admin.token").stat().st_mode) == 0o400


def test_lab_config_writes_a_new_token_with_a_new_secret_and_names_a_directory_in_its_place(
        tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """With fabric.key removed for a new secret (README), the old admin.token (mode 0400) is replaced; a
    directory docker-compose made for a missing admin.token mount is named, nothing written."""
    out = tmp_path / "cfg"
    argv = ["lab", "config", "-o", str(out), "--key-owner", str(os.getuid())]
    assert firepath_main(argv) == 0
    old = (out / "admin.token").read_text()
    (out / "fabric.key").unlink()
    assert firepath_main(argv) == 0 and (out / "admin.token").read_text() != old
    (out / "fabric.key").unlink()
    (out / "admin.token").unlink()
    (out / "admin.token").mkdir()
    capsys.readouterr()
    assert firepath_main(argv) == 1
    assert "admin.token is a directory (docker-compose makes one" in capsys.readouterr().err
    assert not (out / "fabric.key").exists()


def test_lab_config_never_overwrites_an_existing_secret(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """Tester: a second `lab config -o docker/` replaced docker/fabric.key (0400 does not stop root) under the
    masters running on it: a lab following them could no longer authenticate. As `config keygen`: refused."""
    out = tmp_path / "cfg"
    argv = ["lab", "config", "-o", str(out), "--key-owner", str(os.getuid())]
    assert firepath_main(argv) == 0
    key, config = (out / "fabric.key").read_bytes(), (out / "fabric.yaml").read_bytes()
    capsys.readouterr()
    assert firepath_main([*argv, "--timer", "nd_dead_ms=300"]) == 1
    assert "fabric.key already exists; not overwriting it" in capsys.readouterr().err
    assert (out / "fabric.key").read_bytes() == key and (out / "fabric.yaml").read_bytes() == config


def test_compose_file_matches_the_config_generator_and_the_image() -> None:
    doc = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = doc["services"]
    assert sorted(services) == list(compose.SERVICES)
    assert tuple(compose.MASTER_ADDRESSES) == COMPOSE_MASTERS
    volumes = set()
    for sid, svc in services.items():
        assert svc["network_mode"] == "host"
        assert svc["environment"]["FIREPATH_ID"] == sid
        # SOURCE:TARGET[:ro]; SOURCE may be ${VAR:-default}
        mounts = {(v[:-3] if v.endswith(":ro") else v).rsplit(":", 1)[1]: v for v in svc["volumes"]}
        assert mounts["/etc/firepath/fabric.yaml"].endswith(":ro") and mounts["/etc/firepath/fabric.key"].endswith(":ro")
        assert mounts["/etc/firepath/admin.token"] == "${FIREPATH_ADMIN_TOKEN:-./admin.token}:/etc/firepath/admin.token:ro"
        state = mounts["/var/lib/firepath"].rsplit(":", 1)[0]
        volumes.add(state)
        assert state in doc["volumes"]
    assert len(volumes) == 3                                        # each replica its own state
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert f"ARG FIREPATH_UID={IMAGE_UID}" in dockerfile and "USER firepath" in dockerfile
    assert "--no-index" in dockerfile and "ARG BASE_IMAGE=" in dockerfile


# ---------------------------------------------------------------------------------------------- --health


class _Rest(BaseHTTPRequestHandler):
    body = b'{"role": "backup", "term": 1, "version": 3}'

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def test_health_answers_from_the_replicas_rest_api(tmp_path: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    cfg = write_cluster_config(tmp_path, masters=3)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Rest)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        assert master_main(["master", "--config", str(cfg), "--id", "m2", "--health", "--rest-port", str(port)]) == 0
        # the image's way: config and id from the environment
        monkeypatch.setenv("FIREPATH_CONFIG", str(cfg))
        monkeypatch.setenv("FIREPATH_ID", "m2")
        assert master_main(["master", "--health", "--rest-port", str(port)]) == 0
        _Rest.body = json.dumps({"error": "nope"}).encode()
        assert master_main(["master", "--health", "--rest-port", str(port)]) == 1
        assert "no role" in capsys.readouterr().err
    finally:
        server.shutdown()
        server.server_close()
        _Rest.body = b'{"role": "backup", "term": 1, "version": 3}'
    # nothing listens at m2's own REST port: unhealthy, with the address in the message
    assert master_main(["master", "--health", "--timeout", "0.5"]) == 1
    m2 = load_fabric(cfg).master("m2")
    assert f"{m2.address}:{m2.rest_port}" in capsys.readouterr().err
