"""`firepath config add-tor` (proto/addtor.py): a rack added without moving anything that exists (issue #21)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proto.addtor import add_tor
from proto.cli import main
from proto.clos import ClosParams, generate_clos_yaml
from proto.config import ConfigError, parse_fabric


def _clos3(**kw) -> str:
    return generate_clos_yaml(ClosParams(name="t", spines=2, pods=2, aggs_per_pod=2, tors_per_pod=2, hosts_per_tor=2,
                                         masters=1, ovs_base_port=41000, rest_base_port=40000, **kw))


def test_a_tor_added_like_another_keeps_everything_and_takes_the_next_free_ports_prefix_and_id() -> None:
    text = _clos3()
    old = parse_fabric(text, source="f.yaml")
    added = add_tor(text, "f.yaml", "tor-2-2")
    new = parse_fabric(added.text, source="f.yaml")
    assert added.switch == "tor-2-3" and added.hosts == ("h-2-3-1", "h-2-3-2")
    assert new.switches[: len(old.switches)] == old.switches                     # nothing moved
    assert [link.name for link in new.links[: len(old.links)]] == [link.name for link in old.links]
    sw = new.switch("tor-2-3")
    assert sw.id == max(s.id for s in old.switches) + 1 and sw.role.value == "tor"
    assert sw.ovs == f"tcp:127.0.0.1:{41000 + sw.id}" and sw.rest_port == 40000 + sw.id
    assert all(not p.overlaps(q) for s in old.switches for q in s.prefixes for p in sw.prefixes)
    assert sw.loopback not in [s.loopback for s in old.switches]
    # cabled like tor-2-2: the same aggs, one link each, on the aggs' next free port
    like = {new.links[i].b.switch if new.links[i].a.switch == "tor-2-2" else new.links[i].a.switch
            for i in old.links_of("tor-2-2")}
    mine = [new.links[i] for i in new.links_of("tor-2-3")]
    assert {lk.b.switch for lk in mine} == like
    for lk in mine:
        assert lk.b.port == max(old.fabric_ports(lk.b.switch)) + 1
    assert {h.ip for h in sw.hosts} <= {a for p in sw.prefixes for a in p.hosts()}
    assert len({h.mac for h in new.hosts}) == len(new.hosts)
    assert new.digest != old.digest
    # again: tor-2-4, on the next ports and prefix
    again = parse_fabric(add_tor(added.text, "f.yaml", "tor-2-3").text, source="f.yaml")
    assert again.switch("tor-2-4").prefixes[0] != sw.prefixes[0]


def test_a_fabric_with_borders_still_finds_a_free_prefix() -> None:
    """A border's 0.0.0.0/0 overlaps everything but assigns no address: it is not taken."""
    text = generate_clos_yaml(ClosParams(name="t", spines=2, pods=2, aggs_per_pod=2, tors_per_pod=2, masters=1,
                                         border_pods=1, external=True))
    new = parse_fabric(add_tor(text, "f.yaml", "tor-2-2").text, source="f.yaml")
    assert str(new.switch("tor-2-3").prefixes[0]) == "10.0.4.0/24"
    ext = {p for s in new.switches if s.bgp is not None for p in s.bgp.peers}
    assert all(lk.a.port not in {p.port for p in ext} for lk in new.links if lk.a.switch.startswith("border"))


def test_a_leaf_added_to_a_leaf_spine_connects_every_spine() -> None:
    text = generate_clos_yaml(ClosParams(name="t", spines=3, pods=0, leaves=4, uplinks=2, masters=1))
    added = parse_fabric(add_tor(text, "f.yaml", "leaf-4").text, source="f.yaml")
    links = [added.links[i] for i in added.links_of("leaf-5")]
    assert len(links) == 6 and {lk.b.switch for lk in links} == {"spine-1", "spine-2", "spine-3"}


def test_capacities_are_copied_as_yaml_numbers() -> None:
    """A like-link of capacity 1000000 (the largest allowed) was written as `1e+06`, a string to YAML 1.1."""
    text = generate_clos_yaml(ClosParams(name="t", spines=2, pods=0, leaves=2, masters=1))
    text = text.replace('{a: "leaf-2:1", b: "spine-1:2"}', '{a: "leaf-2:1", b: "spine-1:2", capacity: 1000000}')
    text = text.replace('{a: "leaf-2:2", b: "spine-2:2"}', '{a: "leaf-2:2", b: "spine-2:2", capacity: 0.5}')
    added = parse_fabric(add_tor(text, "f.yaml", "leaf-2").text, source="f.yaml")
    assert sorted(added.links[i].capacity for i in added.links_of("leaf-3")) == [0.5, 1_000_000]


@pytest.mark.parametrize(("like", "name", "why"), [
    ("spine-1", None, "a spine, not a ToR"),
    ("nosuch", None, "no such switch"),
    ("tor-1-1", "tor-1-2", "already a switch"),
])
def test_bad_requests_name_the_problem(like: str, name: str | None, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        add_tor(_clos3(), "f.yaml", like, name)


def test_a_flow_style_switch_list_is_refused_not_mangled() -> None:
    text = _clos3()
    f = parse_fabric(text, source="f.yaml")
    import yaml

    doc = yaml.safe_load(text)
    flow = yaml.safe_dump(doc, default_flow_style=True)
    assert parse_fabric(flow, source="f.yaml").digest == f.digest
    with pytest.raises(ConfigError, match="block-style"):
        add_tor(flow, "f.yaml", "tor-1-1")


def test_cli_prints_or_rewrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "fabric.yaml"
    cfg.write_text(_clos3())
    assert main(["config", "add-tor", str(cfg), "--like", "tor-1-1"]) == 0
    out, err = capsys.readouterr()
    assert "name: tor-1-3" in out and "added tor-1-3" in err and "tor-1-3" not in cfg.read_text()
    assert main(["config", "add-tor", str(cfg), "--like", "tor-1-1", "--write"]) == 0
    assert parse_fabric(cfg.read_text(), source=str(cfg)).switch("tor-1-3").hosts
    assert main(["config", "add-tor", str(cfg), "--like", "agg-1-1"]) == 1
    assert "not a ToR" in capsys.readouterr().err


HAND = """name: hand
security: {key_file: k.key}
masters:
  - {id: m1, address: 127.0.0.1, client_port: 6601, peer_port: 6701, rest_port: 6801}
switches:
  - {name: spine-1, id: 1, role: spine}
  - name: rack7
    id: 2
    role: tor
    prefixes: [10.0.3.0/24, 10.0.9.0/24]
    hosts:
      - {name: h-2-1, port: 100, ip: 10.0.3.10, mac: "02:00:00:00:00:01"}
      - {name: h-2-2, port: 101, ip: 10.0.9.10, mac: "02:00:00:00:00:02"}
  - name: rack7-1
    id: 3
    role: tor
    prefixes: [10.0.4.0/23]
    hosts:
      - {name: h-1-1, port: 100, ip: 10.0.4.10, mac: "02:00:00:00:00:03"}
links:
  - {a: "rack7:1", b: "spine-1:1", weight: 3, capacity: 40}
  - {a: "rack7-1:1", b: "spine-1:2"}
"""


def test_a_hand_written_tor_with_two_prefixes_weights_and_taken_host_names(tmp_path: Path) -> None:
    """Several prefixes are allocated one after the other, the template links' weight and capacity are
    kept, and a generated host name already in use moves to the next free number."""
    (tmp_path / "k.key").write_text("ab" * 32 + "\n")
    base = parse_fabric(HAND, source="hand.yaml", base_dir=tmp_path)
    added = add_tor(HAND, "hand.yaml", "rack7", "rack7-2", base_dir=tmp_path)
    new = parse_fabric(added.text, source="hand.yaml", base_dir=tmp_path)
    sw = new.switch("rack7-2")
    assert len(sw.prefixes) == 2 and not sw.prefixes[0].overlaps(sw.prefixes[1])
    assert all(not p.overlaps(q) for s in base.switches for q in s.prefixes for p in sw.prefixes)
    (link,) = [new.links[i] for i in new.links_of("rack7-2")]
    assert (link.weight, link.capacity) == (3, 40.0)
    assert [h.name for h in sw.hosts] == ["h-2-3", "h-2-4"]     # h-2-1 and h-2-2 are rack7's



def test_the_generators_do_not_edit_header_is_replaced_once_edited(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Fresh-user finding: after add-tor (and keygen --add --write) the file still said "Do not edit:
    regenerate." — false, regenerating would undo the edit. The line now says who edited it (once per tool)."""
    text = _clos3()
    assert "Do not edit: regenerate." in text
    once = add_tor(text, "f.yaml", "tor-2-2").text
    assert "Do not edit" not in once and len(once.splitlines()) > len(text.splitlines())
    header = [line for line in once.splitlines() if "edited since by" in line]
    assert len(header) == 1 and header[0] in once.splitlines()[:3], header
    assert header[0].endswith(". As generated; edited since by firepath config add-tor: regenerating would undo that.")
    twice = add_tor(once, "f.yaml", "tor-2-3").text
    assert [line for line in twice.splitlines() if "edited since by" in line] == header    # not repeated
    # keygen --add --write: the key set is an edit too
    cfg = tmp_path / "f.yaml"
    cfg.write_text(twice.replace('key_file: "fabric.key"', 'key_file: "k1.key"'))
    (tmp_path / "k1.key").write_text("ab" * 32 + "\n")
    assert main(["config", "keygen", "--add", str(cfg), "--write"]) == 0, capsys.readouterr().err
    lines = [line for line in cfg.read_text().splitlines() if "edited since by" in line]
    assert len(lines) == 1 and lines[0].endswith("edited since by firepath config add-tor, firepath config keygen "
                                                 "--add: regenerating would undo that."), lines
    # a hand-written file has no header: nothing is added
    hand = add_tor(HAND, "hand.yaml", "rack7", "rack7-2", base_dir=tmp_path).text
    assert "edited since" not in hand and hand.startswith(HAND.split("\n", 1)[0])


def test_errors_in_the_grown_config_cite_the_users_file_and_lines(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh-user finding: an error found when the grown text was validated cited line numbers of that
    intermediate text (past the end of the user's file). Now: the user's line the added lines follow, the
    added line quoted, and any "line N" of the problem mapped back to the user's file."""
    (tmp_path / "k.key").write_text("ab" * 32 + "\n")
    # add-tor now picks a free MAC (test_every_derived_value_is_free); a derivation that did not (what it did
    # until 2026-12-05) is the simplest error in an added line: rack7-2's first host gets h-1-1's MAC.
    text = HAND.replace('mac: "02:00:00:00:00:03"', 'mac: "02:01:00:00:04:01"')
    monkeypatch.setattr("proto.addtor._free_mac", lambda *_a: "02:01:00:00:04:01")
    mac_line = next(i for i, line in enumerate(text.splitlines(), 1) if "02:01:00:00:04:01" in line)
    switches_end = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("links:")) - 1
    with pytest.raises(ConfigError) as e:
        add_tor(text, "hand.yaml", "rack7", "rack7-2", base_dir=tmp_path)
    err = e.value
    assert err.file == "hand.yaml" and err.line == switches_end, str(err)
    assert f"duplicate MAC 02:01:00:00:04:01 (also used by h-1-1 at line {mac_line})" in err.problem, str(err)
    assert "in the lines add-tor adds for rack7-2 after line" in err.problem, str(err)
    assert 'mac: "02:01:00:00:04:01"' in err.problem, str(err)                  # the added line, quoted
    assert err.line <= len(text.splitlines())


def test_added_line_numbers_map_back_to_the_users_file() -> None:
    from proto.addtor import _source_line

    inserts = [(10, 5), (30, 2)]          # 5 lines after line 10, then (in the grown text) 2 after line 30
    assert _source_line(7, inserts) == (7, False)
    assert _source_line(12, inserts) == (10, True)
    assert _source_line(16, inserts) == (11, False)
    assert _source_line(31, inserts) == (25, True)       # after line 30 of the grown text = 25 of the user's
    assert _source_line(33, inserts) == (26, False)


def test_a_grow_interrupted_while_building_is_refused_by_name_on_retry(tmp_path: Path) -> None:
    """`lab reload all --grow` records what it will build before building it; interrupted, the record said
    the new switch existed and a retry skipped it silently (tester). Now the record keeps what was being built
    until the build ends, and a retry names it instead of going on."""
    from types import SimpleNamespace

    from lab.fabric import LabError
    from lab.grow import grow
    from lab.state import LabState

    st = LabState(name="gx", dir=str(tmp_path), config=str(tmp_path / "fabric.yaml"),
                  growing=["tor-2-3", "agg-2-1:5--tor-2-3:1"])
    st.save()
    assert LabState.load(tmp_path).growing == st.growing          # kept across processes (the record)
    with pytest.raises(LabError, match=r"stopped while building tor-2-3, agg-2-1:5--tor-2-3:1.*lab up --clean"):
        grow(SimpleNamespace(state=st), object(), log=lambda m: None)


def test_write_keeps_the_files_mode_owner_and_symlink(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Tester: `add-tor --write` wrote a temp file and renamed it over the config: a 0640 root:group config came
    back 0644 root:root, a 0444 one writable, and fabric.yaml -> v3.yaml became a plain file beside an unchanged
    v3.yaml. The target is rewritten in place of itself, keeping its mode and owner; the link stays a link."""
    import os

    real = tmp_path / "v3.yaml"
    real.write_text(_clos3())
    os.chmod(real, 0o640)
    gid = 1 if os.geteuid() == 0 else os.getegid()
    os.chown(real, os.geteuid(), gid)
    link = tmp_path / "fabric.yaml"
    link.symlink_to("v3.yaml")
    assert main(["config", "add-tor", str(link), "--like", "tor-1-1", "--write"]) == 0
    assert link.is_symlink() and "name: tor-1-3" in real.read_text()
    st = real.stat()
    assert (st.st_mode & 0o777, st.st_gid) == (0o640, gid)
    assert not list(tmp_path.glob(".*.tmp"))
    capsys.readouterr()
    # keygen --add --write rewrites the config the same way (atomically: a crash leaves the old file whole)
    (tmp_path / "k.key").write_text("ab" * 32 + "\n")
    real.write_text(real.read_text().replace('key_file: "fabric.key"', 'key_file: "k.key"'))
    os.chmod(real, 0o604)
    assert main(["config", "keygen", "--add", str(link), "--write"]) == 0, capsys.readouterr().err
    assert link.is_symlink() and (real.stat().st_mode & 0o777) == 0o604 and "id: 2" in real.read_text()


def test_links_before_switches_in_the_file_get_both_insertions_right(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Both sequences are found in one YAML compose and the lines inserted last-first: a file whose `links:`
    comes before `switches:` grows as one whose order is the usual one, and an error in the added switch lines
    is still cited after the user's own line (the insertion before it shifts nothing above it)."""
    (tmp_path / "k.key").write_text("ab" * 32 + "\n")
    head, rest = HAND.split("switches:\n", 1)
    switches, links = rest.split("links:\n", 1)
    swapped = f"{head}links:\n{links}switches:\n{switches}"
    usual = parse_fabric(add_tor(HAND, "hand.yaml", "rack7", "rack7-2", base_dir=tmp_path).text,
                         source="hand.yaml", base_dir=tmp_path)
    grown = parse_fabric(add_tor(swapped, "hand.yaml", "rack7", "rack7-2", base_dir=tmp_path).text,
                         source="hand.yaml", base_dir=tmp_path)
    assert grown.switch("rack7-2") == usual.switch("rack7-2")
    assert sorted(map(str, grown.links)) == sorted(map(str, usual.links))
    bad = swapped.replace('mac: "02:00:00:00:00:03"', 'mac: "02:01:00:00:04:01"')     # rack7-2's first MAC
    monkeypatch.setattr("proto.addtor._free_mac", lambda *_a: "02:01:00:00:04:01")   # as add-tor did before
    with pytest.raises(ConfigError) as e:
        add_tor(bad, "hand.yaml", "rack7", "rack7-2", base_dir=tmp_path)
    assert e.value.line == len(bad.splitlines()), str(e.value)          # the switches end the file
    assert "in the lines add-tor adds for rack7-2 after line" in e.value.problem


def test_every_derived_value_is_free(tmp_path: Path) -> None:
    """Black-box test, 2026-12-05: on a hand-written config whose ports and MACs do not follow the generator's
    plan, add-tor gave the new ToR the OVS target and REST port of an existing switch (two clients on one
    bridge; `lab reload --grow` refused the clash) and failed outright when the host MAC it derives
    (02:01:<id>:<k>) or the switch MAC the loader derives (0e:00:<id>) was in use. Now each is the next free
    one, and the grown config is one a lab accepts (lab.labports)."""
    from lab.labports import LabPorts

    (tmp_path / "k.key").write_text("ab" * 32 + "\n")
    text = HAND.replace(
        "  - name: rack7-1\n    id: 3\n    role: tor\n",
        # rack7-2 gets id 4: its planned OVS port (16002 + 2) and REST port (9002 + 2) are rack7-1's, its own
        # default MAC 0e:00:00:00:00:04 is rack7-1's, its first host's 02:01:00:00:04:01 is h-1-1's
        '  - name: rack7-1\n    id: 3\n    role: tor\n    mac: "0e:00:00:00:00:04"\n'
        "    ovs: tcp:127.0.0.1:16004\n    rest_port: 9004\n",
    ).replace("    id: 2\n    role: tor\n", "    id: 2\n    role: tor\n    ovs: tcp:127.0.0.1:16002\n    rest_port: 9002\n", 1)
    text = text.replace('mac: "02:00:00:00:00:03"', 'mac: "02:01:00:00:04:01"')
    base = parse_fabric(text, source="hand.yaml", base_dir=tmp_path)
    LabPorts(base)                                            # the starting point is a valid lab config
    grown = parse_fabric(add_tor(text, "hand.yaml", "rack7", "rack7-2", base_dir=tmp_path).text,
                         source="hand.yaml", base_dir=tmp_path)
    sw = grown.switch("rack7-2")
    others = [s for s in grown.switches if s.name != "rack7-2"]
    assert sw.ovs not in {s.ovs for s in others} and sw.rest_port not in {s.rest_port for s in others}
    assert (sw.ovs, sw.rest_port) == ("tcp:127.0.0.1:16005", 9005)          # the first free ports above the plan
    macs = [h.mac for h in grown.hosts] + [s.mac for s in grown.switches]
    assert len(macs) == len(set(macs)), macs
    assert [h.mac for h in sw.hosts] == ["02:01:00:00:04:02", "02:01:00:00:04:03"]
    LabPorts(grown)                                           # raised "port ... used twice in the lab" before
