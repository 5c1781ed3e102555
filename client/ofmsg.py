"""A neutral model of the OpenFlow 1.3 messages firepath sends and reads back.

The OpenFlow plan (`client.ofplan`) builds these plain values without a datapath; the one module that
builds os-ken objects (`client.of.translate`) translates them one-to-one into os-ken parser objects, and translates
the switch's flow/group stats replies back into them, so that the plan can diff desired against
installed state. Tests apply them to a fake OpenFlow table. Field names follow OXM / os-ken naming
(`eth_type`, `ipv4_dst`, `arp_tpa`, ...) so the translation stays mechanical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

# Reserved port numbers (OpenFlow 1.3).
OFPP_IN_PORT = 0xFFFFFFF8
OFPP_LOCAL = 0xFFFFFFFE
OFPP_CONTROLLER = 0xFFFFFFFD
OFPP_ANY = 0xFFFFFFFF
OFPG_ANY = 0xFFFFFFFF
OFPCML_NO_BUFFER = 0xFFFF

#: Match and set-field values are kept as hashable tuples of (oxm_field_name, value). A masked
#: field's value is a (value, mask) pair of strings, e.g. ("ipv4_dst", ("10.1.1.0", "255.255.255.0")).
MatchFields = tuple[tuple[str, Any], ...]


def match(**fields: Any) -> MatchFields:
    """Build a canonical (sorted) match from keyword OXM fields; None values are left out."""
    return tuple(sorted((k, v) for k, v in fields.items() if v is not None))


@dataclass(frozen=True, slots=True)
class Output:
    port: int
    max_len: int = OFPCML_NO_BUFFER


@dataclass(frozen=True, slots=True)
class SetField:
    field: str
    value: Any


@dataclass(frozen=True, slots=True)
class DecNwTtl:
    """Decrement the IPv4 TTL; OVS drops the packet when it would reach zero."""


@dataclass(frozen=True, slots=True)
class GroupAction:
    group_id: int


@dataclass(frozen=True, slots=True)
class Meter:
    """Send the packet through meter `meter_id` first (an OFPIT_METER instruction in OpenFlow 1.3, an
    action in 1.5). In a flow's actions it comes first; the translation puts it where each version wants."""

    meter_id: int


Action = Output | SetField | DecNwTtl | GroupAction | Meter


class FlowCommand(IntEnum):
    ADD = 0
    MODIFY = 1
    MODIFY_STRICT = 2
    DELETE = 3
    DELETE_STRICT = 4


class GroupCommand(IntEnum):
    ADD = 0
    MODIFY = 1
    DELETE = 2


class GroupType(IntEnum):
    ALL = 0
    SELECT = 1
    INDIRECT = 2
    FF = 3


@dataclass(frozen=True, slots=True)
class Bucket:
    actions: tuple[Action, ...]
    weight: int = 1
    watch_port: int = OFPP_ANY
    watch_group: int = OFPG_ANY


@dataclass(frozen=True, slots=True)
class FlowMod:
    command: FlowCommand
    priority: int
    match: MatchFields
    actions: tuple[Action, ...] = ()
    table_id: int = 0
    cookie: int = 0
    cookie_mask: int = 0
    out_port: int = OFPP_ANY
    out_group: int = OFPG_ANY


@dataclass(frozen=True, slots=True)
class Selection:
    """How a SELECT group picks a bucket: OVS's selection method and its 64-bit parameter.

    For `dp_hash` the parameter is the hash basis (the config keeps it to 32 bits): select groups of different
    switches with different bases hash one flow independently, so the tiers of a Clos do not make the
    same choice (hash polarization). Carried by an OpenFlow 1.5 group-mod only (NTR experimenter
    property); on OpenFlow 1.3 it is neither sent nor readable.
    """

    method: str = "dp_hash"
    param: int = 0


@dataclass(frozen=True, slots=True)
class GroupMod:
    command: GroupCommand
    group_id: int
    type: GroupType = GroupType.SELECT
    buckets: tuple[Bucket, ...] = ()
    selection: Selection | None = None  # SELECT ADD/MODIFY only; None = the driver's default


class MeterCommand(IntEnum):
    ADD = 0
    MODIFY = 1
    DELETE = 2


@dataclass(frozen=True, slots=True)
class MeterMod:
    """A packets-per-second meter with one drop band: at most `rate_pps` packets/s, bursts of `burst`."""

    command: MeterCommand
    meter_id: int
    rate_pps: int = 0
    burst: int = 0


@dataclass(frozen=True, slots=True)
class Barrier:
    """Ends a batch: the switch has applied everything before it once the reply arrives."""


@dataclass(frozen=True, slots=True)
class PacketOut:
    port: int
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class PortMod:
    """Set a port administratively down (`down`) or up (OFPPC_PORT_DOWN): OVS takes the interface down,
    so the far end loses carrier. The driver fills in the port's hardware address (OpenFlow requires it)."""

    port: int
    down: bool


class Role(IntEnum):
    """Controller roles (OpenFlow 1.3/1.5 `ofp_controller_role`, section 6.3.6 of 1.5)."""

    NOCHANGE = 0
    EQUAL = 1
    MASTER = 2
    SLAVE = 3


@dataclass(frozen=True, slots=True)
class RoleRequest:
    """Ask for a controller role. With MASTER the switch demotes every other controller to SLAVE; it refuses
    (OFPRRFC_STALE) a `generation_id` older than the newest it has seen (compared as a signed 64-bit distance)."""

    role: Role
    generation_id: int


OfMessage = FlowMod | GroupMod | MeterMod | Barrier | PacketOut | PortMod


@dataclass(frozen=True, slots=True)
class InstalledFlow:
    """A flow as read back from the switch (flow stats reply)."""

    table_id: int
    priority: int
    match: MatchFields
    actions: tuple[Action, ...]
    cookie: int


@dataclass(frozen=True, slots=True)
class InstalledGroup:
    """A group as read back from the switch (group description reply)."""

    group_id: int
    type: GroupType
    buckets: tuple[Bucket, ...]
    selection: Selection | None = None  # None = not known (an OpenFlow 1.3 read-back cannot show it)


@dataclass(frozen=True, slots=True)
class InstalledMeter:
    """A meter as read back from the switch (meter config reply): pktps, one drop band."""

    meter_id: int
    rate_pps: int
    burst: int
