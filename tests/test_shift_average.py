"""model.shift_average: energies averaged over K^d sub-pixel translations (issue 11, continuous translations).

The exact properties of the construction, on random-weight networks: a translation by one sub-step
permutes the shifts (the energy is unchanged to round-off, where K = 1 moves it), supercells stay exactly
extensive, forces and stress are the gradients of the averaged energy, the setting is saved. The measured
invariance of trained models is in ``experiments/shift_average.py`` and in ``tests/test_demo.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import fd_force, make_random_bcn

from ednn.errors import ConfigError, InputError, ModelError
from ednn.image.grid import GridSpec
from ednn.predict.model import EnergyModel


def _model(k=1, seed=2):
    g = GridSpec(species=(5, 6, 7), spacing=0.62375, sigma=0.5, heights=1)
    m = EnergyModel.create({"layers": 3, "filters": 8, "readout": [8], "shift_average": k}, g, seed=seed)
    m.refs = np.zeros(3)
    return m


def _sheet(seed=0):
    at = make_random_bcn(seed=seed, reps=(3, 3))
    at.rattle(0.1, seed=seed)
    at.center(vacuum=8.0, axis=2)
    return at


def test_default_is_off_and_bad_values_are_refused():
    from ednn.config import normalize_model_config

    assert _model().shift_average == 1
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="shift_average"):
            normalize_model_config({"shift_average": bad})
    m = _model()
    with pytest.raises(InputError, match="integer >= 1"):
        m.shift_average = 0
    img = EnergyModel.create({"layers": 2, "filters": 4, "readout": [4]}, None, in_channels=1, dim=2)
    with pytest.raises(ModelError, match="grid model"):
        img.shift_average = 2


def test_a_translation_by_one_sub_step_leaves_the_averaged_energy_unchanged():
    """With K = 3 the shifts are {i/3 pixel}: moving every atom by 1/3 pixel along a1 (or a2) permutes them."""
    at = _sheet(1)
    m1, m3 = _model(1), _model(3)
    step = m3.shifts(at)
    assert step.shape == (9, 3)
    for s in (step[3], step[1], step[4]):  # 1/3 pixel along a1, along a2, and along both
        moved = at.copy()
        moved.positions += s
        d1 = abs(m1.predict_energy(moved) - m1.predict_energy(at))
        d3 = abs(m3.predict_energy(moved) - m3.predict_energy(at))
        assert d3 < 2e-6 * abs(m3.predict_energy(at))  # float32 network sums
        assert d1 > 100 * d3  # the test can fail: without averaging the same move changes the energy


def test_averaging_tames_arbitrary_translations_and_keeps_extensivity():
    rng = np.random.default_rng(0)
    at = _sheet(2)
    spreads = {}
    for k in (1, 4):
        m = _model(k)
        e = []
        for _ in range(6):
            b = at.copy()
            b.positions[:, :2] += rng.uniform(-3, 3, 2)
            e.append(m.predict_energy(b))
        spreads[k] = np.ptp(e)
        big = at.repeat((2, 2, 1))
        assert m.predict_energy(big) == pytest.approx(4 * m.predict_energy(at), rel=2e-6)
    assert spreads[4] < spreads[1] / 20


def test_forces_and_stress_are_gradients_of_the_averaged_energy(tmp_path):
    import ednn

    m = _model(2)
    at = _sheet(3)
    calc = m.calculator()
    at.calc = calc
    assert at.get_potential_energy() == pytest.approx(m.predict_energy(at), rel=1e-6)
    f = at.get_forces()
    for i, ax in ((0, 0), (5, 1), (11, 2)):
        assert f[i, ax] == pytest.approx(fd_force(m, at, i, ax), abs=2e-3)
    g1 = calc._gradients(at)[1]  # the unshifted structure alone
    assert not np.allclose(-f, g1, atol=1e-3)  # the averaged gradient is not the single shift's
    stress = at.get_stress(voigt=False)
    eps = 1e-4
    ep = []
    for sign in (1, -1):
        b = at.copy()
        b.set_cell(at.cell[:] @ np.diag([1 + sign * eps, 1, 1]), scale_atoms=True)
        ep.append(m.predict_energy(b))
    assert stress[0, 0] == pytest.approx((ep[0] - ep[1]) / (2 * eps) / at.get_volume(), abs=5e-5)
    m.save(str(tmp_path / "m"))
    assert ednn.load(str(tmp_path / "m")).shift_average == 2


def test_ednn_predict_shift_average_option(tmp_path):
    from ase.io import write

    from ednn.cli import main

    m = _model(1)
    m.save(str(tmp_path / "m"))
    at = _sheet(4)
    write(tmp_path / "s.xyz", at)
    assert main(["predict", str(tmp_path / "m"), str(tmp_path / "s.xyz"), "--shift-average", "3",
                 "-o", str(tmp_path / "p.csv")]) == 0
    row = (tmp_path / "p.csv").read_text().strip().splitlines()[1].split(",")
    m.shift_average = 3
    assert float(row[2]) == pytest.approx(m.predict_energy(at), rel=1e-7)
    m.shift_average = 1
    assert abs(float(row[2]) - m.predict_energy(at)) > 1e-5  # the option changed the prediction
    assert main(["predict", str(tmp_path / "m"), str(tmp_path / "s.xyz"), "--shift-average", "0"]) != 0


def test_huge_structures_stream_the_averaged_energy_and_forces(monkeypatch):
    """Above STREAM_PIXELS the energy and the calculator's forces are streamed per shift: the same means."""
    import ednn.predict.model as pm

    m = _model(2)
    at = _sheet(5).repeat((2, 2, 1))
    calc = m.calculator()
    e_ref, g_ref, _ = calc.gradients(at)
    e_small = m.predict_energy(at)
    monkeypatch.setattr(pm, "STREAM_PIXELS", 500)
    assert m._huge(at)
    assert m.predict_energy(at) == pytest.approx(e_small, rel=1e-6)
    at.calc = m.calculator()
    np.testing.assert_allclose(at.get_forces(), -g_ref, atol=2e-4)
    assert at.get_potential_energy() == pytest.approx(e_ref, rel=1e-6)
