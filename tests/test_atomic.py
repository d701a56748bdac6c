"""The atom-centred energy model (ednn.nn.atomic, ednn.predict.atomic): symmetries of a *trained* model.

In the style of NequIP's model tests: every operation that leaves the physics unchanged is applied to random
structures of every kind the library generates, and the energy of a model fitted to Tersoff energies must not
move (issue 11 asks at most 1 meV/atom; the representation makes it exact, so the test asks round-off:
1e-9 eV/atom). Forces must rotate with the structure, equal finite differences of the energy, and the
stress must equal the derivative of the energy under strain.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_graphene

from ednn.errors import InputError, SpeciesError

KINDS = ("graphene", "hbn", "bcn", "hetero", "defect")  # every kind of sheet ednn.atoms.generate makes
OPS = ("translate", "subpixel", "basis", "basis_120", "supercell", "rect_super", "swap", "rotate", "mirror",
       "permute")


def _labelled(kind: str, n: int, seed: int, n_atoms=(20, 80)):
    from ednn.atoms.generate import generate
    from ednn.atoms.labellers import get_labeller

    lab = get_labeller("tersoff")
    structs = list(generate(kind, n, seed=seed, n_atoms=n_atoms, relax_defects=False))
    out = [lab.label(a) for a in structs]
    return structs, np.array([o["energy"] for o in out]), [np.asarray(o["forces"]) for o in out]


@pytest.fixture(scope="module")
def fitted():
    """A model fitted to 150 Tersoff-labelled sheets of every kind (energies only; a few seconds)."""
    from ednn.nn.atomic import AtomicBasis
    from ednn.predict.atomic import fit_atomic

    tr, e_tr, va, e_va, te, e_te = [], [], [], [], [], []
    for k, kind in enumerate(KINDS):
        s, e, _ = _labelled(kind, 40, seed=100 + k)
        tr += s[:26]
        va += s[26:32]
        te += s[32:]
        e_tr.append(e[:26])
        e_va.append(e[26:32])
        e_te.append(e[32:])
    basis = AtomicBasis(species=(5, 6, 7), cutoff=4.0, n_radial=6, l_max=3, radial_width=0.8)
    model = fit_atomic(tr, np.concatenate(e_tr), va, np.concatenate(e_va), basis)
    return model, te, np.concatenate(e_te)


def test_the_fitted_model_has_learned_the_energies(fitted):
    model, te, e_te = fitted
    n = np.array([len(a) for a in te])
    err = np.abs(model.predict_energies(te) - e_te) / n
    # 130 training sheets of five kinds: a linear fit of the projections reaches ~10 meV/atom held out;
    # the per-element references alone (the model with zero weights) are off by > 100
    assert err.mean() < 0.03
    from ednn.predict.atomic import AtomicModel

    bare = AtomicModel(model.basis, None, model.refs)
    assert (np.abs(bare.predict_energies(te) - e_te) / n).mean() > 3 * err.mean()


def test_every_symmetry_leaves_the_energy_of_a_trained_model_unchanged(fitted):
    """50 random structures (10 of each kind) x 10 operations: the largest change is round-off."""
    from ednn.atoms.generate import generate
    from ednn.image.describe import equivalent_structures

    model = fitted[0]
    rng = np.random.default_rng(7)
    worst = {op: 0.0 for op in OPS}
    for k, kind in enumerate(KINDS):
        structs = list(generate(kind, 10, seed=300 + k, n_atoms=(20, 120), relax_defects=False))
        for at in structs:
            at.rattle(0.05, seed=int(rng.integers(1 << 30)))
            ops = equivalent_structures(at, rng, 0.62375)
            assert set(OPS) <= set(ops)
            e0 = model.predict_energy(at) / len(at)
            e = model.predict_energies([ops[o] for o in OPS]) / np.array([len(ops[o]) for o in OPS])
            for o, v in zip(OPS, e):
                worst[o] = max(worst[o], abs(v - e0))
    assert max(worst.values()) < 1e-9, worst  # eV/atom; the tolerance is 1e-3


def test_forces_rotate_with_the_structure_and_equal_finite_differences(fitted):
    model = fitted[0]
    from ednn.atoms.generate import generate

    at = next(iter(generate("defect", 1, seed=11, n_atoms=(40, 60), relax_defects=False)))
    at.rattle(0.08, seed=3)
    at.calc = model.calculator()
    f = at.get_forces()
    assert np.abs(f).max() > 0.1  # a rattled sheet: real forces, not zeros
    rot = at.copy()
    rot.rotate(73.0, "z", rotate_cell=True)
    rot.rotate(180.0, "x", rotate_cell=True)  # upside down: a 3D rotation of the sheet
    R = rot.cell[:].T @ np.linalg.inv(at.cell[:].T)
    rot.calc = model.calculator()
    np.testing.assert_allclose(rot.get_forces(), f @ R.T, atol=1e-8)
    h = 1e-4
    for i, ax in ((0, 0), (5, 1), (17, 2), (len(at) - 1, 0)):
        p, m = at.copy(), at.copy()
        p.positions[i, ax] += h
        m.positions[i, ax] -= h
        fd = -(model.predict_energy(p) - model.predict_energy(m)) / (2 * h)
        assert f[i, ax] == pytest.approx(fd, abs=1e-6)
    assert np.abs(f.sum(axis=0)).max() < 1e-8  # no net force: translation invariance


def test_atoms_on_cell_boundaries_and_perfect_lattices():
    """A perfect lattice with atoms on the cell's edges: zero forces, and the same energy per atom at any size."""
    from ednn.nn.atomic import AtomicBasis
    from ednn.predict.atomic import AtomicModel

    rng = np.random.default_rng(0)
    basis = AtomicBasis(species=(5, 6, 7), n_radial=4, l_max=2)
    model = AtomicModel(basis, rng.normal(size=(3, basis.n_features)) * 1e-3, np.array([-6.0, -7.0, -8.0]))
    g = make_graphene()
    g.positions[0] = 0.0  # exactly on the corner
    g.center(vacuum=8.0, axis=2)
    es = []
    for n in (1, 4, 10):
        s = g.repeat((n, n, 1))
        s.calc = model.calculator()
        es.append(s.get_potential_energy() / len(s))
        assert np.abs(s.get_forces()).max() < 1e-10
    assert max(es) - min(es) < 1e-12


def test_stress_is_the_strain_derivative_of_the_energy(fitted):
    model = fitted[0]
    at = make_graphene().repeat((3, 3, 1))
    at.rattle(0.05, seed=1)
    at.center(vacuum=8.0, axis=2)
    at.calc = model.calculator()
    s = at.get_stress(voigt=False)
    vol = at.get_volume()
    h = 1e-5
    for a, b in ((0, 0), (1, 1), (0, 1)):
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = h / 2 if a != b else h
        p, m = at.copy(), at.copy()
        p.set_cell(at.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
        m.set_cell(at.cell[:] @ (np.eye(3) - eps), scale_atoms=True)
        d = (model.predict_energy(p) - model.predict_energy(m)) / (2 * h)
        assert s[a, b] == pytest.approx(d / vol, abs=1e-7)


def test_atom_energies_sum_to_the_energy_and_are_local(fitted):
    model = fitted[0]
    at = make_graphene().repeat((6, 6, 1))
    at.rattle(0.05, seed=4)
    at.center(vacuum=8.0, axis=2)
    e = model.atom_energies(at)
    assert e.sum() == pytest.approx(model.predict_energy(at), abs=1e-9)
    far = at.copy()
    d = far.get_distances(0, range(len(far)), mic=True)
    j = int(np.argmax(d))
    assert d[j] > 2 * model.basis.cutoff
    far.positions[j] += (0.1, 0.0, 0.0)
    assert model.atom_energies(far)[0] == pytest.approx(e[0], abs=1e-12)  # beyond the cutoff: no effect


def test_save_load_round_trip_and_bad_input(fitted, tmp_path):
    import ednn
    from ednn.predict.atomic import AtomicModel

    model, te, _ = fitted
    path = model.save(str(tmp_path / "atoms_model"))
    back = ednn.load(path)
    assert isinstance(back, AtomicModel)
    np.testing.assert_array_equal(back.predict_energies(te[:5]), model.predict_energies(te[:5]))
    zpath = model.save(str(tmp_path / "m.zip"))
    assert ednn.load(zpath).basis == model.basis
    al = make_graphene()
    al.numbers[:] = 13
    with pytest.raises(SpeciesError, match=r"\['Al'\]"):
        model.predict_energy(al)
    g = make_graphene()
    g.positions[0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        model.predict_energy(g)
    with pytest.raises(Exception, match="ensemble"):
        model.predict_energy(g[:0] + make_graphene(), return_std=True)


def test_the_representation_a_config_resolves_to():
    from ednn.config import load_config
    from ednn.errors import ConfigError

    data = {"train": "x.h5"}
    assert load_config({"data": data})["model"]["representation"] == "atoms"  # names only the data
    assert load_config({"data": data, "model": {"layers": 3}})["model"]["representation"] == "image"
    assert load_config({"data": data, "train": {"epochs": 5}})["model"]["representation"] == "image"
    assert load_config({"data": {**data, "targets": ["ldos"]}})["model"]["representation"] == "image"
    resolved = load_config({"data": data, "atoms": {"cutoff": 5.0}})
    assert load_config(resolved) == resolved  # a normalized config normalizes to itself
    with pytest.raises(ConfigError, match=r"does not use \['model.layers'\]"):
        load_config({"model": {"representation": "atoms", "layers": 3}})
    with pytest.raises(ConfigError, match="per-voxel"):
        load_config({"data": {"targets": ["ldos"]}, "model": {"representation": "atoms"}})
    with pytest.raises(ConfigError, match=r"\['atoms.cutoff'\] set the atom-centred model"):
        load_config({"model": {"representation": "image"}, "atoms": {"cutoff": 5.0}})


def test_train_from_a_config_that_names_only_the_data(tmp_path):
    import json

    import ednn
    from ednn.errors import ConfigError
    from ednn.predict.atomic import AtomicModel

    structs, energies = [], []
    for k, kind in enumerate(("graphene", "bcn", "defect")):
        s, e, _ = _labelled(kind, 20, seed=500 + k)
        structs += s
        energies.append(e)
    energies = np.concatenate(energies)
    cfg = {"out": str(tmp_path / "run"), "data": {"val_fraction": 0.2, "test_fraction": 0.1},
           "atoms": {"n_radial": 4, "l_max": 2}, "train": {"progress": False}}
    model = ednn.train.train(cfg, structures=structs, energies=energies)
    assert isinstance(model, AtomicModel) and model.basis.n_radial == 4
    w = model.weights  # atoms.shared_weights (the default): one readout for B, C and N
    assert np.array_equal(w[0], w[1]) and np.array_equal(w[0], w[2]) and np.abs(w).max() > 0
    own = ednn.train.train({**cfg, "out": str(tmp_path / "own"), "atoms": {**cfg["atoms"], "shared_weights": False}},
                           structures=structs, energies=energies)
    assert not np.allclose(own.weights[0], own.weights[1])
    back = ednn.load(str(tmp_path / "run" / "model"))
    np.testing.assert_array_equal(back.predict_energies(structs[:4]), model.predict_energies(structs[:4]))
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert len(split["train"]) == 42 and len(split["val"]) == 12 and len(split["test"]) == 6
    fit = json.loads((tmp_path / "run" / "fit.json").read_text())
    assert fit["n_train"] == 42 and fit["alpha"] in [t["alpha"] for t in fit["trials"]]
    assert back.domain is not None and back.domain.species == [5, 6, 7]
    # the ensemble's bootstrap members differ; a rerun of the same config is the same model
    boot = ednn.train.train({**cfg, "out": str(tmp_path / "boot"), "atoms": {**cfg["atoms"], "bootstrap": True}},
                            structures=structs, energies=energies)
    assert not np.allclose(boot.weights, model.weights)
    again = ednn.train.train({**cfg, "out": str(tmp_path / "again")}, structures=structs, energies=energies)
    np.testing.assert_array_equal(again.weights, model.weights)
    with pytest.raises(ConfigError, match="without --resume"):
        ednn.train.train(cfg, structures=structs, energies=energies, resume=True)
    # over an earlier (image) run with --overwrite: its log and checkpoint do not pass for this run's
    (tmp_path / "run" / "log.json").write_text("[]")
    (tmp_path / "run" / "checkpoint.npz").write_bytes(b"old")
    with pytest.raises(ConfigError, match="already holds a run"):
        ednn.train.train(cfg, structures=structs, energies=energies)
    ednn.train.train(cfg, structures=structs, energies=energies, overwrite=True)
    assert not (tmp_path / "run" / "log.json").exists() and not (tmp_path / "run" / "checkpoint.npz").exists()
    assert (tmp_path / "run" / "fit.json").exists()


def test_the_config_and_the_basis_share_their_defaults():
    import dataclasses

    from ednn.config import DEFAULTS
    from ednn.nn.atomic import AtomicBasis

    fields = {f.name: f.default for f in dataclasses.fields(AtomicBasis) if f.name != "species"}
    assert {k: DEFAULTS["atoms"][k] for k in fields} == fields


def test_cli_predict_and_evaluate_take_the_atom_centred_model(fitted, tmp_path, capsys):
    import json

    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from ednn.cli import main

    model, te, e_te = fitted
    path = model.save(str(tmp_path / "m"))
    structs = []
    for a, e in zip(te[:6], e_te[:6]):
        b = a.copy()
        b.calc = SinglePointCalculator(b, energy=float(e))
        structs.append(b)
    write(str(tmp_path / "s.extxyz"), structs)
    assert main(["predict", path, str(tmp_path / "s.extxyz"), "-o", str(tmp_path / "e.csv"), "--force"]) == 0
    rows = (tmp_path / "e.csv").read_text().splitlines()
    assert len(rows) == 7 and float(rows[1].split(",")[2]) == pytest.approx(model.predict_energy(te[0]), abs=1e-6)
    assert main(["predict", path, str(tmp_path / "s.extxyz"), "--shift-average", "2"]) != 0
    assert "exactly translation invariant" in capsys.readouterr().err
    assert main(["evaluate", path, str(tmp_path / "s.extxyz"), "--out", str(tmp_path / "ev")]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    n = np.array([len(a) for a in te[:6]])
    assert m["mae_mev_per_atom"] == pytest.approx(1e3 * np.mean(np.abs(model.predict_energies(te[:6]) - e_te[:6]) / n),
                                                  rel=1e-6)


def test_streamed_strips_give_the_whole_structure_energy_and_forces(fitted, monkeypatch):
    """A sheet cut into strips (each with its neighbours within the cutoff, periodic images moved next to it)
    and each strip's atoms into chunks: the same energy, atom energies and forces as the whole, for a hexagonal
    and a skewed cell."""
    import ednn.predict.atomic as atomic
    from ednn.atoms.generate import generate

    model = fitted[0]
    whole = {}
    at = next(iter(generate("defect", 1, seed=21, n_atoms=(600, 800), relax_defects=False)))
    at.rattle(0.05, seed=2)
    skew = at.copy()
    skew.set_cell(np.array([at.cell[0], at.cell[1] + 2 * at.cell[0], at.cell[2]]), scale_atoms=False)
    for s in (at, skew):
        whole[id(s)] = (model.atom_energies(s), model.predict_forces([s])[0])
    monkeypatch.setattr(atomic, "_BATCH_ATOMS", 64)  # several chunks per strip, and these sheets count as huge
    for s in (at, skew):
        assert model._huge(s)
        e_whole, f_whole = whole[id(s)]
        parts = list(model.strips(s, max_atoms=150))
        assert len(parts) >= 2
        assert sorted(np.concatenate([idx[m] for _, m, idx in parts]).tolist()) == list(range(len(s)))
        e, e_at = model.stream(s, max_atoms=150)
        np.testing.assert_allclose(e_at, e_whole, rtol=0, atol=1e-10)
        assert e == pytest.approx(e_whole.sum(), abs=1e-8)
        e2, f = model.stream(s, forces=True, max_atoms=150)
        np.testing.assert_allclose(f, f_whole, rtol=0, atol=1e-9)
        np.testing.assert_allclose(model.predict_forces([s])[0], f_whole, rtol=0, atol=1e-9)  # calculator: streamed
        assert e2 == pytest.approx(e, abs=1e-8)


# slow (~20 s: three trainings through the CLI; ensembles are in tests/test_ensemble.py)
@pytest.mark.slow
def test_cli_ensemble_spreads_cutoffs_and_flags_a_second_layer(tmp_path):
    """`ednn train --ensemble 3` on single sheets: members at cutoffs 4.0 / 4.5 / 5.0 A on bootstrap resamples;
    a bilayer (layers 3.1-3.9 A apart, inside every member's cutoff but never in the data) has a spread far
    above the in-distribution spread, also when the layers sit just inside the base cutoff."""
    import json

    import yaml

    import ednn
    from ednn.atoms.build import bilayer
    from ednn.atoms.generate import generate
    from ednn.cli import main
    from ednn.cli.model import member_cutoff
    from ednn.data import DatasetWriter

    structs, energies = [], []
    for k, kind in enumerate(("graphene", "hbn", "bcn", "defect")):
        # 40 per kind (96 training cells per member). With 20 (48 per member) the ridge fits were underdetermined
        # (one member chose alpha 1e-13 with a training MAE of 3e-9 meV/atom) and the in-distribution spread was
        # fragile: in a fresh environment on 2026-11-28 (same ednn code, cause not isolated; numpy 2.3.5 vs
        # 2.4.6 made no difference) the 3.9 A bilayer came out at 3x, not >10x. With 40: 400x at 3.3 A, 41x at 3.9
        # A
        s, e, _ = _labelled(kind, 40, seed=700 + k)
        structs += s
        energies.append(e)
    energies = np.concatenate(energies)
    h5 = str(tmp_path / "d.h5")
    with DatasetWriter(h5) as w:
        for a, e in zip(structs, energies):
            w.append(a, energy=float(e))
    cfg = {"out": str(tmp_path / "ens"), "data": {"train": h5, "val_fraction": 0.2, "test_fraction": 0.2},
           "atoms": {"n_radial": 6, "l_max": 3}, "train": {"progress": False}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "cfg.yaml"), "--ensemble", "3"]) == 0
    ens = ednn.load(str(tmp_path / "ens"))
    assert [m.basis.cutoff for m in ens.members] == [4.0, 4.5, 5.0]
    assert [member_cutoff({"cutoff": 4.0, "ensemble_cutoff_spread": 0.0}, k, 3) for k in range(3)] == [4.0] * 3
    saved = json.load(open(tmp_path / "ens" / "member_2" / "model" / "config.json"))
    assert saved["meta"]["train_config"]["atoms"]["bootstrap"] is True
    test = [structs[i] for i in json.load(open(tmp_path / "ens" / "member_0" / "split.json"))["test"]]
    _, std_in = ens.predict_energies(test, return_std=True)
    ref = np.median(std_in / [len(a) for a in test])
    sheets = list(generate("graphene", 4, seed=9, n_atoms=(20, 60), relax_defects=False))
    for d in (3.3, 3.9):
        bil = [bilayer(s, s, distance=d) for s in sheets]
        _, std = ens.predict_energies(bil, return_std=True)
        assert np.all(std / [len(a) for a in bil] > 10 * ref), (d, std, ref)
