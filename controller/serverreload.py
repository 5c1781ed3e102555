"""Config reload and rollout prepare on a master replica's runtime (issue #21; controller.server.MasterServer
mixes this in): read a config file, check it, then act on it.

The read and every check (a Jupiter-size file: ~10 MB, seconds of parsing; `line_of` re-reads it for an
error's line) run on a worker thread, off the event loop, so FMRP hellos, reports and the LSD keep flowing
while a big file is read — a prepare that blocked the loop for seconds cost the replica its mastership even
when it was refused. Only the change itself (cheap) runs on the loop, after checking that nothing it was
checked against changed meanwhile. One reload at a time: another one while a file is being read is refused
(`ReloadBusy`, REST 429); SIGHUPs arriving meanwhile are folded into one more reload after it.

    plan = server.reload_check(path)        # any thread: reads, parses, checks; changes nothing
    out = server.reload_apply(plan)         # the loop: prepares / swaps keys
    out = await server.reload_async(path)   # both, the first on a worker thread, one at a time
    server.reload(path)                     # both, here (tests, tools)
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.rollout import Carry, IncompatibleConfig, RolloutError, check_compatible
from proto.config import Fabric
from proto.logsetup import kv

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("firepath.master")

#: GIL switch interval (s) while a config file is read on a worker thread (sys.setswitchinterval; default 5 ms)
RELOAD_SWITCH_INTERVAL = 0.0005

__all__ = ["ReloadBusy", "ReloadOps", "ReloadPlan"]


class ReloadBusy(Exception):  # noqa: N818 - reads as what it is
    """Another reload or prepare is reading its file: nothing was done; try again when it finished."""

    def __init__(self, source: str, since: float) -> None:
        self.source, self.since = source, since
        super().__init__(f"busy: a reload of {source} is being read (for {since:.1f} s): one at a time, "
                         f"retry when it finished (nothing was done)")


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """A file read and checked (reload_check): what reload_apply does, and what it was checked against."""

    nxt: Fabric
    same: bool                  # the running config's digest: no rollout (a key-only change at most)
    keys: Any                   # the key set to swap in, or None
    running: Fabric             # the core's config it was checked against
    held: Any                   # the Codec's key set it was checked against
    carry: Any = None           # controller.rollout.Carry(running, nxt), built here off the loop (not `same`)
    text: str = ""              # the file's text, kept on disk once it runs (controller.durable.RolloutStore)


class ReloadOps:
    """MasterServer's reload operations (a mixin: every other attribute it uses is MasterServer's)."""

    _reloading: tuple[str, float] | None = None     # (source, monotonic start) of the reload being read
    _reload_again = False                           # a SIGHUP arrived meanwhile: read the file once more
    _next_text: tuple[str, str, str] | None = None  # (digest, source, text) of the prepared or pending config
    _rollout_pool: ThreadPoolExecutor | None = None     # RolloutStore writes, in order, off the loop

    def reload(self, path: str | Path | None = None) -> dict[str, Any]:
        """Read the config file again (`path`, default: the one this replica runs) and act on it: the same
        config -> nothing; the prepared next one -> nothing; another -> prepared as the next config (the
        two-phase rollout, controller.rollout). Returns {"outcome": "unchanged"|"prepared"|"already_prepared",
        "digest", "source", "keys": the key ids held after it}. Blocks while reading: on the event loop, use
        reload_async.

        Raises ConfigError (file:line:field: an invalid file, one changing the masters or the distribution
        (controller.rollout.check_compatible), another config naming another key set
        (proto.keyroll.keys_for_reload)) or RolloutError (another rollout is prepared): then nothing changed,
        keys included. Keys change only with a key-only change of the running config (the security section is
        outside the digest: the key rollover); `reload_hooks` observers then run for every file accepted."""
        return self.reload_apply(self.reload_check(path))

    async def reload_async(self, path: str | Path | None = None) -> dict[str, Any]:
        """reload(), the read and the checks on a worker thread. Raises ReloadBusy while another one reads."""
        source = str(path if path is not None else self.fabric.source)
        if self._reloading is not None:
            raise ReloadBusy(self._reloading[0], time.monotonic() - self._reloading[1])
        self._reloading = (source, time.monotonic())
        # While the worker thread parses, every system call of the loop (a hello's sendto, a log line) gives the
        # GIL up and waits up to the switch interval (5 ms) to take it back from the parser, so a timer turn of a
        # few dozen such calls can outlast a short master_dead (BENCHMARKS.md "A Jupiter prepare next to FMRP's
        # hellos"). A shorter interval for the read's duration hands the GIL back sooner (one reload at a time).
        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, RELOAD_SWITCH_INTERVAL))
        try:
            plan = await asyncio.get_running_loop().run_in_executor(None, self.reload_check, path)
        finally:
            sys.setswitchinterval(interval)
            self._reloading = None
        return self.reload_apply(plan)

    def reload_signal(self) -> None:
        """SIGHUP: reload the own file off the loop; one arriving while a reload reads is folded into one more
        reload after it (the file may have changed since that one read it). Errors are logged."""
        from proto.config import ConfigError

        if self._reloading is not None:
            self._reload_again = True
            log.info(kv("config_reload_deferred", reading=self._reloading[0]))
            return

        async def run() -> None:
            again = True
            while again:            # bounded: only SIGHUPs arriving during a read add a round
                self._reload_again = False
                try:
                    await self.reload_async()
                except (ConfigError, RolloutError, ReloadBusy) as e:
                    log.error(kv("config_reload_refused", error=e))
                again = self._reload_again

        task = asyncio.get_running_loop().create_task(run())
        self._reload_tasks = getattr(self, "_reload_tasks", set())
        self._reload_tasks.add(task)                # a reference until done (asyncio keeps weak ones)
        task.add_done_callback(self._reload_tasks.discard)

    def reload_check(self, path: str | Path | None = None) -> ReloadPlan:
        """Read and check the file; change nothing (safe on any thread). Raises as reload().

        The cyclic GC stays off while reading and the new config is frozen out of its reach
        (proto.configparse.gc_paused), as the server freezes its config at start: the first collection after
        the parse stopped every thread for a second (the event loop's too: the tester's failover)."""
        from proto.configparse import gc_paused

        with gc_paused(freeze=True):
            return self._reload_check(path)

    def _reload_check(self, path: str | Path | None) -> ReloadPlan:
        from proto.config import ConfigError, line_of, parse_file_text, read_config_text

        running, held = self.core.fabric, self.codec.keys
        path = path if path is not None else self.fabric.source
        text = read_config_text(path)
        nxt = parse_file_text(path, text)
        same = nxt.digest == running.digest
        if not same:
            try:
                check_compatible(running, nxt)
            except IncompatibleConfig as e:
                raise ConfigError(e.source, line_of(e.source, e.field), e.field, e.problem) from None
        keys = self._keys_to_apply(nxt, running, held)          # every check before any change
        carry = None
        if not same:    # derive its switches' keys here (~30 µs each, a cache of the key set held), not on the loop
            self.fanout.warm([sw.name for sw in nxt.switches])
            carry = Carry(running, nxt)     # and the link index map moved switches' LSD and the commit use
        return ReloadPlan(nxt, same, keys, running, held, carry, "" if same else text)

    def reload_apply(self, plan: ReloadPlan) -> dict[str, Any]:
        """Act on a checked file (the event loop). RolloutError (409) if the running config or the keys
        changed since it was checked (a commit, a leader's snapshot, another reload): nothing done."""
        if self.core.fabric is not plan.running or self.codec.keys is not plan.held:
            raise RolloutError(f"{plan.nxt.source}: the running config or key set changed while it was read "
                               f"(a commit or another reload): nothing done, send it again")
        nxt, keys = plan.nxt, plan.keys
        if plan.same:
            outcome = "unchanged"
        else:
            outcome = "prepared" if self.core.rollout_prepare(nxt, self.now(), plan.carry) else "already_prepared"
            # its switches (new ones too) may speak to us from now on
            self.codec.switches = self.codec.switches | {sw.name for sw in nxt.switches}
            self._next_text = (nxt.digest, nxt.source, plan.text)
            self._rollout_write("set_next", nxt.digest)
        if keys is not None:
            self.codec.set_keys(keys)
            log.warning(kv("keys_reloaded", send_key=keys.send_id, accepted=",".join(map(str, sorted(keys.accepted))),
                           retired=",".join(map(str, sorted(keys.retired))) or None))
        for hook in self.reload_hooks:
            hook(nxt)
        log.info(kv("config_reload", source=nxt.source, digest=nxt.digest[:12], outcome=outcome))
        self._run([])
        return {"outcome": outcome, "digest": nxt.digest, "source": nxt.source, "keys": self.codec.keys.status()}

    def _keys_to_apply(self, nxt: Fabric, running: Fabric, held: Any) -> Any:
        """The file's key set if a reload of `nxt` swaps it in, else None (proto.keyroll.keys_for_reload: only
        a reload of the running config changes keys). The file's key files were read by load_fabric. Raises
        ConfigError: another config naming another key set, or a switch's bundle instead of the secret."""
        from proto.auth import AuthError
        from proto.config import ConfigError
        from proto.keyroll import keys_for_reload

        keys = keys_for_reload(held, nxt, running.digest, self.fabric.source)
        if keys is not None:
            try:
                keys.check_usable_by(self.core.id, master=True)
            except AuthError as e:      # a switch's bundle: refused like any bad file, nothing changes
                raise ConfigError(nxt.source, None, "", str(e)) from None
        return keys

    # ------------------------------------------------------------------------------------ commit, abort
    def rollout_commit(self) -> dict[str, Any]:
        """Commit the prepared rollout (master only). Raises NotMaster, RolloutError."""
        actions = self.core.rollout_commit(self.now())
        log.warning(kv("rollout_commit", digest=self.core.fabric.digest[:12], version=self.core.version))
        self._run(actions)
        return {"outcome": "committed", "digest": self.core.fabric.digest, "version": self.core.version}

    def rollout_abort(self) -> dict[str, Any]:
        """Drop the prepared next config, and a pending one (a replica restarted on it mid-rollout): the
        replica stays on, or is back on, the running config, and so is its record for a restart."""
        done = self.core.rollout_abort(self.now())
        log.warning(kv("rollout_abort", done=done))
        self._next_text = None
        self._rollout_write("set_next", None)
        self._follow_fabric()
        return {"outcome": "aborted" if done else "nothing_prepared"}

    def hold_pending(self, pending: Fabric, text: str, *, sole: bool = False) -> None:
        """At start, before `start()`: this replica was restarted on `pending`, the config it had prepared over
        the one it runs (controller.durable.RolloutStore.restart_config): it takes it only if its leader runs it
        (controller.rollout.Rollout.pending). `sole` (`--election single`: no leader to learn it from): it is
        prepared again, as it was before the restart, for the operator to commit or abort (review: held
        pending, the single master ran the old config for good and `--commit` found nothing prepared)."""
        self.codec.switches = self.codec.switches | {sw.name for sw in pending.switches}
        self._next_text = (pending.digest, pending.source, text)
        if sole:
            self.core.rollout_prepare(pending, time.monotonic())     # before start(): the loop's clock, unread
            log.warning(kv("rollout_prepared_again", runs=self.core.fabric.digest[:12], next=pending.digest[:12],
                           source=pending.source))
            return
        self.core.rollout.pending = pending
        log.warning(kv("rollout_pending", runs=self.core.fabric.digest[:12], pending=pending.digest[:12],
                       source=pending.source))

    def _follow_fabric(self) -> None:
        """After a commit (ours, or our leader's snapshot adopted by the core): the runtime serves the new
        config too (REST, codec peers), and a restart runs it (RolloutStore)."""
        fabric = self.core.fabric
        names = {sw.name for sw in fabric.switches}
        for other in (self.core.rollout.next, self.core.rollout.pending):
            if other is not None:
                names |= {sw.name for sw in other.switches}
        self.codec.switches = frozenset(names)
        if fabric is not self.fabric:
            self.fabric = fabric
            self.duplicates.set_timers(3 * fabric.timers.report_refresh, fabric.timers.switch_dead)
            self.fanout.warm(sorted(names))
            for o in self.observers:
                hook = getattr(o, "on_fabric", None)
                if hook is not None:
                    hook(fabric)
            log.warning(kv("config_now", digest=fabric.digest[:12], source=fabric.source,
                           links=len(fabric.links), switches=len(fabric.switches)))
            kept, self._next_text = self._next_text, None
            if kept is not None and kept[0] == fabric.digest:
                self._rollout_write("save_running", *kept)

    def _rollout_write(self, what: str, *args: Any) -> None:
        """RolloutStore(state dir).`what`(*args), in order, on a thread of its own (a Jupiter config's text is
        ~10 MB: not written on the event loop). A failure is logged: the record only serves a restart."""
        from concurrent.futures import ThreadPoolExecutor

        from controller.durable import RolloutStore

        if self._rollout_pool is None:
            self._rollout_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout-store")
        store = RolloutStore(self.store.dir)

        def write() -> None:
            try:
                getattr(store, what)(*args)
            except OSError as e:
                log.error(kv("rollout_record_failed", what=what, error=e))
        self._rollout_pool.submit(write)
