"""REST API and /metrics of a master replica (aiohttp). See docs/API.md for the endpoints with examples.

Reads need no token. Drains (POST/DELETE /v1/drain) need `Authorization: Bearer <token>` where the token is
the content of `security.admin_token_file` (401 without/with a malformed header, 403 with a wrong token or
when no token file is configured, 400 on bad input, 409 when this replica is not the master).
"""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from controller.core import NotMaster, UnknownTarget
from controller.page import add_page_routes
from proto.config import Role as SwitchRole
from proto.lsd import LinkState

if TYPE_CHECKING:
    from controller.server import MasterServer

SERVER_KEY = web.AppKey("server", object)
TOKEN_KEY = web.AppKey("admin_token", object)
LAYER = {SwitchRole.TOR: 0, SwitchRole.AGG: 1, SwitchRole.SPINE: 2, SwitchRole.BORDER: 1}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, indent=1))


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return _json({"error": message, **extra}, status=status)


def _srv(request: web.Request) -> MasterServer:
    return request.app[SERVER_KEY]  # type: ignore[return-value]


def _state_name(value: int) -> str:
    return LinkState(value).name.lower()


def _header(s: MasterServer) -> dict[str, Any]:
    c = s.core
    return {"master": c.id, "role": c.role.value, "term": c.term, "leader": c.leader, "version": c.version,
            "held": c.held}


async def lsd_version(request: web.Request) -> web.Response:
    return _json(_header(_srv(request)))


async def lsd(request: web.Request) -> web.Response:
    s = _srv(request)
    links = s.fabric.links
    out = _header(s)
    since_raw = request.query.get("since")
    if since_raw is not None:
        try:
            since = int(since_raw)
        except ValueError:
            return _error(400, f"since: expected an integer version, got {since_raw!r}")
        changes = s.core.lsd.changes_since(since)
        if changes is not None:
            out.update(full=False, since=since,
                       links={links[i].name: _state_name(st) for i, st in sorted(changes.items())})
            return _json(out)
        out.update(full=True, since=since, reason="version outside the history window (or ahead): full state")
    else:
        out["full"] = True
    out["links"] = {link.name: _state_name(st) for link, st in zip(links, s.core.lsd.states(), strict=True)}
    return _json(out)


async def topology(request: web.Request) -> web.Response:
    s = _srv(request)
    f = s.fabric
    now = s.now()
    states = s.core.lsd.states()
    columns: dict[int, int] = {}
    switches = []
    for sw in f.switches:
        layer = LAYER.get(sw.role, 0)
        col = columns.get(layer, 0)
        columns[layer] = col + 1
        switches.append({
            "name": sw.name, "id": sw.id, "role": sw.role.value,
            "prefixes": [str(p) for p in sw.prefixes],
            "loopback": str(sw.loopback) if sw.loopback else None,
            "alive": s.core.deriver.alive(sw.name, now),
            "layer": layer, "column": col,
        })
    links = [
        {"index": link.index, "name": link.name,
         "a": {"switch": link.a.switch, "port": link.a.port},
         "b": {"switch": link.b.switch, "port": link.b.port},
         "weight": link.weight, "state": _state_name(states[link.index])}
        for link in f.links
    ]
    out = _header(s)
    out.update(fabric=f.name, digest=f.digest, layers={"0": "tor", "1": "agg/border", "2": "spine"},
               switches=switches, links=links)
    return _json(out)


async def clients(request: web.Request) -> web.Response:
    s = _srv(request)
    now = s.now()
    rows = []
    for c in s.core.clients(now):
        addr = s.addresses.get(c.switch)
        rows.append({
            "switch": c.switch, "address": f"{addr[0]}:{addr[1]}" if addr else None,
            "alive": c.alive,
            "last_report_age": None if c.last_report_age is None else round(c.last_report_age, 4),
            "last_heard_age": None if c.last_heard_age is None else round(c.last_heard_age, 4),
            "acked_term": c.acked_term, "acked_version": c.acked_version, "sent_version": c.sent_version,
            "lag": c.lag, "fulls_sent": c.fulls_sent, "deltas_sent": c.deltas_sent,
        })
    out = _header(s)
    out["clients"] = rows
    return _json(out)


async def masters(request: web.Request) -> web.Response:
    s = _srv(request)
    assert s.driver is not None
    out = _header(s)
    out.update(s.driver.view(s.now()))
    return _json(out)


async def metrics(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    body = _srv(request).metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _check_token(request: web.Request, token: str | None) -> web.Response | None:
    auth = request.headers.get("Authorization")
    if auth is None:
        return _error(401, "missing Authorization: Bearer <token>")
    scheme, _, presented = auth.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return _error(401, "malformed Authorization header (expected 'Bearer <token>')")
    if token is None:
        return _error(403, "drains are disabled: no security.admin_token_file in the config")
    if not hmac.compare_digest(presented.strip().encode(), token.encode()):
        return _error(403, "invalid token")
    return None


async def _drain(request: web.Request, drained: bool) -> web.Response:
    s = _srv(request)
    denied = _check_token(request, request.app[TOKEN_KEY])  # type: ignore[arg-type]
    if denied is not None:
        return denied
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _error(400, 'body must be JSON: {"link": "a:1-b:2"} or {"switch": "name"}')
    if not isinstance(body, dict) or len(body) != 1 or not ({"link", "switch"} & body.keys()):
        return _error(400, 'body must be exactly one of {"link": "a:1-b:2"} or {"switch": "name"}')
    (kind, target), = body.items()
    if not isinstance(target, str):
        return _error(400, f"{kind}: expected a string, got {type(target).__name__}")
    try:
        indices = s.drain(**{kind: target}, drained=drained)
    except UnknownTarget as e:
        return _error(400, str(e))
    except NotMaster as e:
        return _error(409, f"not the master: {e}", leader=s.core.leader)
    out = _header(s)
    out.update(drained=drained, links=[s.fabric.links[i].name for i in indices])
    return _json(out)


async def drain(request: web.Request) -> web.Response:
    return await _drain(request, True)


async def undrain(request: web.Request) -> web.Response:
    return await _drain(request, False)


def read_token(server: MasterServer) -> str | None:
    path = server.fabric.security.admin_token_file
    if path is None:
        return None
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"{path}: admin token file is empty")
    return token


def make_app(server: MasterServer) -> web.Application:
    app = web.Application()
    app[SERVER_KEY] = server
    app[TOKEN_KEY] = read_token(server)
    app.router.add_get("/v1/lsd/version", lsd_version)
    app.router.add_get("/v1/lsd", lsd)
    app.router.add_get("/v1/topology", topology)
    app.router.add_get("/v1/clients", clients)
    app.router.add_get("/v1/masters", masters)
    app.router.add_post("/v1/drain", drain)
    app.router.add_delete("/v1/drain", undrain)
    app.router.add_get("/metrics", metrics)
    add_page_routes(app, server)          # GET / (the topology page) and the routes it reads: controller.page
    return app


async def start_rest(server: MasterServer, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(server), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    return runner
