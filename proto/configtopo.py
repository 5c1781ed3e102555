"""The topology part of the config loader: switches (hosts, prefixes, eBGP), links and their endpoints,
checked as they are read (ports used once, prefixes not overlapping, peers consistent), then as a whole
(every switch cabled to the fabric; proto.transit warns of racks joined only by a non-transit relay)."""


import bisect
from collections import Counter
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import yaml

# Key ids on the wire (a u8, 0 reserved); the single-secret form ``key_file`` is key id 1.
from proto.configyaml import (
    _OVS_RE,
    _T_STR,
    UNICAST_ROUTABLE,
    NodeReader,
    _line,
    special_use,
)
from proto.disjoint import DisjointSets
from proto.fabricmodel import (
    MAX_BGP_PEERS,
    MAX_HASH_BASIS,
    MAX_OF_PORT,
    MAX_SWITCH_ID,
    BgpPeer,
    BgpSettings,
    Endpoint,
    Host,
    Link,
    Role,
    Switch,
    default_hash_basis,
    listed,
    quoted,
)

_SWITCH_KEYS = (
    "name", "id", "role", "prefixes", "loopback", "mac", "gateway", "hosts", "ovs", "rest_port", "hash_basis", "transit",
    "bgp",
)
#: First octets of the special-purpose blocks (special_use): a quick filter for the loader's hot path.
_SPECIAL_OCTETS = frozenset({0, 127, 169, *range(224, 256)})
_BGP_KEYS = ("local_as", "announce", "peers", "router_id", "damping", "track_fabric")
_PEER_KEYS = ("address", "peer_as", "port", "local_address", "local_as", "hold_time", "keepalive", "max_prefix",
              "password_file")
MAX_ASN = 2**32 - 1
#: A switch's PortReport lists every fabric port: at most this many, so that the worst report (each port
#: miscabled by a 63-character name, a border's whole eBGP summary) fits one datagram (tests/test_config.py).
#: The Jupiter preset has at most 262 per switch.
MAX_FABRIC_PORTS = 600
MAX_EXTERNAL = 63
_HOST_KEYS = ("name", "port", "ip", "mac")
_LINK_KEYS = ("a", "b", "weight", "capacity")
MAX_CAPACITY = 1_000_000.0  # Gbit/s (1 Pbit/s): a bound that catches unit mistakes (bit/s written as Gbit/s)
#: Gbit/s (1 Mbit/s): the resolution bucket weights read capacities at (client.ofstate.bucket_weights), so
#: a smaller one (1e-9: a unit mistake the other way) would silently weigh as 0.001
MIN_CAPACITY = 0.001
_ROLES = {r.value: r for r in Role}


class TopologyReader(NodeReader):
    """`switches:` and `links:` of one parse (proto.configparse.FabricParser is the whole parse)."""

    def switches(self, node: yaml.Node) -> tuple[Switch, ...]:
        items = self.seq(node, "switches")
        if not items:
            raise self.fail(node, "switches", "at least 1 switch is required")
        self.switch_line: dict[str, int] = {}
        # (switch, port) -> (i, "a"|"b", node) for link ends, (switch index, -1 - host index, node) for hosts
        self.port_use: dict[tuple[str, int], tuple] = {}
        #: the YAML node of each switch, in file order (errors about a whole switch point at it)
        self.switch_nodes: list[yaml.Node] = items
        ids: dict[int, tuple[str, int]] = {}
        macs: dict[str, tuple[str, int]] = {}
        #: host name -> (its name node, its field), for the cross-checks of names (FabricParser.check_names)
        self.host_names: dict[str, tuple[yaml.Node, str]] = {}
        host_names = self.host_names
        #: host IP -> (host name, line): the addresses checked against masters and eBGP peers (check_outside)
        self.host_ips: dict[IPv4Address, tuple[str, int]] = {}
        host_ips = self.host_ips
        #: (first, last, node, field, what) of every eBGP peer address, local address and peer subnet
        self.external_addresses: list[tuple[int, int, yaml.Node, str, str]] = []
        #: (BGP identifier, local AS) -> (border, line) of the sessions that use it (RFC 6286: unique in an AS)
        self.bgp_ids: dict[tuple[IPv4Address, int], tuple[str, int]] = {}
        #: address -> (border, line) of every eBGP peer address / local address
        self.bgp_peer_ips: dict[IPv4Address, tuple[str, int]] = {}
        self.bgp_local_ips: dict[IPv4Address, tuple[str, int]] = {}
        # (first, last, prefixlen, field, line, owner) of every internally originated prefix and loopback
        self.internal: list[tuple[int, int, int, str, int, str]] = []
        #: (prefix, node, field) of every eBGP `announce` entry, checked against `internal` once it is complete
        self.announced: list[tuple[IPv4Network, yaml.Node, str]] = []
        border: list[tuple[IPv4Network, str, yaml.Node, str]] = []
        switches: list[Switch] = []
        for i, item in enumerate(items):
            path = f"switches[{i}]"
            f = self.fields(item, path, _SWITCH_KEYS, ("name", "id", "role"))
            name = self.name(f["name"], f"{path}.name")
            if name in self.switch_line:
                raise self.fail(
                    f["name"], f"{path}.name", f"duplicate switch name {quoted(name)} (also at line {self.switch_line[name]})"
                )
            self.switch_line[name] = _line(f["name"])
            sid = self.integer(f["id"], f"{path}.id", 1, MAX_SWITCH_ID)
            if sid in ids:
                other, line = ids[sid]
                raise self.fail(f["id"], f"{path}.id", f"duplicate id {sid} (also used by {other} at line {line})")
            ids[sid] = (name, _line(f["id"]))
            role_name = self.string(f["role"], f"{path}.role")
            role = _ROLES.get(role_name)
            if role is None:
                raise self.fail(
                    f["role"], f"{path}.role", f"{quoted(role_name)} is not one of: {', '.join(_ROLES)}"
                )
            prefixes: list[IPv4Network] = []
            if "prefixes" in f:
                for j, pnode in enumerate(self.seq(f["prefixes"], f"{path}.prefixes")):
                    pfield = f"{path}.prefixes[{j}]"
                    prefix = self.network(pnode, pfield)
                    if prefix in prefixes:
                        raise self.fail(pnode, pfield, f"{prefix} listed twice")
                    prefixes.append(prefix)
                    if role is Role.BORDER:
                        border.append((prefix, pfield, pnode, name))
                    else:       # a fabric prefix (hosts and the gateway lie in one: they are checked too)
                        if prefix.prefixlen == 0:
                            raise self.fail(pnode, pfield, f"{prefix} is a default route: only a border "
                                            f"originates it, not a{'n' if role is Role.AGG else ''} {role}")
                        first = int(prefix.network_address)
                        last = first | ((1 << (32 - prefix.prefixlen)) - 1)
                        self.check_routable(first, last, prefix, pnode, pfield)
                        self.internal.append((first, last, prefix.prefixlen, pfield, _line(pnode), name))
            loopback = None
            if "loopback" in f:
                lnode = f["loopback"]
                text = self.string(lnode, f"{path}.loopback")
                loopback = self.network(lnode, f"{path}.loopback") if "/" in text else None
                if loopback is None:
                    loopback = IPv4Network(f"{self.address(lnode, f'{path}.loopback')}/32")
                if loopback.prefixlen != 32:
                    raise self.fail(lnode, f"{path}.loopback", f"{loopback} is not a /32")
                addr = int(loopback.network_address)
                self.check_routable(addr, addr, loopback.network_address, lnode, f"{path}.loopback")
                self.internal.append((addr, addr, 32, f"{path}.loopback", _line(lnode), name))
            if "mac" in f:
                mac = self.mac(f["mac"], f"{path}.mac")
                mac_node: yaml.Node = f["mac"]
            else:
                mac = "0e:00:" + ":".join(f"{b:02x}" for b in sid.to_bytes(4, "big"))
                mac_node = f["id"]
            if mac in macs:
                raise self.fail(
                    mac_node, f"{path}.mac", f"duplicate MAC {mac} (also used by {macs[mac][0]} at line {macs[mac][1]})"
                )
            macs[mac] = (name, _line(mac_node))
            gateway = None
            if "gateway" in f:
                if role is not Role.TOR:
                    raise self.fail(f["gateway"], f"{path}.gateway", f"only a tor has a gateway, not a {role}")
                gateway = self.address(f["gateway"], f"{path}.gateway")
                if not any(gateway in p for p in prefixes):
                    raise self.fail(f["gateway"], f"{path}.gateway", f"{gateway} is not in the switch's prefixes")
                if loopback is not None and gateway == loopback.network_address:
                    raise self.fail(f["gateway"], f"{path}.gateway", f"{gateway} is the switch's loopback")
            elif role is Role.TOR and prefixes:
                first = prefixes[0]
                gateway = first.network_address + 1 if first.prefixlen < 31 else first.network_address
            hosts: list[Host] = []
            if "hosts" in f:
                hnodes = self.seq(f["hosts"], f"{path}.hosts")
                if hnodes and role is not Role.TOR:
                    raise self.fail(f["hosts"], f"{path}.hosts", f"hosts attach to a tor, not to a {role}")
                for j, hnode in enumerate(hnodes):
                    hpath = f"{path}.hosts[{j}]"
                    hf = self.fields(hnode, hpath, _HOST_KEYS, _HOST_KEYS)
                    hname = self.name(hf["name"], f"{hpath}.name")
                    if hname in host_names:
                        raise self.fail(hf["name"], f"{hpath}.name",
                                        f"duplicate host name {quoted(hname)} (also at line {_line(host_names[hname][0])})")
                    host_names[hname] = (hf["name"], f"{hpath}.name")
                    port = self.integer(hf["port"], f"{hpath}.port", 1, MAX_OF_PORT)
                    self.use_port(name, port, hf["port"], (i, -1 - j))
                    ip = self.address(hf["ip"], f"{hpath}.ip")
                    subnet = next((p for p in prefixes if ip in p), None)
                    if subnet is None:
                        subnets = listed(prefixes) or "none"
                        raise self.fail(
                            hf["ip"], f"{hpath}.ip", f"{ip} is outside the subnets of tor {name} ({subnets})"
                        )
                    if subnet.prefixlen < 31 and ip in (subnet.network_address, subnet.broadcast_address):
                        raise self.fail(hf["ip"], f"{hpath}.ip", f"{ip} is not a usable host address of {subnet}")
                    if ip == gateway:
                        raise self.fail(hf["ip"], f"{hpath}.ip", f"{ip} is the gateway of tor {name}")
                    if ip in host_ips:
                        other, line = host_ips[ip]
                        raise self.fail(hf["ip"], f"{hpath}.ip", f"duplicate IP {ip} (also used by {other} at line {line})")
                    host_ips[ip] = (hname, _line(hf["ip"]))
                    hmac = self.mac(hf["mac"], f"{hpath}.mac")
                    if hmac in macs:
                        other, line = macs[hmac]
                        raise self.fail(
                            hf["mac"], f"{hpath}.mac", f"duplicate MAC {hmac} (also used by {other} at line {line})"
                        )
                    macs[hmac] = (hname, _line(hf["mac"]))
                    hosts.append(Host(name=hname, tor=name, port=port, ip=ip, mac=hmac))
            ovs = None
            if "ovs" in f:
                ovs = self.string(f["ovs"], f"{path}.ovs")
                m = _OVS_RE.match(ovs)
                ok = m is not None and 1 <= int(m.group(2)) <= 65535
                if ok:
                    try:
                        IPv4Address(m.group(1))
                    except ValueError:
                        ok = False
                if not ok:
                    raise self.fail(f["ovs"], f"{path}.ovs", f"{quoted(ovs)} is not tcp:IPV4:PORT")
            rest_port = self.integer(f["rest_port"], f"{path}.rest_port", 1, 65535) if "rest_port" in f else None
            hash_basis = (
                self.integer(f["hash_basis"], f"{path}.hash_basis", 0, MAX_HASH_BASIS)
                if "hash_basis" in f
                else default_hash_basis(sid)
            )
            transit = (
                self.boolean(f["transit"], f"{path}.transit")
                if "transit" in f
                else role.value in self.routing_settings.transit_roles
            )
            bgp = None
            if "bgp" in f:
                if role is not Role.BORDER:
                    raise self.fail(f["bgp"], f"{path}.bgp", f"only a border speaks eBGP, not a {role}")
                bgp = self.bgp(f["bgp"], f"{path}.bgp", name)
                if len(prefixes) > MAX_EXTERNAL:       # its report's `external` has one bit per prefix, in a u63
                    raise self.fail(self.seq(f["prefixes"], "")[MAX_EXTERNAL], f"{path}.prefixes[{MAX_EXTERNAL}]",
                                    f"a border speaking eBGP originates at most {MAX_EXTERNAL} prefixes (one bit "
                                    f"each in its report), got {len(prefixes)}")
            switches.append(
                Switch(
                    bgp=bgp,
                    name=name,
                    id=sid,
                    role=role,
                    prefixes=tuple(prefixes),
                    loopback=loopback,
                    mac=mac,
                    gateway=gateway,
                    hosts=tuple(hosts),
                    ovs=ovs,
                    rest_port=rest_port,
                    hash_basis=hash_basis,
                    transit=transit,
                )
            )
        self.check_overlaps(border)
        self.check_announced()
        return tuple(switches)

    def check_announced(self) -> None:
        """An eBGP `announce` entry is the cluster's own aggregate: it must meet a fabric prefix or loopback.
        Announcing other space (8.8.8.0/24) would draw traffic the fabric has no route for (and hijack it)."""
        for prefix, node, field in self.announced:
            first, last = int(prefix.network_address), int(prefix.broadcast_address)
            if not any(lo <= last and first <= hi for lo, hi, *_ in self.internal):
                raise self.fail(node, field, f"{prefix} holds none of the fabric's prefixes and loopbacks: a "
                                "border announces the cluster's own aggregate(s), not other space")

    def bgp(self, node: yaml.Node, path: str, switch: str) -> BgpSettings:
        """A border's `bgp:` section; its peers' ports are claimed like host ports."""
        f = self.fields(node, path, _BGP_KEYS, ("local_as", "peers"))
        local_as = self.integer(f["local_as"], f"{path}.local_as", 1, MAX_ASN)
        announce: list[IPv4Network] = []
        for j, pnode in enumerate(self.seq(f["announce"], f"{path}.announce") if "announce" in f else ()):
            prefix = self.network(pnode, f"{path}.announce[{j}]")
            if prefix in announce:
                raise self.fail(pnode, f"{path}.announce[{j}]", f"{prefix} listed twice")
            if prefix.prefixlen == 0:
                raise self.fail(pnode, f"{path}.announce[{j}]", f"{prefix} is a default route: a border announces "
                                "the cluster's aggregate(s) outside, never a default (the outside would send the "
                                "fabric every destination it has no route for)")
            # a half-default (0.0.0.0/1 + 128.0.0.0/1) is a default route by other means, and a supernet
            # shorter than /8 takes in public space no cluster owns (tester bb40b: 0.0.0.0/1 was accepted)
            problem = special_use(int(prefix.network_address), int(prefix.broadcast_address))
            if prefix.prefixlen < 8 or problem is not None:
                raise self.fail(pnode, f"{path}.announce[{j}]", f"{prefix} " + (
                    f"{problem}" if problem is not None else "is shorter than /8") + ": a border announces the "
                    "cluster's aggregate(s) outside, not a supernet of other space")
            announce.append(prefix)
            self.announced.append((prefix, pnode, f"{path}.announce[{j}]"))
        router_id = self.address(f["router_id"], f"{path}.router_id") if "router_id" in f else None
        if router_id is not None and int(router_id) == 0:
            raise self.fail(f["router_id"], f"{path}.router_id", "0.0.0.0: a BGP identifier is non-zero (RFC 6286)")
        damping = self.boolean(f["damping"], f"{path}.damping") if "damping" in f else True
        track = self.boolean(f["track_fabric"], f"{path}.track_fabric") if "track_fabric" in f else True
        peers: list[BgpPeer] = []
        items = self.seq(f["peers"], f"{path}.peers")
        if not items:
            raise self.fail(f["peers"], f"{path}.peers", "at least 1 peer is required")
        if len(items) > MAX_BGP_PEERS:
            raise self.fail(f["peers"], f"{path}.peers", f"{len(items)} peers: at most {MAX_BGP_PEERS} (a border's "
                            "report carries one session summary per peer)")
        for j, item in enumerate(items):
            pp = f"{path}.peers[{j}]"
            pf = self.fields(item, pp, _PEER_KEYS, ("address", "peer_as", "port", "local_address"))
            address = self.unicast_address(pf["address"], f"{pp}.address")
            if any(p.address == address for p in peers):
                raise self.fail(pf["address"], f"{pp}.address", f"peer {address} listed twice")
            peer_as = self.integer(pf["peer_as"], f"{pp}.peer_as", 1, MAX_ASN)
            plocal = self.integer(pf["local_as"], f"{pp}.local_as", 1, MAX_ASN) if "local_as" in pf else local_as
            if peer_as == plocal:
                raise self.fail(pf["peer_as"], f"{pp}.peer_as", f"AS {peer_as} is the local AS: eBGP needs another")
            port = self.integer(pf["port"], f"{pp}.port", 1, MAX_OF_PORT,
                                "the border's OpenFlow port facing the peer (the session is TCP port 179)")
            self.use_port(switch, port, pf["port"], (f"{pp}.port", "bgp"))
            text = self.string(pf["local_address"], f"{pp}.local_address")
            try:
                local = IPv4Interface(text)
            except ValueError as e:
                raise self.fail(pf["local_address"], f"{pp}.local_address", f"{quoted(text)}: {e}") from None
            if address == local.ip:
                raise self.fail(pf["local_address"], f"{pp}.local_address",
                                f"{local.ip} is the peer's address too: local_address is the border's own address "
                                f"on the link, the peer is the router at the other end")
            if "/" not in text or address not in local.network:
                raise self.fail(pf["local_address"], f"{pp}.local_address",
                                f"{text} must be ADDRESS/LEN on the peer's subnet (peer {address})")
            net = local.network
            for value, vnode, vfield in ((address, pf["address"], f"{pp}.address"),
                                         (local.ip, pf["local_address"], f"{pp}.local_address")):
                if net.prefixlen <= 30 and value in (net.network_address, net.broadcast_address):
                    which = "network" if value == net.network_address else "broadcast"
                    raise self.fail(vnode, vfield, f"{value} is the {which} address of {net}: not a host's")
            problem = special_use(int(local.ip), int(local.ip), local_ok=True)
            if problem is not None:
                raise self.fail(pf["local_address"], f"{pp}.local_address",
                                f"{local.ip} {problem}: not a unicast address")
            # one border's peer is never another border's own address (a copy-paste of the wrong side)
            for value, vnode, vfield, mine, theirs in (
                    (address, pf["address"], f"{pp}.address", self.bgp_peer_ips, self.bgp_local_ips),
                    (local.ip, pf["local_address"], f"{pp}.local_address", self.bgp_local_ips, self.bgp_peer_ips)):
                other = theirs.get(value)
                if other is not None and other[0] != switch:
                    side = "a local address" if theirs is self.bgp_local_ips else "an eBGP peer address"
                    raise self.fail(vnode, vfield, f"{value} is {side} of border {other[0]} (line {other[1]}): "
                                    "a border's peer is outside the fabric, not another border")
                mine.setdefault(value, (switch, _line(vnode)))
            # nor another border's own address: two borders answering for one IP (ARP, BGP sessions sourced
            # from it) is an address conflict, whatever their router ids or ASes
            owner = self.bgp_local_ips[local.ip]
            if owner[0] != switch:
                raise self.fail(pf["local_address"], f"{pp}.local_address",
                                f"eBGP local address {local.ip} of border {switch} is also border {owner[0]}'s "
                                f"(line {owner[1]}): a local address belongs to one border only")
            for value, where, field, what in (
                    (address, pf["address"], f"{pp}.address", f"eBGP peer address {address} of border {switch}"),
                    (local.ip, pf["local_address"], f"{pp}.local_address",
                     f"eBGP local address {local.ip} of border {switch}"),
                    (net, pf["local_address"], f"{pp}.local_address", f"the eBGP peer subnet {net} of border {switch}"),
            ):
                first = int(value.network_address) if isinstance(value, IPv4Network) else int(value)
                last = int(value.broadcast_address) if isinstance(value, IPv4Network) else first
                self.external_addresses.append((first, last, where, field, what))
            hold = self.integer(pf["hold_time"], f"{pp}.hold_time", 0, 65535) if "hold_time" in pf else 9
            if 0 < hold < 3:
                raise self.fail(pf["hold_time"], f"{pp}.hold_time", f"{hold} s: 0 or at least 3 (RFC 4271)")
            keep = self.integer(pf["keepalive"], f"{pp}.keepalive", 0, 21845) if "keepalive" in pf else hold // 3
            if hold and not keep < hold:
                raise self.fail(pf["keepalive"], f"{pp}.keepalive", f"{keep} s must be below the hold time {hold} s")
            maxp = self.integer(pf["max_prefix"], f"{pp}.max_prefix", 1, 1_000_000) if "max_prefix" in pf else 100
            pw = self.path(pf["password_file"], f"{pp}.password_file") if "password_file" in pf else None
            pw_where = f"{self.source}:{_line(pf['password_file'])}: {pp}.password_file" if pw else ""
            peers.append(BgpPeer(address, peer_as, port, local, plocal, hold, keep, maxp, pw, pw_where))
            # the session's BGP identifier: router_id, else its local address (client.bgpspeaker)
            bgp_id, id_node = (router_id, f["router_id"]) if router_id is not None else (local.ip, pf["local_address"])
            id_field = f"{path}.router_id" if router_id is not None else f"{pp}.local_address"
            other = self.bgp_ids.setdefault((bgp_id, plocal), (switch, _line(id_node)))
            if other[0] != switch:
                raise self.fail(id_node, id_field, f"BGP identifier {bgp_id} in AS {plocal} is also border {other[0]}'s "
                                f"(line {other[1]}): it must be unique within an AS (RFC 6286; without router_id a "
                                "session's identifier is its local address)")
        return BgpSettings(local_as, tuple(announce), tuple(peers), router_id, damping, track)

    def check_routable(self, first: int, last: int, value: object, node: yaml.Node, field: str) -> None:
        """ConfigError if a fabric prefix or loopback (addresses first..last) is not unicast-routable space
        (proto.configyaml.special_use: multicast, loopback, 0/8, 240/4, link-local)."""
        if (first >> 24) in _SPECIAL_OCTETS or (last >> 24) in _SPECIAL_OCTETS or last - first >= 1 << 24:
            problem = special_use(first, last)
            if problem is not None:
                raise self.fail(node, field, f"{value} {problem}: {UNICAST_ROUTABLE}")

    def use_port(self, switch: str, port: int, node: yaml.Node, user: tuple[int, int | str]) -> None:
        """Claim `switch:port` for a link end (i, "a"|"b") or a host (switch index, -1 - host index)."""
        key = (switch, port)
        other = self.port_use.get(key)
        if other is not None:
            raise self.fail(
                node,
                _port_user(user),
                f"port {switch}:{port} already used by {_port_user(other[:2])} (line {_line(other[2])})",
            )
        self.port_use[key] = (*user, node)

    def check_overlaps(self, border: list[tuple[IPv4Network, str, yaml.Node, str]]) -> None:
        """Internal prefixes and loopbacks must be pairwise disjoint (sort, then one sweep: O(n log n)).

        A border switch's prefixes are external routes (e.g. the 0.0.0.0/0 default): several border switches
        may originate the same one and they may cover internal prefixes (longest match prefers those), but
        one must not be equal to or inside an internal prefix. Nor may an eBGP peering (the peer's address, the
        local address, their subnet) meet an internal prefix or loopback (`check_outside`).
        """
        items = sorted(self.internal, key=lambda it: (it[0], -it[1]))
        for prev, cur in zip(items, items[1:], strict=False):
            if cur[0] <= prev[1]:
                # report the one later in the file, naming the other
                first, second = (prev, cur) if prev[4] <= cur[4] else (cur, prev)
                raise self.fail(
                    second[4],
                    second[3],
                    f"{_net(second)} of {second[5]} overlaps {_net(first)} of {first[5]} (line {first[4]})",
                )
        starts = [it[0] for it in items]
        self._internal_sorted, self._internal_starts = items, starts
        for prefix, pfield, pnode, owner in border:
            lo, hi = int(prefix.network_address), int(prefix.broadcast_address)
            k = bisect.bisect_right(starts, lo) - 1
            if k >= 0 and items[k][1] >= hi:
                inside = items[k]
                raise self.fail(
                    pnode,
                    pfield,
                    f"external prefix {prefix} of {owner} lies inside {_net(inside)} of {inside[5]} (line {inside[4]})",
                )

        for lo, hi, node, field, what in self.external_addresses:
            self.check_outside(lo, hi, node, field, what,
                               "an eBGP peering is outside the fabric, not on its prefixes, loopbacks or hosts")

    def check_outside(self, lo: int, hi: int, node: yaml.Node, field: str, what: str, why: str) -> None:
        """ConfigError at `field` if addresses lo..hi meet an internal prefix or loopback (after check_overlaps:
        those are disjoint and sorted: the first one meeting them starts at or below `lo`, or right after it)."""
        items = self._internal_sorted
        k = bisect.bisect_right(self._internal_starts, lo) - 1
        if k < 0 or items[k][1] < lo:
            k += 1
            if k == len(items) or items[k][0] > hi:
                return
        first, last, _plen, ifield, line, owner = items[k]
        host = self.host_ips.get(IPv4Address(lo)) if lo == hi else None
        if host is not None:
            clash = f"is the IP of host {host[0]} of tor {owner} (line {host[1]})"
        elif ifield.endswith(".loopback"):
            clash = f"{'is' if lo == hi else 'contains'} the loopback {IPv4Address(first)} of {owner} (line {line})"
        elif lo == hi or first <= lo and hi <= last:
            clash = f"lies inside {_net(items[k])} of {owner} (line {line})"
        else:
            clash = f"overlaps {_net(items[k])} of {owner} (line {line})"
        raise self.fail(node, field, f"{what} {clash}: {why}")

    def links(self, node: yaml.Node) -> tuple[Link, ...]:
        items = self.seq(node, "links")
        links: list[Link] = []
        append = links.append
        port_use = self.port_use
        known = self.switch_line
        mapping_node = yaml.MappingNode
        for i, item in enumerate(items):
            # Fast path for a clean {a: "s:p", b: "s:p"}: no checks fail, nothing formatted. Anything else,
            # or any problem, goes through link() which validates step by step and names the error.
            if type(item) is mapping_node and len(item.value) == 2:
                (ka, va), (kb, vb) = item.value
                if ka.value == "a" and kb.value == "b" and ka.tag == kb.tag == va.tag == vb.tag == _T_STR:
                    sa, _, pa = va.value.rpartition(":")
                    sb, _, pb = vb.value.rpartition(":")
                    if (
                        sa in known
                        and sb in known
                        and sa != sb
                        and pa.isdigit()
                        and pb.isdigit()
                        and pa.isascii()
                        and pb.isascii()
                    ):
                        porta, portb = int(pa), int(pb)
                        if 0 < porta <= MAX_OF_PORT and 0 < portb <= MAX_OF_PORT:
                            keya, keyb = (sa, porta), (sb, portb)
                            if keya not in port_use and keyb not in port_use:
                                port_use[keya] = (i, "a", va)
                                port_use[keyb] = (i, "b", vb)
                                append(Link(i, Endpoint(sa, porta), Endpoint(sb, portb)))
                                continue
            append(self.link(i, item))
        self.check_port_counts(links)
        return tuple(links)

    def check_port_counts(self, links: list[Link]) -> None:
        if not links or max(Counter(e.switch for link in links for e in (link.a, link.b)).values()) \
                <= MAX_FABRIC_PORTS:
            return
        counts: dict[str, int] = {}         # over the limit: find the link end that passes it
        for link in links:
            for end, which in ((link.a, "a"), (link.b, "b")):
                n = counts[end.switch] = counts.get(end.switch, 0) + 1
                if n > MAX_FABRIC_PORTS:
                    raise self.fail(self.port_use[(end.switch, end.port)][2], f"links[{link.index}].{which}",
                                    f"switch {end.switch} has more than {MAX_FABRIC_PORTS} fabric ports: its "
                                    f"report of them would not fit one datagram")

    def check_connected(self, switches: tuple[Switch, ...], links: tuple[Link, ...], links_node: yaml.Node) -> None:
        """Every switch must reach every other over `links:`: ConfigError otherwise, at the first switch (in
        file order) that cannot be reached, naming why.

        A switch with no link is unreachable, and so are its hosts and prefixes; two parts with no link
        between them are two fabrics under one name (one master set, one LSD) whose ToRs cannot reach each
        other's. Routing policy (transit roles) is `proto.transit.transit_warning`'s: this is the cabling, the least any
        routing needs. A one-switch fabric needs no link. `links_node`: the `links:` value, or the
        document when the key is absent (then `links` is empty). One union-find pass, O(links).
        """
        n = len(switches)
        if n < 2:
            return
        if not links:
            raise self.fail(links_node, "links", f"{n} switches and no link between them: a switch reaches the "
                                                 f"others only over fabric links (only a one-switch fabric has none)")
        index = {s.name: i for i, s in enumerate(switches)}
        sets = DisjointSets(n)
        find = sets.find
        linked = [False] * n
        parts = n
        for link in links:
            a, b = index[link.a.switch], index[link.b.switch]
            linked[a] = linked[b] = True
            parts -= sets.union(a, b)
        if parts == 1:
            return
        for i, ok in enumerate(linked):
            if not ok:
                sw = switches[i]
                also = f" or its host(s) {listed(h.name for h in sw.hosts)}" if sw.hosts else ""
                raise self.fail(self.switch_nodes[i], f"switches[{i}]",
                                f"{sw.role} {sw.name} has no fabric link (no entry of links: names it): no other "
                                f"switch can reach it{also}")
        members: dict[int, list[int]] = {}
        for i in range(n):
            members.setdefault(find(i), []).append(i)
        # the largest part is "the fabric" (ties: the one listed first); name the first switch outside it
        main = max(members.values(), key=lambda m: (len(m), -m[0]))
        cut = min(i for i in range(n) if find(i) != find(main[0]))
        part = members[find(cut)]
        names = ", ".join(switches[j].name for j in part[:5]) + (f" and {len(part) - 5} more" if len(part) > 5 else "")
        first = switches[main[0]]
        raise self.fail(self.switch_nodes[cut], f"switches[{cut}]",
                        f"switch {switches[cut].name} is cut off from the rest of the fabric: its links connect "
                        f"only {len(part)} switch(es) ({names}), none of the other {n - len(part)} (such as "
                        f"{first.name}, line {self.switch_line[first.name]}): link the parts")

    def link(self, i: int, item: yaml.Node) -> Link:
        path = f"links[{i}]"
        f = self.fields(item, path, _LINK_KEYS, ("a", "b"))
        a = self.endpoint(f["a"], f"{path}.a")
        b = self.endpoint(f["b"], f"{path}.b")
        if a.switch == b.switch:
            raise self.fail(f["b"], f"{path}.b", f"link from switch {a.switch} to itself")
        self.use_port(a.switch, a.port, f["a"], (i, "a"))
        self.use_port(b.switch, b.port, f["b"], (i, "b"))
        weight = self.integer(f["weight"], f"{path}.weight", 1, 65535) if "weight" in f else 1
        capacity = None
        if "capacity" in f:
            capacity = self.number(f["capacity"], f"{path}.capacity")
            if not MIN_CAPACITY <= capacity <= MAX_CAPACITY:
                raise self.fail(f["capacity"], f"{path}.capacity", f"{f['capacity'].value} Gbit/s out of range "
                                f"{MIN_CAPACITY:g}..{MAX_CAPACITY:g} (1 Mbit/s to 1 Pbit/s)")
        return Link(i, a, b, weight, capacity)

    def endpoint(self, node: yaml.Node, field: str) -> Endpoint:
        value = self.string(node, field)
        switch, sep, port_text = value.rpartition(":")
        if not sep or not switch or not port_text.isdigit() or not port_text.isascii():
            raise self.fail(node, field, f"{quoted(value)} is not SWITCH:PORT")
        if switch not in self.switch_line:
            raise self.fail(node, field, f"unknown switch {quoted(switch)}")
        port = int(port_text)
        if not 1 <= port <= MAX_OF_PORT:
            raise self.fail(node, field, f"port {port} out of range 1..{MAX_OF_PORT}")
        return Endpoint(switch, port)


def _port_user(user: tuple) -> str:
    i, which = user[0], user[1]
    if which == "bgp":
        return str(i)
    if isinstance(which, str):
        return f"links[{i}].{which}"
    return f"switches[{i}].hosts[{-1 - which}].port"


def _net(item: tuple[int, int, int, str, int, str]) -> str:
    return f"{IPv4Address(item[0])}/{item[2]}"
