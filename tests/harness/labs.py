"""A lab fabric for a test module: up in a fresh namespace set, always torn down (tests only)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from lab.fabric import Lab, LabError, teardown


@contextmanager
def running_lab(prefix: str, clos: dict[str, Any], *, timeout: float = 90.0,
                keep_logs_env: str | None = None) -> Iterator[Lab]:
    """`Lab.up` a lab named `prefix` + this process's pid under /tmp/fplab-<name> (a failed bring-up fails
    the test with the lab's reason), yield it, then close, tear down by name and remove its directory.
    `keep_logs_env`: if that environment variable names a directory, the daemons' logs are copied there
    first (debugging)."""
    name = f"{prefix}{os.getpid() % 100000}"
    d = Path("/tmp") / f"fplab-{name}"
    keep = os.environ.get(keep_logs_env) if keep_logs_env else None
    if keep and not os.path.isabs(keep):     # "=1" once copied a lab's logs into the repository
        pytest.fail(f"{keep_logs_env}={keep!r}: give an absolute directory for the lab's logs", pytrace=False)
    try:
        the_lab = Lab.up(name=name, lab_dir=d, clos=clos, clean=True, timeout=timeout, log=lambda m: None)
    except LabError as e:
        pytest.fail(f"lab did not come up: {e}", pytrace=False)
    try:
        yield the_lab
    finally:
        the_lab.close()
        teardown(d, name=name, log=lambda m: None)
        if keep:
            shutil.copytree(d / "logs", keep, dirs_exist_ok=True)
        shutil.rmtree(d, ignore_errors=True)
