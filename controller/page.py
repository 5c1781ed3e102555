"""The live topology page of a master replica: `GET /`, its static assets, and the routes it reads.

Routes (added to the REST app by `add_page_routes`; the page itself is `controller/page_assets/`):

- ``GET /`` the page; ``GET /page/{file}`` its script and style (no external resources).
- ``GET /v1/view`` the fabric as the page draws it (`controller.topoview`): switches, links, groups, the
  replicas' REST addresses. Static per fabric digest; built once in a worker thread at start, served
  gzip-compressed when the browser accepts it.
- ``GET /v1/events`` a Server-Sent Events stream: ``hello`` (this replica's header, the display state of every
  link as a string of digits, the liveness of every switch as a string of digits: 0 dead, 1 alive,
  2 unknown) on connect, then ``update``
  (header when it changed, ``[[link, state], …]``, ``[[switch, alive], …]``) within `min_interval` of a
  change, and ``ping`` (the header) every `ping_interval` so a page detects a silent replica.
- ``GET /v1/link/{name or index}``, ``GET /v1/switch/{name}``: details for a click — ends, ports, weight,
  LSD and display state, when this replica saw it change, the ends' last port reports, and for a switch
  its client's ``/v1/state`` read from the client REST where proto.restaddr says it is (127.0.0.1:<rest_port>,
  when the switch's datagrams come from this replica's namespace), bounded in size, time and shape
  (controller.clientfetch; `client_timeout` seconds), or an error string saying why not.
- CORS: every ``GET`` answers any origin (reads need no token anyway); ``/v1/drain`` answers a preflight and
  the request itself only for the origins of the configured replicas (``http://address:rest_port``, and
  ``localhost`` for a loopback replica), so a page served by one replica can drain through the leader and
  follow a failover to another replica. The token travels in the Authorization header, never a cookie.

`PageFeed` is an observer of the master runtime (`controller.api.MasterApi`: `reported`, `changed`): it keeps the display state, the
liveness and the last-change wall time of every link and switch as this replica sees them (from its own
start; a backup has no port reports, so it shows the LSD states only), and fans updates out to the
subscribed streams. A subscriber that falls `queue_size` messages behind is dropped (its page reconnects
and gets a fresh ``hello``), so a stuck browser never grows the master's memory.

While no stream is open the feed follows nothing (issue #18: ~8 % of a Jupiter cold start's master CPU
went to a display nobody looked at): `reported` only keeps each switch's last report, and the display state
catches up when a page subscribes or asks for a link's or switch's details. What changed while nobody
watched is known to have changed, not when: its ``changed_at`` is null and ``changed_before`` the wall time
of that catch-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from controller.api import MasterApi
from controller.clientfetch import ClientFetcher
from controller.core import Role, UnknownTarget
from controller.topoview import STATUS_NAMES, FabricView, build_view, link_status
from proto.argtypes import parse_uint
from proto.bounded import clipped
from proto.lsd import LinkState
from proto.messages import PortStatus

log = logging.getLogger("firepath.page")
ASSETS = Path(__file__).with_name("page_assets")
FEED_KEY = web.AppKey("page_feed", object)
DEAD, ALIVE, UNKNOWN = 0, 1, 2                       # liveness codes of a switch on the page
LIVENESS_NAMES = ("dead", "alive", "unknown")
#: /v1/events streams open at once: each holds a connection of the REST API for as long as it lasts (never
#: evicted: controller.restgate), so without a bound 256 streams took every connection the API serves
MAX_STREAMS = 64
#: seconds one event may take to be written to its stream: a client that stopped reading holds none for ever
STREAM_WRITE_TIMEOUT = 30.0
_DIGITS = bytes(range(48, 58)) + bytes(246)          # code -> ASCII digit, for bytes.translate


def _port_json(p: PortStatus | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"port": p.port, "phy": p.phy, "nd": p.nd, "usable": p.usable, "admin": p.admin, "damped": p.damped,
            "miscabled_by": str(p.miscabled_by) if p.miscabled_by is not None else None}


class PageFeed:
    """Display state of the fabric as this replica sees it, pushed to the page's event streams."""

    def __init__(self, server: MasterApi, *, min_interval: float = 0.05, sweep_interval: float = 0.5,
                 ping_interval: float = 1.0, queue_size: int = 256) -> None:
        self.server = server
        self.fabric = server.fabric
        self.min_interval = min_interval
        self.sweep_interval = sweep_interval
        self.ping_interval = ping_interval
        self.queue_size = queue_size
        f = self.fabric
        self.index_of = {s.name: i for i, s in enumerate(f.switches)}
        self.links_of = [f.links_of(s.name) for s in f.switches]
        self.ends = [(self.index_of[link.a.switch], link.a.port, self.index_of[link.b.switch], link.b.port)
                     for link in f.links]
        self.ports: list[dict[int, PortStatus] | None] = [None] * len(f.switches)
        self.reported_at: list[float | None] = [None] * len(f.switches)
        self.names = [sw.name for sw in f.switches]
        self.alive = bytearray([UNKNOWN]) * len(f.switches)
        self.alive_at: list[float | None] = [None] * len(f.switches)
        self.status = bytearray(len(f.links))
        self.status_at: list[float | None] = [None] * len(f.links)
        # a change found by a catch-up after nobody watched: it happened before this wall time, not known when
        self.status_before: list[float | None] = [None] * len(f.links)
        self.alive_before: list[float | None] = [None] * len(f.switches)
        self.lsd = bytes(len(f.links))
        self.version = -1
        self.term = -1
        self.header: dict[str, Any] = {}
        self.started_wall = time.time()
        self.subscribers: set[asyncio.Queue[bytes | None]] = set()
        self._dirty: set[int] = set()           # switches with a new port report
        self._wake = asyncio.Event()
        self._watched = asyncio.Event()         # set while a stream is open (the feed follows the master)
        self._lagging = False                   # the display state was not followed since the last stream
        self._last_sweep = -1e9
        self._role: Role | None = None
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        self.view: asyncio.Future[tuple[bytes, bytes]] | None = None

    # ------------------------------------------------------------------ observer interface (the runtime calls these)
    def reported(self, switch: str, ports: tuple[PortStatus, ...]) -> None:
        i = self.index_of.get(switch)
        if i is None:              # a switch of a prepared next config (issue #21): shown once committed
            return
        self.ports[i] = {p.port: p for p in ports}
        self.reported_at[i] = time.time()
        self._dirty.add(i)

    def changed(self) -> None:
        self._wake.set()

    def on_fabric(self, fabric: Any) -> None:
        """The replica switched config (a committed rollout, issue #21): the display state starts over on the
        new fabric, and the event streams are closed so that pages reconnect and fetch the new view."""
        fresh = PageFeed.__new__(PageFeed)
        PageFeed.__init__(fresh, self.server, min_interval=self.min_interval, sweep_interval=self.sweep_interval,
                          ping_interval=self.ping_interval, queue_size=self.queue_size)
        keep = {"subscribers", "_wake", "_watched", "_task", "_stopped", "started_wall"}
        for name, value in vars(fresh).items():
            if name not in keep:
                setattr(self, name, value)
        with contextlib.suppress(RuntimeError):          # no running loop (tests): the view is built on demand
            self.view = asyncio.get_running_loop().run_in_executor(None, self._build_view)
        self._refresh(time.time(), full=True)
        for q in list(self.subscribers):
            self._close(q)
        self._lagging = True            # no stream is open now: nothing is followed until one is

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # The view of a Jupiter-size fabric takes a few hundred ms to build: not on the event loop.
        self.view = loop.run_in_executor(None, self._build_view)
        self._refresh(time.time(), full=True)
        self.server.observers.append(self)
        self._task = asyncio.create_task(self._run(), name="page-feed")

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            self.server.observers.remove(self)
        # A flag, not only cancel(): in Python 3.11 asyncio.wait_for() swallows a cancellation that arrives
        # as its awaitable completes (our wake-up event is set by the master's last batch of actions).
        self._stopped = True
        self._wake.set()
        self._watched.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=2.0)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        for q in list(self.subscribers):
            self._close(q)

    def _build_view(self) -> tuple[bytes, bytes]:
        view: FabricView = build_view(self.fabric)
        body = json.dumps(view.to_json(), separators=(",", ":")).encode()
        return body, gzip.compress(body, 6)

    async def _run(self) -> None:
        while not self._stopped:
            if not self.subscribers:
                # nobody watches: nothing to follow until a stream opens (subscribe catches up)
                self._watched.clear()
                self._lagging = True
                await self._watched.wait()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.sweep_interval)
            if self._stopped:
                break
            self._wake.clear()
            try:
                msg = self._refresh(time.time())
            except Exception:  # pragma: no cover - the page must never take the master down
                log.exception("page feed refresh failed")
                msg = None
            self._publish(msg)
            # coalesce bursts (a failover is many batches); a replica that is overloaded (a cold start, issue
            # #18) reads reports first: the display follows once a second
            overloaded = getattr(self.server, "overload_now", None)
            await asyncio.sleep(1.0 if overloaded is not None and overloaded() else self.min_interval)

    # ------------------------------------------------------------------ state
    def _header(self) -> dict[str, Any]:
        c = self.server.core
        return {"master": c.id, "role": c.role.value, "term": c.term, "leader": c.leader, "version": c.version,
                "held": c.held}

    def _end(self, i: int, port: int) -> PortStatus | None:
        ports = self.ports[i]
        return ports.get(port) if ports is not None and self.alive[i] == ALIVE else None

    def _liveness(self, name: str, now: float) -> int:
        """ALIVE/DEAD as the master's link derivation sees the switch (DEAD = silent for `switch_dead`:
        its links keep their state, see controller.linkstate); UNKNOWN on a replica that is not the master
        (it hears no reports) and for a switch not heard yet under this mastership."""
        core = self.server.core
        if core.role != Role.MASTER:
            return UNKNOWN
        d = core.deriver
        if d.alive(name, now):
            return ALIVE
        if name not in d.views:
            return UNKNOWN
        return DEAD

    def _publish(self, msg: bytes | None) -> None:
        if msg is None:
            return
        for q in list(self.subscribers):
            try:
                q.put_nowait(msg)
            except asyncio.QueueFull:
                self._close(q)

    def catch_up(self) -> None:
        """Bring a display state that nobody followed up to date (a page subscribes or asks for details):
        what changed meanwhile is stamped as changed before now, time unknown (`status_before`,
        `alive_before`). A no-op while a stream is open (the feed follows then)."""
        if self._lagging and not self.subscribers:
            # liveness is re-judged as when followed: at most every 4 x sweep_interval (O(switches))
            self._refresh(time.time(), unknown_time=True)

    def _refresh(self, wall: float, full: bool = False, unknown_time: bool = False) -> bytes | None:
        """Bring the display state up to date; the encoded ``update`` event, or None if nothing changed
        (or `full`: the first computation, at start). `unknown_time`: what changed did so at an unknown
        time before `wall` (a catch-up)."""
        core = self.server.core
        now = self.server.now()
        dirty_links: set[int] = set()
        if full or core.version != self.version or core.term != self.term:
            states = core.lsd.states()
            delta = None if full or core.term != self.term else core.lsd.changes_since(self.version)
            if full:
                dirty_links.update(range(len(states)))
            elif delta is None:                  # out of the history window, a snapshot, a new term
                old = self.lsd
                dirty_links.update(i for i in range(len(states)) if states[i] != old[i])
            else:
                dirty_links.update(delta)
            self.lsd = states
            self.version, self.term = core.version, core.term
        role = core.role
        # O(switches) at Jupiter size (~30 ms): every sweep_interval while a page watches, 4x less otherwise
        interval = self.sweep_interval if self.subscribers else 4 * self.sweep_interval
        sweep = full or role != self._role or now - self._last_sweep >= interval
        self._role = role
        check = range(len(self.alive)) if sweep else sorted(self._dirty)
        if sweep:
            self._last_sweep = now
        alive_changes: list[list[int]] = []
        names = self.names
        for i in check:
            a = self._liveness(names[i], now)
            if a != self.alive[i]:
                self.alive[i] = a
                self.alive_at[i], self.alive_before[i] = (None, wall) if unknown_time else (wall, None)
                alive_changes.append([i, a])
                dirty_links.update(self.links_of[i])
        for i in self._dirty:
            dirty_links.update(self.links_of[i])
        self._dirty.clear()
        link_changes: list[list[int]] = []
        status, lsd, ends, end = self.status, self.lsd, self.ends, self._end
        for li in sorted(dirty_links):
            if li >= len(ends):
                continue              # a border's external slot (issue #13), not a link
            a, ap, b, bp = ends[li]
            st = link_status(lsd[li], end(a, ap), end(b, bp))
            if st != status[li]:
                if not full:
                    self.status_at[li], self.status_before[li] = (None, wall) if unknown_time else (wall, None)
                status[li] = st
                link_changes.append([li, st])
        header = self._header()
        header_changed = header != self.header
        self.header = header
        if full or not (link_changes or alive_changes or header_changed):
            return None
        return self._event("update", {"header": header, "t": wall, "links": link_changes,
                                      "alive": alive_changes})

    @staticmethod
    def _event(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()

    def hello(self) -> bytes:
        return self._event("hello", {
            "header": self.header, "digest": self.fabric.digest, "t": time.time(),
            "since": self.started_wall,
            "links": self.status.translate(_DIGITS).decode(), "alive": self.alive.translate(_DIGITS).decode(),
        })

    def ping(self) -> bytes:
        return self._event("ping", {"header": self._header(), "t": time.time()})

    def subscribe(self) -> asyncio.Queue[bytes | None]:
        """A new stream's queue; the display state is brought up to date first (its ``hello`` follows)."""
        self.catch_up()
        q: asyncio.Queue[bytes | None] = asyncio.Queue(self.queue_size)
        self.subscribers.add(q)
        self._lagging = False
        self._watched.set()
        return q

    def unsubscribe(self, q: asyncio.Queue[bytes | None]) -> None:
        self.subscribers.discard(q)

    def _close(self, q: asyncio.Queue[bytes | None]) -> None:
        """End one stream: drop what it has not read and leave the end marker."""
        self.subscribers.discard(q)
        while not q.empty():
            q.get_nowait()
        q.put_nowait(None)

    # ------------------------------------------------------------------ details
    def link_details(self, index: int) -> dict[str, Any]:
        self.catch_up()
        link = self.fabric.links[index]
        a, ap, b, bp = self.ends[index]
        now = self.server.now()

        def end(i: int, port: int) -> dict[str, Any]:
            ports = self.ports[i]
            return {"switch": self.names[i], "port": port,
                    "liveness": LIVENESS_NAMES[self._liveness(self.names[i], now)],
                    "report": _port_json(ports.get(port) if ports is not None else None),
                    "reported_at": self.reported_at[i]}

        return {"index": index, "name": link.name, "a": end(a, ap), "b": end(b, bp), "weight": link.weight,
                "lsd_state": LinkState(self.lsd[index]).name.lower(), "state": STATUS_NAMES[self.status[index]],
                "changed_at": self.status_at[index], "changed_before": self.status_before[index],
                "seen_since": self.started_wall}

    def switch_details(self, i: int) -> dict[str, Any]:
        self.catch_up()
        sw = self.fabric.switches[i]
        ports = self.ports[i]
        links = []
        for li in self.links_of[i]:
            link = self.fabric.links[li]
            mine, peer = (link.a, link.b) if self.ends[li][0] == i else (link.b, link.a)
            links.append({"index": li, "name": link.name, "port": mine.port, "peer": str(peer),
                          "weight": link.weight, "state": STATUS_NAMES[self.status[li]]})
        return {"name": sw.name, "id": sw.id, "role": sw.role.value, "loopback": str(sw.loopback) if sw.loopback
                else None, "prefixes": [str(p) for p in sw.prefixes],
                "liveness": LIVENESS_NAMES[self._liveness(sw.name, self.server.now())],
                "changed_at": self.alive_at[i], "changed_before": self.alive_before[i],
                "seen_since": self.started_wall,
                "reported_at": self.reported_at[i],
                "ports": [_port_json(p) for _, p in sorted(ports.items())] if ports is not None else None,
                "links": links, "rest_port": sw.rest_port}


# ------------------------------------------------------------------------------------------------ routes
def _feed(request: web.Request) -> PageFeed:
    return request.app[FEED_KEY]  # type: ignore[return-value]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, indent=1))


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(ASSETS / "index.html", headers={"Cache-Control": "no-cache"})


async def view(request: web.Request) -> web.Response:
    feed = _feed(request)
    assert feed.view is not None
    body, gz = await feed.view
    headers = {"Content-Type": "application/json", "Cache-Control": "no-cache", "ETag": f'"{feed.fabric.digest}"'}
    if request.headers.get("If-None-Match") == headers["ETag"]:
        return web.Response(status=304, headers=headers)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        return web.Response(body=gz, headers={**headers, "Content-Encoding": "gzip"})
    return web.Response(body=body, headers=headers)


async def events(request: web.Request) -> web.StreamResponse:
    feed = _feed(request)
    if len(feed.subscribers) >= MAX_STREAMS:    # a browser's EventSource retries by itself (retry: 1000)
        return web.json_response({"error": f"too many event streams open (at most {MAX_STREAMS})"}, status=503,
                                 headers={"Retry-After": "1"})
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                       "Access-Control-Allow-Origin": "*"})
    await resp.prepare(request)
    q = feed.subscribe()
    try:
        await resp.write(b"retry: 1000\n" + feed.hello())
        while True:
            try:
                msg = await asyncio.wait_for(q.get(), feed.ping_interval)
            except TimeoutError:
                msg = feed.ping()
            if msg is None:
                break
            async with asyncio.timeout(STREAM_WRITE_TIMEOUT):  # a client that stopped reading: ended
                await resp.write(msg)
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        pass
    except TimeoutError:
        request.protocol.force_close()
    finally:
        feed.unsubscribe(q)
    return resp


def _link_index(feed: PageFeed, ref: str) -> int | None:
    if ref.isascii() and ref.isdigit():       # an LSD index ('²' and '①' are str.isdigit() too, but not int())
        try:          # 5,000 digits: int() raised its own ValueError (a 500); proto.argtypes.parse_uint
            return parse_uint(ref, "link", len(feed.fabric.links) - 1)
        except ValueError:
            return None
    try:
        return feed.server.core.link_index(ref)
    except UnknownTarget:
        return None


def _clip(name: str, keep: int = 40) -> str:
    """A name from the URL as an error quotes it: at most `keep` characters (a 5,000-character one came back
    whole in the 404), with its length when cut."""
    return clipped(name, keep) + (f" ({len(name)} characters)" if len(name) > keep else "")


async def link(request: web.Request) -> web.Response:
    feed = _feed(request)
    ref = request.match_info["ref"]
    i = _link_index(feed, ref)
    if i is None:
        return _json({"error": f"link {_clip(ref)}: no such link (name 'a:1-b:2' or LSD index) in fabric "
                               f"{feed.fabric.name!r}"}, 404)
    return _json(feed.link_details(i))


async def switch(request: web.Request) -> web.Response:
    feed = _feed(request)
    name = request.match_info["name"]
    i = feed.index_of.get(name)
    if i is None:
        return _json({"error": f"switch {_clip(name)}: no such switch in fabric {feed.fabric.name!r}"}, 404)
    out = feed.switch_details(i)
    fetcher: ClientFetcher = request.app[FETCHER_KEY]  # type: ignore[assignment]
    out["client"] = await fetcher.state(name, feed.fabric.switch(name).rest_port, feed.server.addresses.get(name))
    if "state" not in out["client"]:
        return _json(out)
    # up to MAX_STATE bytes of the client's state, encoded with indent (pure Python): not on the loop
    body = await asyncio.to_thread(lambda: json.dumps(out, indent=1).encode())
    return web.Response(body=body, content_type="application/json")


# ------------------------------------------------------------------------------------------------ CORS
def replica_origins(server: MasterApi) -> frozenset[str]:
    """Origins a page of this fabric can be served from: every configured replica's REST address, this
    replica's actual bind/port, and localhost for loopback addresses."""
    out: set[str] = set()
    pairs = [(str(m.address), m.rest_port) for m in server.fabric.masters]
    pairs.append((server.bind, server.rest_port))
    for host, port in pairs:
        out.add(f"http://{host}:{port}")
        if host.startswith("127."):
            out.add(f"http://localhost:{port}")
    return frozenset(out)


ORIGINS_KEY = web.AppKey("page_origins", frozenset)
FETCHER_KEY = web.AppKey("page_client_fetcher", object)


@web.middleware
async def cors(request: web.Request, handler: Any) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    allowed = request.app[ORIGINS_KEY]
    if request.method == "OPTIONS" and origin is not None:
        if origin not in allowed:
            return _json({"error": f"origin {origin} is not a replica of this fabric"}, 403)
        return web.Response(status=204, headers={
            "Access-Control-Allow-Origin": origin, "Vary": "Origin",
            "Access-Control-Allow-Methods": "GET, POST, DELETE",
            "Access-Control-Allow-Headers": "Authorization, Content-Type", "Access-Control-Max-Age": "600"})
    resp = await handler(request)
    if origin is not None and not resp.prepared:
        if request.method in ("GET", "HEAD"):
            resp.headers["Access-Control-Allow-Origin"] = "*"
        elif origin in allowed:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Vary"] = "Origin"
    return resp


async def _preflight(request: web.Request) -> web.Response:   # answered by the middleware
    return web.Response(status=204)


def add_page_routes(app: web.Application, server: MasterApi, client_timeout: float = 1.0) -> None:
    """Add the page, its routes, the CORS middleware and the feed (started/stopped with the app)."""
    feed = PageFeed(server)
    app[FEED_KEY] = feed
    app[ORIGINS_KEY] = replica_origins(server)
    app[FETCHER_KEY] = ClientFetcher(client_timeout)
    app.middlewares.append(cors)
    app.router.add_get("/", index)
    app.router.add_static("/page/", ASSETS)
    app.router.add_get("/v1/view", view)
    app.router.add_get("/v1/events", events)
    app.router.add_get("/v1/link/{ref}", link)
    app.router.add_get("/v1/switch/{name}", switch)
    app.router.add_route("OPTIONS", "/v1/drain", _preflight)

    async def on_startup(app: web.Application) -> None:
        await feed.start()

    async def on_shutdown(app: web.Application) -> None:
        await feed.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
