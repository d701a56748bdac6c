"""Domain of applicability: recorded at training, checked at prediction (calculator warns, CLI stops)."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
from ase import Atoms
from conftest import make_graphene, make_random_bcn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ednn.errors import InputError  # noqa: E402
from ednn.predict import domain as D  # noqa: E402
from ednn.predict.domain import Domain, DomainWarning  # noqa: E402


def _sheet(at: Atoms, vac: float = 15.0) -> Atoms:
    at = at.copy()
    at.cell[2] = [0, 0, vac]
    at.pbc = (True, True, False)
    at.positions[:, 2] += vac / 2
    return at


def _train_set(n: int = 12) -> list[Atoms]:
    return [_sheet(make_random_bcn(seed=s, reps=(3 + s % 3, 3 + s % 2))) for s in range(n)]


@pytest.fixture(scope="module")
def dom() -> Domain:
    return Domain.from_structures(_train_set(), dim=2)


def test_ranges_are_those_of_the_training_set(dom):
    structs = _train_set()
    assert dom.species == [5, 6, 7] and dom.layers == 1 and dom.n_structures == len(structs)
    h = [a.positions[:, 2] - a.positions[:, 2].mean() for a in structs]
    assert dom.height == pytest.approx((min(x.min() for x in h), max(x.max() for x in h)), abs=1e-12)
    dens = [len(a) / abs(np.linalg.det(a.cell[:2, :2])) for a in structs]
    assert dom.density == pytest.approx((min(dens), max(dens)), rel=1e-12)
    # nearest neighbours by brute force over periodic images in-plane
    lo = np.inf
    for a in structs:
        d = a.get_all_distances(mic=True)
        np.fill_diagonal(d, np.inf)
        lo = min(lo, d.min())
    assert dom.nn[0] == pytest.approx(lo, abs=1e-9)
    assert Domain.from_dict(json.loads(json.dumps(dom.to_dict()))) == dom


def test_inside_is_quiet_and_each_way_out_is_named(dom):
    inside = _sheet(make_random_bcn(seed=50, reps=(4, 4)))
    assert dom.check(inside) == []
    # a bilayer (3.35 A apart) given to a single-layer model
    top = inside.copy()
    top.positions[:, 2] += 3.35
    kinds = {k for k, _ in dom.check(inside + top)}
    assert {"layers", "height"} <= kinds
    # 6 % tensile strain: bonds, mean bond and density all outside
    strained = inside.copy()
    strained.set_cell(strained.cell[:] * [[1.06], [1.06], [1.0]], scale_atoms=True)
    assert {"strain", "density"} <= {k for k, _ in dom.check(strained)}
    # an element the training data never had
    other = inside.copy()
    other.numbers[0] = 14
    assert [k for k, _ in dom.check(other)] == ["species"]
    assert "Si" in dom.check(other)[0][1]
    # an atom with no neighbour within NN_CUTOFF
    lonely = _sheet(Atoms("C", positions=[[0, 0, 0]], cell=[12, 12, 0]))
    assert "nn" in {k for k, _ in dom.check(lonely)}


def test_overlapping_and_detached_atoms_are_errors(dom):
    at = _sheet(make_random_bcn(seed=51, reps=(4, 4)))
    dup = at + Atoms("C", positions=[at.positions[3] + [0.1, 0, 0]])
    with pytest.raises(InputError, match="overlap"):
        dom.check(dup)
    lifted = at.copy()
    lifted.positions[5, 2] += 20.0
    with pytest.raises(InputError, match=r"atom 5 is 19\.\d\d A from the sheet"):
        dom.check(lifted)


def test_huge_structures_skip_neighbours_and_count_layers_by_histogram(dom, monkeypatch):
    at = _sheet(make_random_bcn(seed=52, reps=(6, 6)))
    top = at.copy()
    top.positions[:, 2] += 3.35
    for s in (at, at + top):
        exact = D.structure_stats(s, 2)["layers"]
        monkeypatch.setattr(D, "NN_MAX_ATOMS", 10)
        stats = D.structure_stats(s, 2)
        monkeypatch.setattr(D, "NN_MAX_ATOMS", 200_000)
        assert stats["layers"] == exact and "nn" not in stats
    assert D.structure_stats(at + top, 2)["layers"] == 2


def test_trained_model_records_its_domain_and_the_calculator_warns_once(tmp_path):
    from ednn.cli import main
    from ednn.predict import load
    from ednn.train import train

    structs = _train_set(10)
    rng = np.random.default_rng(0)
    E = np.array([-7.5 * len(a) + rng.normal(0, 0.05) for a in structs])
    cfg = {"out": str(tmp_path / "run"), "seed": 0,
           "grid": {"species": ["B", "C", "N"], "spacing": 2.46 / 5, "sigma": 0.5, "heights": 0},
           "model": {"layers": 2, "filters": 4, "readout": [4]}, "data": {"val_fraction": 0.2},
           "train": {"epochs": 1, "batch_size": 4, "progress": False}}
    train(cfg, structures=structs, energies=E)
    model = load(str(tmp_path / "run" / "model"))
    dom = model.domain
    assert dom is not None and dom.species == [5, 6, 7] and dom.layers == 1
    split = json.load(open(tmp_path / "run" / "split.json"))
    assert dom.n_structures == len(split["train"])  # the training part only
    inside = structs[split["train"][0]]
    bilayer = inside + inside.copy()
    bilayer.positions[len(inside):, 2] += 3.35
    at = bilayer.copy()
    at.calc = model.calculator()
    with pytest.warns(DomainWarning, match="atomic layers"):
        at.get_potential_energy()
    at.positions[0, 0] += 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error", DomainWarning)  # the same kinds again: no second warning
        at.get_potential_energy()
    ok = inside.copy()
    ok.calc = model.calculator()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DomainWarning)
        ok.get_potential_energy()
    # forces of an energy-only model: said plainly, once per calculator; not for a model trained on forces
    from ednn.predict.calculator import ForcesNotTrainedWarning

    ok.calc = model.calculator()
    with pytest.warns(ForcesNotTrainedWarning, match="energies only"):
        ok.get_forces()
    ok.positions[0, 0] += 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("error", ForcesNotTrainedWarning)
        ok.get_forces()
    model.meta["train_config"]["train"]["force_weight"] = 5.0
    ok.calc = model.calculator()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ForcesNotTrainedWarning)
        ok.get_forces()
    # positions-only changes (MD) are checked every DOMAIN_EVERY calls: an atom that leaves the sheet stops it
    from ednn.predict.calculator import EDNNCalculator

    md = inside.copy()
    md.calc = model.calculator()
    md.get_potential_energy()
    md.positions[2, 2] += 20.0
    with pytest.raises(InputError, match="left the sheet"):
        for _ in range(EDNNCalculator.DOMAIN_EVERY):
            md.positions[0, 0] += 1e-3
            md.get_potential_energy()
    # the CLI stops outside the domain unless --force
    import ase.io

    xyz = str(tmp_path / "bi.xyz")
    ase.io.write(xyz, [bilayer], format="extxyz")
    assert main(["predict", str(tmp_path / "run" / "model"), xyz]) == 2
    assert main(["predict", str(tmp_path / "run" / "model"), xyz, "--force", "-o", str(tmp_path / "p.csv")]) == 0
    assert len(open(tmp_path / "p.csv").read().splitlines()) == 2


def test_graphene_in_a_hexagonal_cell_is_inside_a_rattled_graphene_domain():
    """Perfect graphene (1 layer, bonds 1.42 A) against a domain of rattled graphene supercells."""
    train = []
    for s in range(6):
        a = _sheet(make_graphene().repeat((4, 4, 1)))
        a.rattle(0.02, seed=s)
        train.append(a)
    dom = Domain.from_structures(train, 2)
    assert dom.check(_sheet(make_graphene().repeat((5, 5, 1)))) == []


def test_redescribe_is_the_same_structure_in_another_cell():
    """train.augment's redescriptions: same atoms (order, numbers, distances), same lattice, another basis."""
    from ednn.image.describe import BASES, redescribe

    at = _sheet(make_random_bcn(seed=60, reps=(4, 3)))
    rng = np.random.default_rng(1)
    seen_cells = set()
    d0 = np.sort(at.get_all_distances(mic=True).ravel())
    for _ in range(12):
        b = redescribe(at, rng, "cell", dim=2)
        assert np.array_equal(b.numbers, at.numbers)
        P = np.linalg.solve(at.cell[:2, :2].T, b.cell[:2, :2].T).T  # new = P @ old
        assert np.allclose(P, np.rint(P), atol=1e-9) and abs(round(abs(np.linalg.det(P)))) == 1
        assert any(np.array_equal(np.rint(P).astype(int), m) for m in BASES)
        np.testing.assert_allclose(np.sort(b.get_all_distances(mic=True).ravel()), d0, atol=1e-9)
        f = np.linalg.solve(b.cell[:].T, b.positions.T).T
        assert np.all(f[:, :2] >= -1e-12) and np.all(f[:, :2] < 1 + 1e-12)  # wrapped into the new cell
        seen_cells.add(tuple(np.rint(P).astype(int).ravel()))
    assert len(seen_cells) >= 4
    t = redescribe(at, np.random.default_rng(2), "translate", dim=2)
    assert np.array_equal(t.cell[:], at.cell[:])
    np.testing.assert_allclose(np.sort(t.get_all_distances(mic=True).ravel()), d0, atol=1e-9)


def test_training_with_augmentation_redescribes_every_epoch(tmp_path):
    from ednn.errors import ConfigError
    from ednn.train import train
    from ednn.train.sets import structures_to_set

    structs = _train_set(8)
    E = np.array([-7.5 * len(a) for a in structs])
    cfg = {"out": str(tmp_path / "run"), "seed": 0,
           "grid": {"species": ["B", "C", "N"], "spacing": 2.46 / 5, "sigma": 0.5, "heights": 0},
           "model": {"layers": 2, "filters": 4, "readout": [4]}, "data": {"val_fraction": 0.25},
           "train": {"epochs": 2, "batch_size": 4, "progress": False, "augment": "cell"}}
    model = train(cfg, structures=structs, energies=E)
    log = json.load(open(tmp_path / "run" / "log.json"))
    assert len(log) == 2 and all(np.isfinite(r["loss"]) for r in log)
    ts = structures_to_set(model, structs[:3], E[:3])
    ts.redescribe(model, 0, 5, "cell")
    a = [x.copy() for x, _ in ts.inputs]
    ts.redescribe(model, 0, 5, "cell")
    assert all(np.array_equal(x, y) for x, (y, _) in zip(a, ts.inputs, strict=True))  # deterministic
    ts.redescribe(model, 1, 5, "cell")
    assert any(x.shape != y.shape or not np.array_equal(x, y) for x, (y, _) in zip(a, ts.inputs, strict=True))
    bad = json.loads(json.dumps(cfg))
    bad["train"]["augment"] = "rotate"
    bad["out"] = str(tmp_path / "bad")
    with pytest.raises(ConfigError, match="augment"):
        train(bad, structures=structs, energies=E)
