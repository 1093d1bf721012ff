"""The board notebook runs top to bottom on the emulated board, in a real Jupyter kernel."""

from __future__ import annotations

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("pynq")

from paths import ROOT  # noqa: E402
from test_emulated_board import tiny  # noqa: E402,F401  (shared session build)

NOTEBOOK = ROOT / "host" / "notebooks" / "lepton_quickstart.ipynb"


def test_quickstart_notebook_executes_on_the_emulated_board(tiny, monkeypatch, tmp_path):
    pkg, _ = tiny
    monkeypatch.setenv("LEPTON_PACKAGE", str(pkg))
    monkeypatch.setenv("LEPTON_EMULATED_BOARD", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    cell_outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    outputs = "".join(o.get("text", "") for o in cell_outputs if o.get("output_type") == "stream")
    errors = [o for o in cell_outputs if o.get("output_type") == "error"]
    assert not errors
    assert "identical to the emulator: True" in outputs
    assert "DeviceTimeoutError" in outputs
    assert "serving again: True" in outputs
    assert "samples/s" in outputs
