"""Rasterizer: physics and exact values (issue 3, must-show 1-4 and 6)."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from conftest import A_GRAPHENE, make_graphene, make_hbn, make_random_bcn

from ednn import GridSpec, pixel_volume, rasterize, rasterize_strips, rasterize_tf
from ednn.errors import GridError, InputError, SpeciesError

BCN = ("B", "C", "N")


def spec2d(**kw) -> GridSpec:
    base = dict(species=BCN, spacing=A_GRAPHENE / 12, sigma=0.3, dim=2, cutoff=5.0)
    base.update(kw)
    return GridSpec(**base)


def as_3d(atoms: Atoms, c: float = 8.0) -> Atoms:
    at = atoms.copy()
    cell = at.cell[:].copy()
    cell[2] = [0.0, 0.0, c]
    at.set_cell(cell)
    at.pbc = True
    at.positions[:, 2] += c / 2
    return at


STRUCTURES = {
    "graphene": make_graphene,
    "hbn": make_hbn,
    "bcn": lambda: make_random_bcn(seed=3),
}


# ------------------------------------------------------------------ must-show 1
@pytest.mark.parametrize("name", sorted(STRUCTURES))
@pytest.mark.parametrize("dim", [2, 3])
def test_channel_integral_equals_species_count(name, dim):
    atoms = STRUCTURES[name]()
    if dim == 2:
        spec = spec2d()
    else:
        atoms = as_3d(atoms, c=6.0)
        spec = GridSpec(species=BCN, spacing=A_GRAPHENE / 10, sigma=0.3, dim=3, cutoff=5.0)
    img = rasterize(atoms, spec, dtype=np.float64)
    integral = img.reshape(-1, 3).sum(axis=0) * pixel_volume(atoms, spec)
    counts = np.array([(atoms.numbers == z).sum() for z in (5, 6, 7)], dtype=float)
    # normalised Gaussians: each atom integrates to 1
    np.testing.assert_allclose(integral, counts, rtol=1e-4, atol=1e-4)
    assert counts.sum() == len(atoms)


def test_z_mode_integral_is_sum_of_atomic_numbers(bcn):
    spec = spec2d(mode="z")
    img = rasterize(bcn, spec, dtype=np.float64)
    assert img.shape[-1] == 1
    assert img.sum() * pixel_volume(bcn, spec) == pytest.approx(bcn.numbers.sum(), rel=1e-4)


def test_gaussian_value_at_atom_is_normalised_peak():
    # a single C atom placed exactly on pixel (0, 0) of a large cell: value = 1 / (2 pi sigma^2)
    a = 12 * 0.25
    atoms = Atoms("C", positions=[[0, 0, 0]], cell=[a, a, 0], pbc=(True, True, False))
    spec = GridSpec(species=("C",), spacing=0.25, sigma=0.3, dim=2)
    img = rasterize(atoms, spec, dtype=np.float64)
    assert img[0, 0, 0] == pytest.approx(1 / (2 * np.pi * 0.3**2), rel=1e-12)
    # neighbour pixel one spacing away along x
    assert img[1, 0, 0] == pytest.approx(np.exp(-(0.25**2) / (2 * 0.3**2)) / (2 * np.pi * 0.3**2), rel=1e-12)


def test_small_cell_sums_periodic_images():
    # cell (1.0 A) much smaller than the cutoff (1.5 A): every periodic image within the cutoff counts
    a = 1.0
    atoms = Atoms("C", positions=[[0.0, 0, 0]], cell=[a, a, 0], pbc=(True, True, False))
    spec = GridSpec(species=("C",), spacing=0.1, sigma=0.3, dim=2, cutoff=5.0)
    img = rasterize(atoms, spec, dtype=np.float64)
    x = np.arange(10) * 0.1
    ref = np.zeros((10, 10))
    for i in range(-5, 6):
        for j in range(-5, 6):
            dx = x[:, None] - i * a
            dy = x[None, :] - j * a
            r2 = dx**2 + dy**2
            ref += np.where(r2 <= (5 * 0.3) ** 2, np.exp(-r2 / (2 * 0.09)), 0.0)
    ref /= 2 * np.pi * 0.09
    np.testing.assert_allclose(img[..., 0], ref, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ must-show 2
def test_supercell_image_is_tiled_cell_image():
    g = make_graphene()  # hexagonal cell, 12 pixels per cell vector
    spec = spec2d()
    cell_img = rasterize(g, spec, dtype=np.float64)
    super_img = rasterize(g.repeat((3, 2, 1)), spec, dtype=np.float64)
    assert super_img.shape == (36, 24, 3)
    np.testing.assert_allclose(super_img, np.tile(cell_img, (3, 2, 1)), rtol=0, atol=1e-6)


def test_supercell_3d():
    at = as_3d(make_hbn(2.5), c=5.0)
    spec = GridSpec(species=BCN, spacing=0.25, sigma=0.3, dim=3)
    img = rasterize(at, spec, dtype=np.float64)
    sup = rasterize(at.repeat((2, 1, 2)), spec, dtype=np.float64)
    np.testing.assert_allclose(sup, np.tile(img, (2, 1, 2, 1)), atol=1e-6)


# ------------------------------------------------------------------ must-show 3
def test_lattice_translation_invariance(bcn):
    spec = spec2d()
    img = rasterize(bcn, spec, dtype=np.float64)
    moved = bcn.copy()
    moved.positions += 2 * bcn.cell[0] - bcn.cell[1]
    np.testing.assert_allclose(rasterize(moved, spec, dtype=np.float64), img, atol=1e-9)


@pytest.mark.parametrize("axis", [0, 1])
def test_one_pixel_translation_rolls_image(bcn, axis):
    spec = spec2d()
    img = rasterize(bcn, spec, dtype=np.float64)
    n = img.shape[axis]
    moved = bcn.copy()
    moved.positions += bcn.cell[axis] / n
    np.testing.assert_allclose(rasterize(moved, spec, dtype=np.float64), np.roll(img, 1, axis=axis), atol=1e-9)


def test_one_voxel_translation_rolls_3d():
    at = as_3d(make_random_bcn(seed=5, reps=(2, 2)), c=5.0)
    spec = GridSpec(species=BCN, spacing=A_GRAPHENE / 8, sigma=0.35, dim=3)
    img = rasterize(at, spec, dtype=np.float64)
    moved = at.copy()
    moved.positions += at.cell[2] / img.shape[2]
    np.testing.assert_allclose(rasterize(moved, spec, dtype=np.float64), np.roll(img, 1, axis=2), atol=1e-9)


def test_strips_concatenate_to_image(bcn):
    spec = spec2d()
    img = rasterize(bcn.repeat((3, 1, 1)), spec, dtype=np.float64)
    strips = list(rasterize_strips(bcn.repeat((3, 1, 1)), spec, rows_per_strip=7, dtype=np.float64))
    assert [s[0] for s in strips] == list(range(0, img.shape[0], 7))
    np.testing.assert_allclose(np.concatenate([s for _, s in strips]), img, rtol=0, atol=1e-12)


def test_non_orthogonal_wrap_is_exact():
    # an atom near the corner of a hexagonal cell: image equals the average with shifted copies
    g = make_graphene()
    g.positions += [0.01, -0.02, 0.0]
    spec = spec2d()
    a = rasterize(g, spec, dtype=np.float64)
    g2 = g.copy()
    g2.wrap()
    np.testing.assert_allclose(rasterize(g2, spec, dtype=np.float64), a, atol=1e-10)


# ------------------------------------------------------------------ must-show 4
@pytest.mark.parametrize("dim", [2, 3])
def test_numpy_and_tf_agree(dim):
    import tensorflow as tf

    at = make_random_bcn(seed=11, reps=(3, 2))
    if dim == 3:
        at = as_3d(at, c=5.0)
    spec = spec2d(dim=dim) if dim == 2 else GridSpec(species=BCN, spacing=A_GRAPHENE / 8, sigma=0.35, dim=3)
    ref = rasterize(at, spec, dtype=np.float64)
    out32 = rasterize_tf(at, spec).numpy()
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, ref, rtol=0, atol=1e-5 * ref.max())
    out64 = rasterize_tf(at, spec, dtype=tf.float64).numpy()
    np.testing.assert_allclose(out64, ref, rtol=0, atol=1e-10)


def test_tf_gradient_matches_finite_differences():
    import tensorflow as tf

    at = make_random_bcn(seed=2, reps=(2, 2))
    spec = spec2d()
    rng = np.random.default_rng(0)
    weights = rng.normal(size=rasterize(at, spec).shape)

    def f_np(pos):
        a2 = at.copy()
        a2.positions = pos
        return float((rasterize(a2, spec, dtype=np.float64) * weights).sum())

    pos = tf.Variable(at.positions, dtype=tf.float64)
    with tf.GradientTape() as tape:
        img = rasterize_tf(at, spec, positions=pos, dtype=tf.float64)
        val = tf.reduce_sum(img * weights)
    grad = tape.gradient(val, pos).numpy()
    assert float(val) == pytest.approx(f_np(at.positions), rel=1e-10)
    h = 1e-5
    fd = np.zeros_like(grad)
    for i in range(len(at)):
        for k in range(3):
            p = at.positions.copy()
            p[i, k] += h
            fp = f_np(p)
            p[i, k] -= 2 * h
            fd[i, k] = (fp - f_np(p)) / (2 * h)
    # in-plane components carry the signal; z does not enter a 2D image
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())
    assert np.abs(grad[:, :2]).max() > 1.0
    np.testing.assert_array_equal(grad[:, 2], 0.0)


# ------------------------------------------------------------------ must-show 6
def _raises(exc, match, fn):
    with pytest.raises(exc, match=match):
        fn()


def test_bad_positions():
    g = make_graphene()
    g.positions[1, 0] = np.nan
    _raises(InputError, r"atom\(s\) \[1\] are NaN or inf", lambda: rasterize(g, spec2d()))
    g.positions[1, 0] = np.inf
    _raises(InputError, "NaN or inf", lambda: rasterize(g, spec2d()))


def test_empty_structure():
    empty = Atoms(cell=[5, 5, 0], pbc=(True, True, False))
    _raises(InputError, "empty", lambda: rasterize(empty, spec2d()))


def test_zero_and_degenerate_cells():
    g = make_graphene()
    z = g.copy()
    z.cell[1] = [0, 0, 0]
    _raises(InputError, "cell vector 2 is zero", lambda: rasterize(z, spec2d()))
    par = g.copy()
    par.set_cell([[2.46, 0, 0], [4.92, 0, 0], [0, 0, 0]])
    _raises(InputError, "parallel", lambda: rasterize(par, spec2d()))
    bulk3 = as_3d(g)
    bulk3.cell[2] = [0, 0, 0]
    _raises(InputError, "cell vector 3 is zero", lambda: rasterize(bulk3, spec2d(dim=3)))
    flat = as_3d(g)
    flat.set_cell([g.cell[0], g.cell[1], g.cell[0] + g.cell[1]])
    _raises(InputError, "degenerate", lambda: rasterize(flat, spec2d(dim=3)))
    pz = g.copy()
    pz.pbc = True
    _raises(InputError, "cell vector 3 is zero but pbc", lambda: rasterize(pz, spec2d()))


def test_2d_without_vacuum():
    g = as_3d(make_graphene(), c=3.35)  # graphite-like spacing, periodic along z
    _raises(InputError, "without vacuum.*dim=3", lambda: rasterize(g, spec2d()))
    ok = as_3d(make_graphene(), c=15.0)
    assert rasterize(ok, spec2d()).shape == (12, 12, 3)


def test_3d_needs_pbc_and_sheet_out_of_plane():
    g = make_graphene()
    _raises(InputError, "periodic in all three", lambda: rasterize(g, spec2d(dim=3)))
    # a sheet in a box with vacuum (a DFT slab cell): its 3D image is the periodic box's, exactly
    box = g.copy()
    box.cell[2] = [0, 0, 12.0]
    box.positions[:, 2] = 6.0
    periodic = box.copy()
    periodic.pbc = True
    img = rasterize(box, spec2d(dim=3))
    assert img.shape[2] == round(12.0 / spec2d().spacing) and img.max() > 0
    assert np.array_equal(img, rasterize(periodic, spec2d(dim=3)))
    thin = box.copy()
    thin.cell[2] = [0, 0, 4.0]
    _raises(InputError, "only 4.00 A of vacuum", lambda: rasterize(thin, spec2d(dim=3)))
    wire = periodic.copy()
    wire.pbc = (True, False, True)
    _raises(InputError, "periodic in all three", lambda: rasterize(wire, spec2d(dim=3)))
    tilted = make_graphene()
    tilted.set_cell([[2.46, 0, 0.5], [-1.23, 2.13, 0], [0, 0, 0]])
    _raises(InputError, "not in the xy plane", lambda: rasterize(tilted, spec2d()))


def test_unknown_species():
    g = make_graphene()
    g.numbers[0] = 8
    _raises(SpeciesError, r"O \(Z=8\) not in the grid's species list \['B', 'C', 'N'\]", lambda: rasterize(g, spec2d()))


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(sigma=0.0), "sigma must be a positive"),
        (dict(sigma=-1.0), "sigma must be a positive"),
        (dict(spacing=0.0), "spacing must be a positive"),
        (dict(spacing=float("nan")), "spacing must be a positive"),
        (dict(focus=0), "focus must be a positive integer"),
        (dict(context=-2), "context must be a positive integer"),
        (dict(dim=4), "dim must be 2"),
        (dict(mode="charge"), "mode must be one of"),
        (dict(species=("C", "Xx")), "unknown element symbol 'Xx'"),
        (dict(species=()), "species list is empty"),
        (dict(species=("C", 6)), "duplicates"),
    ],
)
def test_bad_grid_parameters(kw, match):
    _raises(GridError, match, lambda: spec2d(**kw))


def test_gridspec_roundtrip():
    s = spec2d(mode="z", focus=10, context=3)
    assert GridSpec.from_json(s.to_json()) == s
    assert GridSpec.from_dict(s.to_dict()).species == (5, 6, 7)
    _raises(GridError, "unknown grid field", lambda: GridSpec.from_dict({**s.to_dict(), "spacng": 0.1}))


def test_arrays_input_equals_atoms_input(bcn):
    spec = spec2d()
    a = rasterize(bcn, spec)
    b = rasterize((bcn.positions, bcn.numbers, bcn.cell[:], bcn.pbc), spec)
    np.testing.assert_array_equal(a, b)
    _raises(InputError, "shape", lambda: rasterize((bcn.positions[:, :2], bcn.numbers, bcn.cell[:], bcn.pbc), spec))


def test_chunked_passes_equal_single_pass(bcn, monkeypatch):
    import ednn.image.raster as R

    spec = spec2d()
    big = bcn.repeat((4, 3, 1))
    ref = rasterize(big, spec, dtype=np.float64)
    monkeypatch.setattr(R, "_PASS_ATOMS", 7)  # many passes over the atoms, several strips
    monkeypatch.setattr(R, "_CHUNK_ENTRIES", 500)
    got = np.concatenate([s for _, s in rasterize_strips(big, spec, rows_per_strip=5, dtype=np.float64)])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


# ------------------------------------------------------------- height channels
def test_height_channels_integrals_and_invariances(bcn):
    spec = spec2d(heights=2)
    assert spec.n_channels == 9 and spec.n_density_channels == 3
    img = rasterize(bcn, spec, dtype=np.float64)
    vol = pixel_volume(bcn, spec)
    h = (bcn.positions[:, 2] - bcn.positions[:, 2].mean()) / spec.sigma
    for c, z in enumerate((5, 6, 7)):
        sel = bcn.numbers == z
        np.testing.assert_allclose(img[..., c].sum() * vol, sel.sum(), rtol=1e-4)
        np.testing.assert_allclose(img[..., 3 + c].sum() * vol, h[sel].sum(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(img[..., 6 + c].sum() * vol, (h[sel] ** 2).sum(), rtol=1e-4, atol=1e-4)
    # density channels are the plain image; moving the sheet along z changes nothing
    np.testing.assert_allclose(img[..., :3], rasterize(bcn, spec2d(), dtype=np.float64), atol=1e-12)
    up = bcn.copy()
    up.positions[:, 2] += 3.7
    np.testing.assert_allclose(rasterize(up, spec, dtype=np.float64), img, atol=1e-9)
    # supercells stay exact: the mean plane is the same
    sup = rasterize(bcn.repeat((2, 3, 1)), spec, dtype=np.float64)
    np.testing.assert_allclose(sup, np.tile(img, (2, 3, 1)), atol=1e-9)
    # a flat sheet has empty height channels
    flat = bcn.copy()
    flat.positions[:, 2] = 1.0
    assert np.abs(rasterize(flat, spec, dtype=np.float64)[..., 3:]).max() < 1e-12


def test_height_channels_tf_and_gradient():
    import tensorflow as tf

    at = make_random_bcn(seed=4, reps=(2, 2))
    spec = spec2d(heights=1)
    ref = rasterize(at, spec, dtype=np.float64)
    np.testing.assert_allclose(rasterize_tf(at, spec, dtype=tf.float64).numpy(), ref, atol=1e-10)
    weights = np.random.default_rng(1).normal(size=ref.shape)
    pos = tf.Variable(at.positions, dtype=tf.float64)
    with tf.GradientTape() as tape:
        val = tf.reduce_sum(rasterize_tf(at, spec, positions=pos, dtype=tf.float64) * weights)
    grad = tape.gradient(val, pos).numpy()

    def f(p):
        a2 = at.copy()
        a2.positions = p
        return float((rasterize(a2, spec, dtype=np.float64) * weights).sum())

    h = 1e-5
    for i, k in [(0, 2), (3, 2), (5, 0), (7, 1)]:
        p = at.positions.copy()
        p[i, k] += h
        fp = f(p)
        p[i, k] -= 2 * h
        assert grad[i, k] == pytest.approx((fp - f(p)) / (2 * h), rel=1e-5, abs=1e-7)
    assert np.abs(grad[:, 2]).max() > 0.1  # heights make the image depend on z
    assert abs(grad[:, 2].sum()) < 1e-8  # ... but not on a rigid shift along z


def test_height_channels_only_in_2d():
    with pytest.raises(GridError, match="2D grids only"):
        GridSpec(species=BCN, dim=3, heights=1)
    with pytest.raises(GridError, match="heights must be"):
        GridSpec(species=BCN, heights=-1)


@pytest.mark.parametrize("case", ["graphene4x4", "graphene_rect", "hbn_60deg", "al_fcc_3d", "on_far_edge"])
def test_numpy_and_tf_agree_on_perfect_lattices(case):
    """Atoms exactly on cell boundaries (fractional 0, or 1 - 1e-16 that float32 rounds to 1.0): NumPy and TF
    images equal to 1e-5 of the peak, as the README says (issue 11: an edge atom was once put one pixel off)."""
    from ase.build import bulk

    from ednn.atoms import structures as st

    spec = spec2d()
    if case == "graphene4x4":
        at = st.graphene(4, 4)
    elif case == "graphene_rect":
        at = st.graphene(3, 2, rectangular=True)
    elif case == "hbn_60deg":
        at = st.hbn(5, 5)
        at.set_cell([at.cell[0], at.cell[0] - at.cell[1], at.cell[2]], scale_atoms=False)  # the other convention
        at.wrap()
    elif case == "al_fcc_3d":
        at = bulk("Al", "fcc", a=4.04, cubic=True).repeat(2)
        spec = GridSpec(species=("Al",), spacing=4.04 / 12, sigma=0.4, dim=3)
    else:
        at = st.graphene(4, 4)
        frac = at.get_scaled_positions()
        frac[frac == 0.0] = 1.0 - 1e-16  # a wrapped coordinate just below 1
        at.set_scaled_positions(frac)
    ref = rasterize(at, spec, dtype=np.float64)
    out = rasterize_tf(at, spec).numpy()
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5 * ref.max())
