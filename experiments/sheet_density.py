"""The electron density of defected graphene / h-BN sheets on the 3D voxel grid (issue 13, must-show 5).

Data (``python -m data_gen.ldos --jobs sheets_defect_density sheets_defect_density_x4``): GPAW LCAO (dzp,
PBE) valence densities of unrelaxed defect sheets (graphene, h-BN; vacancies, divacancies, Stone-Wales,
pores, substitutions) in a 20 A box, on ``2 round(L / 0.4 A)`` points along each cell vector (~0.2 A).
``sheets_defect_density.h5`` (32-48 sites) is split into train / validation / test by the training run
(``split.json``); ``sheets_defect_density_x4.h5`` (cells of 128-192 sites, 4x larger) is never trained on.

Models, all fitted to the same training records:
- ``ednn``: the library's training (``ednn.train``; config below): the species-channel Gaussian image of the
  atoms at 0.4 A, a 3D CNN, ``model.upsample: 2`` onto the label grid; ``vacuum_zero`` (the density of an
  empty tile is exactly zero);
- ``atoms``: the superposition of fitted spherical atomic densities, ``rho(r) = sum_i f_Z(i)(|r - R_i|)``,
  each ``f_Z`` piecewise linear on 0 .. 4 A (0.05 A knots), fitted by weighted least squares on every training
  voxel with weights ``1 / max(rho, 1 % of the maximum)`` (the relative error the metric reads) and a small
  curvature penalty, then scaled to the cell's electron count: the physicist's first guess, with its shapes
  fitted rather than taken from free atoms;
- ``mlp``: a per-voxel MLP on simple local features: the sorted distances from the voxel to its 6 nearest
  atoms of each species (periodic images included; 10 A where a species is absent), MSE on the density.

Metric (``ednn.predict.electronic.density_errors``): the density MAPE over the voxels where the label
exceeds 1 % of its maximum, the electrons of the predicted density against the label's, per record; on the
split's test records and on every _x4 record. ``<model>_ne``: the same model's density scaled to the cell's
valence electrons (what ``predict_density(..., conserve_electrons=True)`` gives; ``atoms`` always is). Output ``experiments/results/<results>.{json,png}``::

    nice python experiments/sheet_density.py --minutes 40
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))
RESULTS = ROOT / "experiments" / "results"
DATA = ROOT / "data" / "ldos"
TRAIN_FILE = "sheets_defect_density.h5"
TRANSFER_FILE = "sheets_defect_density_x4.h5"

CONFIG = {
    "data": {"targets": ["density"], "val_fraction": 0.1, "test_fraction": 0.15, "split_seed": 0},
    "grid": {"dim": 3, "spacing": 0.4, "sigma": 0.5, "cutoff": 3.0, "focus": 4},
    "model": {"layers": 6, "kernel": 3, "filters": 32, "readout": [64], "upsample": 2, "vacuum_zero": True},
    "train": {"epochs": 400, "batch_size": 1, "learning_rate": 1e-3, "schedule": "cosine", "clip_norm": 1.0,
              "patience": 0, "restore_best": False, "progress": False},
    "seed": 0,
}
#: ednn variants: model-config overrides (each trained for the same budget)
VARIANTS = {"ednn": {}, "ednn_k5": {"layers": 4, "kernel": 5}, "ednn_l8": {"layers": 8},
            # trained on a random rotation / mirror of each box every epoch (8 for a rectangular or square box,
            # labels mapped with the atoms), predicted as the mean over them (model.symmetrize_fields)
            "ednn_sym": {"train": {"augment": "symmetry"}, "symmetrize_fields": True},
            # the density error of each voxel relative to its label (train.field_relative_floor), floored at 0.1
            # network units: the metric's threshold, 1 % of a sheet's maximum, is 0.08-0.13 of the training RMS
            "ednn_rel": {"train": {"field_relative_floor": 0.1}},
            "ednn_sym_rel": {"train": {"augment": "symmetry", "field_relative_floor": 0.1}, "symmetrize_fields": True}}

R_MAX, DR = 4.0, 0.05  # the atomic-density baseline's radial range and knot spacing (A)
K_NEAR = 6  # the MLP's neighbours per species


def voxel_points(atoms, shape) -> np.ndarray:
    """Cartesian positions (A) of the voxels of a ``shape`` grid on the cell, C order."""
    frac = np.stack(np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij"), -1).reshape(-1, 3)
    return frac @ np.asarray(atoms.cell)


def _images(atoms) -> tuple[np.ndarray, np.ndarray]:
    """Positions and atomic numbers of the atoms and their in-plane periodic images (shifts -1..1)."""
    cell = np.asarray(atoms.cell)
    shifts = np.array([(i, j, 0) for i in (-1, 0, 1) for j in (-1, 0, 1)]) @ cell
    pos = (atoms.positions[None] + shifts[:, None]).reshape(-1, 3)
    return pos, np.tile(atoms.numbers, len(shifts))


def radial_design(atoms, shape, species):
    """Sparse ``(voxels, len(species) * knots)``: row v holds each atom's piecewise-linear hat weights at
    ``|r_v - R_i|`` in its species' block, so that ``A @ f`` is the superposition of the profiles ``f``."""
    from scipy import sparse
    from scipy.spatial import cKDTree

    knots = int(round(R_MAX / DR)) + 1
    pts = voxel_points(atoms, shape)
    tree = cKDTree(pts)
    pos, num = _images(atoms)
    rows, cols, vals = [], [], []
    col0 = {z: k * knots for k, z in enumerate(species)}
    for p, z in zip(pos, num, strict=True):
        idx = np.asarray(tree.query_ball_point(p, R_MAX - 1e-9), dtype=np.int64)
        if not idx.size:
            continue
        x = np.linalg.norm(pts[idx] - p, axis=1) / DR
        k = np.minimum(x.astype(np.int64), knots - 2)
        w = x - k
        rows += [idx, idx]
        cols += [col0[z] + k, col0[z] + k + 1]
        vals += [1 - w, w]
    return sparse.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(len(pts), len(species) * knots))


def fit_atomic_densities(records, species, curvature: float = 1e-5) -> np.ndarray:
    """The profiles ``f`` (``len(species) * knots``) by weighted least squares over every training voxel.

    ``curvature`` weighs the second differences of each profile against the data (relative to the mean diagonal
    of the normal matrix). On densities that are exactly a superposition of Gaussians (sigma 0.35 A; 5 cells
    fitted, 2 held out) the held-out MAPE is 1.09 / 0.79 % at 1e-3 and 0.29 / 0.27 % at 1e-5 (0.25 / 0.24 %
    unregularised): 1e-5 smooths the profiles beyond the data's reach without flattening their peaks."""
    knots = int(round(R_MAX / DR)) + 1
    n = len(species) * knots
    ata, aty = np.zeros((n, n)), np.zeros(n)
    for at, rho in records:
        a = radial_design(at, rho.shape, species)
        y = rho.ravel().astype(np.float64)
        w = 1.0 / np.maximum(y, 0.01 * y.max()) ** 2
        aw = a.multiply(w[:, None]).tocsr()
        ata += (a.T @ aw).toarray()
        aty += aw.T @ y
    d2 = np.zeros((n, n))
    for s in range(len(species)):  # second differences within each species' block
        for k in range(1, knots - 1):
            row = np.zeros(n)
            row[s * knots + k - 1 : s * knots + k + 2] = (1.0, -2.0, 1.0)
            d2 += np.outer(row, row)
    scale = np.trace(ata) / n
    return np.linalg.solve(ata + curvature * scale * d2, aty)


def local_features(atoms, shape, species) -> np.ndarray:
    """Sorted distances (A) from every voxel to its ``K_NEAR`` nearest atoms of each species (10 A if none)."""
    from scipy.spatial import cKDTree

    pts = voxel_points(atoms, shape)
    pos, num = _images(atoms)
    out = np.full((len(pts), K_NEAR * len(species)), 10.0, dtype=np.float32)
    for s, z in enumerate(species):
        sel = pos[num == z]
        if len(sel):
            d, _ = cKDTree(sel).query(pts, k=min(K_NEAR, len(sel)), distance_upper_bound=10.0)
            d = np.minimum(np.asarray(d).reshape(len(pts), -1), 10.0)
            out[:, s * K_NEAR : s * K_NEAR + d.shape[1]] = d
    return out


def reuse_grown(name: str, cfg: dict):
    """The CNN trained earlier in ``cfg["out"]`` (``--reuse``) and its training seconds, after checking that it
    was trained with ``cfg`` on the same training file, which may have grown since (datasets only append, so its
    first ``split.json["n"]`` records are the ones the run split)."""
    from ldos_model import check_saved_config, load_trained

    from ednn.data import Dataset

    saved = check_saved_config(cfg, ("grid", "model", "train"))
    n_saved = json.loads(Path(cfg["out"], "split.json").read_text())["n"]
    (f,) = cfg["data"]["train"]
    if Path(saved["data"]["train"]).name != Path(f).name:
        raise SystemExit(f"--reuse: {cfg['out']} was trained on {saved['data']['train']}, not on {f}")
    with Dataset(f) as ds:
        if len(ds) < n_saved:
            raise SystemExit(f"--reuse: {f} holds {len(ds)} records, fewer than the {n_saved} the run split")
    return load_trained(name, cfg["out"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=40.0, help="training budget of each model")
    ap.add_argument("--variants", nargs="*", default=["ednn"], help=f"ednn variants (of {list(VARIANTS)})")
    ap.add_argument("--no-mlp", action="store_true", help="skip the MLP baseline")
    ap.add_argument("--out", default=str(ROOT / "runs" / "sheet_density"))
    ap.add_argument("--results", default="sheet_density", help="name of the JSON/PNG in experiments/results")
    ap.add_argument("--data", default=str(DATA), help="folder of the sheet datasets")
    ap.add_argument("--mlp-minutes", type=float, default=None, help="the MLP's budget (default: --minutes)")
    ap.add_argument("--reuse", action="store_true",
                    help="load the CNNs trained earlier in --out (same config and --minutes; checked) instead of "
                         "training them again, e.g. to score them on x4 records labelled since; records the training "
                         "file gained after the run are never-seen test records (role test_new). The fitted atomic "
                         "densities and the MLP are fitted again on the run's training records")
    args = ap.parse_args(argv)
    train_path, transfer_path = Path(args.data) / TRAIN_FILE, Path(args.data) / TRANSFER_FILE

    from ldos_model import train_and_load, train_mlp

    from ednn.data import Dataset
    from ednn.predict.electronic import density_errors

    with Dataset(train_path) as ds:
        species = sorted({int(z) for i in range(len(ds)) for z in ds.numbers(i)})
        n_records = len(ds)
        if len(ds) < 5:
            raise SystemExit(f"{train_path} holds {len(ds)} records: too few to split into train / val / test")
    models, t_train, cfgs = {}, {}, {}
    for name in args.variants:
        cfg = json.loads(json.dumps(CONFIG))
        over = json.loads(json.dumps(VARIANTS[name]))
        cfg["train"].update(over.pop("train", {}))
        cfg["model"].update(over)
        cfg["grid"]["species"] = species
        cfg["data"]["train"] = [str(train_path)]
        cfg["out"] = os.path.join(args.out, name)
        cfg["train"]["max_time_s"] = 60 * args.minutes
        models[name], t_train[name] = (reuse_grown if args.reuse else train_and_load)(name, cfg)
        cfgs[name] = cfg
    split = json.loads(Path(cfgs[args.variants[0]]["out"], "split.json").read_text())
    new = list(range(split["n"], n_records))  # labelled after the run (--reuse): never trained on

    def load(path, idx=None):
        with Dataset(path) as ds:
            return [(ds[i], ds.target("density", i).astype(np.float64), ds.info(i))
                    for i in (range(len(ds)) if idx is None else idx)]

    tr = load(train_path, split["train"])
    te = [(*r, "test") for r in load(train_path, split["test"])] + [(*r, "test_new") for r in load(train_path, new)]
    if transfer_path.exists():
        te += [(*r, "x4") for r in load(transfer_path)]

    t0 = time.time()
    profiles = fit_atomic_densities([(a, rho) for a, rho, _ in tr], species)
    t_train["atoms"] = time.time() - t0
    mlp = None
    if not args.no_mlp:
        rng = np.random.default_rng(0)
        xs, ys = [], []
        for a, rho, _ in tr:  # every voxel with density, a tenth of the vacuum
            y = rho.ravel()
            keep = (y > 1e-3 * y.max()) | (rng.random(y.size) < 0.1)
            xs.append(local_features(a, rho.shape, species)[keep])
            ys.append(y[keep, None])
        t0 = time.time()
        mlp, mlp_epochs = train_mlp(np.concatenate(xs), np.concatenate(ys),
                                    args.minutes if args.mlp_minutes is None else args.mlp_minutes)
        t_train["mlp"] = time.time() - t0

    rows, slices = [], []
    for at, rho, info, role in te:
        dv = at.get_volume() / rho.size
        n_e = float(info["n_electrons"])
        preds, secs = {}, {}
        for name, m in models.items():
            t1 = time.perf_counter()
            preds[name] = m.predict_density(at)
            secs[name] = time.perf_counter() - t1
        sup = (radial_design(at, rho.shape, species) @ profiles).reshape(rho.shape)
        preds["atoms"] = sup * n_e / (sup.sum() * dv)  # normalised to the electron count, as a user would
        if mlp is not None:
            preds["mlp"] = mlp(local_features(at, rho.shape, species)).reshape(rho.shape)
        for name in [n for n in preds if n != "atoms"]:  # each scaled to the cell's electrons, as "atoms" is
            preds[f"{name}_ne"] = preds[name] * n_e / (preds[name].sum() * dv)
        row = {"role": role, "formula": at.get_chemical_formula(), "n_atoms": len(at),
               "defect": info.get("defect"), "gpaw_seconds": info.get("label_seconds"),
               "predict_seconds": secs, "label_electrons_pct": 100 * (rho.sum() * dv - n_e) / n_e}
        for name, p in preds.items():
            row[name] = density_errors(p, rho, dv, n_electrons=n_e)
        rows.append(row)
        if len(slices) < 1 and role == "test":
            k = int(np.argmax(rho.sum(axis=(0, 1))))
            slices.append({"true": rho[:, :, k], **{n: p[:, :, k] for n, p in preds.items()},
                           "profile": {n: p.mean(axis=(0, 1)) for n, p in {"DFT": rho, **preds}.items()},
                           "title": f"{row['formula']} ({row['defect']})", "cell": np.asarray(at.cell)})
        print(role, row["formula"], {n: round(row[n]["density_mape_pct"], 2) for n in preds}, flush=True)

    names = [*models, "atoms"] + (["mlp"] if mlp is not None else [])
    names += [f"{n}_ne" for n in names if n != "atoms"]  # those scaled to the electron count ("atoms" is)
    keys = ("density_mape_pct", "electrons_pct", "rmse")

    def summary(sel):
        return {"n": len(sel), **{m: {k: {"mae": float(np.mean([abs(r[m][k]) for r in sel])),
                                          "max": float(np.max([abs(r[m][k]) for r in sel]))} for k in keys}
                                  for m in names}} if sel else {"n": 0}

    res = {"configs": cfgs, "train_seconds": t_train, "species": species, "n_train": len(split["train"]),
           "n_val": len(split["val"]), "n_test": len(split["test"]),
           "mlp_epochs": mlp_epochs if mlp is not None else 0,
           "atomic_profiles": {"r_A": (DR * np.arange(int(round(R_MAX / DR)) + 1)).tolist(),
                               "f": profiles.reshape(len(species), -1).tolist()},
           "reused": bool(args.reuse), "test": summary([r for r in rows if r["role"] == "test"]),
           "test_new": summary([r for r in rows if r["role"] == "test_new"]),
           "x4": summary([r for r in rows if r["role"] == "x4"]), "records": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.results}.json").write_text(json.dumps(res, indent=1))
    plot(rows, slices, names, RESULTS / f"{args.results}.png")
    print(json.dumps({k: res[k] for k in ("test", "test_new", "x4")}, indent=1))
    return 0


def plot(rows, slices, names, path):
    from matplotlib.figure import Figure

    from ednn.plots import save_fig

    fig = Figure(figsize=(13, 7.5), layout="constrained")
    ax = fig.subplots(2, 3)
    s = slices[0]
    vmax = float(s["true"].max())
    ax[0, 0].imshow(s["true"].T, origin="lower", cmap="viridis", vmin=0, vmax=vmax)
    ax[0, 0].set_title(f"DFT density in the sheet plane: {s['title']}", fontsize=9)
    for j, name in enumerate(names[:2]):
        err = (s[name] - s["true"]) / vmax
        im = ax[0, 1 + j].imshow(100 * err.T, origin="lower", cmap="RdBu_r", vmin=-5, vmax=5)
        ax[0, 1 + j].set_title(f"{name}: error, % of the maximum", fontsize=9)
    fig.colorbar(im, ax=ax[0, 1:], shrink=0.8)
    for n, prof in s["profile"].items():
        ax[1, 0].semilogy(np.asarray(prof) + 1e-8, label=n, lw=1.5 if n == "DFT" else 1.0)
    ax[1, 0].set(xlabel="voxel along z", ylabel="planar mean density (1/A^3)", title="profile across the sheet")
    ax[1, 0].legend(fontsize=8)
    for k, role in enumerate(("test", "x4")):
        sel = [r for r in rows if r["role"] == role]
        if not sel:
            ax[1, 1 + k].set_title(f"{role}: no records")
            continue
        vals = [np.mean([r[m]["density_mape_pct"] for r in sel]) for m in names]
        ax[1, 1 + k].bar(names, vals, color=[f"C{i}" for i in range(len(names))])
        ax[1, 1 + k].set(ylabel="density MAPE % (voxels > 1 % of max)",
                         title=f"{role}: {len(sel)} cells, {int(np.mean([r['n_atoms'] for r in sel]))} atoms avg")
    save_fig(fig, path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
