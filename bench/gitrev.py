"""A module's source at another git revision, loaded beside the current one (benchmarks that compare old and
new code in one process).

    old = load_at("43230e9", "proto/messages.py", "messages_v1")   # a module object; its imports are today's

CalledProcessError when the revision or path does not exist in this repository.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_at(rev: str, path: str, name: str) -> ModuleType:
    """`path` (relative to the repository) as of `rev`, imported as module `name` (also put in sys.modules)."""
    text = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout
    file = Path(tempfile.mkdtemp(prefix="fp-bench-rev-")) / f"{name}.py"
    file.write_text(text)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
