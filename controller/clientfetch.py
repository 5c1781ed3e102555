"""A master replica reading a switch client's own `GET /v1/state` for the page (`GET /v1/switch/NAME`,
controller.page): the only outgoing HTTP request a master makes, so it is held small — per switch (the
URL is fixed by the switch's name: proto.restaddr, never by the request), unprivileged (no token, no
cookie, no proxy from the environment), and bounded in every way an answer could cost the replica.

What an answer could do before (tester, finding 1): whoever listened where the master looked (a lab
client's 127.1.0.<id>, where no client listens) answered in the client's place; a 50 MB JSON was read
whole, decoded and re-encoded with indent on the event loop, and one unauthenticated GET cost the master
its lease; a redirect was followed (to this replica's own `/v1/keys`). Now:

- the client is read at proto.restaddr's rule (127.0.0.1:<rest_port>, only when the switch's datagrams come
  from this network namespace), else the answer says where its REST is;
- at most `FETCHES` reads at once (more wait, within the deadline), `timeout` seconds for everything;
- no redirect followed (a 3xx is an error), no compressed answer (`Accept-Encoding: identity`, anything
  else refused: no decompression bomb), at most `MAX_STATE` bytes (a larger answer is refused at its
  Content-Length or as soon as it passes the limit);
- decoded in a worker thread, and relayed only if it is the state of this switch: a JSON object whose
  `switch` is its name, nested at most `MAX_DEPTH` deep, and whose every field the page or an operator
  command shows has its type (`STATE_FIELDS`, `PORT_FIELDS`: integers are integers — not booleans, not
  strings —, strings at most `MAX_TEXT` characters, `ports` a list of objects); any other answer is refused
  whole, naming the first field that is wrong (never quoting its value), and the page shows that error in
  place of the switch's client state (the page's answer is encoded off the loop too: controller.page).

What a typed schema stops (tester bb40, F13): the page put `programmed_version`, `term`, `lsd_version` and
`ports[].port` into HTML unescaped, and a squatter's `"programmed_version": "<img src=x onerror=...>"` ran
script in the operator's browser, which holds the admin token. The page now escapes every value it shows
(controller/page_assets/page.js `html`), and the relay no longer carries a string where a number belongs.
Fields outside the schema are kept: the page shows them only inside the escaped raw JSON dump.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from proto.restaddr import CLIENT_REST_HOST, MAX_STATE, client_rest_url, shares_namespace

MAX_DEPTH = 8                # nesting of a client's state (a real one: 3)
FETCHES = 2                  # client reads at once per replica
MAX_TEXT = 1024              # characters of one string field (a real one: a switch name and a port)

# field -> the JSON types it may have (None: null); a field that is absent is not checked
_INT, _BOOL, _TEXT = (int,), (bool,), (str,)
STATE_FIELDS: dict[str, tuple[type | None, ...]] = {
    "term": _INT, "lsd_version": _INT, "programmed_version": _INT, "master": (str, None),
    "fail_static": _BOOL, "connected": _BOOL, "config_mismatch": (str, None), "ovsdb_connected": (bool, None),
    "replica_state": _TEXT, "digest": _TEXT, "served_by": (str, None), "routes": _INT, "groups": _INT,
}
PORT_FIELDS: dict[str, tuple[type | None, ...]] = {
    "port": _INT, "peer": _TEXT, "phy": (bool, None), "live": (bool, None), "nd": _TEXT, "usable": (bool, None),
    "admin": (bool, None), "damped": (bool, None), "miscabled_by": (str, None), "discovered": (str, None),
    "oam": (str, None), "oam_remote": (str, None), "nd_mode": (str, None),
}
REQUIRED = ("term", "lsd_version")
_NAMES = {int: "an integer", bool: "true or false", str: "a string", None: "null"}
_GOT = {int: "an integer", bool: "a boolean", float: "a fraction", str: "a string", list: "a list", dict: "an object"}


class Refused(Exception):
    """Why an answer is not relayed (one line)."""


def _depth_ok(doc: Any, limit: int) -> bool:
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict) else node))
    return True


def _check_fields(obj: dict[str, Any], fields: dict[str, tuple[type | None, ...]], where: str) -> None:
    """Refused naming the first field of `obj` (`where`: its path) not of its type in `fields`."""
    for key, kinds in fields.items():
        if key not in obj:
            continue
        v = obj[key]
        # bool is an int in Python, and an int is not a bool: compare the exact type
        if not any(v is None if t is None else type(v) is t for t in kinds):
            want = " or ".join(_NAMES[t] for t in kinds)
            got = "null" if v is None else _GOT.get(type(v), type(v).__name__)
            raise Refused(f"not the state of a switch client: {where}{key} is not {want} (got {got})")
        if type(v) is str and len(v) > MAX_TEXT:
            raise Refused(f"not the state of a switch client: {where}{key} is longer than {MAX_TEXT} characters")


def check_state(raw: bytes, switch: str) -> dict[str, Any]:
    """The client state in `raw` if it is one of `switch` (see the module docstring); Refused otherwise.
    CPU-bound: called in a worker thread."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as e:      # not JSON, not UTF-8, nested past the recursion limit
        raise Refused(f"not JSON: {type(e).__name__}") from None
    if not isinstance(doc, dict):
        raise Refused(f"not the state of a switch client: JSON {type(doc).__name__}, not an object")
    if doc.get("switch") != switch:
        raise Refused(f"not the state of {switch}'s client: switch {str(doc.get('switch'))[:64]!r}")
    for key in REQUIRED:
        if key not in doc:
            raise Refused(f"not the state of a switch client: no {key}")
    _check_fields(doc, STATE_FIELDS, "")
    ports = doc.get("ports")
    if not isinstance(ports, list) or not all(isinstance(p, dict) for p in ports):
        raise Refused("not the state of a switch client: ports is not a list of objects")
    for k, p in enumerate(ports):
        _check_fields(p, PORT_FIELDS, f"ports[{k}].")
    if not _depth_ok(doc, MAX_DEPTH):
        raise Refused(f"not the state of a switch client: nested more than {MAX_DEPTH} deep")
    return doc


async def _read(url: str, timeout: float) -> bytes:
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout), auto_decompress=False,
                                    trust_env=False, cookie_jar=aiohttp.DummyCookieJar())
    async with session, session.get(url, allow_redirects=False, headers={
            "Accept": "application/json", "Accept-Encoding": "identity"}) as r:
        if 300 <= r.status < 400:
            raise Refused(f"HTTP {r.status}: a redirect (not followed)")
        if r.status != 200:
            raise Refused(f"HTTP {r.status}")
        if r.headers.get("Content-Encoding", "identity").strip().lower() not in ("identity", ""):
            raise Refused(f"a compressed answer ({r.headers['Content-Encoding'][:20]!r}): refused")
        if r.content_length is not None and r.content_length > MAX_STATE:
            raise Refused(f"answer of {r.content_length} bytes: more than {MAX_STATE} (refused)")
        body = bytearray()
        async for chunk in r.content.iter_chunked(1 << 16):
            body += chunk
            if len(body) > MAX_STATE:
                raise Refused(f"answer of more than {MAX_STATE} bytes (refused)")
        return bytes(body)


class ClientFetcher:
    """Reads switch clients' states for one replica (`FETCHES` at once)."""

    def __init__(self, timeout: float = 1.0, fetches: int = FETCHES) -> None:
        self.timeout = timeout
        self._gate = asyncio.Semaphore(fetches)

    async def state(self, switch: str, rest_port: int | None, source: tuple[str, int] | None) -> dict[str, Any]:
        """{"url", "state"} or {"url", "error"} / {"error"}: `switch`'s client state, its REST on
        `rest_port` (config), its datagrams from `source` (None: not heard)."""
        if rest_port is None:
            return {"error": "no rest_port for this switch in the config"}
        if source is None:
            return {"error": "this replica has not heard from the switch: its address is unknown"}
        if not shares_namespace(source[0]):
            return {"error": f"the client's REST listens on {CLIENT_REST_HOST}:{rest_port} of its own host (its "
                             f"datagrams come from {source[0]}): not reachable from this replica; read it "
                             "there (firepath clients --client-rest)"}
        url = client_rest_url(rest_port)
        try:
            async with asyncio.timeout(self.timeout):
                async with self._gate:
                    raw = await _read(url, self.timeout)
                    return {"url": url, "state": await asyncio.to_thread(check_state, raw, switch)}
        except Refused as e:
            return {"url": url, "error": str(e)}
        except TimeoutError:
            return {"url": url, "error": f"no whole answer within {self.timeout:g} s"}
        except (aiohttp.ClientError, ValueError) as e:
            return {"url": url, "error": f"{type(e).__name__}: {e}".rstrip(": ")[:300]}
