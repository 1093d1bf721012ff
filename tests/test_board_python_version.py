"""The board side keeps to Python 3.10, the interpreter of the PYNQ v3.0 board image: vermin reads every board-side
module and names any syntax or standard-library use that needs a newer Python."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from paths import ROOT

BOARD_SIDE = [ROOT / "host" / "lepton_host"]  # the runtime, emulators, emulated board and the edge gateway


def test_board_side_runs_on_python_3_10():
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent))
    assert vermin, "vermin is missing from the environment (requirements.lock installs it)"
    r = subprocess.run([vermin, "-t=3.10-", "--violations", "--no-tips", "--eval-annotations", "--backport",
                        "typing_extensions", *map(str, BOARD_SIDE)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"board-side code needs a Python newer than 3.10:\n{r.stdout}{r.stderr}"


def test_the_check_can_fail(tmp_path):
    """A module using a 3.11-only API is named (the rule is not vacuous)."""
    bad = tmp_path / "uses_311.py"
    bad.write_text("import tomllib\n")
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent))
    r = subprocess.run([vermin, "-t=3.10-", "--violations", "--no-tips", str(bad)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and "tomllib" in r.stdout
