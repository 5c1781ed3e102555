"""The config loader: the composed YAML node tree converted into the model (proto.fabricmodel), section by
section, validating as it goes; every error is a ConfigError naming the file, the YAML line and the field."""


import contextlib
import gc
from collections.abc import Iterator
from ipaddress import IPv4Address
from typing import Any

import yaml

# Key ids on the wire (a u8, 0 reserved); the single-secret form ``key_file`` is key id 1.
from proto.auth import LEGACY_KEY_ID, MAX_KEY_ID, MIN_KEY_ID
from proto.configtopo import (
    _ROLES,
    TopologyReader,
)
from proto.configyaml import (
    _FastLoader,
    _line,
)
from proto.fabricmodel import (
    LIVENESS_MODES,
    ConfigError,
    Damping,
    Distribution,
    Fabric,
    Guard,
    KeyRef,
    LsdSettings,
    Master,
    Routing,
    Security,
    Timers,
    quoted,
)

_TOP_KEYS = ("name", "timers", "liveness", "security", "distribution", "lsd", "routing", "guard", "damping",
             "masters", "switches", "links")
_REQUIRED_TOP_KEYS = ("name", "security", "masters", "switches")
_T_STR = "tag:yaml.org,2002:str"
_T_MERGE = "tag:yaml.org,2002:merge"    # an unquoted << key (proto.configyaml)
_MASTER_KEYS = ("id", "address", "client_port", "peer_port", "rest_port", "priority")
# YAML timer key -> (Timers field, kind). kind "ms": milliseconds -> seconds; "rate": per second; "count".
_TIMER_KEYS: dict[str, tuple[str, str]] = {
    "nd_interval_ms": ("nd_interval", "ms"),
    "nd_dead_ms": ("nd_dead", "ms"),
    "keepalive_ms": ("keepalive", "ms"),
    "report_refresh_ms": ("report_refresh", "ms"),
    "switch_dead_ms": ("switch_dead", "ms"),
    "report_retry_min_ms": ("report_retry_min", "ms"),
    "report_retry_max_ms": ("report_retry_max", "ms"),
    "pacing_ms": ("pacing", "ms"),
    "max_update_rate": ("max_update_rate", "rate"),
    "hello_interval_ms": ("hello_interval", "ms"),
    "master_dead_ms": ("master_dead", "ms"),
    "flap_threshold": ("flap_threshold", "count"),
    "flap_window_ms": ("flap_window", "ms"),
    "damp_initial_ms": ("damp_initial", "ms"),
    "damp_max_ms": ("damp_max", "ms"),
    "oam_interval_ms": ("oam_interval", "ms"),
    "nd_identity_interval_ms": ("nd_identity_interval", "ms"),
    "nd_identity_dead_ms": ("nd_identity_dead", "ms"),
}
#: The keys of the YAML `damping:` section (proto.fabricmodel.Damping; durations in ms).
DAMPING_KEYS = ("enabled", "half_life_ms", "penalty", "suppress", "reuse", "max_suppress_ms", "up_rate", "up_burst",
                "storm_window_ms", "storm_share", "storm_switches")
# (longer, shorter, why): the longer timer must strictly exceed the shorter one.
#: (lowest, highest, unit) of a timer of each kind: 0.1 ms (below, a heartbeat is a busy loop) to a day.
_TIMER_BOUNDS = {"ms": (0.1, 86_400_000, "ms"), "rate": (0.01, 1_000_000, "per second")}
MAX_MASTERS = 63
#: 2 bits an LSD entry, zlib: 250,000 entries of random states are ~50 KB, within one datagram (the Jupiter
#: preset has 134,400; tests/test_config.py checks the worst case).
MAX_LSD_ENTRIES = 250_000
_TIMER_ORDER = (
    ("nd_dead", "nd_interval", "ND must miss at least one hello before declaring a port down"),
    ("switch_dead", "report_refresh", "a switch must miss a report refresh before it is declared dead"),
    ("master_dead", "hello_interval", "a master must miss a hello before it is declared dead"),
    ("nd_identity_dead", "nd_identity_interval", "ND must miss at least one identity frame before a port is down"),
)
# (larger-or-equal, smaller): plain ordering of a range.
_TIMER_RANGES = (("report_retry_max", "report_retry_min"), ("damp_max", "damp_initial"),
                 ("nd_identity_interval", "nd_interval"))
#: OVS takes `other_config:cfm_interval` in whole milliseconds, at most 65535 in extended mode (vswitch.xml).
MAX_OAM_INTERVAL_MS = 65535
#: a document's top-level scalar, by type only (check_fabric_document: its text is never quoted)
_SCALAR_KINDS = {"tag:yaml.org,2002:str": "a string", "tag:yaml.org,2002:int": "an integer",
                 "tag:yaml.org,2002:float": "a number", "tag:yaml.org,2002:bool": "a boolean",
                 "tag:yaml.org,2002:null": "null"}


def damping_problem(section: str) -> str | None:
    """The first problem of a YAML `damping:` mapping given as flow text (e.g. "{enabled: false}"), or
    None: the generator (proto.clos) checks the section it will write, as the config parser will read it."""
    try:
        FabricParser("--damping", None).damping(yaml.compose(section, Loader=_FastLoader))
    except ConfigError as e:
        return f"{e.field}: {e.problem}"
    return None


def timers_problem(section: str) -> str | None:
    """The first problem of a YAML `timers:` mapping given as flow text (e.g. "{nd_dead_ms: 5}"), or None: the
    generator (proto.clos) checks the timers it will write as the parser will read them, their order included
    (`nd_dead_ms` above `nd_interval_ms`, ...), so that the file written loads."""
    try:
        FabricParser("--timer", None).timers(yaml.compose(section, Loader=_FastLoader))
    except ConfigError as e:
        return f"{e.field}: {e.problem}"
    return None


@contextlib.contextmanager
def gc_paused(freeze: bool = False) -> Iterator[None]:
    """The cyclic GC off for a block that makes a million objects without cycles (a large config's parse:
    rescanning them more than doubles the load time of a Jupiter-size fabric). With `freeze`, what exists at
    the end (the new config, kept) is moved out of the GC's reach before it is back on: otherwise the first
    collection rescans it all, a second-long stop of every thread."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if freeze:
                gc.freeze()
            gc.enable()


class FabricParser(TopologyReader):
    """One parse: converts the composed node tree into the model, validating as it goes."""

    def parse(self, text: str) -> Fabric:
        with gc_paused():
            return self.parse_document(text)

    def check_fabric_document(self, root: yaml.Node) -> None:
        """A document that is not a fabric config at all (a secret file, /etc/shadow: a string; a list; a
        mapping with none of the fabric's keys) is reported by its type, never by its text: a master's REST
        answers a prepare with this message, and the admin token must not read files through it.

        A mapping with some of the fabric's keys is one only when it has all but at most one of the required
        ones, or no other keys: `mysecret_line_here: 1` beside `name: clos` was quoted as an unknown key. So an
        unknown key is named only in a file with three of name, security, masters and switches (a config with
        a typo: `master:` for `masters:` is named, with its line), and a missing key in a file of nothing but
        fabric keys; a merge key (`<<`) may supply required keys, so it counts as ours; else this error, naming
        only our own keys."""
        if isinstance(root, yaml.MappingNode):
            keys = [k.value if isinstance(k, yaml.ScalarNode) and k.tag in (_T_STR, _T_MERGE) else None
                    for k, _v in root.value]
            if any(k in _TOP_KEYS for k in keys):
                missing = [k for k in _REQUIRED_TOP_KEYS if k not in keys]
                unknown = sum(k not in _TOP_KEYS and k != "<<" for k in keys)
                if not (len(missing) > 1 and unknown) or "<<" in keys:
                    return
                what = (f"a mapping without {', '.join(missing)}, with {unknown} key{'s' * (unknown > 1)} "
                        f"a fabric config does not have")
            else:
                what = f"a mapping with none of the keys {', '.join(_TOP_KEYS)}"
        elif isinstance(root, yaml.SequenceNode):
            what = "a list"
        else:
            what = _SCALAR_KINDS.get(root.tag, "a scalar")
        raise self.fail(root, "", f"not a fabric config ({what}): expected a mapping with name, security, "
                                  f"masters and switches")

    def parse_document(self, text: str) -> Fabric:
        try:
            root = yaml.compose(text, Loader=_FastLoader)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = None if mark is None else mark.line + 1
            context = e.context or ""
            if context and e.context_mark is not None and e.context_mark is not mark:
                context += f" (line {e.context_mark.line + 1})"
            problem = ": ".join(p for p in (context, e.problem) if p)
            raise self.fail(line, "", f"YAML syntax error: {problem}") from None
        except yaml.YAMLError as e:
            raise self.fail(None, "", f"YAML error: {e}") from None
        if root is None:
            raise self.fail(1, "", "empty document: expected a fabric mapping")
        self.check_fabric_document(root)
        top = self.fields(root, "", _TOP_KEYS, _REQUIRED_TOP_KEYS)
        name = self.name(top["name"], "name")
        timers = self.timers(top["timers"]) if "timers" in top else Timers()
        security = self.security(top["security"])
        distribution = self.distribution(top["distribution"]) if "distribution" in top else Distribution()
        lsd = self.lsd(top["lsd"]) if "lsd" in top else LsdSettings()
        self.routing_settings = self.routing(top["routing"]) if "routing" in top else Routing()
        liveness = "oam"
        if "liveness" in top:
            liveness = self.string(top["liveness"], "liveness")
            if liveness not in LIVENESS_MODES:
                raise self.fail(top["liveness"], "liveness", f"{quoted(liveness)} is not one of: {', '.join(LIVENESS_MODES)}")
        guard = self.guard(top["guard"]) if "guard" in top else Guard()
        damping = self.damping(top["damping"]) if "damping" in top else Damping()
        masters = self.masters(top["masters"])
        switches = self.switches(top["switches"])
        self.check_names()
        for address, node, field in self.master_addresses:
            self.check_outside(int(address), int(address), node, field, f"master address {address}",
                               "masters are on the control-plane network, outside the fabric's prefixes, "
                               "loopbacks and hosts")
            for lo, hi, _enode, _efield, what in self.external_addresses:
                # on loopback (127/8) everything is one machine (tests, a peer scripted next to a master)
                if lo <= int(address) <= hi and not address.is_loopback:
                    raise self.fail(node, field, f"master address {address} {'is' if lo == hi else 'lies in'} "
                                    f"{what}: masters are on the control-plane network, not on an eBGP peering")
        links = self.links(top["links"]) if "links" in top else ()
        entries = len(links) + sum(len(s.prefixes) for s in switches if s.bgp is not None)
        if entries > MAX_LSD_ENTRIES:
            raise self.fail(top.get("links", root), "links",
                            f"{entries} LSD entries (links and eBGP prefixes), at most {MAX_LSD_ENTRIES}: the LSD "
                            f"snapshot must fit one datagram")
        self.check_connected(switches, links, top.get("links", root))
        return Fabric(
            name=name,
            source=self.source,
            switches=switches,
            links=links,
            masters=masters,
            config_timers=timers,       # as written; the model derives the effective ones (proto.budget)
            security=security,
            distribution=distribution,
            lsd=lsd,
            routing=self.routing_settings,
            liveness=liveness,
            guard=guard,
            damping=damping,
        )

    def check_names(self) -> None:
        """Masters, switches and hosts share one namespace: ConfigError at a master id or a host name that is
        also another node's name (duplicates within one kind are refused where they are read).

        A master id and a switch name are both peer names of one Codec (proto.messages: the sender a frame's
        key is chosen by), so one name must say who is speaking. A host's name is one of the names operators
        type and read (the `firepath lab` commands list switch, host and master names together when one is
        unknown; logs and the lab's namespaces name nodes): a name must name one node."""
        for mid, (node, field) in self.master_id_nodes.items():
            if mid in self.switch_line:
                raise self.fail(node, field, f"{quoted(mid)} is also the name of a switch (line "
                                             f"{self.switch_line[mid]}): masters and switches need distinct names")
        for hname, (node, field) in self.host_names.items():
            if hname in self.switch_line:
                raise self.fail(node, field, f"{quoted(hname)} is also the name of a switch (line "
                                             f"{self.switch_line[hname]}): hosts and switches need distinct names")
            if hname in self.master_id_nodes:
                raise self.fail(node, field, f"{quoted(hname)} is also the id of a master (line "
                                             f"{_line(self.master_id_nodes[hname][0])}): hosts and masters need "
                                             f"distinct names")

    def routing(self, node: yaml.Node) -> Routing:
        f = self.fields(node, "routing", ("transit_roles",), ())
        if "transit_roles" not in f:
            return Routing()
        roles: list[str] = []
        for j, rnode in enumerate(self.seq(f["transit_roles"], "routing.transit_roles")):
            field_name = f"routing.transit_roles[{j}]"
            role = self.string(rnode, field_name)
            if role not in _ROLES:
                raise self.fail(rnode, field_name, f"{quoted(role)} is not one of: {', '.join(_ROLES)}")
            if role in roles:
                raise self.fail(rnode, field_name, f"{role} listed twice")
            roles.append(role)
        return Routing(transit_roles=tuple(roles))

    def timers(self, node: yaml.Node) -> Timers:
        f = self.fields(node, "timers", tuple(_TIMER_KEYS), ())
        values: dict[str, Any] = {}
        lines: dict[str, tuple[yaml.Node, str]] = {}
        for key, value_node in f.items():
            attr, kind = _TIMER_KEYS[key]
            field_name = f"timers.{key}"
            if kind == "count":
                values[attr] = self.integer(value_node, field_name, 1, 1_000_000)
            else:
                value = self.number(value_node, field_name)
                if value <= 0:
                    raise self.fail(value_node, field_name, f"must be positive, got {value_node.value}")
                lo, hi, unit = _TIMER_BOUNDS[kind]     # a typo's 1e13 ms, a 10 ns heartbeat: refused
                if not lo <= value <= hi:
                    raise self.fail(value_node, field_name, f"{value_node.value} out of range {lo:g}..{hi:.12g} {unit}")
                values[attr] = value / 1000.0 if kind == "ms" else value
                if attr == "oam_interval" and (value != int(value) or value > MAX_OAM_INTERVAL_MS):
                    raise self.fail(value_node, field_name,
                                    f"must be whole milliseconds, 1..{MAX_OAM_INTERVAL_MS} (OVS cfm_interval), "
                                    f"got {value_node.value}")
            lines[attr] = (value_node, field_name)
        timers = Timers(**values)
        reverse = {attr: key for key, (attr, _) in _TIMER_KEYS.items()}

        def where(*attrs: str) -> tuple[yaml.Node, str]:
            for attr in attrs:  # blame the first of the involved keys actually written in the file
                if attr in lines:
                    return lines[attr]
            return node, f"timers.{reverse[attrs[0]]}"

        for longer, shorter, why in _TIMER_ORDER:
            if getattr(timers, longer) <= getattr(timers, shorter):
                at, field_name = where(longer, shorter)
                raise self.fail(
                    at,
                    field_name,
                    f"{reverse[longer]} ({getattr(timers, longer) * 1000:g}) must exceed "
                    f"{reverse[shorter]} ({getattr(timers, shorter) * 1000:g}): {why}",
                )
        for big, small in _TIMER_RANGES:
            if getattr(timers, big) < getattr(timers, small):
                at, field_name = where(big, small)
                raise self.fail(
                    at,
                    field_name,
                    f"{reverse[big]} ({getattr(timers, big) * 1000:g}) must not be below "
                    f"{reverse[small]} ({getattr(timers, small) * 1000:g})",
                )
        return timers

    def security(self, node: yaml.Node) -> Security:
        f = self.fields(node, "security", ("key_file", "keys", "send_key", "accept", "admin_token_file"), ())
        token = self.path(f["admin_token_file"], "security.admin_token_file") if "admin_token_file" in f else None
        token_where = (f"{self.source}:{_line(f['admin_token_file'])}: security.admin_token_file" if token
                       else "security.admin_token_file")
        if "key_file" not in f and "keys" not in f:
            raise self.fail(node, "security.key_file", "missing required field (or keys: a key set)")
        if "key_file" in f and "keys" in f:
            raise self.fail(f["keys"], "security.keys", "give either key_file (one fabric secret) or keys "
                                                        "(a key set), not both")
        if "key_file" in f:
            for extra in ("send_key", "accept"):
                if extra in f:
                    raise self.fail(f[extra], f"security.{extra}", "needs a key set (keys:), not key_file")
            key_file = self.path(f["key_file"], "security.key_file")
            ref = KeyRef(LEGACY_KEY_ID, key_file, f"{self.source}:{_line(f['key_file'])}: security.key_file")
            return Security(key_file=key_file, admin_token_file=token, keys=(ref,), admin_token_where=token_where)
        refs: dict[int, KeyRef] = {}
        id_where: dict[int, str] = {}
        items = self.seq(f["keys"], "security.keys")
        if not items:
            raise self.fail(f["keys"], "security.keys", "empty key set")
        for i, item in enumerate(items):
            where = f"security.keys[{i}]"
            k = self.fields(item, where, ("id", "file"), ("id", "file"))
            key_id = self.integer(k["id"], f"{where}.id", MIN_KEY_ID, MAX_KEY_ID)
            if key_id in refs:
                first = id_where[key_id]
                raise self.fail(k["id"], f"{where}.id", f"duplicate key id {key_id} (first at {first})")
            id_where[key_id] = f"{self.source}:{_line(k['id'])}: {where}.id"
            file = self.path(k["file"], f"{where}.file")
            same = next((r for r in refs.values() if r.file.resolve() == file.resolve()), None)
            if same is not None:
                raise self.fail(k["file"], f"{where}.file", f"{file} is already key id {same.id} ({same.where}): "
                                                            "each key id needs its own key file")
            refs[key_id] = KeyRef(key_id, file, f"{self.source}:{_line(k['file'])}: {where}.file")
        accept: tuple[int, ...] = tuple(refs)
        if "accept" in f:
            accept_nodes = self.seq(f["accept"], "security.accept")
            accept = ()
            for i, n in enumerate(accept_nodes):
                key_id = self.integer(n, f"security.accept[{i}]", MIN_KEY_ID, MAX_KEY_ID)
                if key_id not in refs:
                    raise self.fail(n, f"security.accept[{i}]", f"key id {key_id} is not in security.keys "
                                                                f"({sorted(refs)})")
                if key_id in accept:
                    raise self.fail(n, f"security.accept[{i}]", f"duplicate key id {key_id}")
                accept += (key_id,)
            if not accept:
                raise self.fail(f["accept"], "security.accept", "accepts no key")
        if "send_key" in f:
            send = self.integer(f["send_key"], "security.send_key", MIN_KEY_ID, MAX_KEY_ID)
            if send not in refs:
                raise self.fail(f["send_key"], "security.send_key", f"unknown send key {send} (security.keys "
                                                                    f"has {sorted(refs)})")
            if send not in accept:
                raise self.fail(f["send_key"], "security.send_key", f"send key {send} is not accepted "
                                                                    f"(security.accept is {list(accept)})")
        elif len(accept) == 1:
            send = accept[0]
        else:
            raise self.fail(node, "security.send_key", f"missing: which of the keys {sorted(accept)} to sign with")
        return Security(key_file=refs[send].file, admin_token_file=token, keys=tuple(refs.values()),
                        send_key=send, accept=accept, admin_token_where=token_where)

    def distribution(self, node: yaml.Node) -> Distribution:
        f = self.fields(node, "distribution", ("mode", "group", "port"), ("mode",))
        mode = self.string(f["mode"], "distribution.mode")
        if mode == "unicast":
            for key in ("group", "port"):
                if key in f:
                    raise self.fail(f[key], f"distribution.{key}", "only allowed with mode: multicast")
            return Distribution()
        if mode != "multicast":
            raise self.fail(f["mode"], "distribution.mode", f"{quoted(mode)} is not one of: unicast, multicast")
        for key in ("group", "port"):
            if key not in f:
                raise self.fail(node, f"distribution.{key}", "missing required field (mode: multicast)")
        group = self.address(f["group"], "distribution.group")
        if not group.is_multicast:
            raise self.fail(f["group"], "distribution.group", f"{group} is not a multicast address")
        port = self.integer(f["port"], "distribution.port", 1, 65535)
        return Distribution(mode="multicast", group=group, port=port)

    def lsd(self, node: yaml.Node) -> LsdSettings:
        f = self.fields(node, "lsd", ("history",), ())
        if "history" in f:
            return LsdSettings(history=self.integer(f["history"], "lsd.history", 1, 10_000_000))
        return LsdSettings()

    def guard(self, node: yaml.Node) -> Guard:
        keys = ("down_share", "window_ms", "reach_margin", "reach_dwell_ms")
        f = self.fields(node, "guard", keys, ())
        values: dict[str, float] = {}
        for key, value_node in f.items():
            field_name = f"guard.{key}"
            value = self.number(value_node, field_name)
            if key.endswith("_ms"):
                if value <= 0:
                    raise self.fail(value_node, field_name, f"must be positive, got {value_node.value}")
                lo, hi, unit = _TIMER_BOUNDS["ms"]
                if not lo <= value <= hi:
                    raise self.fail(value_node, field_name, f"{value_node.value} out of range {lo:g}..{hi:.12g} {unit}")
                values[key[:-3]] = value / 1000.0
            else:
                if not 0 < value <= 1:
                    raise self.fail(value_node, field_name, f"must be a share in (0, 1], got {value_node.value}")
                values[key] = value
        return Guard(**values)

    def damping(self, node: yaml.Node) -> Damping:
        f = self.fields(node, "damping", DAMPING_KEYS, ())
        values: dict[str, float | int | bool] = {}
        for key, value_node in f.items():
            field_name = f"damping.{key}"
            if key == "enabled":
                values[key] = self.boolean(value_node, field_name)
                continue
            if key == "up_burst":
                values[key] = self.integer(value_node, field_name, 1, 1_000_000)
                continue
            if key == "storm_switches":
                values[key] = self.integer(value_node, field_name, 1, 1_000_000)
                continue
            if key == "storm_share":
                share = self.number(value_node, field_name)
                if not 0 < share <= 1:
                    raise self.fail(value_node, field_name, f"must be a share in (0, 1], got {value_node.value}")
                values[key] = share
                continue
            value = self.number(value_node, field_name)
            if not 0 < value <= 1e9:
                raise self.fail(value_node, field_name, f"must be positive (at most 1e9), got {value_node.value}")
            values[key[:-3] if key.endswith("_ms") else key] = value / 1000.0 if key.endswith("_ms") else value
        d = Damping(**values)  # type: ignore[arg-type]
        if d.max_suppress > 1000 * d.half_life:    # the ceiling, reuse x 2^(max_suppress/half_life), stays finite
            raise self.fail(f.get("max_suppress_ms", f.get("half_life_ms", node)), "damping.max_suppress_ms",
                            f"at most 1000 x half_life_ms ({1000 * d.half_life * 1000:g}), got {d.max_suppress * 1000:g}")
        if d.reuse >= d.suppress:
            raise self.fail(f.get("reuse", f.get("suppress", node)), "damping.reuse",
                            f"reuse ({d.reuse:g}) must be below suppress ({d.suppress:g})")
        if d.suppress >= d.ceiling:
            raise self.fail(f.get("max_suppress_ms", node), "damping.max_suppress_ms",
                            f"too short for half_life_ms {d.half_life * 1000:g}: the penalty is capped at "
                            f"{d.ceiling:g}, never above suppress ({d.suppress:g}), so nothing would be suppressed")
        return d

    def masters(self, node: yaml.Node) -> tuple[Master, ...]:
        items = self.seq(node, "masters")
        if not items:
            raise self.fail(node, "masters", "at least 1 master is required")
        if len(items) > MAX_MASTERS:    # a report's `reach` has one bit per replica in a u63
            raise self.fail(items[MAX_MASTERS], f"masters[{MAX_MASTERS}]",
                            f"at most {MAX_MASTERS} masters (a switch's report has one reach bit per replica), "
                            f"got {len(items)}")
        masters: list[Master] = []
        ids: dict[str, int] = {}
        self.master_id_nodes: dict[str, tuple[yaml.Node, str]] = {}
        #: (address, node, field) of each master, checked against the fabric's addresses once switches are read
        self.master_addresses: list[tuple[IPv4Address, yaml.Node, str]] = []
        ports: dict[tuple[IPv4Address, int], tuple[str, int]] = {}
        for i, item in enumerate(items):
            path = f"masters[{i}]"
            f = self.fields(item, path, _MASTER_KEYS, ("id", "address", "client_port", "peer_port", "rest_port"))
            mid = self.name(f["id"], f"{path}.id")
            if mid in ids:
                raise self.fail(f["id"], f"{path}.id", f"duplicate master id {quoted(mid)} (also at line {ids[mid]})")
            ids[mid] = _line(f["id"])
            self.master_id_nodes[mid] = (f["id"], f"{path}.id")
            address = self.unicast_address(f["address"], f"{path}.address")
            self.master_addresses.append((address, f["address"], f"{path}.address"))
            values = {}
            for key in ("client_port", "peer_port", "rest_port"):
                port = self.integer(f[key], f"{path}.{key}", 1, 65535)
                other = ports.get((address, port))
                if other is not None:
                    raise self.fail(
                        f[key],
                        f"{path}.{key}",
                        f"port {port} on {address} already used by {other[0]} (line {other[1]})",
                    )
                ports[(address, port)] = (f"{path}.{key}", _line(f[key]))
                values[key] = port
            priority = self.integer(f["priority"], f"{path}.priority", 0, 65535) if "priority" in f else 100
            masters.append(Master(id=mid, address=address, priority=priority, **values))
        return tuple(masters)
