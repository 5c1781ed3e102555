"""Lab edges found by using the lab as an operator would (tester, one OVS per switch): `lab up --external`
returned before the outside was reachable, `lab fail external` errors were tracebacks, and a zygote killed by
`lab down` (the zygotes of a `lab up` that was itself killed) left its socket file in /tmp."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab import bgp
from lab import netns as nsutil
from lab.fabric import REPO_ROOT, Lab, LabError, generate_config, teardown
from lab.state import LabState, lab_netns
from lab.zygote import Zygote, socket_of
from tests.harness.labs import running_lab

pytestmark = pytest.mark.ovs

CLOS = {"spines": 2, "pods": 0, "leaves": 2, "hosts_per_tor": 1, "masters": 1, "border_pods": 1, "external": True}


@pytest.fixture(scope="module")
def border_lab() -> Iterator[Lab]:
    with running_lab("tqb", CLOS, timeout=60.0) as the_lab:
        yield the_lab


def test_lab_up_with_external_borders_returns_once_the_outside_is_reachable(border_lab: Lab, capsys) -> None:
    """`lab up --external` said "up" before the eBGP sessions were Established: a `lab ping` right after it
    lost every host <-> ext-host pair (exit 1); a second `lab fail external` was a traceback."""
    from proto.cli import main

    hosts = [h.name for h in border_lab.fabric.hosts]
    pairs = [(h, bgp.EXT_HOST) for h in hosts] + [(bgp.EXT_HOST, h) for h in hosts]
    got = border_lab.ping(pairs, count=1)          # at once: no wait of the test's own
    assert all(n == 1 for n in got.values()), got
    common = ["--name", border_lab.state.name, "--dir", border_lab.state.dir]
    assert main(["lab", "fail", "external", *common]) == 0
    capsys.readouterr()
    assert main(["lab", "fail", "external", *common]) == 1
    err = capsys.readouterr().err
    assert err.startswith("firepath lab: already injected") and "Traceback" not in err, err
    assert main(["lab", "heal", "--wait", "30", *common]) == 0
    assert "eBGP sessions established" in capsys.readouterr().out
    got = border_lab.ping(pairs, count=1)           # heal --wait said converged: the outside is reachable
    assert all(n == 1 for n in got.values()), got


def test_lab_restart_client_returns_once_the_new_client_answers(border_lab: Lab, capsys) -> None:
    """`lab restart client` returned when the process was spawned: a `lab status` (or a REST read) right after
    it found the switch's REST not answering yet."""
    from proto.cli import main

    common = ["--name", border_lab.state.name, "--dir", border_lab.state.dir]
    capsys.readouterr()
    assert main(["lab", "restart", "client", "leaf-1", *common]) == 0
    out = capsys.readouterr().out
    assert out.startswith("client leaf-1 restarted (") and "ready" in out, out
    state = border_lab.client_states()["leaf-1"]               # at once: no wait of the test's own
    assert isinstance(state, dict) and state["connected"] and state["programmed_version"], state
    assert main(["lab", "restart", "client", "nosuch", *common]) == 1


def test_lab_fail_external_without_borders_is_one_line(tmp_path: Path, capsys) -> None:
    from proto.cli import main

    name = f"tqn{os.getpid() % 100000}"
    config = generate_config(tmp_path, name, spines=1, pods=0, leaves=2, masters=1)
    LabState(name=name, dir=str(tmp_path), config=str(config)).save()      # a record only: nothing is built
    assert main(["lab", "fail", "external", "--name", name, "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == "firepath lab: this lab has no eBGP border (lab up --border-pods N --external)\n", err


def test_lab_ping_with_a_single_host_says_there_is_no_pair(tmp_path: Path, capsys) -> None:
    """It printed "0/0 pairs" and exited 0, which reads as a pass."""
    from proto.cli import main

    name = f"tqp{os.getpid() % 100000}"
    config = generate_config(tmp_path, name, spines=1, pods=0, leaves=1, masters=1)
    LabState(name=name, dir=str(tmp_path), config=str(config)).save()      # a record only: nothing is built
    assert main(["lab", "ping", "--name", name, "--dir", str(tmp_path)]) == 1
    assert "this lab has 1 host: no pair to ping" in capsys.readouterr().err


def test_lab_down_removes_the_socket_of_a_zygote_it_kills(tmp_path: Path) -> None:
    """A `lab up` killed during bring-up leaves its zygotes running in the lab namespace; `lab down` SIGKILLs
    them, which skips their own unlink: the socket file stayed in /tmp for good."""
    name = f"tqz{os.getpid() % 100000}"
    ns = lab_netns(name)
    nsutil.create_netns(ns)
    z = Zygote(ns, str(tmp_path), str(REPO_ROOT), "client").start()
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(z.path) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert os.path.exists(z.path), (tmp_path / "zygote-client.log").read_text()
        assert socket_of(z.proc.pid) == z.path and socket_of(os.getpid()) is None
        removed = teardown(tmp_path, name=name, log=lambda m: None)      # no record: by the lab's names
        assert f"pid {z.proc.pid} in {ns}" in removed
        assert z.proc.wait(10) is not None
        assert not os.path.exists(z.path)
        assert not nsutil.netns_exists(ns)
    finally:
        z._stop()
        if nsutil.netns_exists(ns):
            nsutil.delete_netns(ns)
        if os.path.exists(z.path):
            os.unlink(z.path)


@pytest.mark.parametrize("ovs_per_switch", [True, False], ids=["ovs-per-switch", "shared-ovs"])
def test_lab_status_names_an_ovs_that_stopped(tmp_path: Path, ovs_per_switch: bool, capsys) -> None:
    """An ovs-vswitchd killed by PID (a switch that stopped forwarding) was nowhere in `lab status`, and `lab heal`
    only said "not converged: spine-1: 3/4 ports usable": no lab fault records it."""
    import signal

    from lab.report import format_status

    name = f"tqo{os.getpid() % 10000}{int(ovs_per_switch)}"
    d = Path("/tmp") / f"fplab-{name}"
    lab = Lab.up(name=name, lab_dir=d, clos={"spines": 1, "pods": 0, "leaves": 2, "masters": 1}, clean=True,
                 daemons=False, ovs_per_switch=ovs_per_switch, log=lambda m: None)
    try:
        assert "OVS not running" not in format_status(lab)
        ovs = lab.ovs_of("leaf-2")
        pid = ovs.pid("ovs-vswitchd")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        who = "leaf-2" if ovs_per_switch else "every switch"
        line = f"OVS not running (no lab fault: `lab heal` does not restart it, `lab up --clean` rebuilds the lab): " \
               f"{who}: ovs-vswitchd"
        deadline = time.monotonic() + 5
        while line not in format_status(lab) and time.monotonic() < deadline:     # SIGKILL is not instantaneous
            time.sleep(0.05)
        assert line in format_status(lab), format_status(lab)
        from proto.cli import main

        capsys.readouterr()
        assert main(["lab", "groups", "leaf-2", "--name", name, "--dir", str(d)]) == 1      # was a traceback
        err = capsys.readouterr().err
        assert err.startswith("firepath lab: ovs-ofctl") and err.count("\n") <= 2 and "Traceback" not in err, err
    finally:
        lab.close()
        teardown(d, name=name, log=lambda m: None)
        shutil.rmtree(d, ignore_errors=True)


def _refused_before_building(name: str, edit: Callable[[str], str], match: str, ovs_per_switch: bool) -> None:
    """A generated 1 x 2 lab config passed through `edit` is refused by `lab up` with `match`, and no namespace
    of the lab was made."""
    d = Path("/tmp") / f"fplab-{name}"
    config = generate_config(d, name, spines=1, pods=0, leaves=2, masters=1)
    config.write_text(edit(config.read_text()))
    try:
        with pytest.raises(LabError, match=match):
            Lab.up(name=name, lab_dir=d, config=config, clean=True, daemons=False, ovs_per_switch=ovs_per_switch,
                   log=lambda m: None)
        assert not [n for n in nsutil.list_netns() if n == lab_netns(name) or n.startswith(lab_netns(name) + "-")]
    finally:
        teardown(d, name=name, log=lambda m: None)
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("ovs_per_switch", [True, False], ids=["ovs-per-switch", "shared-ovs"])
def test_two_switches_that_would_share_a_bridge_name_are_refused_before_anything_is_built(
        tmp_path: Path, ovs_per_switch: bool) -> None:
    """A switch over 15 bytes becomes bridge sw<id>; a switch literally named so made one OVS run dir for both
    (per switch: a traceback from ovsdb-server "already running") or one bridge for both (shared: "OVS did not
    give the configured port numbers")."""
    def edit(text: str) -> str:
        assert "  - name: leaf-2\n    id: 3\n" in text
        text = text.replace("leaf-2", "leaf-number-two-long")       # over 15 bytes, id 3: bridge sw3
        return text.replace("leaf-1", "sw3")

    _refused_before_building(f"tqc{os.getpid() % 10000}{int(ovs_per_switch)}", edit,
                             "switches sw3 and leaf-number-two-long would both be OVS bridge 'sw3'", ovs_per_switch)


def test_a_host_named_like_a_switch_namespace_is_refused_before_anything_is_built(tmp_path: Path) -> None:
    """A host's namespace is fplab-N-<host> and, with one OVS per switch, switch i's is fplab-N-sw<i>: a host
    named sw0 would have been put into the first switch's namespace."""
    name = f"tqn{os.getpid() % 10000}"

    def edit(text: str) -> str:
        assert "{name: h-1-1," in text and "  - name: spine-1\n    id: 1\n" in text
        return text.replace("name: h-1-1,", "name: sw0,")

    _refused_before_building(name, edit, "switch spine-1 and host sw0 would both be network namespace "
                                         f"'fplab-{name}-sw0' in this lab: rename the host", True)


def test_a_host_named_like_the_external_namespaces_is_refused() -> None:
    from lab.plumbing import check_netns
    from proto.clos import clos_fabric

    fabric = clos_fabric(pods=0, leaves=2, spines=1, masters=1)
    host = fabric.hosts[0].name
    st = LabState(name="x", dir="/nonexistent", config="c", netns=lab_netns("x"), ovs_dir="o")
    check_netns(st, fabric, (bgp.ROUTER, bgp.EXT_HOST))       # no clash: accepted
    st.switch_ns = {"spine-1": f"fplab-x-{host}"}
    with pytest.raises(LabError, match=f"switch spine-1 and host {host} would both be network namespace"):
        check_netns(st, fabric)
    st.switch_ns = {}
    with pytest.raises(LabError, match=f"host {host} and the eBGP borders' {host} would both be network namespace 'fplab-x-{host}'"):
        check_netns(st, fabric, (bgp.ROUTER, host))


def test_parallel_links_between_two_switches_are_all_named() -> None:
    """Tester R3: `lab fail link A B` between switches joined by two links failed the first one; the CLI now
    names the other(s). `links_between` lists them in config order; `find_link` takes the first not failed."""
    from types import SimpleNamespace

    from lab import inject
    from proto.config import parse_fabric
    from tests.test_dryrun import irregular_yaml

    f = parse_fabric(irregular_yaml(), source="<irregular>")
    pair = [k for k in f.links if {k.a.switch, k.b.switch} == {"t1", "a2"}]
    assert len(pair) == 2
    lab = SimpleNamespace(fabric=f, state=SimpleNamespace(faults=[]))
    assert inject.links_between(lab, "t1", "a2") == pair and inject.find_link(lab, "a2", "t1") == pair[0]
    lab.state.faults = [{"kind": "link", "link": pair[0].index}]
    assert inject.find_link(lab, "t1", "a2") == pair[1]           # the next one not failed
    end = pair[1].a if pair[1].a.switch == "t1" else pair[1].b
    assert inject.links_between(lab, f"t1:{end.port}", "a2") == [pair[1]]
    with pytest.raises(LabError, match="no fabric link between t1 and t4"):
        inject.links_between(lab, "t1", "t4")
