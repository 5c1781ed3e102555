"""Property tests of the master core: LSD == a simple model of the two-ended rules (silence is not evidence)
after any sequence of reports, silences and drains; and a lossy client always converges once losses stop (keepalive repair)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.actions import Send
from controller.core import MasterCore
from proto.clos import ClosParams, generate_clos_yaml
from proto.config import parse_fabric
from proto.lsd import LinkState, LinkStateDB, decode_changes
from proto.messages import Keepalive, LsdDelta, LsdFull, LsdRequest, PortReport, PortStatus

# The drastic-change guard is off: the model is the derivation rule alone (the guard has its own tests).
FABRIC = parse_fabric(generate_clos_yaml(ClosParams(pods=0, spines=2, leaves=3, masters=1))
                      + "guard: {down_share: 1}\n", source="<test>")
SWITCHES = [s.name for s in FABRIC.switches]
N = len(FABRIC.links)
DEAD = FABRIC.timers.switch_dead

op = st.one_of(
    st.tuples(st.just("report"), st.sampled_from(SWITCHES), st.sets(st.integers(1, 3), max_size=3)),
    st.tuples(st.just("drain"), st.integers(0, N - 1), st.booleans()),
    st.tuples(st.just("drain_switch"), st.sampled_from(SWITCHES), st.booleans()),
    st.tuples(st.just("wait"), st.floats(0.0, 1.0), st.none()),
)


def model_state(i: int, views: dict[str, tuple[set[int], float]], drained: set[int], now: float,
                current: LinkState, alone: set[int] = frozenset()) -> LinkState:
    """Issue #16: DOWN on a live end saying not usable; UP when both live ends say usable; a silent end
    (no report, or none for switch_dead) is no evidence: the link keeps its state (a lifted drain: DOWN). A
    drain wins over UP and silence (DRAINED), not over a live end saying not usable (DRAINED_DOWN, kept
    while an end is silent); a link drained on its own (`alone`) is always DRAINED_DOWN (out of use)."""
    link = FABRIC.links[i]
    ends = []
    for end in (link.a, link.b):
        view = views.get(end.switch)
        ends.append(None if view is None or now - view[1] >= DEAD else end.port in view[0])
    if i in drained:
        if i in alone or False in ends or (None in ends and current == LinkState.DRAINED_DOWN):
            return LinkState.DRAINED_DOWN
        return LinkState.DRAINED
    if False in ends:
        return LinkState.DOWN
    if ends == [True, True]:
        return LinkState.UP
    return LinkState.DOWN if current in (LinkState.DRAINED, LinkState.DRAINED_DOWN) else current


class LossyClient:
    def __init__(self, name: str, core: MasterCore, rng: random.Random) -> None:
        self.name, self.core, self.rng = name, core, rng
        self.lsd = LinkStateDB(N)
        self.term = -1
        self.loss = 0.0

    def receive(self, actions: list, now: float) -> None:
        for a in actions:
            if not (isinstance(a, Send) and a.dest == self.name) or self.rng.random() < self.loss:
                continue
            m = a.msg
            if isinstance(m, LsdFull):
                self.lsd.load_snapshot(m.version, m.snapshot)
                self.term = m.term
            elif isinstance(m, LsdDelta):
                if m.term == self.term and m.from_version == self.lsd.version:
                    self.lsd.apply_delta(m.from_version, m.to_version, decode_changes(m.changes, N))
                else:
                    self.ask(now)
            elif isinstance(m, Keepalive) and (m.term != self.term or m.version != self.lsd.version):
                self.ask(now)

    def ask(self, now: float) -> None:
        version = self.lsd.version if self.term >= 0 else -1
        self.core.handle(self.name, LsdRequest(self.name, max(self.term, 0), version), now)


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(op, max_size=40), seed=st.integers(0, 2**16))
def test_lsd_matches_model_and_lossy_client_converges(ops: list, seed: int) -> None:
    core = MasterCore(FABRIC, "m1")
    core.become_master(1, 0.0)
    core.end_hold(0.0)          # cold start: do not wait for every switch before distributing
    client = LossyClient("leaf-1", core, random.Random(seed))
    client.loss = 0.4
    views: dict[str, tuple[set[int], float]] = {}
    drained: set[int] = set()
    drained_switches: set[str] = set()
    seqs = dict.fromkeys(SWITCHES, 0)
    now = 0.0
    model = [LinkState.DOWN] * N
    # leaf-1 is the lossy client: it must be known to the master, so it reports first
    ops = [("report", "leaf-1", {1, 2}), *ops]
    for kind, a, b in ops:
        acts: list = []
        if kind == "report":
            seqs[a] += 1
            ports = FABRIC.fabric_ports(a)
            usable = set(ports) & b
            report = PortReport(a, FABRIC.digest, seqs[a], 1, tuple(
                PortStatus(p, p in usable, p in usable, p in usable, True, False) for p in ports))
            acts = core.handle(a, report, now)
            views[a] = (usable, now)
        elif kind == "drain":
            acts = (core.drain_link if b else core.undrain_link)(a, now)
            (drained.add if b else drained.discard)(a)
        elif kind == "drain_switch":
            acts = (core.drain_switch if b else core.undrain_switch)(a, now)
            (drained_switches.add if b else drained_switches.discard)(a)
        else:
            now += a
        acts += core.tick(now)
        client.receive(acts, now)
        # a link is drained while its own drain or a drain of one of its switches is in force
        in_force = drained | {i for sw in drained_switches for i in FABRIC.links_of(sw)}
        model = [model_state(i, views, in_force, now, model[i], drained) for i in range(N)]
        assert model == list(core.link_states())
    # losses stop; leaf-1 keeps reporting so it stays alive; within a few keepalives it holds the LSD
    client.loss = 0.0
    for _ in range(40):
        now += FABRIC.timers.keepalive / 2
        seqs["leaf-1"] += 1
        acts = core.handle("leaf-1", PortReport("leaf-1", FABRIC.digest, seqs["leaf-1"], 1, ()), now)
        acts += core.tick(now)
        client.receive(acts, now)
    assert client.term == 1 and client.lsd.version == core.version and client.lsd.states() == core.lsd.states()
