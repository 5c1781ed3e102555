"""proto/config.py: a fabric every switch of which can be reached, with one name per node (tester: a leaf
with no links and a host named like a switch both passed `firepath config check`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proto import cli
from proto.config import ConfigError, parse_fabric
from tests.test_config import BASE, edit, expect_error

ROOT = Path(__file__).resolve().parent.parent
LEAFSPINE = ROOT / "examples" / "leafspine.yaml"

# BASE (tests/test_config.py) with one more ToR at line 24, cabled by nothing
TOR_3 = """\
  - name: tor-3
    id: 4
    role: tor
    loopback: 10.255.0.4/32
    prefixes: [10.3.0.0/24]
    hosts:
      - {name: h3, port: 100, ip: 10.3.0.10, mac: "02:00:00:00:00:03"}
links:
"""


def with_tor_3(links: str = "") -> str:
    return edit("links:\n", TOR_3 + links)


# ----------------------------------------------------------------------------------------- unreachable


def test_a_tor_without_links_is_refused() -> None:
    expect_error(with_tor_3(), 24, "switches[3]",
                 "tor tor-3 has no fabric link (no entry of links: names it): no other switch can reach it or "
                 "its host(s) h3")


def test_a_spine_without_links_is_refused() -> None:
    text = edit("links:\n", "  - {name: spine-2, id: 4, role: spine, loopback: 10.255.0.4/32}\nlinks:\n")
    expect_error(text, 24, "switches[3]", "spine spine-2 has no fabric link")


def test_an_island_is_refused_naming_its_switches() -> None:
    # tor-3 and spine-2 are cabled to each other only: two fabrics under one name
    text = with_tor_3().replace(
        "links:\n", "  - {name: spine-2, id: 5, role: spine, loopback: 10.255.0.5/32}\nlinks:\n"
    ) + '  - {a: "tor-3:1", b: "spine-2:1"}\n'
    expect_error(text, 24, "switches[3]",
                 "switch tor-3 is cut off from the rest of the fabric: its links connect only 2 switch(es) "
                 "(tor-3, spine-2), none of the other 3 (such as spine-1, line 6): link the parts")


def test_the_island_is_the_smaller_part_whatever_the_order() -> None:
    # the first switch listed is the one cut off: the error names it, not the three that are cabled together
    text = BASE.replace("switches:\n", "switches:\n  - {name: spine-9, id: 9, role: spine, loopback: 10.255.0.9/32}\n"
                                       "  - {name: spine-8, id: 8, role: spine, loopback: 10.255.0.8/32}\n")
    text += '  - {a: "spine-9:1", b: "spine-8:1"}\n'
    e = expect_error(text, 6, "switches[0]", "switch spine-9 is cut off from the rest of the fabric")
    assert "(spine-9, spine-8), none of the other 3 (such as spine-1, line 8)" in e.problem


def test_several_switches_and_no_links_are_refused() -> None:
    expect_error(BASE.split("links:\n")[0], 1, "links", "3 switches and no link between them")
    expect_error(BASE.split("links:\n")[0] + "links: []\n", 24, "links", "3 switches and no link between them")


def test_a_one_switch_fabric_needs_no_link() -> None:
    one = BASE.split("  - name: spine-1\n")[0] + (
        "  - name: tor-1\n    id: 2\n    role: tor\n    prefixes: [10.1.0.0/24]\n"
        "    hosts:\n      - {name: h1, port: 100, ip: 10.1.0.10, mac: \"02:00:00:00:00:01\"}\n")
    assert [s.name for s in parse_fabric(one).switches] == ["tor-1"]
    assert [s.name for s in parse_fabric(one + "links: []\n").switches] == ["tor-1"]


def test_a_switch_linked_twice_to_the_same_neighbour_is_reached() -> None:
    f = parse_fabric(with_tor_3('  - {a: "tor-3:1", b: "spine-1:3"}\n  - {a: "tor-3:2", b: "spine-1:4"}\n'))
    assert f.links_of("tor-3") == (0, 1) and len(f.links) == 4


def test_config_check_refuses_a_leaf_without_links(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The tester's case: examples/leafspine.yaml with leaf-4's links deleted."""
    text = "".join(line for line in LEAFSPINE.read_text().splitlines(True) if '"leaf-4:' not in line)
    cfg = tmp_path / "fabric.yaml"
    cfg.write_text(text)
    (tmp_path / "test-only-insecure.key").write_bytes((LEAFSPINE.parent / "test-only-insecure.key").read_bytes())
    assert cli.main(["config", "check", str(cfg)]) == 1
    out, err = capsys.readouterr()
    line = text.splitlines().index("  - name: leaf-4") + 1
    assert out == "" and err == (f"{cfg}:{line}: switches[5]: tor leaf-4 has no fabric link (no entry of links: "
                                 f"names it): no other switch can reach it or its host(s) h-4-1\n")


# ----------------------------------------------------------------------------------------- one name, one node


@pytest.mark.parametrize(("label", "old", "new", "line", "field", "problem"), [
    ("host named like a later switch", "{name: h1,", "{name: tor-2,", 16, "switches[1].hosts[0].name",
     "'tor-2' is also the name of a switch (line 17): hosts and switches need distinct names"),
    ("host named like its own tor", "{name: h2,", "{name: tor-2,", 23, "switches[2].hosts[0].name",
     "'tor-2' is also the name of a switch (line 17): hosts and switches need distinct names"),
    ("host named like a spine", "{name: h2,", "{name: spine-1,", 23, "switches[2].hosts[0].name",
     "'spine-1' is also the name of a switch (line 6)"),
    ("host named like a master", "{name: h2,", "{name: m1,", 23, "switches[2].hosts[0].name",
     "'m1' is also the id of a master (line 4): hosts and masters need distinct names"),
    ("host named like another host", "{name: h2,", "{name: h1,", 23, "switches[2].hosts[0].name",
     "duplicate host name 'h1' (also at line 16)"),
    ("master named like a switch", "{id: m1,", "{id: spine-1,", 4, "masters[0].id",
     "'spine-1' is also the name of a switch (line 6): masters and switches need distinct names"),
])
def test_a_name_names_one_node(label: str, old: str, new: str, line: int, field: str, problem: str) -> None:
    expect_error(edit(old, new), line, field, problem)


def test_config_check_refuses_a_host_named_like_a_switch(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    text = LEAFSPINE.read_text().replace("{name: h-4-1,", "{name: spine-1,")
    cfg = tmp_path / "fabric.yaml"
    cfg.write_text(text)
    (tmp_path / "test-only-insecure.key").write_bytes((LEAFSPINE.parent / "test-only-insecure.key").read_bytes())
    assert cli.main(["config", "check", str(cfg)]) == 1
    out, err = capsys.readouterr()
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "{name: spine-1," in t)
    assert out == "" and err == (f"{cfg}:{line}: switches[5].hosts[0].name: 'spine-1' is also the name of a switch "
                                 f"(line 11): hosts and switches need distinct names\n")


def test_the_examples_still_load() -> None:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        try:
            parse_fabric(path.read_text(), source=str(path), base_dir=path.parent)
        except ConfigError as e:        # pragma: no cover - the failure message
            pytest.fail(f"{path.name}: {e}")
