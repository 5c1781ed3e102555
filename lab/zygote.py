"""A pre-imported Python the lab forks its daemons from during bring-up (issue #20, "faster bring-up").

Starting a firepath daemon costs ~0.3-0.4 s of CPU, most of it imports (os-ken, the OVSDB IDL, aiohttp for
the masters, our own modules); a 2 x 4 lab starts 9 of them on 2 cores, a 48-switch lab 51. The zygote
imports everything once, in the lab namespace, then forks one child per daemon: each child starts with the
modules in memory (copy-on-write) and only runs its own start-up. Like Android's zygote and
multiprocessing's forkserver.

    python -m lab.zygote SOCKET ROLE     # ROLE client|master; in the lab namespace; serves until SIGTERM

Protocol: one JSON line per connection, {"args": [...firepath args], "log": path, "cwd": dir, "env": {...},
"group_nice": N or null},
answered by one JSON line {"pid": N} (or {"error": "..."}). The child: a new session, stdin /dev/null,
stdout and stderr appended to `log`, `env` as its environment, `sys.orig_argv` as if started with
`python -c ... ARGS` (a client's re-exec on reload runs the real command line), then `proto.cli.main(args)`
and `os._exit` with its status. The zygote has no threads when it forks (asserted) and reaps its children.
The lab (lab.fabric) falls back to a plain start when the zygote is not there or fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import sys
import threading
from typing import Any

# One zygote per role: a client forked from a zygote that also imported the masters' aiohttp would carry
# those pages in its RSS (shared, but counted).
_COMMON = ("proto.cli", "proto.config", "proto.auth", "proto.logsetup", "proto.messages")
PRELOAD = {
    "client": (*_COMMON, "client.cli", "client.daemon", "client.rest", "client.liveness", "client.of.sockets",
               "client.of.driver", "client.of.embed"),
    "master": (*_COMMON, "controller.cli", "controller.server", "controller.rest", "controller.durable"),
}
CODE = "import sys; from proto.cli import main; sys.exit(main())"
MAX_REQUEST = 1 << 20
SOCKET_RE = re.compile(r"^/tmp/fpzygote-\d+-[0-9a-f]{6}\.sock$")      # Zygote.path


def socket_of(pid: int) -> str | None:
    """The socket path of the zygote running as `pid` (None if `pid` is not one): a zygote killed without its
    SIGTERM handler (teardown SIGKILLs what runs in the lab's namespaces, e.g. the zygotes of a `lab up` that
    was itself killed) leaves it in /tmp, and its path is only in its command line."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return None
    if len(argv) >= 4 and argv[1:3] == ["-m", "lab.zygote"] and SOCKET_RE.match(argv[3]):
        return argv[3]
    return None


def preload(role: str) -> None:
    import importlib

    for name in PRELOAD[role]:
        importlib.import_module(name)


def _child(req: dict) -> None:
    """In the forked child: become the daemon. Never returns."""
    rc = 1
    try:
        os.setsid()                     # a session, hence an autogroup, of its own
        if req.get("group_nice") is not None:
            with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as f:
                f.write(str(int(req["group_nice"])))
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        out = os.open(req["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        for fd in (null, out):
            os.close(fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        args = [str(a) for a in req["args"]]
        sys.argv = ["-c", *args]
        sys.orig_argv = [sys.executable, "-c", CODE, *args]
        from proto.cli import main

        rc = main(args)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - the daemon's crash goes to its own log, then it exits
        import traceback

        traceback.print_exc()
        rc = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(rc if isinstance(rc, int) else 1)


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def serve(path: str, role: str) -> int:
    preload(role)
    stop = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    srv.settimeout(0.5)
    print(f"zygote ready pid={os.getpid()} preloaded={len(sys.modules)} modules", flush=True)
    try:
        while not stop:
            _reap()
            try:
                conn, _ = srv.accept()
            except (TimeoutError, InterruptedError):
                continue
            with conn:
                conn.settimeout(5.0)
                try:
                    raw = conn.makefile("rb").readline(MAX_REQUEST)
                    req = json.loads(raw)
                    assert threading.active_count() == 1, "the zygote must not fork with threads"
                    pid = os.fork()
                    if pid == 0:
                        srv.close()
                        conn.close()
                        _child(req)
                    answer = {"pid": pid}
                except Exception as e:  # noqa: BLE001 - one bad request is answered, the zygote goes on
                    answer = {"error": f"{type(e).__name__}: {e}"}
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(answer).encode() + b"\n")
    finally:
        srv.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        _reap()
    return 0


class Zygote:
    """The lab side: `with Zygote(netns, run_dir, repo_root, role) as z:` starts `python -m lab.zygote` in
    the lab namespace; `z.spawn(...)` waits (bounded) for it to serve, then forks a daemon from it (None
    when it cannot: the caller starts the daemon itself); the exit stops the zygote by its PID. Daemons
    already forked keep running."""

    def __init__(self, netns: str | None, run_dir: str, repo_root: str, role: str,
                 ready_timeout: float = 15.0) -> None:
        self.netns, self.run_dir, self.repo_root, self.role = netns, run_dir, repo_root, role
        # not in run_dir: a unix socket path is limited to 107 bytes
        self.path = f"/tmp/fpzygote-{os.getpid()}-{os.urandom(3).hex()}.sock"
        self.ready_timeout = ready_timeout
        self.proc: Any = None
        self.failed: str | None = None

    def start(self) -> Zygote:
        """Start the process (does not wait for it: `spawn` does)."""
        import subprocess

        from lab.netns import exec_cmd
        from lab.pyenv import python_env

        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        argv = [sys.executable, "-m", "lab.zygote", self.path, self.role]
        with open(os.path.join(self.run_dir, f"zygote-{self.role}.log"), "ab") as logf:
            self.proc = subprocess.Popen(exec_cmd(self.netns, argv) if self.netns else argv,
                                         stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=python_env(self.repo_root),
                                         cwd=self.repo_root)
        return self

    def _wait_ready(self) -> None:
        import time

        deadline = time.monotonic() + self.ready_timeout
        while not os.path.exists(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.failed = f"zygote did not start (see {self.run_dir}/zygote-{self.role}.log)"
                self._stop()
                break
            time.sleep(0.01)

    def __enter__(self) -> Zygote:
        return self if self.proc is not None else self.start()

    def spawn(self, args: list[str], log: str, env: dict[str, str], group_nice: int | None = None) -> int | None:
        if self.proc is not None and not self.failed:
            self._wait_ready()
        if self.failed or self.proc is None:
            return None
        try:
            return request(self.path, args, log, self.repo_root, env, group_nice=group_nice)
        except (OSError, ValueError) as e:
            self.failed = str(e)
            return None

    def _stop(self) -> None:
        import subprocess

        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __exit__(self, *_exc: object) -> None:
        self._stop()


def request(path: str, args: list[str], log: str, cwd: str, env: dict[str, str], timeout: float = 10.0,
            group_nice: int | None = None) -> int:
    """Ask the zygote at `path` for a daemon (`group_nice`: its autogroup's nice, set by the child itself
    after setsid, so no race with the caller); its PID. OSError/ValueError when the zygote cannot."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps({"args": args, "log": log, "cwd": cwd, "env": env,
                              "group_nice": group_nice}).encode() + b"\n")
        answer = json.loads(s.makefile("rb").readline(MAX_REQUEST) or b"{}")
    if "pid" not in answer:
        raise ValueError(f"zygote {path}: {answer.get('error', 'no answer')}")
    return int(answer["pid"])


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1], sys.argv[2]))
