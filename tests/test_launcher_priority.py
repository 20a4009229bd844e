"""``aqueduct up`` starts the background services (accounting, the batch worker) at a lower CPU priority,
``AQUEDUCT_BACKGROUND_NICE`` (0 to 19, default 10); a bad value stops it before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from aqueduct_cli.launcher import BACKGROUND, BACKGROUND_NICE, background_nice


def test_background_is_accounting_and_the_batch_worker() -> None:
    assert BACKGROUND == {"accounting", "batch-worker"}
    assert background_nice({}) == BACKGROUND_NICE == 10
    assert background_nice({"AQUEDUCT_BACKGROUND_NICE": " 0 "}) == 0
    assert background_nice({"AQUEDUCT_BACKGROUND_NICE": "19"}) == 19


@pytest.mark.parametrize("value", ["-1", "20", "ten", "1.5"])
def test_a_bad_value_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="AQUEDUCT_BACKGROUND_NICE must be a whole number from 0 to 19"):
        background_nice({"AQUEDUCT_BACKGROUND_NICE": value})


def test_up_with_a_bad_value_says_so_and_starts_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "aqueduct_cli", "up", "--data-dir", str(data)],
        env={**os.environ, "AQUEDUCT_BACKGROUND_NICE": "high"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "AQUEDUCT_BACKGROUND_NICE must be a whole number from 0 to 19, not 'high'" in result.stderr
    assert not (data / "nats").exists() and not (data / "runtime.json").exists()
