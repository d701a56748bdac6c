"""Per-voxel outputs end to end on a target whose answer is known exactly.

The target is a fixed nonlinear local functional of the Gaussian density that
the network sees, ``t = x_C x_N + tanh(2 x_B) / 2 - 0.3 x_C^2`` (``x``: the
species channels times the Gaussian unit), stored as ``targets/toy`` in an
HDF5 dataset and learned through the same pipeline as the energy: dataset,
config, training loss and metrics, model file, whole-image, tiled and streamed
prediction.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ednn  # noqa: E402
from ednn.atoms import structures as st  # noqa: E402
from ednn.data import DatasetWriter  # noqa: E402
from ednn.errors import ConfigError, DatasetError, InputError  # noqa: E402
from ednn.image.grid import GridSpec  # noqa: E402
from ednn.image.pipeline import gaussian_unit  # noqa: E402
from ednn.predict.stream import stream_outputs  # noqa: E402
from ednn.properties import Property, register  # noqa: E402
from ednn.train import train  # noqa: E402

TOY = register(Property("toy", "arb. unit", "voxel", None, "known-answer test field"))
GRID = {"species": ["B", "C", "N"], "spacing": 2.495 / 4, "sigma": 0.5, "heights": 0, "focus": 8}
SPEC = GridSpec(species=("B", "C", "N"), spacing=2.495 / 4, sigma=0.5, heights=0)
MODEL = {"layers": 2, "filters": 16, "readout": [16]}


def toy_field(atoms) -> np.ndarray:
    x = ednn.rasterize(atoms, SPEC, dtype=np.float64) * gaussian_unit(SPEC)
    b, c, n = x[..., 0], x[..., 1], x[..., 2]
    return (c * n + 0.5 * np.tanh(2 * b) - 0.3 * c**2)[..., None]


def toy_structures(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [st.rattle(st.bcn_alloy(int(rng.integers(2, 4)), int(rng.integers(2, 4)), rng=seed * 1000 + i), 0.08,
                      rng=i) for i in range(n)]


def _write(path, structs, targets=True, energies=None):
    with DatasetWriter(path) as w:
        for i, a in enumerate(structs):
            w.append(a, energy=None if energies is None else energies[i],
                     targets={"toy": toy_field(a)[..., 0]} if targets else None)
    return str(path)


def _config(tmp, data, **train_kw):
    cfg = {"out": str(tmp / "run"), "data": {"train": data, "targets": ["toy"], "val_fraction": 0.2,
                                             "test_fraction": 0.2},
           "grid": GRID, "model": MODEL,
           "train": {"epochs": 400, "batch_size": 4, "learning_rate": 5e-3, "progress": False, **train_kw}}
    path = tmp / "toy.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, cfg


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("toy")
    structs = toy_structures(30)
    data = _write(tmp / "toy.h5", structs)
    path, _ = _config(tmp, data)
    model = train(str(path))  # from a config file, like `ednn train`
    return model, structs, tmp


def test_field_training_beats_the_mean_20x(toy_run):
    model, structs, tmp = toy_run
    split = json.load(open(tmp / "run" / "split.json"))
    assert split["rule"] == "ednn.data.split_indices" and not set(split["test"]) & set(split["val"])
    assert not set(split["test"]) & set(split["train"])
    labels = [toy_field(a) for a in structs]
    mean = np.concatenate([labels[i].ravel() for i in split["train"]]).mean()  # the training mean
    test = split["test"]
    err_mean = np.sqrt(np.mean(np.concatenate([(labels[i] - mean).ravel() ** 2 for i in test])))
    err = np.sqrt(np.mean(np.concatenate([(model.predict_field(structs[i]) - labels[i]).ravel() ** 2
                                          for i in test])))
    assert err_mean / err >= 20, (err_mean, err)
    log = json.load(open(tmp / "run" / "log.json"))
    assert log[-1]["val_field_toy_rmse"] < 0.1 * log[0]["val_field_toy_rmse"]


def test_relative_field_loss_is_each_voxels_error_over_its_label_above_the_floor(tmp_path):
    """`train.field_relative_floor` f: the field term is the mean of ((pred - label) / max(|label|, f))^2 in
    network units; the logged validation loss equals it recomputed from the model's predictions by hand."""
    structs = toy_structures(8, seed=3)
    data = _write(tmp_path / "toy.h5", structs)
    floor = 0.3
    _, cfg = _config(tmp_path, data, epochs=2, field_relative_floor=floor, patience=0, restore_best=False,
                     deterministic=True)
    cfg["data"].update({"val_fraction": 0.25, "test_fraction": 0.0})
    model = train(cfg)
    split = json.load(open(tmp_path / "run" / "split.json"))
    f = model.fields["toy"]
    terms, plain = [], []
    for i in split["val"]:
        lab = f.to_network(toy_field(structs[i])).astype(np.float64)
        pred = f.to_network(model.predict_field(structs[i])).astype(np.float64)
        terms.append(((pred - lab) / np.maximum(np.abs(lab), floor)).ravel() ** 2)
        plain.append((pred - lab).ravel() ** 2)
        below = np.mean(np.abs(lab) < floor)
        assert 0.05 < below < 0.95  # both sides of the floor are in the test
    log = json.load(open(tmp_path / "run" / "log.json"))
    want = np.mean(np.concatenate(terms))
    assert log[-1]["val_loss"] == pytest.approx(want, rel=1e-4)
    assert abs(np.mean(np.concatenate(plain)) / want - 1) > 0.1  # the plain squared error is another number
    with pytest.raises(ConfigError, match="field_relative_floor"):
        train(_config(tmp_path, data, field_relative_floor=0.0)[1])


def test_whole_tiled_and_streamed_fields_agree(toy_run):
    model = toy_run[0]
    at = st.rattle(st.bcn_alloy(5, 4, rng=7), 0.08, rng=7)  # 20 x 16 pixels: several tiles and strips
    whole = model.predict_field(at, "toy", method="whole")
    assert whole.shape == SPEC.pixels_along([5 * 2.495, 4 * 2.495]) + (1,)
    np.testing.assert_allclose(model.predict_field(at, method="tiles"), whole, rtol=0, atol=1e-5)
    np.testing.assert_allclose(model.predict_field(at, method="stream"), whole, rtol=0, atol=1e-5)
    strips = stream_outputs(model, at, rows_per_strip=5)  # many strips with the periodic wrap
    np.testing.assert_allclose(model.fields["toy"].from_network(strips), whole, rtol=0, atol=1e-5)


def test_supercell_field_is_the_cell_field_tiled(toy_run):
    model = toy_run[0]
    at = st.rattle(st.bcn_alloy(3, 2, rng=3), 0.08, rng=3)
    f = model.predict_field(at)
    np.testing.assert_allclose(model.predict_field(at.repeat((2, 2, 1))), np.tile(f, (2, 2, 1)), rtol=0, atol=1e-5)


def test_model_file_keeps_the_field(toy_run, tmp_path):
    model, structs, tmp = toy_run
    loaded = ednn.load(str(tmp / "run" / "model"))
    np.testing.assert_array_equal(loaded.predict_field(structs[0]), model.predict_field(structs[0]))
    cfg = json.load(open(tmp / "run" / "model" / "config.json"))
    assert cfg["outputs"]["fields"]["toy"]["property"]["unit"] == "arb. unit"
    assert cfg["units"]["toy"] == "arb. unit" and "energy" not in cfg["outputs"]
    with pytest.raises(ednn.ModelError, match="no energy"):
        loaded.predict_energy(structs[0])


def test_evaluate_reports_field_errors(toy_run, tmp_path):
    from ednn.workflows.evaluate import evaluate

    model, structs, tmp = toy_run
    m = evaluate(str(tmp / "run" / "model"), str(tmp / "toy.h5"), str(tmp_path / "eval"))
    f = m["fields"]["toy"]
    assert f["unit"] == "arb. unit" and f["n_structures"] == len(structs)
    assert f["rmse"] < f["mean_baseline_rmse"] / 10 and f["mae"] <= f["rmse"] <= f["max"]
    assert "mae_mev_per_atom" not in m  # a field model has no energy errors
    assert json.load(open(tmp_path / "eval" / "metrics.json"))["fields"]["toy"]["rmse"] == f["rmse"]


def test_energy_and_field_in_one_model(tmp_path):
    """Both outputs from one network: the energy stays extensive, the field tiles with the supercell."""
    structs = toy_structures(8, seed=1)
    E = [-7.5 * len(a) + float(toy_field(a).sum()) * 0.01 for a in structs]
    cfg = {"out": str(tmp_path / "both"), "grid": GRID, "model": MODEL,
           "data": {"targets": ["energy", "toy"], "val_fraction": 0.25, "test_fraction": 0.0},
           "train": {"epochs": 3, "batch_size": 2, "progress": False}}
    m = train(cfg, structures=structs, energies=E, fields={"toy": [toy_field(a) for a in structs]})
    assert m.n_out == 2 and m.fields["toy"].start == 1
    at = structs[0]
    big = at.repeat((2, 2, 1))
    assert m.predict_energy(big) == pytest.approx(4 * m.predict_energy(at), rel=1e-5)
    np.testing.assert_allclose(m.predict_field(big), np.tile(m.predict_field(at), (2, 2, 1)), atol=1e-5)
    log = json.load(open(tmp_path / "both" / "log.json"))
    assert {"val_mae_mev", "val_field_toy_rmse", "val_loss"} <= set(log[-1])


# ------------------------------------------------------------------ bad input
def test_target_on_another_grid_is_refused(tmp_path):
    structs = toy_structures(4, seed=2)
    bad = [np.zeros((7, 5)) for _ in structs]  # not the model's pixels
    cfg = {"out": str(tmp_path / "r"), "grid": GRID, "model": MODEL, "data": {"targets": ["toy"]},
           "train": {"epochs": 1, "progress": False}}
    with pytest.raises(InputError, match=r"structure \d+: per-voxel target 'toy' has shape \(7, 5\).*model's grid"):
        train(cfg, structures=structs, fields={"toy": bad})


def test_dataset_lacking_the_target_is_refused(tmp_path):
    data = _write(tmp_path / "plain.h5", toy_structures(3, seed=3), targets=False, energies=[-1.0, -2.0, -3.0])
    path, _ = _config(tmp_path, data)
    with pytest.raises(DatasetError, match=r"lacks the requested target\(s\) \['toy'\]"):
        train(str(path))


def test_resume_needs_a_checkpoint_and_the_same_config(tmp_path):
    structs = toy_structures(5, seed=4)
    fields = {"toy": [toy_field(a) for a in structs]}
    cfg = {"out": str(tmp_path / "r"), "grid": GRID, "model": MODEL,
           "data": {"targets": ["toy"], "val_fraction": 0.2, "test_fraction": 0.0},
           "train": {"epochs": 2, "progress": False}}
    with pytest.raises(ConfigError, match="cannot resume.*checkpoint.npz does not exist"):
        train(cfg, resume=True, structures=structs, fields=fields)
    train(cfg, structures=structs, fields=fields)
    saved = json.load(open(tmp_path / "r" / "config.json"))
    changed = json.loads(json.dumps(cfg))
    changed["train"]["learning_rate"] = 1e-2
    changed["model"]["filters"] = 8
    with pytest.raises(ConfigError, match=r"differs .* in \['model.filters', 'train.learning_rate'\]"):
        train(changed, resume=True, structures=structs, fields=fields)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(cfg, structures=structs, fields=fields)  # no silent overwrite
    assert json.load(open(tmp_path / "r" / "config.json")) == saved  # the run's config is untouched
    train(cfg, resume=True, structures=structs, fields=fields)  # the same config resumes (nothing left to do)
    assert json.load(open(tmp_path / "r" / "config.json")) == saved


def test_size_spectrum_split_puts_a_tiled_field_on_the_small_cells_lattice():
    """experiments/ldos_size_spectrum.py: the error of a field that is a small cell's field tiled 2x2x2 lies
    on that cell's reciprocal lattice only; a cosine of the supercell's period lies off it, and removing the
    off-lattice error leaves exactly the tiled part's."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "experiments" / "ldos_size_spectrum.py"
    spec = importlib.util.spec_from_file_location("ldos_size_spectrum", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rng = np.random.default_rng(0)
    label = 1.0 + 0.1 * np.tile(rng.random((6, 6, 6)), (2, 2, 2))
    tiled_err = 0.01 * np.tile(rng.standard_normal((6, 6, 6)), (2, 2, 2))
    off = 0.02 * np.cos(2 * np.pi * np.arange(12) / 12)[:, None, None] * np.ones((12, 12, 12))
    s = mod.split_error(label + tiled_err, label, (2, 2, 2))
    assert s["error_power_off_lattice"] < 1e-25 and s["label_power_off_lattice"] < 1e-25
    s = mod.split_error(label + tiled_err + off, label, (2, 2, 2))
    assert np.isclose(s["mape_without_off_lattice_error_pct"], 100 * np.mean(np.abs(tiled_err) / label))
    assert np.isclose(s["mape_without_on_lattice_error_pct"], 100 * np.mean(np.abs(off) / label))
    assert mod.supercell_ratios(np.diag([8.08, 8.08, 12.12]), np.eye(3) * 4.04) == (2, 2, 3)
