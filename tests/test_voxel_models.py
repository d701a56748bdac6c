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


def _model(upsample=2, channels=3, energy=False, layers=2, seed=3, vacuum_zero=True, field="ldos"):
    g = GridSpec(species=(13,), spacing=4.04 / 9, sigma=0.5, dim=3, focus=3, context=layers)
    cfg = {"layers": layers, "filters": 4, "kernel": 3, "readout": [4], "energy": energy,
           "fields": {field: channels}, "upsample": upsample, "vacuum_zero": vacuum_zero}
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


# --------------------------------------------------------------------------- LDOS physics from a model
def _ldos_model(n_e=80, start=-4.0, spacing=0.1):
    """An LDOS model whose network gives the same LDOS ``c(E)`` at every voxel (zero last-layer kernel, bias
    ``c``): its DOS is ``c * volume``, known in closed form."""
    from ednn.electronic import EnergyGrid

    grid = EnergyGrid(start=start, spacing=spacing, n=n_e)
    m = _model(upsample=2, channels=n_e, vacuum_zero=False)
    layer = m.network.get_layer("density")
    k, b = layer.get_weights()
    e = grid.energies
    c = np.sqrt(np.clip(1 - ((e - 0.5) / 2.5) ** 2, 0, None)) * 0.1  # a semicircle band, states/(eV A^3)
    layer.set_weights([np.zeros_like(k), np.tile(c, 8).astype(np.float32)])  # the same for the 2^3 sub-voxels
    m.meta["electronic"] = {"energy_grid": grid.to_dict(), "valence": {"13": 3.0}, "broadening_eV": spacing,
                            "electronic_temperatures_K": [298.0]}
    return m, grid, c


@pytest.mark.parametrize("temperature", [298.0, 2000.0])
def test_electronic_structure_equals_the_physics_of_the_predicted_ldos(temperature):
    """model.electronic_structure is ednn.electronic on the model's LDOS: DOS = c * V, the Fermi level holds the
    valence electrons, the density integrates to them; a 2x2x1 supercell gives the same per-atom values."""
    from ednn.electronic import electronic_properties

    m, grid, c = _ldos_model()
    at = _al(seed=7)
    es = m.electronic_structure(at, temperature)
    ldos = m.predict_ldos(at)
    assert ldos.shape == (18, 18, 18, grid.n)
    np.testing.assert_allclose(ldos, np.broadcast_to(c, ldos.shape), rtol=1e-5, atol=1e-9)
    ref = electronic_properties(grid, temperature, 12.0, dos=c * at.get_volume())
    assert es["n_electrons_expected"] == 12.0
    assert es["n_electrons"] == pytest.approx(12.0, rel=1e-9)
    assert es["fermi_level"] == pytest.approx(ref["fermi_level"], abs=1e-5)
    assert es["band_energy"] == pytest.approx(ref["band_energy"], rel=1e-5)
    assert es["entropy_term"] == pytest.approx(ref["entropy_term"], rel=1e-4, abs=1e-9)
    assert es["density"].sum() * es["voxel_volume"] == pytest.approx(12.0, rel=1e-6)
    np.testing.assert_allclose(m.predict_density(at, temperature), es["density"], rtol=1e-12)
    assert es["negative_fraction"] == 0.0
    big = m.electronic_structure(at.repeat((2, 2, 1)), temperature)
    assert big["fermi_level"] == pytest.approx(es["fermi_level"], abs=1e-6)
    assert big["band_energy"] / 16 == pytest.approx(es["band_energy"] / 4, rel=1e-6)


def test_electronic_structure_without_the_ldos_array_equals_the_direct_path():
    """The default path never forms the LDOS (features @ W per block; DOS and density by linearity): it equals
    the physics of the full predicted LDOS, negative parts and upsampled density included, to the float32
    arithmetic of the network's last layer (the direct path's; the new one sums in float64)."""
    m, grid, c = _ldos_model()
    layer = m.network.get_layer("density")
    k, _ = layer.get_weights()
    rng = np.random.default_rng(0)
    layer.set_weights([(0.02 * rng.standard_normal(k.shape)).astype(np.float32), np.tile(c, 8).astype(np.float32)])
    at = _al((1, 1, 2), seed=11)
    for t in (298.0, 1500.0):
        fast = m.electronic_structure(at, t)
        full = m.electronic_structure(at, t, ldos=m.predict_ldos(at))
        assert fast["negative_fraction"] > 1e-3
        for key in ("fermi_level", "band_energy", "entropy_term", "n_electrons", "negative_fraction", "voxel_volume"):
            assert fast[key] == pytest.approx(full[key], rel=1e-6, abs=1e-12), key
        np.testing.assert_allclose(fast["dos"], full["dos"], rtol=1e-6, atol=1e-9)
        assert fast["density"].shape == full["density"].shape == (18, 18, 36)
        np.testing.assert_allclose(fast["density"], full["density"], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("temperature", [298.0, 933.0, 2000.0])
def test_free_energy_of_a_constant_dos_is_sommerfelds(temperature):
    """A constant DOS D0: the frozen-LDOS free-energy change is -(pi^2/6) (k_B T)^2 D0 exactly (band energy
    +pi^2/6, -TS -pi^2/3); F = E_0 of the energy model + that change; a 2x1x1 supercell doubles both."""
    from ase.units import kB

    from ednn.errors import ModelError

    m, grid, _ = _ldos_model(n_e=80, start=-4.0, spacing=0.1)
    at = _al(seed=3)
    c = 12.0 / (4.0 * at.get_volume())  # 12 electrons fill the constant band from -4 eV to ~0 eV
    layer = m.network.get_layer("density")
    k, _ = layer.get_weights()
    layer.set_weights([np.zeros_like(k), np.full(8 * grid.n, c, dtype=np.float32)])
    c32 = float(np.float32(c))
    with pytest.raises(ModelError, match="needs E_0"):
        m.free_energy(at, temperature)
    em = _model(energy=True, channels=1, field="density", seed=5)
    f = m.free_energy(at, temperature, energy_model=em)
    d0 = c32 * at.get_volume()
    assert f["free_energy_change"] == pytest.approx(-np.pi**2 / 6 * (kB * temperature) ** 2 * d0, rel=2e-4)
    assert f["band_energy"] - f["band_energy_zero"] == pytest.approx(np.pi**2 / 6 * (kB * temperature) ** 2 * d0,
                                                                     rel=2e-4)
    assert f["energy_zero"] == pytest.approx(em.predict_energy(at), rel=1e-12)
    assert f["free_energy"] == pytest.approx(f["energy_zero"] + f["free_energy_change"], rel=1e-12)
    big = m.free_energy(at.repeat((2, 1, 1)), temperature, energy_model=em)
    assert big["free_energy_change"] == pytest.approx(2 * f["free_energy_change"], rel=1e-6)
    assert big["energy_zero"] == pytest.approx(2 * f["energy_zero"], rel=1e-5)


def test_ldos_model_bad_input():
    from ase import Atoms

    from ednn.errors import ModelError

    m, _, _ = _ldos_model()
    at = _al()
    cu = at.copy()
    cu.numbers[0] = 29
    with pytest.raises(InputError, match=r"Cu \(Z=29\) not in"):
        m.electronic_structure(cu, 298.0)
    open_cell = at.copy()
    open_cell.pbc = (True, True, False)
    with pytest.raises(InputError, match="periodic cell"):
        m.predict_ldos(open_cell)
    with pytest.raises(InputError, match="> 0 K|temperature"):
        m.electronic_structure(at, 0.0)
    del m.meta["electronic"]
    with pytest.raises(ModelError, match="electronic metadata"):
        m.electronic_structure(at, 298.0)
    dens = _model(channels=1, field="density")
    with pytest.raises(ModelError, match="not the LDOS"):
        dens.predict_ldos(Atoms("Al", cell=[4.04] * 3, pbc=True))


# --------------------------------------------------------------------------- end to end on real GPAW labels
def _ldos_config(data, out, epochs=4):
    return {"data": {"train": [str(data)], "targets": ["ldos"], "val_fraction": 0.34, "test_fraction": 0.0},
            "grid": {"species": ["Al"], "dim": 3, "spacing": 4.04 / 6, "sigma": 0.6, "cutoff": 3.0, "focus": 3},
            "model": {"layers": 2, "kernel": 3, "filters": 6, "readout": [8], "upsample": 2, "vacuum_zero": False,
                      "field_scale": "field"},
            "train": {"epochs": epochs, "batch_size": 1, "progress": False, "deterministic": True},
            "out": str(out), "seed": 1}


def test_ldos_model_trains_on_gpaw_labels_resumes_and_evaluates(al_ldos_set, tmp_path):
    """`ednn train` on an LDOS dataset: the model predicts on the DFT grid (2x its image), remembers the energy
    grid and valence, conserves electrons; stopping and resuming gives the weights of an uninterrupted run;
    `evaluate` reports the physics and refuses an LDOS on another energy grid."""
    from ednn.data import Dataset, DatasetWriter
    from ednn.errors import DatasetError
    from ednn.train import train
    from ednn.workflows.evaluate import evaluate

    path, grid = al_ldos_set
    full = train(_ldos_config(path, tmp_path / "full", epochs=4))
    assert full.meta["electronic"]["valence"] == {"13": pytest.approx(3.0)}
    assert full.meta["electronic"]["energy_grid"] == grid.to_dict()
    with Dataset(path) as ds:
        at, label = ds[0], ds.target("ldos", 0)
    pred = full.predict_ldos(at)
    assert pred.shape == label.shape == (12, 12, 12, grid.n)
    es = full.electronic_structure(at, 600.0)
    assert es["n_electrons"] == pytest.approx(12.0, rel=1e-9)
    assert es["density"].sum() * es["voxel_volume"] == pytest.approx(12.0, rel=1e-6)
    # a crash in epoch 3, then resume: bit-identical to the uninterrupted run
    from ednn.train import Callback

    class Crash(Exception):
        pass

    class CrashAt(Callback):
        def on_batch_end(self, step, logs=None):
            if len(self.trainer.history) == 2 and step == 1:
                raise Crash()

    cfg = _ldos_config(path, tmp_path / "crashed", epochs=4)
    with pytest.raises(Crash):
        train(cfg, callbacks=[CrashAt()])
    resumed = train(cfg, resume=True)
    for wa, wb in zip(full.network.get_weights(), resumed.network.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    # evaluate: physics metrics beside the dataset-mean baseline, DOS and density figures
    m = evaluate(str(tmp_path / "full" / "model"), str(path), str(tmp_path / "ev"))
    s = m["electronic"]["summary"]
    assert set(s) >= {"band_energy_meV_per_atom", "fermi_level_meV", "density_mape_pct"}
    assert all(np.isfinite(v["mae"]) and np.isfinite(v["baseline_mae"]) for v in s.values())
    assert abs(s["electrons_pct"]["mae"]) < 1e-4
    assert (tmp_path / "ev" / "dos.png").exists() and (tmp_path / "ev" / "density.png").exists()
    # the same records on an energy grid of 140 points: refused with both grids named
    other = tmp_path / "other.h5"
    shorter = {"start": grid.start, "spacing": grid.spacing, "n": grid.n - 10}
    with Dataset(path) as ds, DatasetWriter(other, metadata={**ds.metadata, "energy_grid": shorter}) as w:
        for i in range(len(ds)):
            info = {**ds.info(i), "energy_grid": shorter}
            w.append(ds[i], info=info, targets={"ldos": ds.target("ldos", i)[..., :-10],
                                                "density": ds.target("density", i)})
    with pytest.raises(DatasetError, match="another|energy grid"):
        evaluate(str(tmp_path / "full" / "model"), str(other), str(tmp_path / "ev2"))


def test_broaden_dataset_keeps_the_data_checks(al_ldos_set, tmp_path):
    """`ednn ldos broaden`: every LDOS re-broadened (0.1 -> 0.3 eV), the top of the window dropped where
    states above it would be missing; the copy's DOS still equals the eigenvalue DOS at the new width."""
    import subprocess
    import sys

    from ednn.data import Dataset
    from ednn.data.ldos import validate_ldos_dataset

    path, grid = al_ldos_set
    out = tmp_path / "wide.h5"
    res = subprocess.run([sys.executable, "-m", "ednn.cli", "ldos", "broaden", str(path), "-o", str(out),
                          "--width", "0.3", "--no-progress"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    with Dataset(out) as ds:
        drop = ds.metadata["rebroadened"]["top_points_dropped"]
        assert drop == int(np.ceil(4 * np.sqrt(0.3**2 - 0.1**2) / np.sqrt(2) / 0.1))
        assert ds.metadata["energy_grid"]["n"] == grid.n - drop
        assert ds.target("ldos", 0).shape[-1] == grid.n - drop and ds.info(0)["broadening_eV"] == 0.3
    rep = validate_ldos_dataset(out)
    # 3e-4, not the check's 1e-4: the source's Gaussians (s = dE) are sampled at their own width, and the
    # discrete convolution carries their aliasing, ~2 exp(-pi^2) = 1e-4 of each Gaussian's peak; on the
    # fixture's Gamma-only labels the states are few and isolated, and where two or three of them lie within a
    # width of each other their aliasing adds while their summed peak does not (measured 1.0-2.2e-4)
    assert all(r["dos_rel"] < 3e-4 for r in rep["records"]), [r["dos_rel"] for r in rep["records"]]


def test_density_model_conserves_electrons_on_request_and_keeps_its_labels_temperature(al_ldos_set, tmp_path):
    """A density model trained on gpaw-ldos records remembers the valence electrons and the labels' T_e:
    `predict_density` is its field, and with conserve_electrons the field scaled to hold exactly the valence
    electrons (a supercell's is the cell's tiled); another T_e, an LDOS array and a model without the counts
    are refused, and an LDOS model is told to give its temperature."""
    from ednn.data import Dataset
    from ednn.errors import ModelError
    from ednn.predict.electronic import predict_density
    from ednn.train import train

    path, _ = al_ldos_set
    cfg = _ldos_config(path, tmp_path / "dens", epochs=2)
    cfg["data"]["targets"] = ["density"]
    m = train(cfg)
    meta = m.meta["electronic"]
    assert meta["valence"] == {"13": pytest.approx(3.0)} and "energy_grid" not in meta
    t_e = meta["electronic_temperatures_K"][0]
    with Dataset(path) as ds:
        at = ds[0]
    raw = m.predict_field(at, "density")[..., 0].astype(np.float64)
    np.testing.assert_array_equal(m.predict_density(at), raw)
    np.testing.assert_array_equal(m.predict_density(at, t_e), raw)
    cons = m.predict_density(at, conserve_electrons=True)
    dv = at.get_volume() / cons.size
    held = raw.sum() * dv
    assert cons.sum() * dv == pytest.approx(3.0 * len(at), rel=1e-12) and abs(held / (3.0 * len(at)) - 1) > 1e-4
    np.testing.assert_allclose(cons, raw * (3.0 * len(at) / held), rtol=1e-12)
    big = at.repeat((2, 1, 1))
    np.testing.assert_allclose(m.predict_density(big, conserve_electrons=True), np.tile(cons, (2, 1, 1)), rtol=1e-5,
                               atol=1e-6 * np.abs(cons).max())
    from ednn.atoms import structures as st

    sheet = st.graphene(2, 2)  # a sheet in a box with vacuum (pbc off across it), as the sheet data
    sheet.numbers[:] = 13
    assert not sheet.pbc[2]
    rho = m.predict_density(sheet, conserve_electrons=True)
    assert rho.sum() * sheet.get_volume() / rho.size == pytest.approx(3.0 * len(sheet), rel=1e-12)
    # `ednn predict` with the density model: electrons per structure, a slice figure and a cube file each
    import subprocess
    import sys

    from ase.io.cube import read_cube_data
    from ase.units import Bohr

    res = subprocess.run([sys.executable, "-m", "ednn.cli", "predict", str(tmp_path / "dens" / "model"), str(path),
                          "--conserve-electrons", "--plots", str(tmp_path / "plots"), "--cube", str(tmp_path / "cube"),
                          "-o", str(tmp_path / "d.csv")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = (tmp_path / "d.csv").read_text().strip().splitlines()
    assert rows[0] == "index,n_atoms,n_electrons,n_electrons_valence,density_max_per_A3" and len(rows) == 4
    assert [float(v) for v in rows[1].split(",")[1:4]] == pytest.approx([4, 12.0, 12.0], rel=1e-6)
    data, cube_atoms = read_cube_data(str(tmp_path / "cube" / "density_0.cube"))
    np.testing.assert_allclose(data / Bohr**3, cons, rtol=1e-4, atol=1e-6 * cons.max())
    np.testing.assert_allclose(cube_atoms.positions, at.positions, atol=1e-5)
    assert (tmp_path / "plots" / "density_2.png").stat().st_size > 0
    # `evaluate` reports the MAPE of the conserved density beside the raw one
    from ednn.workflows.evaluate import evaluate

    ev = evaluate(str(tmp_path / "dens" / "model"), str(path), str(tmp_path / "ev"))["density"]
    with Dataset(path) as ds:
        label = ds.target("density", 0).astype(np.float64)
    mask = label > 0.01 * label.max()
    for key, p in (("density_mape_pct", raw), ("conserved_density_mape_pct", cons)):
        assert ev["records"][0][key] == pytest.approx(100 * np.mean(np.abs(p[mask] - label[mask]) / label[mask]),
                                                      rel=1e-5)
    with pytest.raises(InputError, match="one electronic temperature"):
        m.predict_density(at, t_e + 500.0)
    with pytest.raises(InputError, match="leave ldos out"):
        predict_density(m, at, ldos=np.zeros(raw.shape + (3,)))
    del m.meta["electronic"]
    with pytest.raises(ModelError, match="valence electron counts"):
        m.predict_density(at, conserve_electrons=True)
    with pytest.raises(InputError, match="not recorded"):
        m.predict_density(at, t_e)
    lm, _, _ = _ldos_model()
    with pytest.raises(InputError, match="give temperature"):
        lm.predict_density(_al())


def test_2d_field_model_refuses_a_bulk_cell_and_3d_a_sheet_without_vacuum():
    from ednn.atoms import structures as st

    g2 = GridSpec(species=(13,), spacing=0.5, sigma=0.5, focus=4, context=2)
    m2 = EnergyModel.create({"layers": 2, "filters": 4, "energy": False, "fields": {"density": 1}}, g2)
    with pytest.raises(InputError, match="2D system without vacuum.*dim=3"):
        m2.predict_field(bulk("Al", "fcc", a=4.04, cubic=True))
    m3 = _model(channels=1, field="density")
    sheet = st.graphene(2, 2)
    sheet.numbers[:] = 13
    thin = sheet.copy()
    thin.cell[2] = [0, 0, 4.0]
    thin.positions[:, 2] = 2.0
    with pytest.raises(InputError, match="3D grid needs a cell periodic in all three.*only 4.00 A of vacuum.*dim=2"):
        m3.predict_field(thin)
    # in its 20 A box the sheet is a slab cell: its field is the periodic box's (GPAW's sheet labels are)
    box = sheet.copy()
    box.pbc = True
    field = m3.predict_field(sheet)
    assert field.shape[2] == 2 * 45 and field.max() > 0
    np.testing.assert_array_equal(field, m3.predict_field(box))


def test_ednn_predict_ldos_model_cli(al_ldos_set, tmp_path):
    """`ednn predict MODEL DATA --temperature T --plots DIR` with an LDOS model: a CSV of mu, band energy, -TS
    and electrons per structure (the Python API's values), and a DOS and density figure per structure."""
    import subprocess
    import sys

    from ednn.data import Dataset
    from ednn.train import train

    path, _ = al_ldos_set
    m = train(_ldos_config(path, tmp_path / "run", epochs=2))
    res = subprocess.run([sys.executable, "-m", "ednn.cli", "predict", str(tmp_path / "run" / "model"), str(path),
                          "--temperature", "1500", "--plots", str(tmp_path / "plots"), "-o", str(tmp_path / "p.csv")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = (tmp_path / "p.csv").read_text().strip().splitlines()
    assert rows[0].startswith("index,n_atoms,temperature_K,fermi_level_eV,band_energy_eV") and len(rows) == 4
    with Dataset(path) as ds:
        es = m.electronic_structure(ds[1], 1500.0)
    cols = rows[2].split(",")
    assert float(cols[3]) == pytest.approx(es["fermi_level"], abs=2e-6)
    assert float(cols[4]) == pytest.approx(es["band_energy"], abs=2e-6)
    assert float(cols[7]) == pytest.approx(12.0, rel=1e-6)
    assert (tmp_path / "plots" / "dos_2.png").exists() and (tmp_path / "plots" / "density_2.png").exists()
    # --energy-model: the free energy F(T_e) = E_0 + frozen-LDOS change, the Python API's numbers
    ecfg = _ldos_config(path, tmp_path / "energy", epochs=2)
    ecfg["data"]["targets"] = ["energy"]
    ecfg["model"] = {"layers": 2, "kernel": 3, "filters": 6, "readout": [8]}
    em = train(ecfg)
    res = subprocess.run([sys.executable, "-m", "ednn.cli", "predict", str(tmp_path / "run" / "model"), str(path),
                          "--temperature", "1500", "--energy-model", str(tmp_path / "energy" / "model"),
                          "-o", str(tmp_path / "f.csv")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = (tmp_path / "f.csv").read_text().strip().splitlines()
    assert rows[0].endswith(",energy_zero_eV,free_energy_change_eV,free_energy_eV,free_energy_per_atom_eV")
    with Dataset(path) as ds:
        f = m.free_energy(ds[1], 1500.0, energy_model=em)
    cols = [float(v) for v in rows[2].split(",")]
    assert cols[9] == pytest.approx(f["energy_zero"], abs=2e-6)
    assert cols[10] == pytest.approx(f["free_energy_change"], abs=2e-6)
    assert cols[11] == pytest.approx(f["energy_zero"] + f["free_energy_change"], abs=3e-6)
    assert f["free_energy_change"] < 0  # -(pi^2/6)(k_B T)^2 D(mu) to leading order
    # --symmetrize: the fields averaged over the cell's grid symmetries, as model.symmetrize_fields gives them
    res = subprocess.run([sys.executable, "-m", "ednn.cli", "predict", str(tmp_path / "run" / "model"), str(path),
                          "--temperature", "1500", "--symmetrize", "-o", str(tmp_path / "s.csv")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    m.symmetrize_fields = True
    with Dataset(path) as ds:
        es_sym = m.electronic_structure(ds[1], 1500.0)
    cols = (tmp_path / "s.csv").read_text().strip().splitlines()[2].split(",")
    assert float(cols[4]) == pytest.approx(es_sym["band_energy"], abs=2e-6)
    assert abs(es_sym["band_energy"] - es["band_energy"]) > 1e-5  # the average is another prediction
    res = subprocess.run([sys.executable, "-m", "ednn.cli", "predict", str(tmp_path / "energy" / "model"), str(path),
                          "--symmetrize"], capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "--symmetrize averages per-voxel fields" in res.stderr


def test_ldos_moment_terms_are_the_density_and_band_energy_errors(al_ldos_set, tmp_path):
    """`train.field_moment_weight` / `field_density_weight` weight the errors of the density and of the band
    energy relative to mu: the trainer's moments of an LDOS error equal the physics code's density and
    int (E - mu) f D dE of that error (network units and the space-to-depth layout undone), over the
    training data's mean electron density; a model without an LDOS is refused."""
    import tensorflow as tf

    from ednn.config import normalize_config
    from ednn.data import Dataset
    from ednn.electronic import band_energy_weights, occupation_weights
    from ednn.parallel.serial import SerialBackend
    from ednn.train import Trainer, train
    from ednn.train.trainer import ldos_moment_errors

    path, grid = al_ldos_set
    cfg = _ldos_config(path, tmp_path / "mom", epochs=1)
    cfg["train"].update({"field_moment_weight": 10.0, "field_density_weight": 1.0})
    model = train(cfg)
    meta = model.meta["electronic"]
    with Dataset(path) as ds:
        mus = [ds.info(i)["fermi_level_eV"] for i in range(len(ds))]
        vol = sum(abs(np.linalg.det(ds.cell(i))) for i in range(len(ds)))
        at = ds[0]
    assert meta["fermi_level_eV"] == pytest.approx(float(np.median(mus)))
    assert meta["electron_density"] == pytest.approx(12.0 * len(mus) / vol, rel=1e-12)
    tr = Trainer(model, normalize_config({"train": cfg["train"]})["train"], 0, SerialBackend(), None)
    mom = tr._ldos_moments(tf)
    f = model.fields["ldos"]
    rng = np.random.default_rng(0)
    err = rng.normal(size=(12, 12, 12, grid.n)) * 1e-3  # an LDOS error on the DFT grid, 1/(eV A^3)
    diff = f.to_network(err)[None]  # (1, 6, 6, 6, 8 * n_E)
    real = np.ones(diff.shape[:-1] + (1,), np.float32)
    dn, row_n, row_b = (t.numpy() for t in ldos_moment_errors(tf, tf.constant(diff), tf.constant(real), *mom))
    mu, temp, nbar = meta["fermi_level_eV"], meta["electronic_temperatures_K"][0], meta["electron_density"]
    occ = occupation_weights(grid, mu, temp)
    dens = err @ occ / nbar  # relative density error per DFT voxel
    np.testing.assert_allclose(np.sort(dn.ravel()), np.sort(dens.ravel()), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(dn[0, 1, 2, 0, :].reshape(2, 2, 2), dens[2:4, 4:6, 0:2], rtol=1e-4, atol=1e-7)
    assert row_n[0] == pytest.approx(dens.mean(), rel=1e-4, abs=1e-8)
    band = err @ (band_energy_weights(grid, mu, temp) - mu * occ) / nbar
    assert row_b[0] == pytest.approx(band.mean(), rel=1e-4, abs=1e-8)
    # half the pixels owned: the means are over the owned fine voxels only
    real[:, 3:] = 0
    _, row_n, _ = ldos_moment_errors(tf, tf.constant(diff * real), tf.constant(real), *mom)
    assert float(row_n[0]) == pytest.approx(dens[:6].mean(), rel=1e-4, abs=1e-8)
    assert np.isfinite(model.electronic_structure(at, 600.0)["band_energy"])
    dens_model = _model(channels=1, field="density")
    with pytest.raises(ConfigError, match="field_moment_weight"):
        Trainer(dens_model, normalize_config({"train": {"field_moment_weight": 1.0}})["train"], 0, SerialBackend(),
                None)


def test_ldos_moment_weights_add_the_electron_and_band_terms_separately(al_ldos_set, tmp_path):
    """`field_moment_weight` weights each cell's squared electron (mean density) error and `field_band_weight`
    its squared band-energy error, each on its own; `field_band_weight: null` (the default) means the same
    weight as `field_moment_weight`. Checked on the training step's loss against the moments of the error."""
    import tensorflow as tf

    from ednn.config import normalize_config
    from ednn.parallel.serial import SerialBackend
    from ednn.train import Trainer, train
    from ednn.train.trainer import ldos_moment_errors

    path, _ = al_ldos_set
    cfg = _ldos_config(path, tmp_path / "mom", epochs=1)
    model = train(cfg)
    net, f = model.network, model.fields["ldos"]
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(2, 7, 7, 7, model.in_channels)).astype(np.float32))
    out = net(x).numpy()
    mask = np.ones(out.shape[:-1], np.float32)
    mask[1, :, :, 4:] = 0  # the second row owns part of its pixels
    lab = (out[..., f.start : f.start + f.net_channels] + rng.normal(size=out.shape[:-1] + (f.net_channels,))
           * 0.05).astype(np.float32)
    weights0 = net.get_weights()

    def loss(w_mom, w_band):
        train_cfg = normalize_config({"train": {**cfg["train"], "field_moment_weight": w_mom,
                                                "field_band_weight": w_band}})["train"]
        tr = Trainer(model, train_cfg, 0, SerialBackend(), None)
        net.set_weights(weights0)
        val = tr.step_fn(x, tf.constant(mask), tf.constant([0, 1], tf.int32), tf.zeros([2]), tf.ones([2]),
                         tf.constant(lab))[0]
        net.set_weights(weights0)
        return float(val), tr

    base, _ = loss(0.0, 0.0)
    l_n, tr = loss(30.0, 0.0)
    l_b, _ = loss(0.0, 7.0)
    real = tf.constant(mask[..., None])
    diff = (out[..., f.start : f.start + f.net_channels] - lab) * mask[..., None]
    _, row_n, row_b = (t.numpy() for t in ldos_moment_errors(tf, tf.constant(diff), real, *tr._ldos_moments(tf)))
    assert abs(row_n).min() > 0 and abs(row_b).min() > 0
    assert l_n - base == pytest.approx(30.0 * np.mean(row_n**2), rel=1e-3)
    assert l_b - base == pytest.approx(7.0 * np.mean(row_b**2), rel=1e-3)
    assert loss(30.0, 7.0)[0] - base == pytest.approx((l_n - base) + (l_b - base), rel=1e-4)
    assert loss(30.0, None)[0] == pytest.approx(loss(30.0, 30.0)[0], rel=1e-6)
    dens_model = _model(channels=1, field="density")
    with pytest.raises(ConfigError, match="field_band_weight"):
        Trainer(dens_model, normalize_config({"train": {"field_band_weight": 1.0}})["train"], 0, SerialBackend(),
                None)



def test_evaluate_a_density_model_on_sheets_in_boxes(tmp_path):
    """`evaluate` on a density model of sheets in 20 A boxes (the sheet density data): per record the density
    MAPE over the voxels above 1 % of the label's maximum and the electrons, exactly as computed from the
    model's prediction and the stored label, beside the mean-density baseline; and the slice figure."""
    from ednn.atoms import structures as st
    from ednn.data import Dataset, DatasetWriter
    from ednn.workflows.evaluate import evaluate

    m = _model(channels=1, field="density", layers=2, seed=4)
    path = tmp_path / "sheets.h5"
    with DatasetWriter(path) as w:
        for reps in ((2, 2), (3, 2)):
            at = st.graphene(*reps)
            at.numbers[:] = 13
            label = np.abs(m.predict_field(at, "density")[..., 0]) * 1.1 + 1e-3  # positive
            w.append(at, targets={"density": label.astype(np.float32)})
    m.save(tmp_path / "m")
    res = evaluate(str(tmp_path / "m"), str(path), str(tmp_path / "ev"))["density"]
    with Dataset(path) as ds:
        res_mean = np.mean([ds.target("density", i).astype(np.float64).mean() for i in range(len(ds))])
        for i, r in enumerate(res["records"]):
            at, label = ds[i], ds.target("density", i).astype(np.float64)
            pred = m.predict_field(at, "density")[..., 0]
            mask = label > 0.01 * label.max()
            assert r["voxels_counted"] == mask.sum() < label.size  # the vacuum is left out
            want = 100 * np.mean(np.abs(pred[mask] - label[mask]) / label[mask])
            assert r["density_mape_pct"] == pytest.approx(want, rel=1e-9) and want > 0
            n_e = label.sum() * at.get_volume() / label.size
            assert r["electrons_pct"] == pytest.approx(100 * (pred.sum() * at.get_volume() / label.size - n_e) / n_e)
            base = 100 * np.mean(np.abs(res_mean - label[mask]) / label[mask])
            assert r["mean_baseline_mape_pct"] == pytest.approx(base, rel=1e-9)
    assert res["density_mape_pct"]["max"] >= res["density_mape_pct"]["mae"] > 0
    assert (tmp_path / "ev" / "density.png").stat().st_size > 0
    # symmetrize=True (ednn evaluate --symmetrize): the same metrics of the field averaged over the box's 8 grid ops
    sym = evaluate(str(tmp_path / "m"), str(path), str(tmp_path / "ev_sym"), symmetrize=True)
    assert sym["symmetrize_fields"] is True
    m.symmetrize_fields = True
    with Dataset(path) as ds:
        at, label = ds[1], ds.target("density", 1).astype(np.float64)
        pred = m.predict_field(at, "density")[..., 0]
    mask = label > 0.01 * label.max()
    want = 100 * np.mean(np.abs(pred[mask] - label[mask]) / label[mask])
    assert sym["density"]["records"][1]["density_mape_pct"] == pytest.approx(want, rel=1e-9)
    assert want != pytest.approx(res["records"][1]["density_mape_pct"], rel=1e-6)
