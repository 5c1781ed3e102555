"""REST API and /metrics of a master replica (aiohttp). See docs/API.md for the endpoints with examples.

Reads need no token. Drains (POST/DELETE /v1/drain) and confirming what the drastic-change guard holds
(POST /v1/guard/confirm) need `Authorization: Bearer <token>` where the token is
the content of `security.admin_token_file` (401 without/with a malformed header, 403 with a wrong token or
when no token file is configured, 400 on bad input or an unknown link or switch (then with
`"unknown": true`), 409 when this replica is not the master). GET /v1/drains lists the drains in force with who/when/why (any replica:
backups hold the master's notes). Input it cannot use (a non-ASCII token, a JSON key twice, an undecodable
body, a request aiohttp refuses) is a 4xx and at most a debug line: controller.restguard.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiohttp import web

from controller.api import MasterApi
from controller.core import DrainRefused, NotMaster, UnknownTarget
from controller.guard import NotHeld
from controller.page import add_page_routes
from controller.restgate import MAX_CONNECTIONS, ConnectionGate, GatedSite
from controller.restguard import QuietServerLog, client_gone, error_response, json_errors, strict_json_bodies
from controller.rollout_rest import add_rollout_routes
from proto.argtypes import parse_uint
from proto.auth import bearer_denial
from proto.config import Role as SwitchRole
from proto.drains import MAX_REASON, MAX_WHO, DrainNote
from proto.logsetup import kv
from proto.lsd import DRAINED_STATES, LinkState
from proto.wire import MAX_U63

log = logging.getLogger("firepath.master.rest")

#: seconds a client may take to send a request's headers (and to open one on an idle keep-alive
#: connection) or its body; then the connection is closed (headers) or answered 408 (body). aiohttp's own
#: default is an hour, so a slow or stuck client held a connection open for that long.
READ_TIMEOUT = 10.0
#: characters of a drain's link or switch name at most (a switch name has at most 63, a link name two of them
#: and two ports): a longer one is refused without being echoed back
MAX_TARGET = 160
#: link names one guard confirmation may name (POST /v1/guard/confirm); a bigger set: confirm everything held
MAX_CONFIRM_LINKS = 4096

SERVER_KEY = web.AppKey("server", object)
TOKEN_KEY = web.AppKey("admin_token", object)
GATE_KEY = web.AppKey("connection_gate", object)
LAYER = {SwitchRole.TOR: 0, SwitchRole.AGG: 1, SwitchRole.SPINE: 2, SwitchRole.BORDER: 1}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, indent=1))


_error = error_response


def _srv(request: web.Request) -> MasterApi:
    return request.app[SERVER_KEY]  # type: ignore[return-value]


def _state_name(value: int) -> str:
    return LinkState(value).name.lower()


def _header(s: MasterApi) -> dict[str, Any]:
    c = s.core
    return {"master": c.id, "role": c.role.value, "term": c.term, "leader": c.leader, "version": c.version,
            "held": c.held, "persist_error": s.persist_error, "guard_held": len(c.guard.held),
            "other_config": c.other_config(s.now()) if c.held else {}}


async def lsd_version(request: web.Request) -> web.Response:
    return _json(_header(_srv(request)))


async def lsd(request: web.Request) -> web.Response:
    s = _srv(request)
    links = s.fabric.links
    out = _header(s)
    if len(request.query.getall("since", ())) > 1:     # the first one silently won
        return _error(400, "since: given more than once")
    since_raw = request.query.get("since")
    if since_raw is not None:
        try:     # int() read "-1", " 1", "+5", "1_0" and "٣" (= 3): digits 0-9 only (proto.argtypes.parse_uint)
            since = parse_uint(since_raw, "since", MAX_U63)
        except ValueError as e:
            return _error(400, f"{e} (an LSD version)")
        changes = s.core.lsd.changes_since(since)
        if changes is not None:
            out.update(full=False, since=since,
                       links={links[i].name: _state_name(st) for i, st in sorted(changes.items())
                              if i < len(links)})
            return _json(out)
        out.update(full=True, since=since, reason="version outside the history window (or ahead): full state")
    else:
        out["full"] = True
    out["links"] = {link.name: _state_name(st) for link, st in zip(links, s.core.lsd.states(), strict=False)}
    if s.fabric.external_slots:     # issue #13: each border's external prefixes, provided now or not
        out["external"] = s.core.external_states()
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
            "alive": s.core.switch_alive(sw.name, now),
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
            "duplicate": s.duplicates.view(c.switch, now),
        })
    out = _header(s)
    # Silent = heard under this mastership, no report for switch_dead; its links keep their state.
    out["silent"] = s.core.silent_switches(now)
    # Two live client processes for one switch (controller.dupclients): the switches of an episode now.
    out["duplicate_clients"] = [r["switch"] for r in rows if r["duplicate"] and r["duplicate"]["active"]]
    out["clients"] = rows
    return _json(out)


async def borders(request: web.Request) -> web.Response:
    """Issue #13: each eBGP border's sessions (state, uptime, prefixes in and out) from its reports, and
    which of its external prefixes the LSD says it provides."""
    s = _srv(request)
    now = s.now()
    out = _header(s)
    out["borders"] = s.core.borders.view(s.fabric, now, s.core.external_states(),
                                         alive=lambda name: s.core.switch_alive(name, now))
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
    denied = bearer_denial(request.headers.get("Authorization"), token,
                           disabled="drains are disabled: no security.admin_token_file in the config")
    return None if denied is None else _error(*denied)


async def guard(request: web.Request) -> web.Response:
    """The drastic-change guard: policy, what it holds (and since when), and the recent budget use."""
    s = _srv(request)
    now = s.now()
    g = s.core.guard
    links = s.fabric.links
    held = []
    for i, since in sorted(s.core.guard_held().items()):
        a, b = s.core.link_evidence(i, now)
        held.append({"link": links[i].name, "index": i, "held_for": round(now - since, 3),
                     "state": _state_name(s.core.lsd.state(i)), "evidence": {"a": a, "b": b}})
    out = _header(s)
    out.update(down_share=g.share, window=g.window, link_budget=g.link_budget, switch_budget=g.switch_budget,
               recent_uncorroborated=len(g.recent(now)), holds=g.holds, held_links=held)
    return _json(out)


async def damping(request: web.Request) -> web.Response:
    """Master-side damping (controller.damping): the policy, the links held DOWN (penalty now, since when,
    until when: `reuse_in` seconds from now and `reuse_at` Unix time) and the switches whose UPs wait for
    their rate limit. Times are estimates from now: a further flap pushes `reuse_at` later."""
    s = _srv(request)
    now = s.now()
    wall = time.time()
    d = s.core.damper
    p = d.policy
    links = s.fabric.links
    held = []
    for i in d.suppressed_links():
        st = d.links[i]
        a, b = s.core.link_evidence(i, now)
        reuse_at = st.reuse_at if st.reuse_at is not None else now
        held.append({"link": links[i].name, "index": i, "penalty": round(d.penalty(i, now), 1), "flaps": st.flaps,
                     "suppressed_for": round(now - (st.suppressed_since or now), 3),
                     "reuse_in": round(max(0.0, reuse_at - now), 3), "reuse_at": round(wall + reuse_at - now, 3),
                     "state": _state_name(s.core.lsd.state(i)), "evidence": {"a": a, "b": b}})
    deferred = [{"switch": sw, "due_in": round(max(0.0, due - now), 3), "deferred": d.switches[sw].deferred}
                for sw, due in sorted(d.deferred_switches().items())]
    out = _header(s)
    out.update(policy={"half_life": p.half_life, "penalty": p.penalty, "suppress": p.suppress, "reuse": p.reuse,
                       "max_suppress": p.max_suppress, "ceiling": round(d.ceiling, 1), "up_rate": p.up_rate,
                       "up_burst": p.up_burst, "storm_window": p.storm_window, "storm_links": d.storm_links,
                       "storm_switches": p.storm_switches},
               flaps=d.flaps, suppressions=d.suppressions, storms=d.storms, storm_flaps=d.storm_flaps,
               suppressed=held, deferred=deferred)
    return _json(out)


_CONFIRM_BODY = ('body must be empty or {} (confirm every held link) or JSON {"links": ["a:1-b:2", ...]} naming held '
                 f'links (at most {MAX_CONFIRM_LINKS})')


async def guard_confirm(request: web.Request) -> web.Response:
    """Publish what the guard holds DOWN: every held link (no body), or the held links named in
    {"links": [...]} — all or nothing: an unknown name is 400, a link not held 409 (`not_held`)."""
    s = _srv(request)
    denied = _check_token(request, request.app[TOKEN_KEY].value)  # type: ignore[attr-defined]
    if denied is not None:
        return denied
    names, body = None, {}
    if request.body_exists:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                raw = await request.read()
            if raw.strip():     # whitespace alone is no body, as for the actions that take none
                body = json.loads(raw)
        except (ValueError, RecursionError):
            return _error(400, _CONFIRM_BODY)
        except TimeoutError:
            return _error(408, f"request body not received within {READ_TIMEOUT:g} s")
        if body != {}:          # {} (what `firepath guard --confirm` sends): every held link, as no body
            names = body.get("links") if isinstance(body, dict) and body.keys() == {"links"} else None
            if not isinstance(names, list) or not names or len(names) > MAX_CONFIRM_LINKS \
                    or not all(isinstance(n, str) and len(n) <= MAX_TARGET for n in names):
                return _error(400, _CONFIRM_BODY)
    try:
        released = s.guard_confirm(names)
    except UnknownTarget as e:
        return _error(400, str(e), unknown=True)
    except NotHeld as e:
        return _error(409, f"{e}: nothing released (`GET /v1/guard` lists what is held)",
                      not_held=[s.fabric.links[i].name for i in e.links])
    except NotMaster as e:
        return _error(409, f"not the master: {e}", leader=s.core.leader)
    out = _header(s)
    out["released"] = [s.fabric.links[i].name for i in released]
    return _json(out)


_DRAIN_BODY = ('body must be JSON: exactly one of {"link": "a:1-b:2"} or {"switch": "name"}, optionally '
               '"reason" and "who" (strings)')


def _note_json(s: MasterApi, note: DrainNote) -> dict[str, Any]:
    return {"kind": note.kind, "target": note.target, "who": note.who, "at": note.at or None,
            "reason": note.reason, "links": [s.fabric.links[i].name for i in s.core.drains.links_of(note)]}


async def _drain(request: web.Request, drained: bool) -> web.Response:
    s = _srv(request)
    denied = _check_token(request, request.app[TOKEN_KEY].value)  # type: ignore[attr-defined]
    if denied is not None:
        return denied
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            body = await request.json()
    except (ValueError, RecursionError):        # bad JSON or UTF-8, a 5,000-digit number, nesting too deep
        return _error(400, _DRAIN_BODY)
    except TimeoutError:
        return _error(408, f"request body not received within {READ_TIMEOUT:g} s")
    if not isinstance(body, dict) or len({"link", "switch"} & body.keys()) != 1 \
            or not body.keys() <= {"link", "switch", "reason", "who"}:
        return _error(400, _DRAIN_BODY)
    kind = "link" if "link" in body else "switch"
    target = body[kind]
    if not isinstance(target, str):
        return _error(400, f"{kind}: expected a string, got {type(target).__name__}")
    if len(target) > MAX_TARGET:    # echoed back whole before: a 1 MB name, a 1 MB error answer
        return _error(400, f"{kind} {target[:40]!r}...: {len(target)} characters, longer than any {kind} name",
                      unknown=True)
    for field, limit in (("reason", MAX_REASON), ("who", MAX_WHO)):
        v = body.get(field)
        if v is None:
            continue
        if not isinstance(v, str):
            return _error(400, f"{field}: expected a string (at most {limit} printable characters), "
                               f"got {type(v).__name__} {json.dumps(v)[:40]}")
        if len(v) > limit:
            return _error(400, f"{field}: {len(v)} characters, at most {limit}")
        if not v.isprintable():
            return _error(400, f"{field}: non-printable character(s) (newlines, control characters)")
    who = body.get("who") or (f"unknown@{request.remote}" if request.remote else None)
    try:
        result = s.drain(**{kind: target}, drained=drained, who=who, reason=body.get("reason"))
    except UnknownTarget as e:
        return _error(400, str(e), unknown=True)
    except DrainRefused as e:      # the book is full: `refused` tells a client from a bad request
        return _error(400, str(e), refused=True)
    except NotMaster as e:
        return _error(409, f"not the master: {e}", leader=s.core.leader)
    links = s.fabric.links
    out = _header(s)
    out.update(drained=drained, target=result["target"], links=[links[i].name for i in result["links"]],
               still_drained={links[i].name: [_note_json(s, n) for n in notes]
                              for i, notes in result["still"].items()})
    if not drained:
        out["lifted"] = [_note_json(s, n) for n in result["lifted"]]
    else:       # added fields only: a client of the older answer reads it as before
        d = result["drain"]
        out.update(outcome=d.outcome, previous=None if d.previous is None else _note_json(s, d.previous),
                   message=d.message())
    if result.get("not_saved"):     # in force and replicated, but lost if every replica restarts
        out["not_saved"] = result["not_saved"]
    return _json(out)


async def drains(request: web.Request) -> web.Response:
    s = _srv(request)
    out = _header(s)
    states = s.core.lsd.states()
    out.update(serial=s.core.drains.serial, drains=[_note_json(s, n) for n in s.core.drains.notes],
               drained_links=[link.name for link in s.fabric.links if states[link.index] in DRAINED_STATES])
    return _json(out)


async def keys(request: web.Request) -> web.Response:
    """The key set this replica signs and verifies with (ids only; key rollover, issue #21), and the frames
    dropped under a key id it does not accept: the 256 most recently seen (claimed sender, key id) pairs
    (unauthenticated: bounded, proto.bounded.KeyIdRejections) and exact totals per key id and evicted."""
    s = _srv(request)
    rej = s.codec.rejected_key_ids
    return _json({"master": s.core.id, **s.codec.keys.status(),
                  "rejected_key_ids": [{"peer": p, "key_id": k, "count": n} for (p, k), n in sorted(rej.items())],
                  "rejected_key_id_totals": [{"key_id": k, "count": n} for k, n in sorted(rej.by_key_id.items())],
                  "rejected_key_ids_evicted": {"pairs": rej.evicted_pairs, "frames": rej.evicted_frames}})


async def drain(request: web.Request) -> web.Response:
    return await _drain(request, True)


async def undrain(request: web.Request) -> web.Response:
    return await _drain(request, False)


def read_token(server: MasterApi) -> str | None:
    """The admin token, None without `security.admin_token_file`; AuthError (config file:line, token file,
    problem) if it cannot be used — `firepath master` checks it before it starts."""
    from proto.auth import configured_admin_token

    return configured_admin_token(server.fabric.security)


class TokenHolder:
    """The admin token in force (None: drains disabled). A reload of the running config reads its
    `security.admin_token_file` again, as it swaps the key set (the security section is outside the digest),
    so a token added to a running fabric's config, or rotated, is in force without a restart; a prepared next
    config's token waits for the first reload after its commit (README "Reload")."""

    def __init__(self, value: str | None) -> None:
        self.value = value

    def reload_hook(self, server: MasterApi) -> Any:
        def hook(nxt: Any) -> None:
            from proto.auth import AuthError, configured_admin_token

            if nxt.digest != server.core.fabric.digest:     # a prepared next config: the token stays, as keys do
                return
            try:
                value = configured_admin_token(nxt.security)
            except AuthError as e:      # an unusable token file: keep the token in force, say why
                log.error(kv("admin_token_reload_refused", error=e))
                return
            if value != self.value:
                log.warning(kv("admin_token_reloaded", drains="enabled" if value else "disabled"))
            self.value = value
        return hook


def make_app(server: MasterApi, gate: ConnectionGate | None = None) -> web.Application:
    app = web.Application(middlewares=[*([gate.middleware] if gate else []), json_errors, client_gone,
                                       strict_json_bodies(lambda r: _check_token(r, r.app[TOKEN_KEY].value),
                                                          READ_TIMEOUT)])
    app[SERVER_KEY] = server
    token = TokenHolder(read_token(server))
    app[TOKEN_KEY] = token
    hooks = getattr(server, "reload_hooks", None)
    if isinstance(hooks, list):
        hooks.append(token.reload_hook(server))
    app[GATE_KEY] = gate
    app.router.add_get("/v1/lsd/version", lsd_version)
    app.router.add_get("/v1/lsd", lsd)
    app.router.add_get("/v1/topology", topology)
    app.router.add_get("/v1/clients", clients)
    app.router.add_get("/v1/masters", masters)
    app.router.add_get("/v1/borders", borders)
    app.router.add_post("/v1/drain", drain)
    app.router.add_delete("/v1/drain", undrain)
    app.router.add_get("/v1/guard", guard)
    app.router.add_post("/v1/guard/confirm", guard_confirm)
    app.router.add_get("/v1/damping", damping)
    app.router.add_get("/v1/drains", drains)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/keys", keys)
    add_page_routes(app, server)          # GET / (the topology page) and the routes it reads: controller.page
    add_rollout_routes(app, _srv, lambda r: _check_token(r, r.app[TOKEN_KEY].value), _json, READ_TIMEOUT)  # issue #21
    return app


async def start_rest(server: MasterApi, host: str, port: int,
                     max_connections: int = MAX_CONNECTIONS) -> web.AppRunner:
    """Serves the API on host:port, at most `max_connections` at once (controller.restgate); the gate is
    `runner.app[GATE_KEY]` (its refused/evicted counts)."""
    # QuietServerLog: a request aiohttp refuses itself (LineTooLong...) is one debug line, not a traceback
    handler_args: dict[str, Any] = {"access_log": None, "keepalive_timeout": READ_TIMEOUT,
                                    "logger": QuietServerLog()}
    gate = ConnectionGate(handler_args, max_connections,
                          on_drop=lambda reason: server.metrics.rest_dropped.labels(reason).inc())
    server.metrics.rest_open.set_function(lambda: float(gate.open_connections))
    runner = web.AppRunner(make_app(server, gate), **handler_args)
    await runner.setup()
    site = GatedSite(runner, host, port, gate, reuse_address=True)
    await site.start()
    return runner
