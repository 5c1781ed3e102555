"""`firepath master` reloads its config on SIGHUP and stays up (tester finding 2: in an older clone a SIGHUP
killed the master). A real master process on loopback ports: the same file (unchanged), an edited one
(prepared as a rollout), an invalid one (refused with file:line:field), and SIGHUPs in quick succession;
after each the process is alive, still the master, and answers REST."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

from tests.harness.loopcluster import LoopCluster


def _log_has(path: Path, pattern: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, path.read_text(errors="replace")):
            return True
        time.sleep(0.05)
    return False


def test_sighup_reloads_a_master_and_it_stays_up(tmp_path: Path) -> None:
    c = LoopCluster(tmp_path, masters=1)
    try:
        c.start_all()
        assert c.wait(lambda: c.masters_now(), 15.0), c.log_path("m1").read_text()[-2000:]
        proc = c.procs["m1"]
        log = c.log_path("m1")

        def sighup_and_check(pattern: str) -> None:
            proc.send_signal(signal.SIGHUP)
            assert _log_has(log, pattern), log.read_text()[-3000:]
            time.sleep(0.3)
            assert proc.poll() is None, f"master exited with {proc.returncode} after SIGHUP: {log.read_text()[-3000:]}"
            assert c.masters_now() is not None

        sighup_and_check(r"event=config_reload .*outcome=unchanged")
        text = c.config.read_text()
        c.config.write_text(text.replace("timers: {", "timers: {report_refresh_ms: 600, ", 1)
                            if "timers: {" in text else text + "timers: {report_refresh_ms: 600}\n")
        sighup_and_check(r"event=config_reload .*outcome=prepared")
        c.config.write_text(text + "bogus_top_level_key: 1\n")
        sighup_and_check(r"event=config_reload_refused .*fabric.yaml:\d+: bogus_top_level_key")
        c.config.write_text(text)
        for _ in range(5):                                    # a burst of SIGHUPs
            proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert proc.poll() is None, log.read_text()[-3000:]
        assert c.masters_now() is not None
    finally:
        c.stop_all()
