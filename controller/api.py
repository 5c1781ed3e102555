"""The narrow interface of a running master replica that REST (`controller.rest`) and the topology page
(`controller.page`) are built on: read views of the node and the operator calls (drain, guard confirm, reload and rollout).

`controller.server.MasterServer` implements it; REST and the page import this module, never the server, so
there is no import cycle between the runtime and its HTTP views.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from controller.core import MasterCore
from controller.dupclients import DuplicateClients
from controller.metrics import MasterMetrics
from controller.roles import RoleDriver
from proto.config import Fabric


class MasterApi(Protocol):
    fabric: Fabric
    core: MasterCore                         # read only: its public views (lsd, clients(), guard, drains, ...)
    driver: RoleDriver | None                # read only: view(now)
    metrics: MasterMetrics
    addresses: dict[str, tuple[str, int]]    # switch -> last UDP source address
    duplicates: DuplicateClients             # read only: view(switch, now), active(switch, now)
    persist_error: str | None
    observers: list[Any]                     # read-only observers: reported(switch, ports), changed()
    bind: str
    rest_port: int
    config_root: Path                        # where a prepare may read (controller.configpath)

    def now(self) -> float: ...

    def overload_now(self) -> bool: ...          # issue #18: the replica is dropping or queueing input

    def drain(self, *, link: str | None = None, switch: str | None = None, drained: bool,
              who: str | None = None, reason: str | None = None) -> dict[str, Any]: ...

    def guard_confirm(self, links: Sequence[str] | None = None) -> list[int]: ...

    def reload(self, path: str | Path | None = None) -> dict[str, Any]: ...

    async def reload_async(self, path: str | Path | None = None) -> dict[str, Any]: ...   # off the loop

    def rollout_commit(self) -> dict[str, Any]: ...

    def rollout_abort(self) -> dict[str, Any]: ...
