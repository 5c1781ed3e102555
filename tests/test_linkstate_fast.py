"""`LinkStateDeriver.changes` computes `desired` inline for undrained links (issue #18: every report of a
cold start re-derives its switch's links): it must give exactly what `desired` gives, link by link, for
any views, drains, silences and input losses."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.linkstate import LinkStateDeriver
from proto.clos import ClosParams, generate_clos_yaml
from proto.config import Fabric, parse_fabric
from proto.lsd import LinkState

_FABRIC: list[Fabric] = []


def _fabric() -> Fabric:
    if not _FABRIC:
        text = generate_clos_yaml(ClosParams(pods=0, spines=2, leaves=3, hosts_per_tor=0))
        _FABRIC.append(parse_fabric(text))
    return _FABRIC[0]


def _reference(d: LinkStateDeriver, indices: list[int], states: bytes, now: float) -> dict[int, LinkState]:
    out = {}
    for i in indices:
        want = d.desired(i, LinkState(states[i]), now)
        if want != states[i]:
            out[i] = want
    return out


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_changes_is_desired_link_by_link(data: st.DataObject) -> None:
    f = _fabric()
    d = LinkStateDeriver(f)
    dead = d.switch_dead
    n = len(f.links)
    now = 1000.0
    for sw in f.switches:
        if data.draw(st.booleans(), label=f"{sw.name} reported"):
            ports = sorted(d.fabric_ports(sw.name))
            usable = data.draw(st.sets(st.sampled_from(ports)) if ports else st.just(set()), label="usable")
            # reported just now, just within / just past switch_dead, or long ago
            age = data.draw(st.sampled_from([0.0, dead * 0.5, dead - 1e-6, dead, dead * 1.5, dead * 3]))
            d.set_report(sw.name, usable, 1, now - age)
    if data.draw(st.booleans(), label="input loss"):
        d.note_input_loss(now - data.draw(st.sampled_from([0.0, dead * 0.5, dead - 1e-6, dead, dead * 2])))
    d.drained = set(data.draw(st.sets(st.integers(0, n - 1)), label="drained"))
    d.drained_alone = set(data.draw(st.sets(st.sampled_from(sorted(d.drained)) if d.drained else st.nothing(),
                                            max_size=n), label="alone") if d.drained else set())
    states = bytes(data.draw(st.lists(st.sampled_from(list(LinkState)), min_size=n, max_size=n), label="lsd"))
    indices = data.draw(st.lists(st.integers(0, n - 1), unique=True), label="indices")
    want = _reference(d, indices, states, now)
    assert d.changes(indices, states, now) == want
    # the core passes a mapping of LinkState for a report's few links
    assert d.changes(indices, {i: LinkState(states[i]) for i in indices}, now) == want
