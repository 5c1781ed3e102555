#!/usr/bin/env python3
"""PNG of a master's topology page in headless Chromium (the README's screenshot).

    firepath lab up --name shot && firepath lab fail link tor-1-1 agg-1-1 --name shot
    ip netns exec fplab-shot .venv/bin/python scripts/page-screenshot.py http://127.0.0.1:6801/ \\
        docs/topology-page.png --select-link tor-1-1:1-agg-1-1:1 --select-switch tor-1-1

Needs Debian's chromium and chromium-driver (scripts/install-deps.sh) and selenium (the test extras).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
         "--hide-scrollbars", "--force-device-scale-factor=1")


def wait(driver: webdriver.Chrome, script: str, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = driver.execute_script(script)
        if got:
            return got
        time.sleep(0.05)
    raise SystemExit(f"page-screenshot: timed out waiting for: {script}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("output")
    ap.add_argument("--select-link", help="click this link (its details in the side panel)")
    ap.add_argument("--select-switch", help="click this switch instead/after")
    ap.add_argument("--size", default="1400,760", help="window width,height (default 1400,760)")
    args = ap.parse_args()
    profile = tempfile.mkdtemp(prefix="fp-page-shot-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (*FLAGS, f"--window-size={args.size}", f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    try:
        driver.get(args.url)
        wait(driver, "return window.fp && fp.ready", 20)
        for kind, name in (("link", args.select_link), ("switch", args.select_switch)):
            if name:
                driver.execute_script(
                    f"document.querySelector('#topo [data-{kind}=\"{name}\"]')"
                    ".dispatchEvent(new MouseEvent('click', {bubbles: true}))")
                wait(driver, f"return document.getElementById('details').dataset.name === '{name}'", 10)
        time.sleep(0.5)
        driver.save_screenshot(args.output)
        print(f"page-screenshot: wrote {args.output}")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
