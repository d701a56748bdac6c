"""Ensembles: member means, spreads, save/load, calculator, `ednn train --ensemble K` and `ednn predict`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import make_random_bcn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ednn  # noqa: E402
from ednn.errors import ModelError  # noqa: E402
from ednn.image.grid import GridSpec  # noqa: E402
from ednn.predict.ensemble import Ensemble  # noqa: E402
from ednn.predict.model import EnergyModel  # noqa: E402

G = GridSpec(species=(5, 6, 7), spacing=2.46 / 5, sigma=0.5)
SMALL = {"layers": 2, "filters": 4, "kernel": 3, "readout": [4]}


def _sheet(seed, reps=(3, 3)):
    at = make_random_bcn(seed=seed, reps=reps)
    at.cell[2] = [0, 0, 15.0]
    at.pbc = (True, True, False)
    at.positions[:, 2] += 7.5
    return at


def _members(k=3):
    ms = []
    for s in range(k):
        m = EnergyModel.create(SMALL, G, seed=s)
        m.scale, m.refs = 0.3, np.array([-6.0, -7.4, -7.1])
        ms.append(m)
    return ms


def test_mean_and_spread_are_the_members(tmp_path):
    ms = _members()
    ens = Ensemble(ms)
    structs = [_sheet(s) for s in range(4)]
    each = np.stack([m.predict_energies(structs) for m in ms])
    mean, std = ens.predict_energies(structs, return_std=True)
    np.testing.assert_allclose(mean, each.mean(0), rtol=1e-12)
    np.testing.assert_allclose(std, each.std(0, ddof=1), rtol=1e-12)
    assert std.min() > 0  # differently initialised members disagree
    e, s = ens.predict_energy(structs[0], return_std=True)
    assert e == pytest.approx(mean[0]) and s == pytest.approx(std[0])
    f, fs = ens.predict_forces(structs[:1], return_std=True)
    each_f = np.stack([m.predict_forces(structs[:1])[0] for m in ms])
    np.testing.assert_allclose(f[0], each_f.mean(0), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fs[0], each_f.std(0, ddof=1), rtol=1e-6, atol=1e-8)
    at = structs[1].copy()
    at.calc = ens.calculator()
    assert at.get_potential_energy() == pytest.approx(mean[1], rel=1e-6)
    assert at.calc.results["energy_std"] == pytest.approx(std[1], rel=1e-5)
    np.testing.assert_allclose(at.get_forces(), ens.predict_forces([structs[1]])[0], rtol=1e-5, atol=1e-7)
    # saved and loaded through ednn.load
    ens.save(str(tmp_path / "ens"))
    back = ednn.load(str(tmp_path / "ens"))
    assert isinstance(back, Ensemble) and len(back) == 3
    np.testing.assert_allclose(back.predict_energies(structs), mean, rtol=1e-9)
    with pytest.raises(ModelError, match="ensemble"):
        ms[0].predict_energy(structs[0], return_std=True)
    with pytest.raises(ModelError, match="at least 2"):
        Ensemble(ms[:1])
    other = EnergyModel.create(SMALL, GridSpec(species=(6,), spacing=0.5, sigma=0.5), seed=0)
    with pytest.raises(ModelError, match="grid"):
        Ensemble([ms[0], other])
    (tmp_path / "ens" / "member_2" / "model" / "config.json").unlink()
    with pytest.raises(ModelError, match="missing|corrupt|not"):
        ednn.load(str(tmp_path / "ens"))


def test_cli_train_ensemble_and_predict_with_std(tmp_path):
    import ase.io
    import yaml

    from ednn.cli import main
    from ednn.data import DatasetWriter

    structs = [_sheet(s, (2 + s % 2, 3)) for s in range(10)]
    h5 = str(tmp_path / "d.h5")
    with DatasetWriter(h5) as w:
        for a in structs:
            w.append(a, energy=-7.3 * len(a) + 0.01 * len(a) * float(np.mean(a.numbers == 5)))
    cfg = {"out": str(tmp_path / "ens"), "seed": 3, "data": {"train": h5, "val_fraction": 0.2},
           "grid": {"species": ["B", "C", "N"], "spacing": 2.46 / 5, "heights": 0}, "model": SMALL,
           "train": {"epochs": 1, "batch_size": 4, "progress": False}}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--ensemble", "2"]) == 0
    man = json.load(open(tmp_path / "ens" / "ensemble.json"))
    assert man["members"] == ["member_0/model", "member_1/model"]
    seeds = [json.load(open(tmp_path / "ens" / f"member_{k}" / "model" / "config.json"))["meta"]["train_config"]["seed"]
             for k in range(2)]
    assert seeds == [3, 4]
    split = [json.load(open(tmp_path / "ens" / f"member_{k}" / "split.json"))["train"] for k in range(2)]
    assert split[0] == split[1]  # the same data for every member
    xyz = str(tmp_path / "s.xyz")
    ase.io.write(xyz, structs[:3], format="extxyz")
    csv = str(tmp_path / "p.csv")
    assert main(["predict", str(tmp_path / "ens"), xyz, "-o", csv]) == 0
    rows = open(csv).read().splitlines()
    assert rows[0].split(",")[4] == "energy_std_eV" and len(rows) == 4
    ens = ednn.load(str(tmp_path / "ens"))
    mean, std = ens.predict_energies(structs[:3], return_std=True)
    np.testing.assert_allclose([float(r.split(",")[4]) for r in rows[1:]], std, rtol=1e-6)
    # a rerun keeps finished members
    assert main(["train", str(path), "--ensemble", "2"]) == 0
    with pytest.raises(SystemExit):
        main(["train", str(path), "--ensemble"])
    assert main(["train", str(path), "--ensemble", "1"]) == 2
    assert main(["predict", str(tmp_path / "ens"), xyz, "--map", str(tmp_path / "m")]) == 2
