"""The house style is checked like everything else: `ruff check` and `ruff format --check` over the
tree, with the settings in pyproject.toml (line length 119, the rules and the ignore list)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO


def _ruff() -> list[str]:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("ruff is not installed in this environment (it is pinned in the test extras and the lock)")
    return [found]


def test_ruff_check_is_clean():
    proc = subprocess.run(
        [*_ruff(), "check", "--output-format", "concise", "."], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]


def test_ruff_format_is_applied():
    proc = subprocess.run([*_ruff(), "format", "--check", "."], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, "run `.venv/bin/ruff format .`:\n" + proc.stdout[-5000:] + proc.stderr[-2000:]
