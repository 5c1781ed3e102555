"""The OpenFlow driver's interface in firepath's own types (no os-ken inside).

Events are frozen values handed to the driver's `on_event` callback, in order, from one thread.
`Driver` is the narrow interface the programmer and the daemon use, so they (and their tests, with a
fake driver) never import os-ken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from client import ofmsg

__all__ = [
    "BarrierDone",
    "Connected",
    "Disconnected",
    "Driver",
    "DriverEvent",
    "NotConnected",
    "OfError",
    "PacketIn",
    "PortStatusChanged",
    "RoleChanged",
]


@dataclass(frozen=True, slots=True)
class Connected:
    """The switch is ready: ports maps OpenFlow port number -> live (OFPPS_LIVE); names -> interface;
    carrier -> the port has carrier (no OFPPS_LINK_DOWN) and is not admin down; a port missing from
    `carrier` has carrier iff it is live (a switch that cannot tell the two apart)."""

    dpid: int
    ports: dict[int, bool]
    names: dict[int, str] = field(default_factory=dict)
    version: int = 0x04  # negotiated OpenFlow version: 0x04 = 1.3, 0x06 = 1.5
    carrier: dict[int, bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PortStatusChanged:
    """A port's state changed. `live`: OFPPS_LIVE (carrier and, in OVS, no CFM/BFD fault: what `watch_port`
    follows); `carrier`: no OFPPS_LINK_DOWN and not admin down (None: same as `live`). A port can have
    carrier without being live: OAM says the link does not work although the PHY is up (a silent failure)."""

    port: int
    live: bool
    name: str
    deleted: bool = False
    carrier: bool | None = None


@dataclass(frozen=True, slots=True)
class PacketIn:
    port: int
    data: bytes = field(repr=False)
    cookie: int = 0


@dataclass(frozen=True, slots=True)
class BarrierDone:
    batch_id: int


@dataclass(frozen=True, slots=True)
class OfError:
    """The switch rejected a message; batch_id is the batch that carried it (None if unknown)."""

    batch_id: int | None
    type: int
    code: int
    text: str


@dataclass(frozen=True, slots=True)
class RoleChanged:
    """The switch told this connection its controller role (`client.ofmsg.Role` value): `reply` to our
    role request, or an asynchronous OFPT_ROLE_STATUS (`status`: another controller asked to be master).
    `generation_id`: the one the switch reported (for a status, the new master's)."""

    role: int
    generation_id: int
    source: str  # "reply" | "status"


DriverEvent = Connected | Disconnected | PortStatusChanged | PacketIn | BarrierDone | OfError | RoleChanged


class NotConnected(RuntimeError):
    """No OpenFlow connection to the switch right now (or it ended during the call)."""


class Driver(Protocol):
    """What the programmer and the daemon need from an OpenFlow driver (`client.of.driver.OfDriver`)."""

    target: str

    @property
    def connected(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self, timeout: float = 5.0) -> None: ...

    def send(self, messages: list[ofmsg.OfMessage]) -> int:
        """Queue a batch; returns its id. Raises NotConnected."""
        ...

    def dump_state(
        self, timeout: float = 5.0
    ) -> tuple[list[ofmsg.InstalledFlow], list[ofmsg.InstalledGroup]]:
        """Every installed flow and group. Raises NotConnected or TimeoutError."""
        ...

    def dump_meters(self, timeout: float = 5.0) -> list[ofmsg.InstalledMeter]:
        """Every installed meter. Raises NotConnected or TimeoutError."""
        ...
