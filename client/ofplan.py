"""The OpenFlow plan: desired switch state from routes, and the messages that get a switch there (pure).

With client.ofstate (the table's constants, state and diff), the only code that builds OpenFlow messages (as
`client.ofmsg` values); it never sends.

Desired state of one switch (table 0; "ours" = cookie high bits == FIREPATH_COOKIE):

| what                         | priority              | match                                    | actions |
|------------------------------|-----------------------|------------------------------------------|---------|
| ND punt (each fabric port)   | PRIORITY_ND = 65535   | in_port=fabric port, eth_type=0x88B5     | [Meter(port's)], Output(CONTROLLER) |
| ND from any other port       | PRIORITY_ND - 1       | eth_type=0x88B5                          | () = drop |
| ARP replies (ToR)            | PRIORITY_ARP = 40000  | in_port, eth_type=0x0806, arp_op=1, arp_spa=host, arp_tpa=target | rewrite into a reply, Output(IN_PORT) |
| host routes (ToR)            | PRIORITY_HOST = 1033  | eth_type=0x0800, ipv4_dst=host /32       | eth_src=router, eth_dst=host, DecNwTtl, Output(host port) |
| fabric routes                | ROUTE_BASE + len      | eth_type=0x0800 [, ipv4_dst masked]      | GroupAction(group of its next-hop set) |
| own prefixes (not via fabric)| ROUTE_BASE + len      | eth_type=0x0800 [, ipv4_dst masked]      | () = drop |

Control-plane protection: ND frames reach the controller only from fabric ports (a host can never
make its switch's client work), and with `nd_meter_pps` each fabric port's punt flow goes through its
own packets-per-second meter (id METER_ID_MIN + port, one drop band): a flood on one port is cut in the
datapath and cannot crowd out the ND of the other ports. Meters are route-independent: full plans add,
modify and delete them (before the flows that use them / after); incremental plans never touch them.

Longest prefix wins because the priority grows with the prefix length. Host routes sit above every
route (a /32 of another switch cannot equal a host address: the config validator forbids overlaps).
Own prefixes get an explicit drop so that traffic to an unused address of our own subnet (or our own
loopback: there is no local IP stack) does not follow a shorter route such as the border's 0.0.0.0/0.
Anything else misses the table and is dropped (OpenFlow 1.3 default).

ARP: a ToR answers, from the data plane, every ARP request of one of its hosts for the gateway or for
another of its hosts (proxy ARP: the reply carries the router MAC, so host-to-host traffic is routed
and TTL-decremented like the rest; layer 2 ends at the ToR). The reply is built from set-field
actions only — match on the requester's port, IP and the target IP make every field a constant.

Groups: one SELECT group per distinct next-hop *route* set (deduplicated as ASICs do), one bucket per
port: watch_port=port, eth_src=own MAC, eth_dst=the neighbour's MAC, DecNwTtl, Output(port).
Group ids live in [GROUP_ID_MIN, GROUP_ID_MAX] — only groups in that range are ours (groups carry no
cookie) — and are *stable*: a port set keeps its id as long as some route uses it; a new set gets the
lowest id that is neither in use nor still installed, so an id freed by a plan is only reused by a
later plan, after its DELETE went out (a reused id never changes meaning under a live flow) — except
in place: when every prefix of a set moves to one set that has no group yet (a link at this switch went
down: all its routes change together), that group takes the new buckets with one GroupMod MODIFY instead
of a new group, a FlowMod per prefix and a DELETE; every flow on it wants the new set. After a
reconnect, `reconcile` adopts the installed ids (the group the installed flows of a set point to, or a
group with exactly the desired buckets), so a restarted client rewrites nothing that is right.

Local repair: `local_port_down(p)` removes p's bucket from every group that has it (GroupMod MODIFY
only; no flow changes). A group that loses its last bucket is kept EMPTY rather than deleted: OVS
drops packets hitting an empty select group, which is right when this switch knows no other path
for those prefixes — deleting the flows instead would let the traffic fall through to a shorter
prefix (typically the border default route) and black-hole or loop it elsewhere. The next LSD-driven
route update repoints or withdraws those prefixes. A locally-down port stays excluded until either
the routes no longer use it at all (the LSD caught up with the failure: from then on the routes alone
decide, so the port comes back when the LSD says the link is up again) or the runtime calls
`local_port_up(p)` (e.g. the link flapped back before the master ever reported it down).

Plans (the module function `plan(desired, installed)`, used by every OfPlanner operation) are
make-before-break: add/modify groups, then add/modify flows, then delete stale
flows, then delete unused groups (deleting a group deletes its flows in OVS, so never earlier), then
one Barrier. An empty list means there is nothing to do. Every flow delete is DELETE_STRICT with
cookie=FIREPATH_COOKIE, cookie_mask=COOKIE_MASK, so flows of other controllers are never touched.

ECMP hashing and weights: every SELECT group carries the planner's `selection`, by default
`Selection("dp_hash", switch.hash_basis)`: OVS's datapath hash of the L4 5-tuple (UDP ports included),
with a per-switch basis so that the tiers of a Clos do not repeat each other's choice (hash
polarization; vendors seed the hash per device). The runtime sends it as OVS's NTR selection-method
property, which only an OpenFlow 1.5 group-mod carries (client.of.translate); an OF1.5 read-back shows
it, so `reconcile` keeps a right basis and MODIFYs a group with a wrong one; an OF1.3 read-back cannot
show it and is taken as right (`OfState.from_installed`). Bucket weights follow `bucket_weights` (the
capacity of the local link to each next hop); equal capacities give weight 1 everywhere. Both are
functions of the next-hop port set, so one group per distinct set still means one per weighted set.

The planner keeps a *model* of what is installed: what it planned, applied at once (auto_commit,
the default) or by `commit()` after the batch's barrier reply (auto_commit=False). If the switch
reports an error for a batch, a batch is lost, or after any reconnect, the runtime must read the
flows and groups back (`load_installed`) and plan in full (`set_routes`/`plan`; `reconcile` does
both) — and do the full plan only once it has routes (the first LSD): until then leave the switch
alone (with fail_mode=secure the old flows keep forwarding), except for local repair
(`exclude_ports` works on the read-back groups before any routes are known).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from ipaddress import IPv4Address, IPv4Network
from typing import TYPE_CHECKING

from client.ofmsg import (
    OFPCML_NO_BUFFER,
    OFPP_CONTROLLER,
    OFPP_IN_PORT,
    OFPP_LOCAL,
    Action,
    Bucket,
    DecNwTtl,
    GroupAction,
    GroupType,
    InstalledFlow,
    InstalledGroup,
    InstalledMeter,
    MatchFields,
    Meter,
    OfMessage,
    Output,
    Selection,
    SetField,
    match,
)
from client.routes import RouteDelta

if TYPE_CHECKING:  # pragma: no cover - typing only
    from proto.config import Fabric

from client.ofstate import (  # noqa: F401 - re-exported: the planner's public names
    ARP_REPLY,
    ARP_REQUEST,
    COOKIE_ARP,
    COOKIE_EXTERNAL,
    COOKIE_HOST,
    COOKIE_LOCAL,
    COOKIE_MASK,
    COOKIE_ND,
    COOKIE_ROUTE,
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    ETH_TYPE_ND,
    FIREPATH_COOKIE,
    GROUP_ID_MAX,
    GROUP_ID_MIN,
    MAX_BUCKET_WEIGHT,
    METER_ID_MAX,
    METER_ID_MIN,
    ND_METER_HEADROOM,
    ND_METER_MIN_BURST,
    ND_METER_MIN_PPS,
    PRIORITY_ARP,
    PRIORITY_HOST,
    PRIORITY_ND,
    ROUTE_BASE,
    SELECTION_METHOD,
    TABLE_ID,
    ExternalHop,
    FlowKey,
    OfState,
    PlanError,
    bucket_weights,
    canonical_actions,
    canonical_match,
    nd_meter_id,
    nd_meter_rate,
    plan,
    prefix_match,
    prefix_order,
)


class OfPlanner:
    """Stateful but pure planner for one switch (see the module docstring for the design).

    Typical runtime use (every call returns the messages to send, ending with a Barrier, or []):
        planner = OfPlanner(fabric, name, auto_commit=False)
        planner.load_installed(flows, groups)           # on (re)connect: what the switch has
        msgs = planner.set_routes(rc.compute(states), excluded)     # full diff (first LSD / reconnect)
        msgs = planner.update(rc.update(states, changed), excluded) # per LSD delta: incremental, O(delta)
        msgs = planner.local_port_down(port)            # PortStatus: port not live (local repair)
        planner.commit()                                # after the batch's barrier reply
    Convenience forms: `reconcile(flows, groups)` = load_installed + full diff; `plan(routes, excluded)`
    diffs a whole route table against the last one (O(routes); prefer `update` with the RouteDelta).

    The installed model: with `auto_commit=True` (default) each returned batch is assumed applied at
    once; with `auto_commit=False` it is applied to the model by `commit()` (after the barrier reply),
    and a batch never committed is planned again by the next call (its keys stay "pending"). Either
    way, after a switch error or a reconnect, read the switch back: `load_installed`/`reconcile`.
    """

    def __init__(
        self,
        fabric: Fabric,
        switch_name: str,
        *,
        table_id: int = TABLE_ID,
        auto_commit: bool = True,
        selection: Selection | None = None,
        nd_meter_pps: int | None = None,
    ) -> None:
        """`nd_meter_pps`: rate-limit each fabric port's ND punt to this many packets/s with a meter
        (see `nd_meter_rate`); None = no meters (the plan then never touches meters). `selection`: the
        selection of every SELECT group (default: dp_hash with the switch's hash basis)."""
        self.nd_meter_pps = nd_meter_pps
        try:
            self.switch = fabric.switch(switch_name)
        except KeyError:
            raise PlanError(f"planner: switch {switch_name!r} is not in fabric {fabric.name!r}") from None
        self.fabric = fabric
        #: selection of every SELECT group: dp_hash with the switch's hash basis unless given.
        self.selection = selection if selection is not None else Selection(SELECTION_METHOD, self.switch.hash_basis or 0)
        self.table_id = table_id
        self.auto_commit = auto_commit
        self.mac = self.switch.mac
        self._routes: dict[IPv4Network, frozenset[int]] = {}
        self._down: set[int] = set()
        self._group_of: dict[frozenset[int], int] = {}  # route port set -> group id
        self._users: Counter[frozenset[int]] = Counter()  # route port set -> number of prefixes using it
        self._bucket_cache: dict[tuple[int, int], Bucket] = {}
        self._capacity: dict[int, float | None] = {}  # port -> capacity of its link (Gbit/s)
        self._keys: dict[IPv4Network, FlowKey] = {}  # route flow key cache (building matches is slow)
        # eBGP border (issue #13): prefix -> next hops towards the outside; overrides the fabric route
        self._external: dict[IPv4Network, tuple[ExternalHop, ...]] = {}
        self._ext_group_of: dict[tuple[ExternalHop, ...], int] = {}
        self._own_prefixes = self._own()
        self._static = self._static_flows()
        self._meters = self._static_meters()
        self._desired = OfState(dict(self._static), {}, dict(self._meters))
        self._installed = OfState()
        self._adopt = False  # load_installed happened: adopt installed group ids at the next full plan
        self._have_routes = False
        self._pending_full = False  # an uncommitted full plan
        self._pending_flows: set[FlowKey] = set()  # keys of uncommitted incremental plans
        self._pending_groups: set[int] = set()

    # ----------------------------------------------------------------------------------------- state

    @property
    def routes(self) -> Mapping[IPv4Network, frozenset[int]]:
        return dict(self._routes)

    @property
    def down_ports(self) -> frozenset[int]:
        """Ports excluded from every group by local repair."""
        return frozenset(self._down)

    @property
    def desired(self) -> OfState:
        return self._desired.copy()

    @property
    def installed(self) -> OfState:
        """The planner's model of the switch (what it last planned, once committed)."""
        return self._installed.copy()

    def holds_routes(self) -> bool:
        """The switch, as last read back or planned, has route groups of ours: it forwards on kept routes
        (every route points at an ECMP select group)."""
        return bool(self._installed.groups)

    @property
    def group_count(self) -> int:
        """Number of groups in the desired state (one per distinct next-hop set)."""
        return len(self._desired.groups)

    def group_id(self, ports: Iterable[int]) -> int | None:
        """The group id currently allocated to a route port set."""
        return self._group_of.get(frozenset(ports))

    # ------------------------------------------------------------------------------------ operations

    def load_installed(
        self,
        installed_flows: Iterable[InstalledFlow],
        installed_groups: Iterable[InstalledGroup],
        installed_meters: Iterable[InstalledMeter] = (),
    ) -> None:
        """Replace the model of the switch by what it reports (flow/group/meter stats after a (re)connect).

        Foreign flows (other cookies/tables), groups and meters (outside our id ranges) are ignored. The
        next full plan adopts the installed group ids, so a correct switch gets an empty plan.
        """
        self._installed = OfState.from_installed(
            installed_flows, installed_groups, self.table_id, installed_meters, self.selection
        )
        self._pending_full = False
        self._pending_flows.clear()
        self._pending_groups.clear()
        self._adopt = True

    def desired_from_routes(
        self, routes: Mapping[IPv4Network, frozenset[int]], down_ports: Collection[int] = ()
    ) -> OfState:
        """Make `routes` (and the locally-down ports) the planner's desired state and return it.

        Group ids of port sets already known are kept (or adopted from a loaded switch state); new
        sets get fresh ids.
        """
        self._check_routes(routes)
        self._routes = {p: frozenset(v) for p, v in routes.items() if p not in self._own_prefixes}
        self._down = set(down_ports)
        self._users = Counter(self._routes.values())
        for s in [s for s in self._group_of if s not in self._users]:
            del self._group_of[s]
        self._clear_down_ports_unused()
        if self._adopt:
            self._adopt_group_ids(self._installed)
            self._adopt = False
        self._rebuild_desired()
        self._have_routes = True
        return self._desired.copy()

    def set_routes(
        self, routes: Mapping[IPv4Network, frozenset[int]], down_ports: Collection[int] | None = None
    ) -> list[OfMessage]:
        """Replace the whole route table (and the locally-down ports, if given); full diff vs the model."""
        self.desired_from_routes(routes, self._down if down_ports is None else down_ports)
        return self._commit(plan(self._desired, self._installed))

    def plan_static(self) -> list[OfMessage]:
        """Before any route is known (a switch just connected, no LSD yet): the route-independent flows and
        meters the switch lacks or has wrong, added or modified — the ND punt first of all, without which
        no neighbour of a fresh switch can be verified (client.core holds the first report until they are).
        Every other flow, group and meter installed is left as it is: a restarted client's forwarding
        state stays until the LSD says otherwise. Call after `load_installed`; the next full plan
        (`set_routes`) still adopts the installed group ids."""
        desired = self._installed.copy()
        desired.flows.update(self._static)
        desired.meters.update(self._meters)
        self._desired = desired
        return self._commit(plan(desired, self._installed))

    def reconcile(
        self,
        installed_flows: Iterable[InstalledFlow],
        installed_groups: Iterable[InstalledGroup],
        installed_meters: Iterable[InstalledMeter] = (),
    ) -> list[OfMessage]:
        """`load_installed` then a full diff with the current routes (never flushes anything)."""
        self.load_installed(installed_flows, installed_groups, installed_meters)
        return self.set_routes(self._routes)

    def plan(self, routes: Mapping[IPv4Network, frozenset[int]], down_ports: Collection[int] = ()) -> list[OfMessage]:
        """Bring the switch to a whole route table and set of locally-down ports.

        The first time, after `load_installed`, or while a full plan is uncommitted, this is
        `set_routes`; otherwise the route table is diffed against the last one (a Python pass over
        all routes, ~20-40 ms for 60k) and planned incrementally. With the RouteDelta at hand,
        `update` does the same in O(delta).
        """
        if not self._have_routes or self._adopt or self._pending_full:
            return self.set_routes(routes, down_ports)
        old = self._routes
        changed = {}
        added = 0
        for p, ports in routes.items():
            was = old.get(p)
            if was is not ports and was != ports:
                changed[p] = ports
                added += was is None
        removed = frozenset() if len(old) + added == len(routes) else frozenset(p for p in old if p not in routes)
        return self.update(RouteDelta(changed, removed), down_ports)

    def update(self, delta: RouteDelta, down_ports: Collection[int] | None = None) -> list[OfMessage]:
        """Apply a route delta (and, if given, the new set of locally-down ports); incremental plan."""
        self._check_routes(delta.changed)
        if self._adopt:  # the switch was just read back: a full diff (adopting its group ids) is due
            routes = {p: v for p, v in self._routes.items() if p not in delta.removed}
            routes.update(delta.changed)
            return self.set_routes(routes, down_ports)
        touched: dict[IPv4Network, None] = {}
        touched_sets: set[frozenset[int]] = set()
        routes, users = self._routes, self._users
        moved_to: dict[frozenset[int], set[frozenset[int] | None]] = {}   # old set -> where its prefixes went
        moved_n: Counter[frozenset[int]] = Counter()                     # old set -> prefixes that left it
        for p in delta.removed:
            old = routes.pop(p, None)
            if old is not None:
                users[old] -= 1
                touched_sets.add(old)
                touched[p] = None
                moved_to.setdefault(old, set()).add(None)
                moved_n[old] += 1
        for p, hops in delta.changed.items():
            ports = frozenset(hops)
            old = routes.get(p)
            if p in self._own_prefixes or old == ports:
                continue
            if old is not None:
                users[old] -= 1
                touched_sets.add(old)
                moved_to.setdefault(old, set()).add(ports)
                moved_n[old] += 1
            routes[p] = ports
            users[ports] += 1
            touched_sets.add(ports)
            touched[p] = None
        self._have_routes = True
        touched_groups: set[int] = set()
        # The sets left without users, the one that lost the most prefixes first (see the in-place rule below).
        emptied = sorted((s for s in touched_sets if users[s] <= 0), key=lambda s: (-moved_n[s], sorted(s)))
        for s in emptied:
            del users[s]
            gid = self._group_of.pop(s, None)
            if gid is None:
                continue
            touched_groups.add(gid)
            into = moved_to.get(s, set())
            new = next(iter(into)) if len(into) == 1 else None
            if new is not None and new not in self._group_of:
                # Every prefix of `s` moved to one set that has no group yet (a link at this switch went
                # down or came back: its routes change together): the group takes the new buckets in
                # place — one GroupMod MODIFY instead of an ADD, a FlowMod per prefix and a DELETE. Every
                # flow pointing to the group wants exactly the new set, so no flow ever uses a group that
                # is wrong for it (make-before-break holds).
                self._group_of[new] = gid
                continue
            self._desired.groups.pop(gid, None)
        if down_ports is not None and set(down_ports) != self._down:
            changed_ports = set(down_ports) ^ self._down
            self._down = set(down_ports)
            touched_groups |= self._refresh_groups_with(changed_ports)
        self._clear_down_ports_unused()
        for s in sorted(touched_sets & users.keys(), key=sorted):
            touched_groups.add(self._ensure_group(s))
        keys = [self._set_route_flow(p) for p in sorted(touched, key=prefix_order)]
        return self._plan_some(keys, touched_groups)

    def local_port_down(self, port: int) -> list[OfMessage]:
        """Local repair: drop `port` from every group at once (before the master reacts)."""
        if port in self._down:
            return []
        return self.exclude_ports(self._down | {port})

    def local_port_up(self, port: int) -> list[OfMessage]:
        """Stop excluding `port`; it returns to the groups whose routes use it."""
        if port not in self._down:
            return []
        return self.exclude_ports(self._down - {port})

    def exclude_ports(self, ports: Collection[int]) -> list[OfMessage]:
        """Make `ports` exactly the set of locally excluded ports; only group buckets change.

        Before any routes are known (e.g. a restarted client that has read the switch back with
        `load_installed` but has no LSD yet), the installed groups themselves are repaired: buckets
        watching an excluded port are removed from them.
        """
        ports = set(ports)
        changed = ports ^ self._down
        self._down = ports
        if not changed:
            return []
        if not self._have_routes:
            gids = set()
            for gid, g in self._installed.groups.items():
                kept = tuple(b for b in g.buckets if b.watch_port not in ports)
                if kept != tuple(g.buckets):
                    sel = self.selection if g.type is GroupType.SELECT else None
                    self._desired.groups[gid] = InstalledGroup(gid, g.type, kept, sel)
                    gids.add(gid)
            return self._plan_some((), gids)
        return self._plan_some((), self._refresh_groups_with(changed))

    def commit(self) -> None:
        """The switch applied every batch returned so far (barrier reply): update the model.

        Plan the next batch only after the previous one's barrier reply; after a lost or failed batch,
        read the switch back (`load_installed`) rather than trusting the model.
        """
        inst, want = self._installed, self._desired
        if self._pending_full:
            self._installed = want.copy()
        else:
            for key in self._pending_flows:
                f = want.flows.get(key)
                if f is None:
                    inst.flows.pop(key, None)
                else:
                    inst.flows[key] = f
            for gid in self._pending_groups:
                g = want.groups.get(gid)
                if g is None:
                    inst.groups.pop(gid, None)
                else:
                    inst.groups[gid] = g
        self._pending_full = False
        self._pending_flows.clear()
        self._pending_groups.clear()

    # -------------------------------------------------------------------------------------- internals

    def _own(self) -> frozenset[IPv4Network]:
        sw = self.switch
        own = set(sw.prefixes) if sw.bgp is None else set()   # a bgp border's are external (dynamic)
        if sw.loopback is not None:
            own.add(sw.loopback)
        return frozenset(own)

    def _check_routes(self, routes: Mapping[IPv4Network, Iterable[int]]) -> None:
        ports = frozenset(self.fabric.fabric_ports(self.switch.name))
        if all(isinstance(hops, frozenset) and hops <= ports for hops in set(routes.values())) and all(
            isinstance(p, IPv4Network) for p in routes
        ):
            return  # the common case, checked once per distinct next-hop set
        for prefix, hops in routes.items():
            if not isinstance(prefix, IPv4Network):
                raise PlanError(f"planner {self.switch.name}: route key {prefix!r} is not an IPv4Network")
            bad = set(hops) - ports
            if bad:
                raise PlanError(f"planner {self.switch.name}: route {prefix} uses port(s) {sorted(bad)} without a fabric link")

    def _static_flows(self) -> dict[FlowKey, InstalledFlow]:
        """Route-independent flows: ND punt, own-prefix drops, and on ToRs host routes and ARP replies."""
        sw, t = self.switch, self.table_id
        flows: dict[FlowKey, InstalledFlow] = {}

        def add(priority: int, m: MatchFields, actions: tuple[Action, ...], cookie: int) -> None:
            flows[(t, priority, m)] = InstalledFlow(t, priority, m, actions, cookie)

        punt = Output(OFPP_CONTROLLER, OFPCML_NO_BUFFER)
        for port in self.fabric.fabric_ports(sw.name):
            meter: tuple[Action, ...] = (Meter(nd_meter_id(port)),) if self.nd_meter_pps else ()
            add(PRIORITY_ND, match(in_port=port, eth_type=ETH_TYPE_ND), (*meter, punt), COOKIE_ND)
        add(PRIORITY_ND - 1, match(eth_type=ETH_TYPE_ND), (), COOKIE_ND)   # host ports: never punted
        for p in sorted(self._own(), key=prefix_order):
            add(ROUTE_BASE + p.prefixlen, prefix_match(p), (), COOKIE_LOCAL)
        if sw.bgp is not None:
            # eBGP border: the switch's own IP stack (OFPP_LOCAL, where the BGP speaker runs) talks to each
            # peer over its external port: ARP and IP for our address in, everything for the peer out.
            for peer in sw.bgp.peers:
                local, addr = str(peer.local_address.ip), str(peer.address)
                add(PRIORITY_ARP, match(in_port=peer.port, eth_type=ETH_TYPE_ARP, arp_tpa=local),
                    (Output(OFPP_LOCAL),), COOKIE_EXTERNAL)
                add(PRIORITY_HOST, match(in_port=peer.port, eth_type=ETH_TYPE_IPV4, ipv4_dst=local),
                    (Output(OFPP_LOCAL),), COOKIE_EXTERNAL)
                add(PRIORITY_ARP, match(in_port=OFPP_LOCAL, eth_type=ETH_TYPE_ARP, arp_tpa=addr),
                    (Output(peer.port),), COOKIE_EXTERNAL)
                add(PRIORITY_HOST, match(in_port=OFPP_LOCAL, eth_type=ETH_TYPE_IPV4, ipv4_dst=addr),
                    (Output(peer.port),), COOKIE_EXTERNAL)
        hosts = sw.hosts
        for h in hosts:
            add(
                PRIORITY_HOST,
                match(eth_type=ETH_TYPE_IPV4, ipv4_dst=str(h.ip)),
                (SetField("eth_src", self.mac), SetField("eth_dst", h.mac), DecNwTtl(), Output(h.port)),
                COOKIE_HOST,
            )
        targets: list[IPv4Address] = ([sw.gateway] if sw.gateway is not None else []) + [h.ip for h in hosts]
        for h in hosts:
            for target in dict.fromkeys(targets):
                if target == h.ip:
                    continue
                m = match(
                    in_port=h.port, eth_type=ETH_TYPE_ARP, arp_op=ARP_REQUEST, arp_spa=str(h.ip), arp_tpa=str(target)
                )
                actions: tuple[Action, ...] = (
                    SetField("eth_dst", h.mac),
                    SetField("eth_src", self.mac),
                    SetField("arp_op", ARP_REPLY),
                    SetField("arp_sha", self.mac),
                    SetField("arp_spa", str(target)),
                    SetField("arp_tha", h.mac),
                    SetField("arp_tpa", str(h.ip)),
                    Output(OFPP_IN_PORT),
                )
                add(PRIORITY_ARP, m, actions, COOKIE_ARP)
        return flows

    def set_nd_meter(self, pps: int | None) -> None:
        """Change (None: drop) the ND punt meters, e.g. when the switch turns meters down. Takes effect
        with the next full plan (`set_routes`/`reconcile`), which also deletes meters no longer wanted."""
        self.nd_meter_pps = pps
        self._static = self._static_flows()
        self._meters = self._static_meters()
        self._rebuild_desired()

    def _static_meters(self) -> dict[int, InstalledMeter]:
        if not self.nd_meter_pps:
            return {}
        rate = self.nd_meter_pps
        burst = max(ND_METER_MIN_BURST, rate // 4)
        return {
            nd_meter_id(p): InstalledMeter(nd_meter_id(p), rate, burst)
            for p in self.fabric.fabric_ports(self.switch.name)
        }

    def _bucket(self, port: int, weight: int = 1) -> Bucket:
        b = self._bucket_cache.get((port, weight))
        if b is None:
            peer = self.fabric.peer_of(self.switch.name, port)
            if peer is None:
                raise PlanError(f"planner {self.switch.name}: port {port} has no fabric link")
            peer_mac = self.fabric.switch(peer.switch).mac
            b = Bucket(
                actions=(SetField("eth_src", self.mac), SetField("eth_dst", peer_mac), DecNwTtl(), Output(port)),
                weight=weight,
                watch_port=port,
            )
            self._bucket_cache[(port, weight)] = b
        return b

    def _port_capacity(self, port: int) -> float | None:
        if port not in self._capacity:
            link = self.fabric.link_at(self.switch.name, port)
            self._capacity[port] = None if link is None else link.capacity
        return self._capacity[port]

    def _group_for(self, ports: frozenset[int], gid: int) -> InstalledGroup:
        down = self._down
        live = [p for p in sorted(ports) if p not in down]
        weights = bucket_weights([self._port_capacity(p) for p in live])
        buckets = tuple(self._bucket(p, w) for p, w in zip(live, weights, strict=True))
        return InstalledGroup(gid, GroupType.SELECT, buckets, self.selection)

    def _allocate(self) -> int:
        used = set(self._group_of.values()) | set(self._installed.groups) | set(self._ext_group_of.values())
        gid = GROUP_ID_MIN
        while gid in used:
            gid += 1
        if gid > GROUP_ID_MAX:
            raise PlanError(f"planner {self.switch.name}: out of group ids")
        return gid

    def _ensure_group(self, ports: frozenset[int]) -> int:
        gid = self._group_of.get(ports)
        if gid is None:
            gid = self._group_of[ports] = self._allocate()
        self._desired.groups[gid] = self._group_for(ports, gid)
        return gid

    def _route_key(self, prefix: IPv4Network) -> FlowKey:
        key = self._keys.get(prefix)
        if key is None:
            key = self._keys[prefix] = (self.table_id, ROUTE_BASE + prefix.prefixlen, prefix_match(prefix))
        return key

    def _set_route_flow(self, prefix: IPv4Network) -> FlowKey:
        """(Re)build the desired route flow of `prefix` (none if it is not routed); its key."""
        key = self._route_key(prefix)
        ports = self._routes.get(prefix)
        ext = self._external.get(prefix)
        if ext is not None:
            gid = self._ext_group_of[ext]
            self._desired.flows[key] = InstalledFlow(key[0], key[1], key[2], (GroupAction(gid),), COOKIE_EXTERNAL)
        elif ports is None:
            self._desired.flows.pop(key, None)
        else:
            gid = self._group_of[ports]
            self._desired.flows[key] = InstalledFlow(key[0], key[1], key[2], (GroupAction(gid),), COOKIE_ROUTE)
        return key

    def _rebuild_desired(self) -> None:
        desired = OfState(dict(self._static), {}, dict(self._meters))
        self._desired = desired
        for s in sorted(self._users, key=sorted):
            self._ensure_group(s)
        actions = {s: (GroupAction(gid),) for s, gid in self._group_of.items()}
        flows = desired.flows
        route_key = self._route_key
        for p, ports in self._routes.items():
            key = route_key(p)
            flows[key] = InstalledFlow(key[0], key[1], key[2], actions[ports], COOKIE_ROUTE)
        for hops in self._external.values():
            gid = self._ext_group_of.get(hops)
            if gid is None:
                gid = self._ext_group_of[hops] = self._allocate()
            desired.groups[gid] = self._external_group(hops, gid)
        for p, hops in self._external.items():
            key = route_key(p)
            flows[key] = InstalledFlow(key[0], key[1], key[2], (GroupAction(self._ext_group_of[hops]),),
                                       COOKIE_EXTERNAL)

    def set_external(self, routes: Mapping[IPv4Network, Iterable[ExternalHop]]) -> None:
        """eBGP border (issue #13): the prefixes it sends to the outside itself, each with its next hops
        (external port, peer MAC: ECMP across the peers that provide it). These override the fabric route
        of the same prefix (towards another border) while they last. Takes effect with the next full plan
        (`set_routes`): BGP changes are rare (and damped), so a full diff is cheap enough."""
        ports = {p.port for p in self.switch.bgp.peers} if self.switch.bgp is not None else set()
        clean: dict[IPv4Network, tuple[ExternalHop, ...]] = {}
        for prefix, hops in routes.items():
            hops = tuple(sorted(set(hops)))
            bad = [port for port, _mac in hops if port not in ports]
            if bad or not hops:
                raise PlanError(f"planner {self.switch.name}: external route {prefix} via {hops}: "
                                f"port(s) {bad} are not eBGP peer ports" if bad else "no next hop")
            clean[prefix] = hops
        self._external = clean
        for hops in [h for h in self._ext_group_of if h not in clean.values()]:
            del self._ext_group_of[hops]

    def external_routes(self) -> dict[IPv4Network, tuple[ExternalHop, ...]]:
        """The external routes of an eBGP border as last set (prefix -> (external port, peer MAC) hops)."""
        return dict(self._external)

    def _external_group(self, hops: tuple[ExternalHop, ...], gid: int) -> InstalledGroup:
        down = self._down
        buckets = tuple(Bucket(actions=(SetField("eth_src", self.mac), SetField("eth_dst", mac), DecNwTtl(),
                                        Output(port)), weight=1, watch_port=port)
                        for port, mac in hops if port not in down)
        return InstalledGroup(gid, GroupType.SELECT, buckets, self.selection)

    def _adopt_group_ids(self, installed: OfState) -> None:
        """Give each route port set the installed group its installed flows already use, else one with
        exactly the desired buckets, else (later) a fresh id."""
        self._group_of = {}
        taken: set[int] = set()
        votes: dict[frozenset[int], Counter[int]] = {}
        for p, ports in self._routes.items():
            if p in self._external:
                continue            # its flow points to an external group, not to this set's
            f = installed.flows.get(self._route_key(p))
            if f is not None and len(f.actions) == 1 and isinstance(f.actions[0], GroupAction):
                gid = f.actions[0].group_id
                if gid in installed.groups:
                    votes.setdefault(ports, Counter())[gid] += 1
        for s in sorted(self._users, key=sorted):
            for gid, _n in votes.get(s, Counter()).most_common():
                if gid not in taken:
                    self._group_of[s] = gid
                    taken.add(gid)
                    break
        by_buckets: dict[tuple[Bucket, ...], list[int]] = {}
        for gid in sorted(installed.groups):
            if gid not in taken and installed.groups[gid].type is GroupType.SELECT:
                by_buckets.setdefault(tuple(installed.groups[gid].buckets), []).append(gid)
        for s in sorted(self._users, key=sorted):
            if s in self._group_of:
                continue
            cands = by_buckets.get(self._group_for(s, 0).buckets)
            if cands:
                gid = cands.pop(0)
                self._group_of[s] = gid
                taken.add(gid)

    def _refresh_groups_with(self, ports: Collection[int]) -> set[int]:
        """Rebuild the desired groups whose route set contains any of `ports`; their ids."""
        gids = set()
        for s, gid in self._group_of.items():
            if not s.isdisjoint(ports):
                self._desired.groups[gid] = self._group_for(s, gid)
                gids.add(gid)
        for hops, gid in self._ext_group_of.items():
            if any(port in ports for port, _mac in hops):
                self._desired.groups[gid] = self._external_group(hops, gid)
                gids.add(gid)
        return gids

    def _clear_down_ports_unused(self) -> None:
        """Forget locally-down ports no route uses any more (the LSD caught up with the failure).

        No group contains such a port, so no group changes."""
        if self._down:
            used: set[int] = set()
            for s in self._users:
                used |= s
            self._down &= used

    def _plan_some(self, flow_keys: Iterable[FlowKey], group_ids: Iterable[int]) -> list[OfMessage]:
        """Incremental plan over the given keys plus those of uncommitted batches."""
        if self._pending_full:
            return self._commit(plan(self._desired, self._installed))
        keys = list(dict.fromkeys([*flow_keys, *self._pending_flows]))
        gids = set(group_ids) | self._pending_groups
        msgs = plan(self._desired, self._installed, keys, gids)
        self._pending_flows.update(keys)
        self._pending_groups.update(gids)
        if self.auto_commit or not msgs:  # nothing to send: the model already equals the desired state
            self.commit()
        return msgs

    def _commit(self, msgs: list[OfMessage]) -> list[OfMessage]:
        """Record a full plan as pending (applied to the model now, or by `commit()`)."""
        self._pending_full = True
        self._pending_flows.clear()
        self._pending_groups.clear()
        if self.auto_commit or not msgs:  # nothing to send: the model already equals the desired state
            self.commit()
        return msgs
