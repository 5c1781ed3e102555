"""`firepath lab reload [SWITCH|MASTER|all]`: roll an edited lab fabric.yaml out without an outage (#21).

After editing the lab's fabric.yaml (a weight, a capacity, a timer, removing links), `reload`:
- a MASTER: `POST /v1/reload` on it (admin token): it reads the file again; another config is prepared as
  the next one (controller.rollout);
- a SWITCH: SIGHUP to its client: it reads the file again and, if the config changed, restarts itself on
  it gracefully (client.reload); it then reports under the next digest and keeps forwarding on what it
  has until the masters commit; a changed key set (the `security:` section, outside the digest) is
  swapped in without a restart;
- `all` (the default): every master, then every client one at a time (each back on its REST on the new
  digest before the next), then, once no live switch blocks it, the commit on the serving master, and a
  wait until every client programmed the first LSD version of the new config. A key-only change (same
  digest: key rollover) has nothing to commit: every daemon is checked to hold the file's key set instead.

The file is validated here first: an invalid one is refused (file:line:field) and nothing is signalled.
Adding switches or links (a new ToR with its host): `reload all --grow` builds their bridges, veths and host
namespaces in the running lab after the masters prepared, and starts the new switches' clients (lab/grow.py).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from client.of.sockets import enter_netns
from lab.fabric import Lab, LabError, LabPorts, wait_until
from lab.labconfig import keep_running
from lab.state import say
from proto.config import ConfigError, Fabric, load_fabric

__all__ = ["reload_lab"]


def _post(port: int, path: str, token: str | None, timeout: float) -> tuple[int, Any]:
    from controller.ops.api import request

    return request(f"http://127.0.0.1:{port}{path}", "POST", None, token, timeout)


class _Poster:
    """POSTs from a worker thread inside the lab namespace (the masters' REST lives there)."""

    def __init__(self, netns: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, initializer=enter_netns, initargs=(netns,))

    def post(self, port: int, path: str, token: str | None, timeout: float = 5.0) -> tuple[int, Any]:
        return self._pool.submit(_post, port, path, token, timeout).result(timeout + 5)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


def additions(lab: Lab, new: Fabric) -> list[str]:
    """Switches and links `new` has that the running lab has not built (they need bridges and veths). Read from
    the lab's record of what it built, never from its fabric.yaml (the operator has already edited that)."""
    st = lab.state
    added = [s.name for s in new.switches if s.name not in st.bridges]
    return added + [link.name for link in new.links
                    if f"{link.a.switch}:{link.a.port}" not in st.ifaces or f"{link.b.switch}:{link.b.port}" not in st.ifaces]


def _rollout_view(lab: Lab) -> dict[str, Any] | None:
    """The serving master's GET /v1/rollout (`current`, `next`, `switches`, `blockers`); None if no single
    master serves."""
    leader = lab.current_master()
    if leader is None:
        return None
    return lab.http.get(lab.fabric.master(leader[0]).rest_port, "/v1/rollout", 2.0)


def _running_digest(lab: Lab) -> str:
    """The config the serving master runs (`current`): what the lab runs, whatever the file says now.
    LabError when no single master serves."""
    view = _rollout_view(lab)
    if view is None or not view.get("current"):
        raise LabError(f"refused, nothing changed: no single serving master says which config it runs "
                       f"({describe_masters(lab.master_states(), lab.fabric)})")
    return str(view["current"])


def _why(e: BaseException) -> str:
    """An unreachable REST's reason in words (URLError(ConnectionRefusedError(...)) -> "Connection refused")."""
    reason = getattr(e, "reason", e)
    return getattr(reason, "strerror", None) or str(reason) or type(reason).__name__


def describe_masters(states: dict[str, Any], fabric: Fabric | None = None) -> str:
    """`Lab.master_states()` for a person: "m1: backup (term 2), m3: no answer on REST port 6803 (Connection
    refused)" (the port when `fabric`, the config asked from, is given)."""
    ports = {m.id: m.rest_port for m in fabric.masters} if fabric is not None else {}

    def one(mid: str, st: Any) -> str:
        if isinstance(st, BaseException):
            where = f" on REST port {ports[mid]}" if mid in ports else ""
            return f"{mid}: no answer{where} ({_why(st)})"
        return f"{mid}: {str(st.get('role', '?')).lower()} (term {st.get('term', '?')})" if isinstance(st, dict) \
            else f"{mid}: {st!r}"[:80]
    return ", ".join(one(mid, st) for mid, st in states.items())


def _token(fabric: Fabric) -> str | None:
    """The admin token of `fabric` (None without one); LabError naming the config line if it is unusable."""
    from proto.auth import AuthError, configured_admin_token

    try:
        return configured_admin_token(fabric.security)
    except AuthError as e:
        raise LabError(f"refused, nothing changed: {e}") from None


def reload_lab(lab: Lab, target: str = "all", *, timeout: float = 60.0, grow: bool = False,
               log: Callable[[str], None] = say) -> dict[str, Any]:
    """Reload `target` (a master id, a switch name, or "all": prepare, move every client, commit). Returns
    {"digest", "prepared": [masters], "reloaded": [switches], "committed_version": int | None, "grown"}.
    A config that adds switches or links is refused unless `grow` (and target "all"): then lab.grow builds
    them after the masters prepared and starts the new switches' clients on it."""
    try:
        new = load_fabric(lab.state.config)
    except ConfigError as e:
        raise LabError(f"refused, nothing changed: {e}") from None
    added = additions(lab, new)
    if added and not (grow and target == "all"):
        raise LabError(f"{new.source}: adds {', '.join(added)[:200]}: new switches and links need bridges and "
                       f"veths: `firepath lab reload all --grow`")
    masters = [m.id for m in new.masters]
    switches = [s.name for s in new.switches]
    if target != "all" and target not in masters and target not in switches:
        raise LabError(f"no master or switch {target!r} in {lab.state.config} (masters: {', '.join(masters)})")
    out: dict[str, Any] = {"digest": new.digest, "prepared": [], "reloaded": [], "committed_version": None,
                           "grown": None}
    if added:      # what grow() would refuse is refused before any master prepares the file
        from lab.grow import check_grow

        check_grow(lab, new)
    keys = _key_status(new)
    keys_only = new.digest == _running_digest(lab)
    token = _token(new)
    poster = _Poster(lab.state.netns)
    try:
        for mid in masters if target in ("all", *masters) and target not in switches else []:
            if target not in ("all", mid):
                continue
            rec = lab.state.processes.get(f"master:{mid}")
            if rec is not None and not rec.alive():
                # as a switch without a client: skipped, not waited for (before: 60 s, then the whole reload
                # failed, and `lab heal` refused to start it on the edit: a master killed mid-rollout was stuck)
                if target == mid:
                    raise LabError(f"master {mid}: not running (pid {rec.pid}): `firepath lab heal` starts it on "
                                   f"this file once the serving master has it prepared or runs it")
                log(f"master {mid}: not running: skipped (`firepath lab heal` starts it on this file once the "
                    f"serving master has it prepared or runs it)")
                continue
            try:
                status, ans = _retry(lambda m=mid: poster.post(new.master(m).rest_port, "/v1/reload", token), timeout)
            except OSError as e:
                raise LabError(f"master {mid}: no answer on REST port {new.master(mid).rest_port} within "
                               f"{timeout:.0f}s ({_why(e)}); masters reloaded before it: "
                               f"{', '.join(out['prepared']) or 'none'}") from None
            if status != 200:
                hint = ("; the lab's config has no security.admin_token_file, which the masters' reload needs: add "
                        "one (a file with a random token), restart the masters on it (`firepath lab kill master M`, "
                        "`lab heal`), then reload") if status == 401 and token is None else ""
                raise LabError(f"master {mid}: HTTP {status}: "
                               f"{ans.get('error') if isinstance(ans, dict) else ans}{hint}")
            if ans.get("keys") != keys:
                raise LabError(f"master {mid}: holds key set {_keys(ans.get('keys'))}, the file says {_keys(keys)}")
            out["prepared"].append(mid)
            log(f"master {mid}: {ans['outcome']} (config {new.digest[:12]}...)")
        if added:
            from lab.grow import grow as build

            out["grown"] = build(lab, new, log)
        # a client back on the new config must be heard on it by the serving master (if it serves or
        # prepared it) before the next switch is restarted
        want_ack = new.digest in _served_digests(lab)
        if target in switches and not keys_only and not want_ack:
            # the client would restart on a config no master holds: it refuses every LSD (config_mismatch) and
            # drops its computed routes, yet this said "restarted on config ..." and exit 0 (tester)
            raise LabError(f"refused, nothing changed: switch {target} would restart on config {new.digest[:12]}..., "
                           f"which the serving master neither runs nor has prepared: prepare the masters first "
                           f"(`firepath lab reload M` for each master), or roll the file out whole "
                           f"(`firepath lab reload all`)")
        grown = set((out.get("grown") or {}).get("switches", ()))
        for sw in switches:
            if target not in ("all", sw):
                continue
            if sw in grown:       # started on the new config by lab.grow: nothing to reload (tester: "in 0.0s")
                log(f"switch {sw}: new, started on config {new.digest[:12]}...")
                continue
            rec = lab.state.processes.get(f"client:{sw}")
            if rec is None or not rec.alive():
                log(f"switch {sw}: no client running: skipped")
                continue
            t0 = time.monotonic()
            port = lab.rest_port(sw)
            # whether this client restarts is its own config's business, not the lab's running one: a switch
            # reloaded onto an edit and then back restarts although the lab's config is unchanged (tester)
            # (a switch already moved to the file, e.g. by `lab reload SWITCH` before `lab reload all`, does not
            # restart: it was said "restarted ... in 0.0s")
            held = _client_digest(lab, port)
            restarts = held != new.digest if held is not None else not keys_only
            rec.send_signal(signal.SIGHUP)
            back = wait_until(lambda p=port, s=sw: _back(lab, s, p, new.digest, want_ack, keys), timeout, 0.1)
            if not back:
                raise LabError(f"switch {sw}: its client is not back on config {new.digest[:12]}... after "
                               f"{timeout:.0f}s (log: {rec.log})")
            out["reloaded"].append(sw)
            log(f"switch {sw}: holds key set {_keys(keys)} (config unchanged, no restart)" if not restarts else
                f"switch {sw}: restarted on config {new.digest[:12]}... in {time.monotonic() - t0:.1f}s")
        if target == "all" and keys_only:
            log(f"config {new.digest[:12]}... unchanged: key set {_keys(keys)} on every daemon, nothing to commit")
        elif target == "all":
            out["committed_version"], out["committed_at"] = _commit(lab, poster, new, token, timeout, log)
        if target == "all" and keys_only:       # the file's key set is held: it is what the lab runs
            keep_running(lab.state, new)
            lab.state.save()
    finally:
        poster.close()
    return out


def _retry(call: Callable[[], tuple[int, Any]], timeout: float) -> tuple[int, Any]:
    """`call()` until it connects (a replica just (re)started opens its REST last), at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _key_status(fabric: Fabric) -> dict[str, Any]:
    """The key ids (send, accepted, retired) a daemon running `fabric` holds: KeySet.status()."""
    from proto.auth import KeySet

    try:
        return KeySet.from_security(fabric.security).status()
    except ValueError as e:                 # AuthError: a key file, named
        raise LabError(f"refused, nothing changed: {e}") from None


def _keys(status: Any) -> str:
    """A key set's status (KeySet.status()) in words, as the refusals name it; anything else as it is."""
    from proto.keyroll import describe_keys

    try:
        return describe_keys(status)
    except (KeyError, TypeError):
        return repr(status)


def _back(lab: Lab, switch: str, port: int, digest: str, heard: bool, keys: dict[str, Any]) -> bool:
    """The client answers on `digest` with the key set `keys`, and (`heard`) the serving master's last report
    from it carried the digest."""
    try:
        st = lab.http.get(port, "/v1/state", 0.5)
        if not (isinstance(st, dict) and st.get("digest") == digest and st.get("keys") == keys):
            return False
        if not heard:
            return True
        leader = lab.current_master()
        if leader is None:
            return False
        ro = lab.http.get(lab.fabric.master(leader[0]).rest_port, "/v1/rollout", 0.5)
    except Exception:  # noqa: BLE001 - not back yet
        return False
    label = "next" if ro.get("next") == digest else "current" if ro.get("current") == digest else None
    return label is not None and ro["switches"].get(switch) == label


def _client_digest(lab: Lab, port: int) -> str | None:
    """The config digest a switch's client runs (its REST /v1/state), None if it does not say."""
    try:
        st = lab.http.get(port, "/v1/state", 1.0)
    except Exception:  # noqa: BLE001 - not answering: the reload's own wait says so
        return None
    return st.get("digest") if isinstance(st, dict) else None


def _served_digests(lab: Lab) -> set[str]:
    """The configs the serving master accepts reports under (current, and next while prepared)."""
    view = _rollout_view(lab)
    return {d for d in (view.get("current"), view.get("next")) if d} if view is not None else set()


def _commit(lab: Lab, poster: _Poster, new: Fabric, token: str | None, timeout: float,
            log: Callable[[str], None]) -> tuple[int, float]:
    """Commit on the serving master once nothing blocks; wait until every client programmed the new config.
    Returns (the first LSD version of the new config, time.monotonic() of the commit)."""
    leader = lab.current_master()
    if leader is None:
        raise LabError(f"no single current master: {lab.master_states()}")
    port = new.master(leader[0]).rest_port
    if not wait_until(lambda: not lab.http.get(port, "/v1/rollout", 1.0)["blockers"], timeout, 0.2):
        raise LabError(f"commit blocked: {lab.http.get(port, '/v1/rollout', 1.0)['blockers']}")
    status, ans = poster.post(port, "/v1/rollout/commit", token)
    if status != 200:
        raise LabError(f"commit on master {leader[0]}: HTTP {status}: {ans.get('error') if isinstance(ans, dict) else ans}")
    version = int(ans["version"])
    at = time.monotonic()
    log(f"master {leader[0]}: committed, LSD version {version} on config {new.digest[:12]}...")
    lab.fabric, lab.ports = new, LabPorts(new)
    keep_running(lab.state, new)      # committed: the lab runs the file now (lab.labconfig.lab_fabric)
    lab.state.save()
    expect = lab.expected_usable()
    if not lab.wait_converged(timeout, expect_usable=expect, min_version=version):
        raise LabError(f"not converged on the new config: {lab.convergence_problem(expect, version)}")
    return version, at
