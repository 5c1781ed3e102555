"""The config of a lab: the fabric.yaml it generates (proto.clos with the lab's ports, timers and secrets,
CFM sized to the fabric), the lab's default timers and why, and each client's CPN address."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from lab.labports import OVS_BASE_PORT, REST_BASE_PORT
from lab.sizing import oam_interval_fit
from lab.state import RUNNING_FILE, LabError

# ND timers of generated lab configs unless `timers` is given: 50 ms / 250 ms, the fastest setting measured
# stable for the demo fabric (10 switches, 16 links, 3 masters) on this 2-core machine shared with other labs.
# Measured 2026-11-22 (lab up with waves, then 2 x 20 s steady state; CPU from /proc/<pid>/stat):
#   nd ms     ND frames/s  client CPU (mean)  vswitchd  load  port changes/20 s  result
#   10/30        2972          14.7 %          6 %       14      3578 (damped)    never converged (CPU-bound)
#   20/100       1608          12.9 %         20 %       16      1176 (damped)    never converged
#   30/150       1066          10.1 %         26 %        7     124, then 681     converged, then collapsed
#   50/250        642           6.5 %         24 %       11        0, 0           stable; up in 20 s
#   100/1000      321           3.6 %         63 %*      17        0              stable (*another lab's OVS)
# ND costs the Python client ~0.8 ms of CPU per frame (sent at one end + received at the other, os-ken
# packet-out/packet-in included): at 10 ms the 10 clients alone need ~2.7 cores. Late frames make links go
# one-way/down on both ends, every flap is a report, an LSD version and a route computation on every
# switch, which costs more CPU: it collapses, and damping then holds the ports down for up to damp_max.
# Benchmarks that want the fast timers pass timers=() (or their own) explicitly.
#
# switch_dead 20 s (default 15 s) and clients started with `--restart-hold 20` (default: switch_dead): a restart
# is hitless only if the new process is back before its ND peers' hold and the master's switch_dead run out,
# and starting a Python client here takes 5-7 s of wall time on a loaded machine (measured: SIGTERM ->
# "switch connected" 5.3-7.6 s; 23 s when 13 daemons start at once). When the hold ran out first, the new
# client found its own links down in the LSD, removed its routes and lost ~60 ms of traffic (probe holes at
# the reconnect). A hold ends as soon as the restarted client's two-way ND frames arrive, so a long one costs
# nothing when the client comes back.
#
# FMRP hello 50 ms / master dead 400 ms (default 30/150), as the masters' own integration tests use on this
# machine: with the defaults a loaded lab saw spurious elections (term 83 -> 122 in 17 minutes with one
# deliberate kill), and a re-election after `lab heal` restarted a killed master broke stickiness.
#
# Link OAM (liveness: oam, the default): CFM every 10 ms in ovs-vswitchd (the fabric default), ND identity
# every 1 s. Measured 2026-12-02 on leafspine (bench_convergence, load 8-12 from other labs): 10 ms held
# through the trials (silent failure out of use at both ends p50 52 ms, clients 0.7 % of a core idle,
# ovs-vswitchd 9 %); 5 ms flapped links during bring-up at load 15-22 (LSD version 39-76 before any
# failure) and is not used. The ND timers below now only matter for a port that fell back to software ND.
LAB_DEFAULT_TIMERS: tuple[tuple[str, float], ...] = (("oam_interval_ms", 10),
                                                     ("nd_interval_ms", 50), ("nd_dead_ms", 250),
                                                     ("switch_dead_ms", 20000),
                                                     ("hello_interval_ms", 50), ("master_dead_ms", 400))
CLIENT_RESTART_HOLD_S = 20.0
ADMIN_TOKEN = "admin.token"      # in the lab dir: `firepath drain --lab NAME` reads it through the config


CLIENT_CPN_BASE = IPv4Address("127.1.0.0")


def client_cpn_address(fabric: Any, switch: str) -> str:
    """The loopback address a lab client binds towards the masters: 127.1.0.0 + switch id.

    Every switch has its own CPN address, as on a real control-plane network: a fault can then cut one
    switch from a master by address (lab/inject.py `fail_cpn --switch`), and the cut survives a client
    restart (the UDP port is ephemeral, the address is not). All of 127/8 is local on `lo`, so nothing
    needs to be configured. KeyError for an unknown switch; LabError if the id does not fit in 127.1/16.
    """
    sw = fabric.switch(switch)
    if not 0 <= sw.id < 1 << 16:
        raise LabError(f"switch {switch}: id {sw.id} does not fit a lab CPN address (127.1.0.0/16)")
    return str(CLIENT_CPN_BASE + sw.id)


def check_cpn_addresses(fabric: Any, switches: Any = None) -> None:
    """Refuse, before anything is built, a fabric whose lab clients could not each get a CPN address
    (client_cpn_address): LabError naming every switch whose id lies outside 0..65535. `switches`: only
    these (the new ones of a `reload --grow`); default every switch of `fabric`."""
    bad = [f"{sw.name} (id {sw.id})" for sw in (fabric.switches if switches is None else switches)
           if not 0 <= sw.id < 1 << 16]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise LabError(f"switch ids must be 0..65535 in a lab (each client binds 127.1.0.0 + id towards the "
                       f"masters): {', '.join(bad[:5])}{more}; renumber them in the config")


def generate_config(lab_dir: Path, name: str, *, admin_token: bool = True,
                    log: Callable[[str], None] | None = None, **clos_params: Any) -> Path:
    """Write ``fabric.yaml`` (proto.clos generator), a fresh ``fabric.key`` and, unless `admin_token` is
    false, a fresh ``admin.token`` (the drain token, ``security.admin_token_file``; secrets, 0600) in the lab dir.

    Ports only have to be unique inside the lab namespace: fixed bases keep OpenFlow, REST and master
    ports apart (master ports are the generator's 66xx/67xx/68xx).

    Without `timers` the lab's defaults are used. Unless `timers` sets `oam_interval_ms`, the CFM
    interval is sized to the fabric (lab.sizing.oam_interval_fit: a fabric of many links gets a slower
    interval this machine can sustain), said through `log`.
    """
    from proto.clos import ClosParams, generate_clos_yaml

    clos_params.setdefault("timers", LAB_DEFAULT_TIMERS)
    sized = clos_params["timers"] is LAB_DEFAULT_TIMERS or "oam_interval_ms" not in dict(clos_params["timers"])
    params = ClosParams(name=name, ovs_base_port=OVS_BASE_PORT, rest_base_port=REST_BASE_PORT,
                        key_file="fabric.key", admin_token_file=ADMIN_TOKEN if admin_token else None,
                        **clos_params)
    lab_dir.mkdir(parents=True, exist_ok=True)
    for secret in (lab_dir / "fabric.key", *([lab_dir / ADMIN_TOKEN] if admin_token else [])):
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    path = lab_dir / "fabric.yaml"
    path.write_text(generate_clos_yaml(params))
    if sized:
        fabric = load_fabric(path)
        fit = oam_interval_fit(2 * len(fabric.links))
        if fabric.liveness == "oam" and fit > fabric.timers.oam_interval * 1000:
            timers = {**dict(params.timers), "oam_interval_ms": fit}
            params = dataclasses.replace(params, timers=tuple(timers.items()))
            path.write_text(generate_clos_yaml(params))
            if log is not None:
                log(f"warning: {len(fabric.links)} links: CFM every {fabric.timers.oam_interval * 1000:g} ms "
                    f"would need more of ovs-vswitchd than this machine can spare; using oam_interval_ms: "
                    f"{fit} (silent failures are detected in ~3.5 x {fit} ms)")
    return path


def load_fabric(path: Path | str) -> Any:
    from proto.config import load_fabric as _load

    return _load(path)


def keep_running(state: Any, fabric: Any) -> None:
    """Record `fabric` (loaded from `state.config`) as the config the lab runs: its text in the lab dir's
    RUNNING_FILE and its digest in the record (the caller saves the record)."""
    src = Path(fabric.source)
    if not src.is_file():            # a pipe (`--config <(...)`) has been read once: never wait on it again
        state.running = ""
        return
    text = src.read_text(encoding="utf-8")
    tmp = Path(state.dir) / f".{RUNNING_FILE}.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(Path(state.dir) / RUNNING_FILE)
    state.running = fabric.digest


def lab_fabric(state: Any) -> Any:
    """The fabric a lab command sees: the lab's config file, unless it was edited since the lab last ran it
    (`lab up`, a committed `lab reload`) — then the config the lab runs, kept in RUNNING_FILE. Before, an edit
    waiting for `lab reload` (a ToR added by `config add-tor --write`, or a typo) was taken for the running
    fabric: `lab status` showed the new ToR dead, `lab ping` and `lab heal` failed on it, and a file that did not
    load stopped every lab command. None without a config; ConfigError if neither loads."""
    from proto.config import ConfigError, parse_fabric

    if not state.config:
        return None
    config, kept = Path(state.config), Path(state.dir) / RUNNING_FILE
    fabric, edited_error = None, None
    try:
        fabric = load_fabric(config) if config.exists() else None
    except ConfigError as e:
        edited_error = e
    if state.running and kept.exists() and (fabric is None or fabric.digest != state.running):
        try:
            running = parse_fabric(kept.read_text(encoding="utf-8"), source=str(config), base_dir=config.parent)
            if running.digest == state.running:
                return running
        except (OSError, ConfigError):
            pass
    if edited_error is not None:
        raise edited_error
    return fabric




def edited_since_run(state: Any) -> str | None:
    """Why the lab's config file is not the config the lab runs (`lab up`, a committed `lab reload`: digest
    `state.running`), or None when it is. The `security:` section is outside the digest: a new admin token
    or key set in the file is no edit here. For `lab heal`, which restarts killed daemons on what the lab
    ran, never on an edit awaiting `lab reload` (a client started on a config no master has prepared refuses
    every LSD as a config mismatch and drops its routes)."""
    from proto.config import ConfigError

    config = Path(state.config)
    if not state.running:          # a config read from a pipe: nothing to compare with
        return None
    try:
        digest = load_fabric(config).digest
    except (OSError, ConfigError) as e:
        return f"{config} no longer loads ({e})"
    if digest != state.running:
        return (f"{config} was edited since the lab last ran it (config {digest[:12]}..., the lab runs "
                f"{state.running[:12]}...)")
    return None


def adopt_committed(lab: Any) -> str | None:
    """When the lab's config file was edited since the lab last ran it and the serving master runs it now (a
    rollout committed outside `lab reload`: `firepath config rollout --commit` against the lab's masters), make
    it what the lab runs: its record (keep_running, under the lab lock, on the record as on disk now) and
    `lab.fabric`/`lab.ports`. Before, the lab kept the old config until a `lab reload`, and `lab ping`,
    `status`, `add-tor`, `heal` worked on a fabric the masters no longer ran. Returns the line that says so, or
    None (nothing edited, no single serving master, or it runs something else: the edit waits for `lab reload`)."""
    from lab.labports import LabPorts
    from lab.netns import netns_exists
    from lab.state import LabState, locked

    st = lab.state
    if not (st.daemons and st.running) or edited_since_run(st) is None or not netns_exists(st.netns):
        return None         # (no lab namespace: the lab is down, or half up; nothing to ask)
    try:
        new = load_fabric(st.config)
        leader = lab.current_master()
        view = None if leader is None else lab.http.get(lab.fabric.master(leader[0]).rest_port, "/v1/rollout", 2.0)
    except Exception:  # noqa: BLE001 - no answer (no namespace, no master, a bad file): the record is kept as it is
        return None
    if not isinstance(view, dict) or view.get("current") != new.digest:
        return None
    with locked(st.dir):
        fresh = LabState.load(st.dir)       # what another lab command may have saved since this one read it
        keep_running(fresh, new)
        fresh.save()
    st.running = fresh.running
    lab.fabric, lab.ports = new, LabPorts(new)
    return (f"the masters run {st.config} (config {new.digest[:12]}..., committed outside `lab reload`): the lab "
            f"runs it from now on")
