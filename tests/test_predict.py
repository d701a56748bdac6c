"""Model folders, prediction CLI/evaluation, trained-model physics, streaming, calculator."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import make_random_bcn

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from test_train import SMALL_CFG, toy_structures  # noqa: E402

from ednn.errors import InputError, ModelError, SpeciesError  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A briefly trained model (weights moved away from the initialization) and its run folder."""
    from ednn.train import train

    out = tmp_path_factory.mktemp("run")
    structs, E = toy_structures(16)
    cfg = json.loads(json.dumps(SMALL_CFG))
    cfg["out"] = str(out)
    cfg["train"]["epochs"] = 3
    model = train(cfg, structures=structs, energies=E)
    return model, out, structs, E


def _sheet(at, vac=15.0):
    at = at.copy()
    at.cell[2] = [0, 0, vac]
    at.pbc = (True, True, False)
    return at


def test_trained_model_is_extensive(trained):
    model = trained[0]
    cell = _sheet(make_random_bcn(seed=4, reps=(2, 2)))  # 2.46 A cells, spacing 2.46/5: commensurate
    e1 = model.predict_energy(cell)
    assert model.predict_energy(cell.repeat((3, 3, 1))) == pytest.approx(9 * e1, rel=1e-5)
    # the network part alone, not only the (trivially extensive) reference energies
    net1 = e1 - model.counts(cell) @ model.refs
    sup = cell.repeat((3, 3, 1))
    net9 = model.predict_energy(sup) - model.counts(sup) @ model.refs
    assert abs(net1) > 1e-4
    assert net9 == pytest.approx(9 * net1, rel=1e-4)


def test_save_load_roundtrip_folder_and_zip(trained, tmp_path):
    import ednn

    model, out, structs, _ = trained
    ref = model.predict_energies(structs[:4])
    m1 = ednn.load(str(out / "model"))
    np.testing.assert_array_equal(m1.predict_energies(structs[:4]), ref)
    z = model.save(str(tmp_path / "m.zip"))
    m2 = ednn.load(z)
    np.testing.assert_array_equal(m2.predict_energies(structs[:4]), ref)
    cfg = json.load(open(out / "model" / "config.json"))
    assert cfg["grid"]["species"] == ["B", "C", "N"] and cfg["units"]["energy"] == "eV"
    e = cfg["outputs"]["energy"]
    assert set(e["reference_energies"]) == {"B", "C", "N"} and e["scale"] > 0 and e["unit"] == "eV"
    assert cfg["ednn_version"] == ednn.__version__
    assert m1.grid == model.grid


def test_load_errors(tmp_path):
    import ednn

    with pytest.raises(ModelError, match="does not exist"):
        ednn.load(str(tmp_path / "nothing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="lacks"):
        ednn.load(str(tmp_path / "empty"))


def test_model_files_of_the_earlier_format_load(trained, tmp_path):
    """Format ednn-model-1 (energy only: reference energies and scale at the top level) still loads, and a
    format this ednn does not know is refused by name."""
    import shutil

    import ednn

    model, out, structs, _ = trained
    old = tmp_path / "old"
    shutil.copytree(out / "model", old)
    cfg = json.load(open(old / "config.json"))
    e = cfg.pop("outputs")["energy"]
    cfg.update(format="ednn-model-1", reference_energies=e["reference_energies"], scale=e["scale"])
    cfg["model"] = {k: v for k, v in cfg["model"].items() if k not in ("energy", "fields")}  # keys of format 1
    json.dump(cfg, open(old / "config.json", "w"))
    np.testing.assert_array_equal(ednn.load(str(old)).predict_energies(structs[:3]), model.predict_energies(structs[:3]))
    cfg["format"] = "ednn-model-9"
    json.dump(cfg, open(old / "config.json", "w"))
    with pytest.raises(ModelError, match="ednn-model-9"):
        ednn.load(str(old))


def test_unknown_species_at_prediction(trained):
    from ase import Atoms

    model = trained[0]
    at = _sheet(make_random_bcn(seed=0, reps=(2, 2)))
    at = at + Atoms("O", positions=[[0.5, 0.5, 7.5]])
    with pytest.raises(SpeciesError, match="O"):
        model.predict_energy(at)


def test_streaming_large_sheet_equals_whole_image(trained):
    from ednn.predict import stream_energy

    model = trained[0]
    big = _sheet(make_random_bcn(seed=9, reps=(20, 15)))  # 600 atoms, 100 x 75 pixels
    whole = model.predict_energies([big])[0]
    assert stream_energy(model, big, rows_per_strip=7) == pytest.approx(whole, rel=1e-6)


def test_stream_predict_map_and_progress(trained):
    """The block-summed map is the energy map summed over blocks (edges included), it adds up to the energy
    without the per-atom references, and progress reaches every row once, in order."""
    from ednn.predict import stream_predict
    from ednn.predict.stream import stream_energy_map

    model = trained[0]
    big = _sheet(make_random_bcn(seed=9, reps=(20, 15)))  # 100 x 75 pixels: blocks of 8 leave ragged edges
    seen = []
    res = stream_predict(model, big, rows_per_strip=7, map_block=8, on_progress=lambda d, n: seen.append((d, n)))
    full = stream_energy_map(model, big)
    n0, n1 = full.shape
    assert res["map"].shape == (-(-n0 // 8), -(-n1 // 8)) and res["n_rows"] == n0
    ref = np.zeros(res["map"].shape)
    for i in range(n0):
        for j in range(n1):
            ref[i // 8, j // 8] += full[i, j]
    np.testing.assert_allclose(res["map"], ref, rtol=1e-9, atol=1e-9)
    assert res["energy"] == pytest.approx(model.predict_energies([big])[0], rel=1e-6)
    assert res["map"].sum() == pytest.approx(res["energy"] - model.counts(big) @ model.refs, rel=1e-6)
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == n0 and all(n == n0 for _, n in seen)
    with pytest.raises(InputError, match="map_block"):
        stream_predict(model, big, map_block=0)
    # a full-resolution window across several chunks is the energy map's window
    win = stream_predict(model, big, rows_per_strip=7, window=(10, 20, 30, 40))
    np.testing.assert_allclose(win["window"], full[10:40, 20:60], rtol=1e-9, atol=1e-9)
    assert win["window_origin"] == (10, 20)
    for bad in [(90, 0, 20, 5), (0, 0, 0, 5), (-1, 0, 5, 5)]:
        with pytest.raises(InputError, match="window"):
            stream_predict(model, big, window=bad)


def test_calculator_energy_forces_and_maps(trained):
    model = trained[0]
    at = _sheet(make_random_bcn(seed=1, reps=(2, 3)))
    at.calc = model.calculator(maps=True)
    e = at.get_potential_energy()
    assert e == pytest.approx(model.predict_energy(at), rel=1e-9)
    f = at.get_forces()
    assert f.shape == (len(at), 3) and np.all(np.isfinite(f))
    assert np.abs(f.sum(0)).max() < 1e-3 * max(1.0, np.abs(f).max())  # translation invariance: no net force
    assert at.calc.results["energy_map"].sum() == pytest.approx(e, rel=1e-5)
    assert at.calc.results["tile_energies"].sum() == pytest.approx(e, rel=1e-5)


def test_cli_predict_and_evaluate(trained, tmp_path):
    import ase.io

    from ednn.cli import main
    from ednn.data import DatasetWriter

    model, out, structs, E = trained
    xyz = str(tmp_path / "s.xyz")
    ase.io.write(xyz, structs[:5], format="extxyz")
    csv = str(tmp_path / "pred.csv")
    assert main(["predict", str(out / "model"), xyz, "-o", csv]) == 0
    rows = open(csv).read().strip().splitlines()
    assert len(rows) == 6
    e_cli = np.array([float(r.split(",")[2]) for r in rows[1:]])
    np.testing.assert_allclose(e_cli, model.predict_energies(structs[:5]), rtol=1e-7)
    # --map: one structure streamed, its map and regions written; several structures are refused
    big = _sheet(make_random_bcn(seed=4, reps=(12, 10)))
    one = str(tmp_path / "one.xyz")
    ase.io.write(one, big, format="extxyz")
    # the training sheets were flat, this one is rattled in z: outside the training domain, so --force
    assert main(["predict", str(out / "model"), one, "--map", str(tmp_path / "map0")]) == 2
    assert not (tmp_path / "map0").exists()
    assert main(["predict", str(out / "model"), one, "--map", str(tmp_path / "map"), "--regions", "2",
                 "--zoom", "16", "--force"]) == 0
    summary = json.load(open(tmp_path / "map" / "summary.json"))
    zoom = np.load(tmp_path / "map" / "energy_zoom.npy")  # the centre 16 x 16 pixels of the energy map
    emap = model.energy_map(big, include_reference=False)
    o0, o1 = (emap.shape[0] - 16) // 2, (emap.shape[1] - 16) // 2
    assert summary["zoom_origin"] == [o0, o1]
    np.testing.assert_allclose(zoom, emap[o0 : o0 + 16, o1 : o1 + 16], rtol=1e-5, atol=1e-7)
    assert summary["energy"] == pytest.approx(model.predict_energies([big])[0], rel=1e-6)
    assert len(json.load(open(tmp_path / "map" / "regions.json"))) == 4
    assert main(["predict", str(out / "model"), xyz, "--map", str(tmp_path / "map2")]) == 2
    one_h5 = str(tmp_path / "one.h5")  # an ednn record is read as plain arrays: the same result
    with DatasetWriter(one_h5) as w:
        w.append(big)
    assert main(["predict", str(out / "model"), one_h5, "--map", str(tmp_path / "map3"), "--regions", "2",
                 "--force"]) == 0
    assert json.load(open(tmp_path / "map3" / "summary.json"))["energy"] == pytest.approx(summary["energy"], rel=1e-9)
    h5 = str(tmp_path / "d.h5")
    with DatasetWriter(h5, metadata={"labeller": {"name": "toy"}}) as w:
        for a, e in zip(structs, E):
            w.append(a, energy=float(e))
    ev = str(tmp_path / "eval")
    assert main(["evaluate", str(out / "model"), h5, "--out", ev]) == 0
    m = json.load(open(os.path.join(ev, "metrics.json")))
    pred = model.predict_energies(structs)
    n = np.array([len(a) for a in structs])
    assert m["mae_mev_per_atom"] == pytest.approx(1000 * np.mean(np.abs(pred - E) / n), rel=1e-6)
    assert m["n"] == len(structs) and m["by_size"]
    assert os.path.getsize(os.path.join(ev, "parity.png")) > 1000
    assert os.path.exists(os.path.join(ev, "learning_curve.png"))
    assert "forces" not in m  # this dataset has none
    # with forces in the data, evaluate reports the force errors of the model's gradient
    rng = np.random.default_rng(0)
    F = [rng.normal(size=(len(a), 3)) for a in structs]
    h5f = str(tmp_path / "df.h5")
    with DatasetWriter(h5f, metadata={"labeller": {"name": "toy"}}) as w:
        for a, e, f in zip(structs, E, F):
            w.append(a, energy=float(e), forces=f)
    assert main(["evaluate", str(out / "model"), h5f, "--out", ev]) == 0
    m = json.load(open(os.path.join(ev, "metrics.json")))
    df = np.concatenate([(p - f).ravel() for p, f in zip(model.predict_forces(structs), F)])
    assert m["forces"]["mae_ev_per_a"] == pytest.approx(np.abs(df).mean(), rel=1e-6)
    assert m["forces"]["n_components"] == 3 * int(n.sum())
    assert main(["evaluate", str(out / "model"), str(tmp_path / "missing.h5")]) == 2  # clear error, exit 2


def test_trained_far_apart_copies_add(trained):
    from ase import Atoms

    model = trained[0]
    sp = model.grid.spacing
    L = 24 * sp
    pos = [[1.42 * np.cos(t) + 5, 1.42 * np.sin(t) + 5, 7.5] for t in np.arange(6) * np.pi / 3]
    one = Atoms("C3N3", positions=pos, cell=[L, L, 15], pbc=(True, True, False))
    big = Atoms("C3N3", positions=pos, cell=[3 * L, 3 * L, 15], pbc=(True, True, False))
    two = big + Atoms("C3N3", positions=np.array(pos) + [29 * sp, 37 * sp, 0.0])
    two.cell, two.pbc = big.cell, big.pbc
    e1 = model.predict_energy(one)
    assert model.predict_energy(two) == pytest.approx(2 * e1, rel=1e-5)
    assert model.predict_energy(big) == pytest.approx(e1, rel=1e-5)  # more vacuum adds nothing


def test_predict_energies_streams_huge_structures(trained, monkeypatch):
    import ednn.predict.model as models

    model = trained[0]
    structs = [_sheet(make_random_bcn(seed=s, reps=(6 + s, 5))) for s in range(3)]
    ref = model.predict_energies(structs)
    monkeypatch.setattr(models, "STREAM_PIXELS", 800)  # 750, 875, 1000 px: the 2nd and 3rd stream
    import ednn.predict.model as predict

    calls = []
    orig = predict.stream_energy
    monkeypatch.setattr(predict, "stream_energy", lambda m, a: calls.append(len(a)) or orig(m, a))
    np.testing.assert_allclose(model.predict_energies(structs), ref, rtol=1e-6)
    assert calls == [len(structs[1]), len(structs[2])]


def test_predict_large_regions_add_up_and_files(trained, tmp_path):
    """predict_large: the regions' energies (references of their atoms included) add up to the total, their
    atoms to the structure's; the map, summary, regions and PNG are written."""
    from ednn.workflows.large import predict_large

    model = trained[0]
    big = _sheet(make_random_bcn(seed=4, reps=(20, 15)))
    res = predict_large(model, big, out=tmp_path / "big", map_block=6, regions=3, progress=False, rows_per_strip=9)
    assert res["energy"] == pytest.approx(model.predict_energies([big])[0], rel=1e-6)
    assert len(res["regions"]) == 9
    assert sum(r["energy"] for r in res["regions"]) == pytest.approx(res["energy"], rel=1e-9)
    assert sum(r["n_atoms"] for r in res["regions"]) == len(big)
    sym = big.get_chemical_symbols()
    assert res["counts"] == {s: sym.count(s) for s in res["counts"]}
    for name in ("summary.json", "regions.json", "energy_map.npy", "energy_map.png"):
        assert (tmp_path / "big" / name).stat().st_size > 0
    assert json.loads((tmp_path / "big" / "summary.json").read_text())["n_atoms"] == len(big)
    np.testing.assert_array_equal(np.load(tmp_path / "big" / "energy_map.npy"), res["map"])
    # the same structure as plain arrays
    arrays = (big.positions, big.numbers, big.cell.array, big.pbc)
    assert predict_large(model, arrays, progress=False)["energy"] == pytest.approx(res["energy"], rel=1e-9)
