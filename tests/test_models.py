"""Physics of the EDNN energy model: extensivity, invariances, equivalences, forces, bad input."""

from __future__ import annotations

import os

import numpy as np
import pytest
from ase import Atoms
from conftest import make_graphene, make_hbn, make_random_bcn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ednn.errors import ConfigError, GridError, InputError, SpeciesError  # noqa: E402
from ednn.image.grid import GridSpec  # noqa: E402
from ednn.predict.model import EnergyModel, build_network, fit_references, normalize_model_config  # noqa: E402

A = 2.46
SPACING = A / 6  # graphene cell lengths are whole multiples of the spacing
SMALL = {"layers": 2, "filters": 8, "kernel": 3, "readout": [8]}


def _model(head="density", seed=1, species=(5, 6, 7), **kw):
    g = GridSpec(species=species, spacing=SPACING, sigma=0.4, cutoff=4.0, focus=6, context=2)
    cfg = dict(SMALL, head=head, **kw)
    m = EnergyModel.create(cfg, g, seed=seed)
    m.scale = 0.37
    m.refs = np.array([-6.0, -7.4, -7.1])[: len(species)]
    return m


def _sheet(at: Atoms, vac: float = 15.0) -> Atoms:
    at = at.copy()
    at.cell[2] = [0, 0, vac]
    at.pbc = (True, True, False)
    return at


def _net_only(m: EnergyModel) -> EnergyModel:
    m.refs = np.zeros_like(m.refs)
    return m


@pytest.mark.parametrize(("head", "extra"), [("density", {}), ("dense", {}), ("density", {"pair_features": True}),
                                             ("density", {"metric_channels": True})])
def test_supercell_extensivity_untrained(head, extra):
    m = _net_only(_model(head, **extra))
    cell = _sheet(make_random_bcn(seed=3, reps=(2, 2)))  # 12 x 12 pixels, a multiple of focus 6
    e1 = m.predict_energy(cell)
    e9 = m.predict_energy(cell.repeat((3, 3, 1)))
    assert abs(e1) > 1e-3  # the network part is not trivially zero
    assert e9 == pytest.approx(9 * e1, rel=1e-5)


def test_density_head_last_layer_linear_and_negative_possible():
    net = build_network(SMALL, 3, 2, seed=0)
    x = np.random.default_rng(0).normal(size=(4, 12, 12, 3)).astype("float32")
    y = net(x).numpy()
    assert y.shape == (4, 8, 8, 1)  # valid padding: radius 2 on each side
    assert (y < 0).any() and (y > 0).any()


@pytest.mark.parametrize("metric", [False, True])
def test_vacuum_has_zero_energy_and_far_copies_add(metric):
    m = _net_only(_model(metric_channels=metric))
    L = 24 * SPACING  # 9.84 A box around a ring of 6 C atoms
    ring = Atoms("C6", positions=[[1.42 * np.cos(t) + 5, 1.42 * np.sin(t) + 5, 0] for t in np.arange(6) * np.pi / 3],
                 cell=[L, L, 15], pbc=(True, True, False))
    e1 = m.predict_energy(ring)
    assert abs(e1) > 1e-3
    big = Atoms("C6", positions=ring.positions, cell=[3 * L, 3 * L, 15], pbc=(True, True, False))
    shift = np.array([31 * SPACING, 40 * SPACING, 0.0])  # whole pixels, far apart
    two = big + Atoms("C6", positions=ring.positions + shift)
    two.cell, two.pbc = big.cell, big.pbc
    assert m.predict_energy(two) == pytest.approx(2 * e1, rel=1e-5)
    empty_like = m.energy_map(big, include_reference=False)
    assert np.abs(empty_like[60:, 60:]).max() < 1e-6  # far from the atoms: exactly nothing


def test_translation_invariance():
    m = _net_only(_model())
    at = _sheet(make_random_bcn(seed=5, reps=(2, 3)))
    e = m.predict_energy(at)
    lat = at.copy()
    lat.positions += at.cell[0] + 2 * at.cell[1]
    assert m.predict_energy(lat) == pytest.approx(e, rel=1e-6)
    px = at.copy()
    px.positions += 3 * at.cell[0] / 12 + 1 * at.cell[1] / 18  # whole pixels along both vectors
    assert m.predict_energy(px) == pytest.approx(e, rel=1e-5)


def test_batched_equals_one_by_one():
    m = _model()
    structs = [_sheet(make_random_bcn(seed=s, reps=(2 + s % 3, 2 + s % 2))) for s in range(7)]
    batched = m.predict_energies(structs, batch_size=4)
    single = np.array([m.predict_energies([s])[0] for s in structs])
    np.testing.assert_allclose(batched, single, rtol=1e-6)


def test_tiled_equals_whole_image_and_streaming():
    from ednn.image.tiling import tile, untile
    from ednn.predict import stream_energy, stream_energy_map

    m = _net_only(_model())
    at = _sheet(make_random_bcn(seed=7, reps=(5, 4)))  # 30 x 24 pixels
    img, w = m.image(at)
    whole = m.energy_map(at, include_reference=False)
    tiles, lay = tile(img, m.grid.focus, m.grid.context)
    y = m._forward(tiles)  # (T, focus, focus, 1)
    tiled = untile(y, lay)[..., 0] * w * m.scale
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stream_energy_map(m, at, rows_per_strip=5), whole, rtol=1e-5, atol=1e-6)
    assert stream_energy(m, at, rows_per_strip=4) == pytest.approx(m.predict_energies([at])[0], rel=1e-6)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("chunks", ["default", "tiny"])
def test_streamed_equals_whole_image_2d_3d_energy_and_voxel_fields(dim, chunks, monkeypatch):
    """Streamed energy and per-voxel outputs equal the whole-image ones (issue 14, must-show 3): 2D and 3D
    grids, an energy and two field channels; "tiny" chunks (2 r rows, network blocks of 2 r columns) make
    every row chunk wrap and every network call a column block with its context."""
    from ase.build import bulk

    from ednn.predict import stream

    if chunks == "tiny":
        monkeypatch.setattr(stream, "CHUNK_VALUES", 1)
        monkeypatch.setattr(stream, "MIN_CHUNK_RADII", 2)
    cfg = {"layers": 2, "filters": 4, "kernel": 3, "readout": [4], "fields": {"ldos": 2}}
    if dim == 2:
        g = GridSpec(species=(5, 6, 7), spacing=SPACING, sigma=0.4, cutoff=4.0, focus=6, context=2)
        at = _sheet(make_random_bcn(seed=11, reps=(7, 5)))  # 42 x 30 pixels
    else:
        g = GridSpec(species=(13,), spacing=0.5, sigma=0.4, dim=3, focus=4, context=2)
        at = bulk("Al", "fcc", a=4.04, cubic=True).repeat((4, 3, 3))  # 32 x 24 x 24 voxels
        at.rattle(0.05, seed=1)
    m = EnergyModel.create(cfg, g, seed=2)
    m.scale = 0.37
    m.refs = np.full(len(g.species), -3.0)
    _, whole, _ = m.outputs_whole(at)
    assert whole.shape == m.pipeline.prepare(at).shape + (3,)
    streamed = stream.stream_outputs(m, at)
    np.testing.assert_allclose(streamed, whole, rtol=1e-6, atol=1e-6 * np.abs(whole).max())
    e_whole = m.predict_energies([at])[0]
    assert stream.stream_energy(m, at) == pytest.approx(e_whole, rel=1e-6)


def test_energy_map_sums_to_energy_with_references():
    m = _model()
    at = _sheet(make_random_bcn(seed=2, reps=(3, 3)))
    assert m.energy_map(at).sum() == pytest.approx(m.predict_energy(at), rel=1e-5)


def _assert_forces_match_fd(m, at, f, components, h=1e-3):
    """Central finite differences of ``m.predict_energy`` against forces ``f`` at (atom, axis)."""
    for i, k in components:
        p, q = at.copy(), at.copy()
        p.positions[i, k] += h
        q.positions[i, k] -= h
        fd = -(m.predict_energy(p) - m.predict_energy(q)) / (2 * h)
        assert f[i, k] == pytest.approx(fd, abs=2e-3 * max(1.0, abs(fd)))


@pytest.mark.parametrize("metric", [False, True])
def test_forces_match_finite_differences(metric):
    m = _model(activation="tanh", metric_channels=metric)
    at = _sheet(make_random_bcn(seed=1, reps=(2, 2)))
    calc = m.calculator()
    at.calc = calc
    f = at.get_forces()
    assert np.abs(f).max() > 1e-3
    _assert_forces_match_fd(m, at, f, [(0, 0), (3, 1), (5, 2)])


def _eager_forces(m, a):
    import tensorflow as tf

    pos = tf.Variable(a.get_positions().astype(np.float32))
    with tf.GradientTape() as tape:
        e = m.energy_tf(a, pos)
    return -tape.gradient(e, pos).numpy()


@pytest.mark.parametrize("extra", [{}, {"metric_channels": True}])
def test_compiled_forces_one_trace_for_every_structure(extra):
    """Density head: one tf.function with free sizes serves cells of any shape and atom count."""
    m = _model(activation="tanh", **extra)
    calc = m.calculator()
    rng = np.random.default_rng(0)
    structs = [_sheet(make_random_bcn(seed=s, reps=r)) for s, r in [(3, (2, 2)), (4, (3, 2)), (5, (2, 3))]]
    structs.append(_sheet(make_graphene().repeat((4, 3, 1))))
    structs[-1].set_cell(np.array(structs[-1].cell) * [[1.03], [0.98], [1.0]], scale_atoms=True)
    for at in structs:
        at.positions[:, :2] += rng.normal(scale=0.02, size=(len(at), 2))
        at.calc = calc
        f = at.get_forces()
        np.testing.assert_allclose(f, _eager_forces(m, at), atol=1e-4 * max(1.0, np.abs(f).max()))
        # the energy comes from the same compiled call as the forces (computed once): it is the NumPy-path
        # energy up to the float32 TF rasterizer
        assert at.get_potential_energy() == pytest.approx(m.predict_energy(at), rel=1e-8)
    assert m._generic_gradient_fn.experimental_get_tracing_count() == 1
    np.testing.assert_array_equal(m.predict_forces(structs[-1:])[0], f)  # the same compiled gradient
    _assert_forces_match_fd(m, structs[-1], f, [(1, 0), (4, 1), (7, 2)])


def test_compiled_forces_dense_head_per_cell():
    """Dense head: eager on a cell's first call, then one compiled function per cell."""
    m = _model("dense", activation="tanh")
    at = _sheet(make_random_bcn(seed=3, reps=(3, 2)))
    calc = m.calculator()
    at.calc = calc
    rng = np.random.default_rng(0)
    for _ in range(3):  # MD at fixed cell (ASE caches results of unchanged atoms: move them)
        at.positions[:, :2] += rng.normal(scale=0.02, size=(len(at), 2))
        f = at.get_forces()
        np.testing.assert_allclose(f, _eager_forces(m, at), atol=1e-4 * max(1.0, np.abs(f).max()))
    assert len(calc._compiled) == 1
    _assert_forces_match_fd(m, at, f, [(1, 0), (4, 1)])


def test_reference_fit_recovers_exact_linear_energies():
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 20, size=(30, 3)).astype(float) + 1
    e_ref = np.array([-6.1, -7.4, -7.0])
    E = counts @ e_ref + counts.sum(1) * rng.normal(scale=0.01, size=30)
    refs, scale = fit_references(counts, E)
    np.testing.assert_allclose(refs, e_ref, atol=0.01)
    assert 0.005 < scale < 0.02


def test_bad_input():
    m = _model(species=(6,))
    with pytest.raises(SpeciesError, match="N"):
        m.predict_energy(_sheet(make_hbn()))
    bulk = make_graphene()
    bulk.cell[2] = [0, 0, 3.35]
    bulk.pbc = True
    with pytest.raises(InputError, match="vacuum"):
        m.predict_energy(bulk)  # a 3D crystal given to a 2D model
    g3 = GridSpec(species=(6,), spacing=0.5, sigma=0.4, dim=3, focus=4, context=2)
    m3 = EnergyModel.create(SMALL, g3, seed=0)
    with pytest.raises(InputError, match="only 3.00 A of vacuum"):
        m3.predict_energy(_sheet(make_graphene(), vac=3.0))  # a sheet without a box of vacuum, to a 3D model
    with pytest.raises(ConfigError, match="filtres"):
        normalize_model_config({"filtres": 8})
    with pytest.raises(ConfigError, match="model.kernel"):
        normalize_model_config({"kernel": "3"})
    with pytest.raises(ConfigError, match="head"):
        normalize_model_config({"head": "tiles"})


def test_dense_head_requires_commensurate_images():
    dense = _model("dense")
    ok = _sheet(make_random_bcn(seed=0, reps=(3, 2)))
    dense.predict_energy(ok)
    bad = _sheet(make_graphene().repeat((3, 2, 1)))
    bad.set_cell(bad.cell * [[1.2], [1.0], [1.0]], scale_atoms=True)  # 22 x 12 px
    with pytest.raises(GridError, match="multiples of focus"):
        dense.predict_energy(bad)


def test_height_channels_model_physics():
    g = GridSpec(species=(5, 6, 7), spacing=SPACING, sigma=0.4, cutoff=4.0, focus=6, context=2, heights=1)
    m = EnergyModel.create(dict(SMALL, activation="tanh"), g, seed=3)
    m.scale, m.refs = 0.37, np.zeros(3)
    assert m.in_channels == 6
    at = _sheet(make_random_bcn(seed=6, reps=(2, 2)))
    e1 = m.predict_energy(at)
    assert m.predict_energy(at.repeat((3, 3, 1))) == pytest.approx(9 * e1, rel=1e-5)
    up = at.copy()
    up.positions[:, 2] += 0.9
    assert m.predict_energy(up) == pytest.approx(e1, rel=1e-6)
    flat = at.copy()
    flat.positions[:, 2] = flat.positions[:, 2].mean()
    assert abs(m.predict_energy(flat) - e1) > 1e-4  # the model sees buckling
    at.calc = m.calculator()
    f = at.get_forces()
    assert np.abs(f[:, 2]).max() > 1e-4
    h = 1e-3
    for i in (0, 4):
        p, q = at.copy(), at.copy()
        p.positions[i, 2] += h
        q.positions[i, 2] -= h
        fd = -(m.predict_energy(p) - m.predict_energy(q)) / (2 * h)
        assert f[i, 2] == pytest.approx(fd, abs=2e-3 * max(1.0, abs(fd)))
