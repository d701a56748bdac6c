"""The ASE calculator: stress against finite differences of the energy, per-atom energies, properties."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import make_random_bcn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ednn.errors import InputError  # noqa: E402
from ednn.image.grid import GridSpec  # noqa: E402
from ednn.predict.model import EnergyModel  # noqa: E402

SPACING = 2.46 / 6
SMALL = {"layers": 2, "filters": 8, "kernel": 3, "readout": [8], "activation": "tanh"}


def _model(heights=1, metric=False, head="density", focus=6):
    # cutoff 6 sigma: a pixel crossing the truncation of a Gaussian (exp(-18) of its peak) under the finite-difference
    # strains changes the energy by ~1e-9 eV, far below the derivative tested
    g = GridSpec(species=(5, 6, 7), spacing=SPACING, sigma=0.4, cutoff=6.0, focus=focus, context=2, heights=heights)
    m = EnergyModel.create(dict(SMALL, head=head, metric_channels=metric), g, seed=4)
    m.scale, m.refs = 0.37, np.array([-6.0, -7.4, -7.1])
    return m


def _sheet(seed=2, reps=(2, 2)):
    at = make_random_bcn(seed=seed, reps=reps)
    at.cell[2] = [0, 0, 12.0]
    at.pbc = (True, True, False)
    rng = np.random.default_rng(seed)
    at.positions += rng.normal(scale=[0.05, 0.05, 0.15], size=(len(at), 3))
    return at


def _strained(at, eps):
    s = at.copy()
    F = np.eye(3) + eps
    s.set_cell(at.cell[:] @ F, scale_atoms=False)
    s.positions = at.positions @ F
    return s


def _energy64(m, at, net64=None):
    """The model's energy evaluated entirely in float64 (an independent oracle: image, metric channels,
    wrap padding and a float64 copy of the network), so finite differences are free of float32 noise."""
    from ednn import rasterize
    from ednn.image.pipeline import gaussian_unit, metric_features, wrap_pad

    img = rasterize(at, m.grid, dtype=np.float64) * gaussian_unit(m.grid)
    p = m.pipeline.prepare(at)
    if m.metric:
        mf = metric_features(p.lattice, p.shape, m.grid.spacing, dtype=np.float64)
        img = np.concatenate([img, np.broadcast_to(mf, img.shape[:-1] + mf.shape)], axis=-1)
    y = np.asarray(net64(wrap_pad(img, m.radius)[None]))[0, ..., 0]
    return float(m.counts(at) @ m.refs + m.scale * m.pipeline.pixel_weight(p) * y.sum())


def _float64_network(m):
    import keras

    from ednn.nn.network import build_network

    old, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        net = build_network(m.model_config, m.in_channels, m.dim)
    finally:
        keras.config.set_floatx(old)
        keras.config.set_dtype_policy(old_policy)
    net.set_weights([w.astype(np.float64) for w in m.network.get_weights()])
    return net


def _fd_stress(m, at, h=5e-3):
    """Richardson-extrapolated central differences (error O(h^4)) of the NumPy-path energy under symmetric
    strains, as (1/V) dE/d(strain). In-plane components and zz (out-of-plane shears would tilt a sheet out
    of its plane: 0 by definition). Large steps, because the network runs in float32 (energy noise ~1e-8 eV).
    """
    return (4 * _central(m, at, h) - _central(m, at, 2 * h)) / 3


def _central(m, at, h):
    vol = abs(np.linalg.det(at.cell[:]))
    out = np.zeros((3, 3))
    for i in range(3):
        for j in range(i, 3):
            if (i, j) in ((0, 2), (1, 2)):
                continue
            eps = np.zeros((3, 3))
            eps[i, j] = eps[j, i] = h / (1 if i == j else 2)
            d = m.predict_energy(_strained(at, eps)) - m.predict_energy(_strained(at, -eps))
            out[i, j] = out[j, i] = d / (2 * h) / vol
    return np.array([out[0, 0], out[1, 1], out[2, 2], out[1, 2], out[0, 2], out[0, 1]])


@pytest.mark.parametrize("heights,metric", [(1, False), (0, False)])
def test_stress_matches_finite_differences(heights, metric, tol=1e-4):
    m = _model(heights=heights, metric=metric)
    at = _sheet()
    at.calc = m.calculator()
    s = at.get_stress()
    fd = _fd_stress(m, at)
    scale = np.abs(fd).max()
    assert scale > 1e-4  # a real stress, not zero against zero
    np.testing.assert_allclose(s, fd, rtol=0, atol=tol * scale)
    assert s[3] == 0 and s[4] == 0  # a sheet stays in its plane: no out-of-plane shear stress
    if heights == 0:  # without height channels z never enters: no zz stress
        assert abs(s[2]) < 1e-6 * scale


def test_stress_with_metric_channels_matches_float64_finite_differences():
    """Metric channels (10 (g - 1) of the pixel metric) make the energy so sensitive to the cell that float32
    finite differences resolve the stress to 2e-3 at best; a float64 evaluation of the same model resolves it."""
    m = _model(heights=0, metric=True)
    at = _sheet()
    at.calc = m.calculator()
    s = at.get_stress()
    net64 = _float64_network(m)
    assert _energy64(m, at, net64) == pytest.approx(m.predict_energy(at), rel=1e-6)  # the same model
    vol = abs(np.linalg.det(at.cell[:]))
    h = 1e-5
    fd = np.zeros(6)
    for k, (i, j) in enumerate([(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]):
        if (i, j) in ((0, 2), (1, 2)):
            continue
        eps = np.zeros((3, 3))
        eps[i, j] = eps[j, i] = h / (1 if i == j else 2)
        fd[k] = (_energy64(m, _strained(at, eps), net64) - _energy64(m, _strained(at, -eps), net64)) / (2 * h) / vol
    np.testing.assert_allclose(s, fd, rtol=0, atol=1e-5 * np.abs(fd).max())  # measured: 1.5e-6


def test_stress_dense_head_matches_finite_differences():
    m = _model(head="dense", focus=3)
    at = _sheet(reps=(2, 2))
    at.calc = m.calculator()
    s = at.get_stress()
    fd = _fd_stress(m, at)
    np.testing.assert_allclose(s, fd, rtol=0, atol=1e-4 * np.abs(fd).max())


def test_stress_needs_a_volume():
    m = _model()
    at = _sheet()
    at.cell[2] = [0, 0, 0]
    at.calc = m.calculator()
    at.get_forces()  # forces need no volume
    with pytest.raises(InputError, match="volume"):
        at.get_stress()


def test_atom_energies_sum_to_the_energy_and_are_local():
    m = _model()
    at = _sheet(seed=5, reps=(3, 2))
    at.calc = m.calculator()
    e = at.get_potential_energy()
    ea = at.get_potential_energies()
    assert ea.shape == (len(at),)
    assert ea.sum() == pytest.approx(e, rel=1e-6)
    # a supercell: each atom's energy is the energy of its copy in the cell (the rule is local and periodic)
    big = at.repeat((2, 1, 1))
    big.calc = m.calculator()
    np.testing.assert_allclose(big.get_potential_energies(), np.tile(ea, 2), rtol=1e-5, atol=1e-5)
    # every atom carries at least its element's reference energy plus a bounded network share
    ref = np.array([dict(zip((5, 6, 7), m.refs, strict=True))[z] for z in at.numbers])
    assert np.all(np.abs(ea - ref) < 2.0)


def test_energy_computed_once_with_forces(monkeypatch):
    m = _model()
    at = _sheet()
    calls = []
    orig = m.predict_energy
    monkeypatch.setattr(m, "predict_energy", lambda a: calls.append(1) or orig(a))
    at.calc = m.calculator()
    at.get_forces()
    e = at.get_potential_energy()  # from the forces' call: no second evaluation
    assert calls == [] and e == pytest.approx(orig(at), rel=1e-8)
    assert at.get_potential_energy(force_consistent=True) == e  # free_energy


@pytest.mark.parametrize("heights,metric", [(0, False), (2, True)])
def test_streamed_forces_equal_whole_image_forces(heights, metric):
    """stream_forces (chunk by chunk, only each chunk's atoms, flat memory) gives the whole-image calculator's
    energy and forces: chunks that wrap around the cell, height channels (whose mean plane couples every atom)
    and metric channels included."""
    from ednn.atoms.large import paper_sheet
    from ednn.config import DEFAULTS
    from ednn.image.grid import GridSpec
    from ednn.predict.model import EnergyModel, receptive_radius
    from ednn.predict.stream_forces import stream_forces

    g = {k: v for k, v in DEFAULTS["grid"].items() if v is not None}
    g.update(species=("B", "C", "N"), heights=heights, context=max(receptive_radius({"layers": 3}), 1))
    model = EnergyModel.create({"layers": 3, "filters": 8, "readout": [8], "metric_channels": metric},
                               GridSpec(**g), seed=1)
    model.refs = np.array([-6.0, -7.4, -7.0])
    model.scale = 0.5
    at = paper_sheet(1500, seed=3, rattle_z=0.2)
    at.calc = model.calculator()
    e_whole, f_whole = at.get_potential_energy(), at.get_forces()
    seen = []
    e_str, f_str = stream_forces(model, at, rows_per_strip=13, on_progress=lambda d, n: seen.append((d, n)))
    assert len(seen) >= 4 and seen[-1][0] == seen[-1][1]  # several chunks, every row once
    assert e_str == pytest.approx(e_whole, rel=1e-6)
    scale = float(np.abs(f_whole).max())
    assert scale > 0.1
    assert float(np.abs(f_str - f_whole).max()) <= 1e-5 * scale
    # the calculator streams by itself above STREAM_PIXELS (here lowered so that this sheet counts as huge)
    import ednn.predict.model as pm

    old, pm.STREAM_PIXELS = pm.STREAM_PIXELS, 1000
    try:
        at.calc = model.calculator()
        np.testing.assert_allclose(at.get_forces(), f_str, atol=1e-5 * scale, rtol=0)
    finally:
        pm.STREAM_PIXELS = old
