"""Admin actions that take no request body refuse one (black-box test, 2026-12-05): with the right token,
`POST /v1/guard/confirm` with a body of 100,000 `[` — or any garbage — published every held link DOWN and
answered 200; `POST /v1/rollout/commit` and `/abort` ran the same way, and `POST /v1/reload
{"config": "/etc/passwd"}` reloaded the replica's own file and answered 200 "unchanged", as if the
parameter had been taken. Now a body other than none or `{}` is a 400 naming the endpoint, and nothing is
done; the switch client's `POST /v1/reload` the same. Guard confirm also takes `{"links": [...]}` (held links
named): any other body is a 400 and releases nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from client.rest import ClientApi
from controller.server import MasterServer
from proto.auth import unexpected_body
from tests.test_controller_rest import AUTH, run

BAD_BODIES = (b"[" * 100_000, b'{"config": "/etc/passwd"}', b"not json", b"null", b"[]", b'{"links": ["x"]}',
              b"\xff\xfe")


def test_unexpected_body() -> None:
    for ok in (b"", b"  \r\n", b"{}", b" { } "):
        assert unexpected_body("POST", "/v1/reload", ok) is None, ok
    for bad in BAD_BODIES:
        why = unexpected_body("POST", "/v1/reload", bad)
        assert why is not None and why.startswith("POST /v1/reload takes no request body") and "nothing done" in why
        assert len(why) < 200                                  # a 100 KB body is not echoed back


def test_master_guard_confirm_with_a_body_does_nothing(tmp_path: Path) -> None:
    from tests.test_master_core import report

    async def body(server: MasterServer, c: TestClient) -> None:
        f, now = server.fabric, server.now()
        for sw in f.switches:
            server._run(server.core.handle(sw.name, report(f, sw.name, seq=1), now))
        server._run(server.core.handle("leaf-1", report(f, "leaf-1", usable=set(), seq=2), now + 0.01))
        held = server.core.guard_held()
        version = server.core.version
        assert len(held) == 2
        for bad in BAD_BODIES:
            r = await c.post("/v1/guard/confirm", data=bad, headers={**AUTH, "Content-Type": "application/json"})
            doc = await r.json()
            assert r.status == 400 and ("body must be" in doc["error"] or doc.get("unknown")), \
                (bad[:20], r.status, doc)
            assert server.core.guard_held() == held and server.core.version == version
        # Without a token the body is not even read: 401 as before.
        assert (await c.post("/v1/guard/confirm", data=b"garbage")).status == 401
        r = await c.post("/v1/guard/confirm", data=b"{}", headers={**AUTH, "Content-Type": "application/json"})
        assert r.status == 200 and len((await r.json())["released"]) == 2

    run(tmp_path, body)


def test_master_rollout_and_reload_with_a_body_do_nothing(tmp_path: Path) -> None:
    calls: list[str] = []

    async def body(server: MasterServer, c: TestClient) -> None:
        async def reload_async() -> dict[str, Any]:
            calls.append("reload")
            return {"outcome": "unchanged"}

        server.reload_async = reload_async  # type: ignore[method-assign]
        server.rollout_abort = lambda: calls.append("abort") or {"outcome": "nothing_prepared"}  # type: ignore
        server.rollout_commit = lambda: calls.append("commit") or {}  # type: ignore[method-assign]
        for path in ("/v1/reload", "/v1/rollout/abort", "/v1/rollout/commit"):
            r = await c.post(path, data=b'{"config": "/etc/passwd"}', headers=AUTH)
            assert r.status == 400 and path in (await r.json())["error"], path
        assert calls == []
        assert (await c.post("/v1/reload", headers=AUTH)).status == 200
        assert (await c.post("/v1/rollout/abort", json={}, headers=AUTH)).status == 200
        assert calls == ["reload", "abort"]

    run(tmp_path, body)


def test_client_reload_with_a_body_does_nothing() -> None:
    calls: list[int] = []
    api = ClientApi(lambda: {}, reload=lambda: calls.append(1) or {"outcome": "unchanged"}, token="t")
    auth = {"Authorization": "Bearer t"}
    for bad in BAD_BODIES:
        status, _ctype, raw = api.handle("POST", "/v1/reload", auth, bad[:1 << 16])
        assert status == 400 and b"takes no request body" in raw, bad[:20]
    assert calls == []
    assert api.handle("POST", "/v1/reload", {}, b"junk")[0] == 401          # the token first
    assert api.handle("POST", "/v1/reload", auth, b"")[0] == 200
    assert api.handle("POST", "/v1/reload", auth, b"{}")[0] == 200
    assert calls == [1, 1]
