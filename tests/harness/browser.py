"""A real headless Chromium for the topology page's tests (Debian `chromium` + `chromium-driver`, via selenium).

    with chromium(tmp_dir) as driver:        # a fresh profile in tmp_dir; quits (and reaps) on exit
        driver.get(url)
        wait_js(driver, "return window.fp && window.fp.ready", 10)

selenium drives the system chromedriver given by path, so its driver manager never downloads anything.
The flags keep Chromium off the network (no background/component/sync traffic: this machine's network is
closed, and a test must not depend on it) and make it run as root in a container (`--no-sandbox`).

`PumpThread` runs a `SimFleet`'s receive loop in a background thread (the scripted switches must answer
keepalives and LSD updates while the test drives the browser); the test changes the fleet only under
`pump.lock`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--disable-extensions", "--window-size=1400,900")


def browser_missing() -> str | None:
    """None when the browser tests can run, else what is missing (make test installs both)."""
    for path in (shutil.which("chromium") or CHROMIUM, shutil.which("chromedriver") or CHROMEDRIVER):
        if not Path(path).exists():
            return f"{path} not installed (scripts/install-deps.sh installs chromium and chromium-driver)"
    return None


@contextlib.contextmanager
def chromium(profile_parent: Path | None = None) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="fp-page-chromium-", dir=profile_parent)
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver") or CHROMEDRIVER))
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_js(driver: Any, script: str, timeout: float, step: float = 0.02) -> Any:
    """Run `script` until it returns something truthy (returned); None after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = driver.execute_script(script)
        if got:
            return got
        if time.monotonic() >= deadline:
            return None
        time.sleep(step)


class PumpThread:
    """Pumps a SimFleet in the background until stop(); bounded by `max_seconds`."""

    def __init__(self, fleet: Any, max_seconds: float = 300.0, **pump_kwargs: Any) -> None:
        self.fleet = fleet
        self.pump_kwargs = pump_kwargs          # e.g. skip_lsd=True: only reports and their acks
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._thread = threading.Thread(target=self._run, name="simfleet-pump", daemon=True)

    def start(self) -> PumpThread:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            with self.lock:
                self.fleet.pump(0.01, **self.pump_kwargs)
            time.sleep(0.001)             # let the test thread take the lock

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
