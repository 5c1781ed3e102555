"""Control-plane network (CPN) fault injection of the lab: rule generation (pure), the injector's checks, the
CLI, and the rules' effect on real UDP sockets in a throwaway namespace (root + nft).

The end-to-end behaviour of the fabric under these faults is in tests/test_lab_gray_e2e.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab import inject, nft
from lab import netns as nsutil
from lab.cli import describe_fault
from lab.fabric import Lab, LabError, client_cpn_address, generate_config, load_fabric
from lab.state import LabState

MASTER = ("127.0.0.1", 6601)


def _rules(script: str) -> list[str]:
    return [line.strip() for line in script.splitlines() if line.strip().startswith("iifname")]


def test_cpn_rules_match_one_port_one_direction() -> None:
    to = _rules(nft.cpn_script("fplab_x_cpn0", MASTER, "to-switches"))
    assert to == ['iifname "lo" ip saddr 127.0.0.1 udp sport 6601 counter drop']
    frm = _rules(nft.cpn_script("fplab_x_cpn0", MASTER, "from-switches"))
    assert frm == ['iifname "lo" ip daddr 127.0.0.1 udp dport 6601 counter drop']
    assert _rules(nft.cpn_script("fplab_x_cpn0", MASTER, "both")) == to + frm


def test_cpn_rules_for_one_switch_name_its_address() -> None:
    rules = _rules(nft.cpn_script("t", MASTER, "both", client="127.1.0.7"))
    assert rules == ['iifname "lo" ip saddr 127.0.0.1 udp sport 6601 ip daddr 127.1.0.7 counter drop',
                     'iifname "lo" ip daddr 127.0.0.1 udp dport 6601 ip saddr 127.1.0.7 counter drop']


def test_cpn_script_is_an_atomic_replace_of_an_inet_input_table() -> None:
    script = nft.cpn_script("fplab-x-cpn0", MASTER, "to-switches")
    lines = script.splitlines()
    # declare, delete, re-create: one transaction, repeatable; dashes mapped for nft
    assert lines[:3] == ["table inet fplab_x_cpn0", "delete table inet fplab_x_cpn0", "table inet fplab_x_cpn0 {"]
    assert "type filter hook input priority -300; policy accept;" in script
    assert "output" not in script          # an output drop would fail the sender's sendmsg (EPERM)


@pytest.mark.parametrize("args, match", [
    (("t", MASTER, "sideways"), "direction"),
    (("t", ("127.0.0.300", 6601), "both"), "127.0.0.300"),
    (("t", ("127.0.0.1", 0), "both"), "port 0"),
    (("t", MASTER, "both", "not-an-ip"), "not-an-ip"),
    (("bad name!", MASTER, "both"), "nft table name"),
])
def test_cpn_script_refuses_bad_arguments(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        nft.cpn_script(*args)


def test_remove_refuses_an_unknown_family() -> None:
    with pytest.raises(ValueError, match="family"):
        nft.remove("t", None, family="bridge")


def _lab(tmp_path: Path) -> Lab:
    fabric = load_fabric(generate_config(tmp_path, "x1", spines=2, pods=0, leaves=4, masters=3))
    st = LabState(name="x1", dir=str(tmp_path), config=str(tmp_path / "fabric.yaml"), netns="fplab-x1")
    return Lab(st, fabric)


def test_client_cpn_addresses_are_distinct_per_switch(tmp_path: Path) -> None:
    lab = _lab(tmp_path)
    addrs = {sw.name: client_cpn_address(lab.fabric, sw.name) for sw in lab.fabric.switches}
    assert len(set(addrs.values())) == len(addrs)
    assert all(a.startswith("127.1.") for a in addrs.values())
    sw = lab.fabric.switches[0]
    assert addrs[sw.name] == f"127.1.{sw.id >> 8}.{sw.id & 255}"
    with pytest.raises(KeyError):
        client_cpn_address(lab.fabric, "nope")


@pytest.mark.parametrize("kwargs, match", [
    ({"master_id": "m9"}, "no master 'm9'"),
    ({"master_id": "m1", "direction": "up"}, "direction"),
    ({"master_id": "m1", "switch": "leaf-99"}, "no switch 'leaf-99'"),
])
def test_fail_cpn_refuses_bad_arguments_without_recording(tmp_path: Path, kwargs: dict, match: str) -> None:
    lab = _lab(tmp_path)
    with pytest.raises(LabError, match=match):
        inject.fail_cpn(lab, **kwargs)
    assert lab.state.faults == []


def test_cpn_fault_description_and_cli() -> None:
    from proto.cli import build_parser

    assert describe_fault({"kind": "cpn", "id": "m2", "direction": "to-switches", "switch": None}) == \
        "cpn m2 to-switches"
    assert describe_fault({"kind": "cpn", "id": "m1", "direction": "both", "switch": "leaf-1"}) == \
        "cpn m1 both (switch leaf-1 only)"
    parser = build_parser("lab")
    for argv, want in ((["lab", "fail", "cpn"], (None, "both", None)),
                       (["lab", "fail", "cpn", "m2", "--to-switches"], ("m2", "to-switches", None)),
                       (["lab", "fail", "cpn", "m1", "--from-switches", "--switch", "leaf-1"],
                        ("m1", "from-switches", "leaf-1")),
                       (["lab", "fail", "cpn", "--both"], (None, "both", None))):
        args = parser.parse_args(argv)
        assert (args.master, args.direction, args.switch) == want, argv
    with pytest.raises(SystemExit):       # one direction at a time
        parser.parse_args(["lab", "fail", "cpn", "--to-switches", "--from-switches"])


# ---------------------------------------------------------------------------------------------- real nft

_ECHO = r"""
import json, socket, sys
master = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); master.bind(("127.0.0.1", 6601)); master.settimeout(0.3)
out = {}
for addr in sys.argv[1:]:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.bind((addr, 0)); c.settimeout(0.3)
    c.sendto(b"report", ("127.0.0.1", 6601))           # never raises: the drop is on the receive side
    try:
        master.recvfrom(100); up = True
    except TimeoutError:
        up = False
    master.sendto(b"lsd", c.getsockname())
    try:
        c.recvfrom(100); down = True
    except TimeoutError:
        down = False
    out[addr] = [up, down]
print(json.dumps(out))
"""


@pytest.mark.ovs
def test_cpn_rules_drop_exactly_the_chosen_direction_on_real_sockets() -> None:
    import json

    ns = f"fpgraylab{os.getpid() % 100000}"
    table = "fpgraylab_cpn"
    a, b = "127.1.0.3", "127.1.0.4"

    def exchange() -> dict[str, list[bool]]:
        proc = subprocess.run(nsutil.exec_cmd(ns, [sys.executable, "-c", _ECHO, a, b]), capture_output=True,
                              text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    nsutil.create_netns(ns)
    try:
        assert exchange() == {a: [True, True], b: [True, True]}
        nft.drop_cpn(table, ns, MASTER, "from-switches")
        assert exchange() == {a: [False, True], b: [False, True]}
        nft.drop_cpn(table, ns, MASTER, "to-switches")          # replaces the previous rules
        assert exchange() == {a: [True, False], b: [True, False]}
        nft.drop_cpn(table, ns, MASTER, "both", client=a)        # one switch only
        assert exchange() == {a: [False, False], b: [True, True]}
        assert nft.cpn_dropped(table, ns) == 2
        assert nft.remove(table, ns, family="inet") and nft.tables(ns, "inet") == []
        assert exchange() == {a: [True, True], b: [True, True]}
    finally:
        nsutil.delete_netns(ns)
