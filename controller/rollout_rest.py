"""REST of the config rollout and reload (issue #21), on a master replica. Mounted by controller.rest.

- `GET /v1/rollout`: phase (idle/prepared), current and next digests, which switch holds which config
  (current/next/other/unheard, from the digest of its last report), what blocks a commit, the last outcome.
- `POST /v1/rollout/prepare` `{"config": PATH}`: read PATH (on the replica's host) and hold it as the next
  config; `POST /v1/reload` (no body): read the replica's own config file again (as SIGHUP does) — the
  same config changes nothing, another is prepared. PATH is confined (controller.configpath): in the
  config directory or below it, resolved, a regular file, none of the running config's secret files.
  400 with the file:line:field error for a bad file or a PATH outside that rule, one changing a master or
  the distribution (`masters[2].rest_port`) or another config naming another key set (a prepare never
  changes keys); 409 for a rollout that cannot be prepared now (another one is); 429 (Retry-After) while
  another prepare or reload is reading its file (one at a time). Refused: nothing changed, keys included.
  The file is read and checked on a worker thread (controller.serverreload): a big one does not stall the
  event loop (FMRP, reports).
- `POST /v1/rollout/commit`: the master switches (409 on a backup, with `leader`; 409 with the blockers
  while a live switch does not hold the next config). `POST /v1/rollout/abort`: any replica.

Every POST needs the admin token (as the drains do).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from controller.api import MasterApi
from controller.configpath import confine
from controller.core import NotMaster
from controller.rollout import RolloutError
from controller.serverreload import ReloadBusy
from proto.config import ConfigError

Check = Callable[[web.Request], web.Response | None]


def add_rollout_routes(app: web.Application, srv: Callable[[web.Request], MasterApi],
                       check: Check, json: Callable[..., web.Response], read_timeout: float) -> None:
    """Mount the routes; `check(request)` returns an error response unless the admin token is right; a
    request body not received within `read_timeout` s is answered 408."""

    def guarded(fn: Callable[[web.Request, MasterApi], Awaitable[web.Response]]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            denied = check(request)
            if denied is not None:
                return denied
            s = srv(request)
            try:
                return await fn(request, s)
            except ConfigError as e:
                return json({"error": str(e)}, status=400)
            except NotMaster as e:
                return json({"error": f"not the master: {e}", "leader": s.core.leader}, status=409)
            except RolloutError as e:
                return json({"error": str(e), "rollout": s.core.rollout_status(s.now())}, status=409)
            except ReloadBusy as e:
                busy = json({"error": str(e), "reading": e.source}, status=429)
                busy.headers["Retry-After"] = "1"
                return busy
        return handler

    async def status(request: web.Request) -> web.Response:
        s = srv(request)
        return json(s.core.rollout_status(s.now()))

    async def prepare(request: web.Request, s: MasterApi) -> web.Response:
        try:
            async with asyncio.timeout(read_timeout):
                body = await request.json()
        except (ValueError, RecursionError):
            body = None
        except TimeoutError:
            return json({"error": f"request body not received within {read_timeout:g} s"}, status=408)
        if not isinstance(body, dict) or not isinstance(body.get("config"), str) or body.keys() != {"config"}:
            return json({"error": 'body must be JSON: {"config": "/path/to/next.yaml"} (a path on this '
                                  'replica\'s host)'}, status=400)
        nxt = s.core.rollout.next
        path = confine(body["config"], s.config_root, [s.fabric, s.core.fabric] + ([nxt] if nxt else []))
        return json({**await s.reload_async(path), "rollout": s.core.rollout_status(s.now())})

    async def reload(request: web.Request, s: MasterApi) -> web.Response:
        return json({**await s.reload_async(), "rollout": s.core.rollout_status(s.now())})

    async def commit(request: web.Request, s: MasterApi) -> web.Response:
        return json({**s.rollout_commit(), "rollout": s.core.rollout_status(s.now())})

    async def abort(request: web.Request, s: MasterApi) -> web.Response:
        return json({**s.rollout_abort(), "rollout": s.core.rollout_status(s.now())})

    app.router.add_get("/v1/rollout", status)
    app.router.add_post("/v1/rollout/prepare", guarded(prepare))
    app.router.add_post("/v1/rollout/commit", guarded(commit))
    app.router.add_post("/v1/rollout/abort", guarded(abort))
    app.router.add_post("/v1/reload", guarded(reload))
