"""The choice of cell (issue 11): reduced bases of a 2D lattice and model.cell_average.

A structure's energy cannot depend on which basis of its lattice describes it. ``reduced_bases`` gives
the set of reduced bases of the lattice, the same set whatever basis it is handed, and
``model.cell_average`` averages the energy over that set: another basis, the 60/120-degree
conventions and exchanged vectors then give the same energy to round-off, for any network. The
measured effect on trained models is in ``experiments/shift_average.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fd_force, make_graphene

from ednn.errors import ConfigError, ModelError
from ednn.image.describe import equivalent_structures, in_basis, redescribe, reduced_bases
from ednn.image.grid import GridSpec
from ednn.predict.model import EnergyModel

KINDS = ("graphene", "hbn", "bcn", "hetero", "defect")  # every kind of sheet ednn.atoms.generate makes

UNIMODULAR = [np.array(m) for m in ([[1, 0], [1, 1]], [[1, 0], [-1, 1]], [[0, 1], [1, 0]], [[-1, 0], [0, 1]],
                                      [[2, 1], [1, 1]], [[1, -3], [0, 1]])]


def _cell(a1, a2):
    return np.array([[*a1, 0.0], [*a2, 0.0], [0.0, 0.0, 20.0]])


@pytest.mark.parametrize("a1,a2,count", [
    ((2.46, 0.0), (-1.23, 2.130422), 12),      # hexagonal, 120 degrees
    ((2.46, 0.0), (1.23, 2.130422), 12),       # hexagonal, 60 degrees
    ((3.0, 0.0), (0.0, 3.0), 8),               # square
    ((2.46, 0.0), (0.0, 4.26), 4),             # rectangular
    ((3.0, 0.0), (3.0 * np.cos(1.2), 3.0 * np.sin(1.2)), 4),  # rhombic (centred rectangular)
    ((2.5, 0.0), (0.7, 3.1), 2),               # oblique
])
def test_reduced_bases_are_a_property_of_the_lattice(a1, a2, count):
    cell = _cell(a1, a2)
    sets = []
    for P in [np.eye(2, dtype=int)] + UNIMODULAR:
        c = cell.copy()
        c[:2] = P @ cell[:2]
        bases = reduced_bases(c)
        assert len(bases) == count
        cells = []
        for Q in bases:
            assert abs(round(np.linalg.det(Q))) == 1
            b = (Q @ c[:2])[:, :2]
            assert np.linalg.norm(b[0]) <= np.linalg.norm(b[1]) * (1 + 1e-3)
            assert b[0] @ b[1] <= 1e-3 * np.linalg.norm(b[0]) * np.linalg.norm(b[1])  # 90 degrees or more
            cells.append(np.round(b, 9).ravel())
        sets.append(sorted(map(tuple, cells)))
    assert all(s == sets[0] for s in sets[1:])  # the same cells from every equivalent description


def test_reduced_bases_refuse_a_degenerate_cell():
    with pytest.raises(ConfigError, match="parallel"):
        reduced_bases(_cell((2.0, 0.0), (4.0, 0.0)))


def _model(cell_average, seed=4):
    g = GridSpec(species=(5, 6, 7), spacing=0.62375, sigma=0.5, heights=1)
    m = EnergyModel.create({"layers": 3, "filters": 8, "readout": [8], "cell_average": cell_average}, g, seed=seed)
    m.refs = np.zeros(3)
    return m


def test_cell_average_makes_the_energy_independent_of_the_basis():
    """Every kind the library generates, each cell rewritten in other bases (including the operations of
    experiments/invariance.py): identical energies with cell_average, different ones without."""
    from ednn.atoms.generate import generate

    on, off = _model(True), _model(False)
    rng = np.random.default_rng(1)
    worst_on, worst_off = 0.0, 0.0
    for kind in KINDS:
        for at in generate(kind, 2, seed=5, n_atoms=(20, 80), relax_defects=False):
            ops = equivalent_structures(at, rng, 0.62375)
            same = [ops["basis"], ops["basis_120"], ops["swap"]] + [in_basis(at, P) for P in UNIMODULAR[3:]]
            for m in (on, off):
                e = m.predict_energies([at] + same) / len(at)
                d = float(np.abs(e[1:] - e[0]).max())
                if m is on:
                    worst_on = max(worst_on, d)
                else:
                    worst_off = max(worst_off, d)
    assert worst_on < 1e-6  # eV/atom: float32 round-off
    assert worst_off > 1e-3  # the same rewrites move a model without it


def test_cell_average_of_a_hexagonal_cell_uses_all_twelve_bases_and_gives_exact_forces(tmp_path):
    import ednn

    at = make_graphene().repeat((3, 3, 1))
    at.rattle(0.05, seed=2)
    at.center(vacuum=8.0, axis=2)
    m = _model(True)
    assert len(m.descriptions(at)) == 12
    e = m.predict_energy(at)
    other = in_basis(at, np.array([[1, 0], [1, 1]]))
    assert m.predict_energy(other) == pytest.approx(e, rel=1e-7)
    at.calc = m.calculator()
    f = at.get_forces()
    for i, ax in ((0, 0), (7, 1), (13, 2)):
        assert f[i, ax] == pytest.approx(fd_force(m, at, i, ax), abs=2e-3)
    other.calc = m.calculator()
    np.testing.assert_allclose(other.get_forces(), f, atol=1e-4)  # forces follow the atoms, not the basis
    m.save(str(tmp_path / "m"))
    assert ednn.load(str(tmp_path / "m")).cell_average is True


def test_reduced_augmentation_and_bad_settings():
    at = make_graphene().repeat((2, 2, 1))
    b = redescribe(at, np.random.default_rng(0), "reduced", 2)
    cells = [np.round((P @ at.cell[:2])[:, :2], 9).ravel().tolist() for P in reduced_bases(at.cell)]
    assert np.round(b.cell[:2, :2], 9).ravel().tolist() in cells
    assert len(b) == len(at) and (b.numbers == at.numbers).all()
    g3 = GridSpec(species=(13,), spacing=0.5, sigma=0.5, dim=3)
    m3 = EnergyModel.create({"layers": 2, "filters": 4, "readout": [4]}, g3)
    with pytest.raises(ModelError, match="2D grid"):
        m3.cell_average = True
    with pytest.raises(ConfigError, match="cell_average"):
        from ednn.config import normalize_model_config

        normalize_model_config({"cell_average": "yes"})
