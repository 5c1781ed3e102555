"""The drastic-change guard's operator side at the master core (controller.core.MasterCore mixes this in):
what the guard holds and an operator's confirmation (REST `POST /v1/guard/confirm`). The state lives on
MasterCore (`guard`, `lsd`, `dist`, ...); the policy is controller.guard."""

from __future__ import annotations

from collections.abc import Iterable

from controller.actions import Action, GuardEvent, VersionChanged
from controller.coretypes import NotMaster, Role
from controller.guard import NotHeld
from proto.lsd import LinkState


class GuardOps:
    """MasterCore's guard operations (a mixin: every attribute it uses is MasterCore's)."""

    def guard_held(self) -> dict[int, float]:
        """Held link index -> time first held (empty unless MASTER)."""
        return dict(self.guard.held)

    def guard_confirm(self, now: float, links: Iterable[int] | None = None) -> list[Action]:
        """An operator confirms the held change: the held links `links` (indices; None: every held link) are
        published DOWN now in one version (cause "guard"). Raises NotMaster, or controller.guard.NotHeld
        (nothing changed) when a named link is not held."""
        if self.role != Role.MASTER:
            raise NotMaster(f"{self.id} is {self.role.value} (term {self.term}, leader {self.leader})")
        named = None if links is None else sorted(set(links))
        if named is not None:   # checked before the timeouts: a refusal must not swallow their events
            missing = tuple(i for i in named if i not in self.guard.held)
            if missing:
                raise NotHeld(missing)
        out: list[Action] = []
        self._apply_timeouts(now, out)      # silence only (SwitchSilent): it releases no held link
        links = self.guard.confirm(now, named)
        if not links:
            return out
        out.append(GuardEvent("release", links, "confirmed"))
        before = self.lsd.version
        self.lsd.apply({i: LinkState.DOWN for i in links})
        if self.lsd.version != before:
            out.append(VersionChanged(self.lsd.version, len(links), "guard"))
            self.dist.on_version(now, urgent=True)
        return out
