"""lab.zygote: daemons forked from a pre-imported Python (no root, no namespace: netns=None)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from lab.zygote import Zygote

REPO = str(Path(__file__).resolve().parent.parent)


def _gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def test_a_forked_daemon_runs_the_command_with_its_own_log_and_environment(tmp_path: Path) -> None:
    log = tmp_path / "client.log"
    env = {**os.environ, "FP_ZYGOTE_TEST": "1"}
    with Zygote(None, str(tmp_path), REPO, "client") as z:
        pid = z.spawn(["client", "--help"], str(log), env)
        assert pid is not None and pid != os.getpid()
        assert _gone(pid)
        second = z.spawn(["client", "--no-such-option"], str(log), env)    # the zygote serves on
        assert second is not None and _gone(second)
    text = log.read_text()
    assert "--switch" in text and "--restart-hold" in text              # argparse's help, in the log
    assert "the following arguments are required: --config, --switch" in text
    assert "zygote ready" in (tmp_path / "zygote-client.log").read_text()
    assert z.proc is None and not os.path.exists(z.path)                # stopped and cleaned up


def test_a_zygote_that_cannot_start_makes_the_caller_start_the_daemon_itself(tmp_path: Path) -> None:
    with Zygote(None, str(tmp_path), REPO, "no-such-role", ready_timeout=10.0) as z:
        assert z.spawn(["client", "--help"], str(tmp_path / "x.log"), dict(os.environ)) is None
        assert z.failed and "did not start" in z.failed
    assert "KeyError" in (tmp_path / "zygote-no-such-role.log").read_text()
