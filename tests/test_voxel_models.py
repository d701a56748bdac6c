"""Per-voxel (LDOS / density) models on 3D grids: fields finer than the image, exact tiling, size transfer."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

import ednn
from ednn.errors import ConfigError, InputError
from ednn.image.grid import GridSpec
from ednn.nn.outputs import FieldOutput
from ednn.predict.model import EnergyModel


def _al(reps=(1, 1, 1), rattle=0.08, seed=0):
    at = bulk("Al", "fcc", a=4.04, cubic=True).repeat(reps)
    at.rattle(rattle, seed=seed)
    return at


def _model(upsample=2, channels=3, energy=False, layers=2, seed=3):
    g = GridSpec(species=(13,), spacing=4.04 / 9, sigma=0.5, dim=3, focus=3, context=layers)
    cfg = {"layers": layers, "filters": 4, "kernel": 3, "readout": [4], "energy": energy,
           "fields": {"ldos": channels}, "upsample": upsample}
    return EnergyModel.create(cfg, g, seed=seed)


@pytest.mark.parametrize("dim,factor", [(2, 3), (3, 2), (3, 1)])
def test_space_to_depth_round_trip_is_exact(dim, factor):
    """Labels -> network channels -> field is the identity, and each image pixel owns its f^d sub-voxels."""
    rng = np.random.default_rng(0)
    f = FieldOutput("ldos", start=1, channels=2, scale=np.array([2.0, 0.5]), factor=factor, dim=dim)
    fine = rng.normal(size=(6 * factor,) * dim + (2,))
    net = f.to_network(fine)
    assert net.shape == (6,) * dim + (2 * factor**dim,)
    y = np.concatenate([np.zeros(net.shape[:-1] + (1,)), net], axis=-1)  # channel 0: an energy
    np.testing.assert_allclose(f.from_network(y), fine, rtol=1e-6, atol=1e-6)
    # the sub-voxel block of image pixel (1, 2, ...) is fine[f*1 : f*2, f*2 : f*3, ...]
    block = fine[tuple(slice(factor * i, factor * (i + 1)) for i in (1, 2, 0)[:dim])]
    np.testing.assert_allclose(np.sort(net[(1, 2, 0)[:dim]].ravel()),
                               np.sort((block / f.scale).ravel().astype(np.float32)), rtol=1e-6)


def test_upsampled_field_shape_and_wrong_grid_errors():
    m = _model()
    at = _al()
    field = m.predict_field(at, "ldos")
    assert field.shape == (18, 18, 18, 3)  # 9^3 image pixels, 2x finer field
    with pytest.raises(InputError, match=r"\(18, 18, 18\).*upsample = 2"):
        m.fields["ldos"].check(np.zeros((35, 35, 35, 3)), (9, 9, 9))
    with pytest.raises(InputError, match="model.upsample"):
        m.fields["ldos"].check(np.zeros((9, 9, 9, 3)), (9, 9, 9))
    with pytest.raises(ConfigError, match="upsample"):
        EnergyModel.create({"layers": 1, "filters": 2, "upsample": 2},
                           GridSpec(species=(13,), spacing=0.45, sigma=0.5, dim=3, focus=3, context=1))


def test_upsampled_fields_whole_tiles_stream_equal():
    """Whole-image, tiled and streamed per-voxel predictions are the same field (fine grid too)."""
    m = _model()
    at = _al((2, 1, 1), seed=4)
    whole = m.predict_field(at, "ldos", method="whole")
    tiles = m.predict_field(at, "ldos", method="tiles")
    stream = m.predict_field(at, "ldos", method="stream")
    scale = np.abs(whole).max()
    np.testing.assert_allclose(tiles, whole, atol=1e-6 * scale)
    np.testing.assert_allclose(stream, whole, atol=1e-6 * scale)


def test_supercell_field_is_the_cell_field_tiled_and_translation_by_a_pixel_shifts_it():
    """Size transfer is exact: a 2x2x2 supercell's predicted field is the cell's field repeated; a
    translation by one image pixel moves the fine field by ``upsample`` voxels."""
    m = _model()
    at = _al(seed=5)
    cell = m.predict_field(at, "ldos")
    sup = m.predict_field(at.repeat((2, 2, 2)), "ldos")
    np.testing.assert_allclose(sup, np.tile(cell, (2, 2, 2, 1)), atol=1e-5 * np.abs(cell).max())
    moved = at.copy()
    moved.positions += at.cell[0] / 9  # one image pixel along a1
    shifted = m.predict_field(moved, "ldos")
    np.testing.assert_allclose(shifted, np.roll(cell, 2, axis=0), atol=1e-5 * np.abs(cell).max())


def test_upsampled_model_saves_and_loads(tmp_path):
    m = _model()
    m.fields["ldos"].scale = np.array([1.0, 2.0, 3.0])
    at = _al(seed=6)
    before = m.predict_field(at, "ldos")
    m.save(tmp_path / "m")
    m2 = ednn.load(str(tmp_path / "m"))
    assert m2.fields["ldos"].factor == 2
    np.testing.assert_allclose(m2.predict_field(at, "ldos"), before, rtol=1e-6, atol=1e-7)
