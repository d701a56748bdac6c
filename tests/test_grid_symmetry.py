"""Rotations and mirrors of a cell's pixel grid (ednn.image.symmetry): the ops a cell admits, the image and
per-voxel labels they map, training on them (train.augment: symmetry) and fields averaged over them
(model.symmetrize_fields), which are then exactly equivariant."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk, graphene
from ase.calculators.emt import EMT

import ednn
from ednn.errors import ConfigError, InputError, ModelError
from ednn.image.grid import GridSpec
from ednn.image.raster import prepare, rasterize
from ednn.image.symmetry import GridOp, grid_symmetries, transform_atoms, transform_vectors
from ednn.predict.model import EnergyModel
from ednn.properties import Property, register
from ednn.train.sets import structures_to_set

SYMTOY = register(Property("symtoy", "arb. unit", "voxel", None, "known-answer field of the symmetry tests"))

AL_GRID = GridSpec(species=(13,), spacing=4.04 / 9, sigma=0.5, dim=3, focus=3, context=2)
FINE = GridSpec(species=(13,), spacing=4.04 / 18, sigma=0.5, dim=3)  # the 2x finer label grid


def _al(seed=0, rattle=0.1):
    at = bulk("Al", "fcc", a=4.04, cubic=True)
    at.rattle(rattle, seed=seed)
    return at


def _sheet(seed=0):
    at = graphene(size=(3, 3, 1), vacuum=7.0)
    at.pbc = (True, True, False)
    at.rattle(0.05, seed=seed)
    return at


def _cell(lengths, angles=(90, 90, 90)):
    from ase.geometry import cellpar_to_cell

    return cellpar_to_cell([*lengths, *angles])


@pytest.mark.parametrize("lattice,shape,count", [
    (_cell((4.0, 4.0, 4.0)), (9, 9, 9), 48),                 # cube: the full cubic group
    (_cell((4.0, 4.0, 4.0)), (9, 9, 10), 16),                # a grid that is not cubic keeps the tetragonal ops
    (_cell((4.0, 4.0, 6.0)), (9, 9, 14), 16),                # tetragonal (a sheet's box)
    (_cell((3.0, 4.0, 5.0)), (7, 9, 11), 8),                 # orthorhombic: the mirrors
    (_cell((3.0, 4.0, 5.0), (80, 70, 100)), (7, 9, 11), 2),  # triclinic: identity and inversion
    (_cell((4.04, 4.04, 4.04), (60, 60, 60)), (9, 9, 9), 12),  # fcc primitive (rhombohedral axes)
    (_cell((2.46, 2.46, 10), (90, 90, 120))[:2, :2], (5, 5), 4),  # hexagonal sheet, in plane
    (np.diag([3.0, 3.0]), (6, 6), 8),                        # square sheet
])
def test_ops_a_cell_admits(lattice, shape, count):
    ops = grid_symmetries(lattice, shape)
    assert len(ops) == count and ops[0].is_identity
    G = lattice @ lattice.T
    for op in ops:  # each keeps the metric: a rotation or mirror of space
        R = op.cartesian(lattice)
        np.testing.assert_allclose(R @ R.T, np.eye(len(shape)), atol=1e-9)
        M = op.matrix()
        np.testing.assert_allclose(M.T @ G @ M, G, atol=1e-9)
        assert op.inverse().inverse() == op


def test_op_on_arrays_is_the_pixel_map_and_inverts():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 5, 4, 2))
    op = GridOp((1, 0, 2), (-1, 1, -1))
    y = op.apply(x)
    for m in [(0, 0, 0), (1, 2, 3), (4, 1, 2)]:  # y[m'] = x[m], m'_k = sign_k m_perm[k] mod n
        mp = tuple((s * m[p]) % n for s, p, n in zip(op.signs, op.perm, x.shape[:3], strict=True))
        np.testing.assert_array_equal(y[mp], x[m])
    np.testing.assert_array_equal(op.inverse().apply(y), x)
    with pytest.raises(InputError, match="different lengths"):
        GridOp((2, 1, 0), (1, 1, 1)).apply(x)
    with pytest.raises(InputError, match="periodic cell vectors"):
        grid_symmetries(np.eye(3), (4, 4))


@pytest.mark.parametrize("kind", ["al", "sheet2d", "sheet_box"])
def test_image_of_the_mapped_atoms_is_the_mapped_image(kind):
    """The Gaussian image of the rotated / mirrored structure is the image with its pixels mapped (float64
    round-off), and the mapped structure is congruent (all distances kept)."""
    if kind == "al":
        at, g = _al(), AL_GRID
    elif kind == "sheet2d":
        at, g = _sheet(), GridSpec(species=(6,), spacing=0.2, sigma=0.5, dim=2)
    else:
        at, g = _sheet(), GridSpec(species=(6,), spacing=0.4, sigma=0.5, dim=3)
    p = prepare(at, g)
    ops = grid_symmetries(p.lattice, p.shape)
    assert len(ops) == {"al": 48, "sheet2d": 4, "sheet_box": 8}[kind]
    img = rasterize(at, g, dtype=np.float64)
    d0 = at.get_all_distances(mic=True)
    moved = 0.0
    for op in ops:
        b = transform_atoms(at, op, p.lattice)
        np.testing.assert_allclose(rasterize(b, g, dtype=np.float64), op.apply(img), rtol=0, atol=1e-12)
        np.testing.assert_allclose(b.get_all_distances(mic=True), d0, atol=1e-9)
        moved = max(moved, float(np.abs(op.apply(img) - img).max()))
    assert moved > 0.05 * img.max()  # the ops do move the image (the checks above could fail)


def test_forces_of_the_mapped_atoms_are_the_mapped_forces():
    at = _al(seed=3)
    at.calc = EMT()
    f0 = at.get_forces()
    lat = prepare(at, AL_GRID).lattice
    for op in grid_symmetries(lat, (9, 9, 9))[::7]:
        b = transform_atoms(at, op, lat)
        b.calc = EMT()
        np.testing.assert_allclose(b.get_forces(), transform_vectors(f0, op, lat), atol=1e-9)


def _field_model(energy=False, seed=3):
    cfg = {"layers": 2, "filters": 4, "kernel": 3, "readout": [4], "energy": energy, "fields": {"ldos": 3},
           "upsample": 2, "vacuum_zero": False}
    return EnergyModel.create(cfg, AL_GRID, seed=seed)


def test_symmetrized_fields_are_exactly_equivariant(tmp_path):
    """With model.symmetrize_fields the field of a rotated / mirrored cell is the mapped field (on the 2x finer
    field grid), for an untrained network; without it the same check fails by far."""
    m = _field_model()
    at = _al(seed=1)
    lat = prepare(at, AL_GRID).lattice
    ops = grid_symmetries(lat, (9, 9, 9))
    plain = m.predict_field(at, "ldos")
    worst_plain = max(np.abs(m.predict_field(transform_atoms(at, op, lat), "ldos") - op.apply(plain)).max()
                      for op in ops[1::5])
    m.symmetrize_fields = True
    sym = m.predict_field(at, "ldos")
    assert sym.shape == (18, 18, 18, 3)
    scale = np.abs(sym).max()
    for op in ops[1::5]:
        np.testing.assert_allclose(m.predict_field(transform_atoms(at, op, lat), "ldos"), op.apply(sym),
                                   rtol=0, atol=1e-5 * scale)
    assert worst_plain > 1e-2 * scale
    # the mean over the ops, by hand, with a second copy of the same network left unsymmetrized
    m0 = _field_model()
    m0.network.set_weights(m.network.get_weights())
    by_hand = np.mean([op.inverse().apply(m0.predict_field(transform_atoms(at, op, lat), "ldos")) for op in ops],
                      axis=0)
    np.testing.assert_allclose(sym, by_hand, rtol=0, atol=1e-6 * scale)
    m.save(tmp_path / "m")
    m2 = ednn.load(str(tmp_path / "m"))
    assert m2.symmetrize_fields
    np.testing.assert_allclose(m2.predict_field(at, "ldos"), sym, rtol=0, atol=1e-6 * scale)
    with pytest.raises(InputError, match="True or False"):
        m.symmetrize_fields = 1


def test_symmetrize_fields_needs_a_grid_model():
    m = EnergyModel.create({"layers": 1, "filters": 2}, grid=None, in_channels=1, dim=2)
    with pytest.raises(ModelError, match="grid model"):
        m.symmetrize_fields = True


def _fine_label(atoms):
    """A known per-voxel field on the 2x finer grid: three local functions of a fine Gaussian density."""
    x = rasterize(atoms, FINE, dtype=np.float64)[..., 0]
    return np.stack([x, x**2, np.tanh(3 * x)], axis=-1)


def test_symmetry_augmentation_maps_inputs_labels_and_forces_together():
    """After train.augment: symmetry has redescribed a set, every sample's network input, per-voxel label and
    forces are those of one and the same rotated / mirrored structure (the label recomputed from the
    structure that the input's positions describe); deterministic per (seed, epoch)."""
    m = _field_model(energy=True)
    structs = [_al(seed=s) for s in range(4)]
    forces = []
    for a in structs:
        a.calc = EMT()
        forces.append(a.get_forces())
    E = [a.get_potential_energy() for a in structs]
    ts = structures_to_set(m, structs, E, forces=forces, fields={"ldos": [_fine_label(a) for a in structs]})
    given = [x.copy() for x, _ in ts.inputs]
    ts.redescribe(m, 0, 11, "symmetry")
    first = [x.copy() for x, _ in ts.inputs]
    changed = 0
    for i, a in enumerate(structs):
        b = a.copy()
        b.positions = ts.force_inputs[i][0]
        np.testing.assert_allclose(ts.fields["ldos"][i], _fine_label(b), rtol=0, atol=1e-5)
        img, w = m.image(b)
        np.testing.assert_allclose(ts.inputs[i][0], m.network_input(img, w)[0], rtol=0, atol=1e-6)
        b.calc = EMT()
        np.testing.assert_allclose(ts.forces[i], b.get_forces(), rtol=0, atol=1e-5)
        changed += not np.array_equal(ts.inputs[i][0], given[i])
    assert changed >= 3  # 47 of 48 ops move a rattled cube
    ts.redescribe(m, 0, 11, "symmetry")
    assert all(np.array_equal(x, y) for x, (y, _) in zip(first, ts.inputs, strict=True))
    ts.redescribe(m, 1, 11, "symmetry")  # another epoch: other ops, mapped from the labels as given
    for i, a in enumerate(structs):
        b = a.copy()
        b.positions = ts.force_inputs[i][0]
        np.testing.assert_allclose(ts.fields["ldos"][i], _fine_label(b), rtol=0, atol=1e-5)


def test_field_training_with_symmetry_augmentation(tmp_path):
    """A per-voxel model trains with augment: symmetry; the other augment modes still refuse per-voxel labels."""
    from ednn.data import DatasetWriter
    from ednn.train import train

    structs = [_al(seed=s) for s in range(6)]
    path = tmp_path / "toy.h5"
    with DatasetWriter(path) as w:
        for a in structs:
            w.append(a, targets={"symtoy": _fine_label(a)})
    cfg = {"out": str(tmp_path / "run"), "seed": 0,
           "data": {"train": str(path), "targets": ["symtoy"], "val_fraction": 0.2, "test_fraction": 0.0},
           "grid": {"species": ["Al"], "dim": 3, "spacing": 4.04 / 9, "sigma": 0.5, "focus": 3},
           "model": {"layers": 2, "filters": 4, "kernel": 3, "readout": [4], "upsample": 2,
                     "vacuum_zero": False},
           "train": {"epochs": 3, "batch_size": 2, "progress": False, "augment": "symmetry", "restore_best": False}}
    train(cfg)
    import json

    log = json.load(open(tmp_path / "run" / "log.json"))
    assert len(log) == 3 and all(np.isfinite(r["val_loss"]) for r in log)
    cfg["train"]["augment"] = "translate"
    cfg["out"] = str(tmp_path / "bad")
    with pytest.raises(ConfigError, match="augment: symmetry"):
        train(cfg)
