"""Read-only REST API and Prometheus metrics of a switch client (aiohttp, on its own thread).

    GET /v1/state   ports (PHY/ND/usable/miscabled/damped), LSD version and term, master in use,
                    programmed version, report and resync counters — see README "Client REST".
    GET /v1/routes[?prefix=P&ovs=0]
                    the routes as computed next to what OVS holds (read over the client's OpenFlow
                    connection; `ovs=0` skips that), differences marked — see client.routeview.
    GET /metrics    the same as Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger("firepath.client.rest")

StatusFn = Callable[[], dict[str, Any]]
RoutesFn = Callable[..., dict[str, Any]]
STATUS_KEY = web.AppKey("status", object)
ROUTES_KEY = web.AppKey("routes", object)
RELOAD_KEY = web.AppKey("reload", object)
TOKEN_KEY = web.AppKey("admin_token", object)


class ClientCollector:
    """Builds the metrics from one consistent `status()` snapshot at scrape time."""

    def __init__(self, status: StatusFn) -> None:
        self._status = status

    def collect(self) -> Any:
        s = self._status()
        sw = s["switch"]
        gauges = {
            "firepath_client_lsd_version": ("LSD version applied", s["lsd_version"]),
            "firepath_client_programmed_version": ("LSD version programmed in the switch", s["programmed_version"]),
            "firepath_client_term": ("Highest master term seen", s["term"]),
            "firepath_client_fail_static": ("1 when no master is heard (forwarding on the last LSD)",
                                            int(s["fail_static"])),
            "firepath_client_config_mismatch": ("1 when the masters serve another config than this switch runs "
                                                "(nothing programmed from them, forwarding on what is installed)",
                                                int(s.get("config_mismatch") is not None)),
            "firepath_client_connected": ("1 when the OpenFlow connection is up", int(s["connected"])),
            "firepath_client_routes": ("Routes installed", s["routes"]),
            "firepath_client_nd_meters": ("1 when ND punts go through OpenFlow meters (0: switch refused them)",
                                          int(s["nd_meters"])),
            "firepath_client_groups": ("ECMP groups installed", s["groups"]),
            "firepath_client_last_program_seconds": ("Duration of the last programming round",
                                                     s["last_program_ms"] / 1000.0),
        }
        for name, (doc, value) in gauges.items():
            g = GaugeMetricFamily(name, doc, labels=["switch"])
            g.add_metric([sw], value)
            yield g
        ports = GaugeMetricFamily("firepath_client_port_usable", "1 if the fabric port is usable for routing",
                                  labels=["switch", "port", "peer", "nd"])
        for p in s["ports"]:
            ports.add_metric([sw, str(p["port"]), p["peer"], p["nd"]], int(p["usable"]))
        yield ports
        oam = GaugeMetricFamily("firepath_client_port_oam_up",
                                "1 if link OAM (CFM in ovs-vswitchd) says the fabric port is live; state: "
                                "off (software ND), pending, up, fault, miscabled, failed (fell back to ND)",
                                labels=["switch", "port", "state"])
        for p in s["ports"]:
            oam.add_metric([sw, str(p["port"]), p.get("oam", "off")], int(p.get("oam") == "up"))
        yield oam
        counters = CounterMetricFamily("firepath_client_events", "Client event counters", labels=["switch", "event"])
        for event, value in client_events(s).items():
            counters.add_metric([sw, event], value)
        yield counters


def client_events(s: dict[str, Any]) -> dict[str, float]:
    """The `event` label -> value of firepath_client_events, each event once. The core counts rejected
    datagrams per path (`rejected_<reason>` from masters, `nd_rejected_<reason>` for ND); the codec's own
    tally over both paths is `codec_rejected_<reason>` (it used to be `rejected_<reason>` as well: the same
    series twice in one exposition)."""
    events: dict[str, float] = {"reports_sent": s["reports_sent"], "report_retransmits": s["report_retransmits"],
                                "of_errors": s["of_errors"], "of_retries": s["of_retries"]}
    for prefix, values in (("replica_", s["replica"]), ("", s["counters"]), ("codec_rejected_", s["codec_rejected"])):
        for key, value in values.items():
            events.setdefault(f"{prefix}{key}", value)     # a name taken already keeps its first source
    return events


async def _state(request: web.Request) -> web.Response:
    status: StatusFn = request.app[STATUS_KEY]  # type: ignore[assignment]
    return web.json_response(status(), dumps=lambda d: json.dumps(d, indent=1))


async def _routes(request: web.Request) -> web.Response:
    from ipaddress import IPv4Network

    routes: RoutesFn | None = request.app[ROUTES_KEY]  # type: ignore[assignment]
    if routes is None:
        return web.json_response({"error": "routes are not available on this client"}, status=404)
    raw = request.query.get("prefix")
    try:
        prefix = IPv4Network(raw, strict=False) if raw else None
    except ValueError:
        return web.json_response({"error": f"prefix: {raw!r} is not an IPv4 address or prefix"}, status=400)
    read_ovs = request.query.get("ovs", "1") != "0"
    loop = asyncio.get_running_loop()
    try:
        view = await loop.run_in_executor(None, lambda: routes(prefix, read_ovs))
    except Exception as e:  # noqa: BLE001 - one readable line for the operator, the trace in the log
        log.exception("GET /v1/routes failed")
        return web.json_response({"error": f"routes: {type(e).__name__}: {e}"}, status=500)
    return web.json_response(view, dumps=lambda d: json.dumps(d, indent=1))


async def _reload(request: web.Request) -> web.Response:
    """POST /v1/reload (issue #21, admin token): read the config file again, as SIGHUP does. 200
    {"outcome": "unchanged"|"changed", "digest"}: "changed" restarts the client on it, gracefully; 400 with
    the file:line:field error for an invalid file (nothing changes); 401/403 without the right token."""
    import hmac

    reload: Callable[[], dict[str, Any]] | None = request.app[RELOAD_KEY]  # type: ignore[assignment]
    token: str | None = request.app[TOKEN_KEY]  # type: ignore[assignment]
    if reload is None:
        return web.json_response({"error": "reload is not available on this client"}, status=404)
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        return web.json_response({"error": "missing Authorization: Bearer <token>"}, status=401)
    if token is None:
        return web.json_response({"error": "no security.admin_token_file in the config"}, status=403)
    if not hmac.compare_digest(presented.strip().encode(), token.encode()):
        return web.json_response({"error": "invalid token"}, status=403)
    try:
        out = await asyncio.get_running_loop().run_in_executor(None, reload)
    except ValueError as e:           # ConfigError (file:line:field) or AuthError (a key file, named)
        return web.json_response({"error": str(e)}, status=400)
    return web.json_response(out)


def build_app(status: StatusFn, routes: RoutesFn | None = None, reload: Callable[[], dict[str, Any]] | None = None,
              token: str | None = None) -> tuple[web.Application, CollectorRegistry]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClientCollector(status))  # type: ignore[arg-type]

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app[STATUS_KEY] = status
    app[ROUTES_KEY] = routes
    app[RELOAD_KEY] = reload
    app[TOKEN_KEY] = token
    app.router.add_get("/v1/state", _state)
    app.router.add_post("/v1/reload", _reload)
    app.router.add_get("/v1/routes", _routes)
    app.router.add_get("/metrics", metrics)
    return app, registry


class RestServer:
    """Serves the client's REST API on host:port from a background thread with its own event loop."""

    def __init__(self, status: StatusFn, host: str, port: int, routes: RoutesFn | None = None,
                 reload: Callable[[], dict[str, Any]] | None = None, token: str | None = None) -> None:
        self.app, self.registry = build_app(status, routes, reload, token)
        self.host, self.port = host, port
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="rest", daemon=True)

    def start(self) -> None:
        """Bind and serve. Raises OSError (e.g. the port is in use) with nothing left running."""
        runner = web.AppRunner(self.app, access_log=None)
        try:
            self._loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, self.host, self.port)
            self._loop.run_until_complete(site.start())
        except BaseException:
            self._loop.run_until_complete(runner.cleanup())
            self._loop.close()
            raise
        self._runner = runner
        self._thread.start()
        log.info("rest listening on %s:%d", self.host, self.port)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(2.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(2.0)
