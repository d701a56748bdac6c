"""Per-voxel LDOS models for aluminium (issue 13): ednn's tiled 3D CNN against two baselines, same data.

Data (``make data-ldos``; GPAW PBE, T_e = 298 K, the 18^3 grid of the 4.04 A cube):
``data/ldos/al4_298K_Te298.h5`` and ``al4_933K_Te298.h5`` (4-atom fcc cells, EMT MD snapshots at
298 K and 933 K), split by ``ednn.data.split_indices`` into train / validation / test; the
32-atom cells of ``al32g_*`` (on the same grid spacing, 36^3) are never trained on: size transfer.

Models, all trained on the same training records:
- ``ednn``: the library's own training (``ednn.train``, config below): Gaussian image of the atoms at
  2x the DFT spacing (0.449 A), a 3D CNN with receptive radius ``layers * (kernel // 2)`` pixels,
  ``model.upsample: 2`` so each image pixel predicts the LDOS of its 2^3 DFT voxels;
- ``mean``: the training-mean LDOS at every voxel;
- ``mlp``: a per-voxel MLP on simple local features (the distances from the voxel to its 16 nearest
  atoms, periodic images included, sorted), trained on the same voxels with the same loss.

For every test record: the band energy (meV/atom), the Fermi level (meV), the density MAPE (%) and
the electron count error (%) at T_e = 298 K, each against the same quantity computed by the same
code from the DFT LDOS label (so what is measured is the network, not the physics), and the Fermi
level against GPAW's. Output: ``experiments/results/ldos_model.json`` and ``ldos_model.png``::

    nice python experiments/ldos_model.py --minutes 20
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
DATA = ROOT / "data" / "ldos"
TRAIN_FILES = ["al4_298K_Te298.h5", "al4_933K_Te298.h5"]
TRANSFER_FILES = ["al32g_298K_Te298.h5", "al32g_933K_Te298.h5"]
T_E = 298.0

CONFIG = {
    "data": {"targets": ["ldos"], "val_fraction": 0.1, "test_fraction": 0.15, "split_seed": 0},
    "grid": {"species": ["Al"], "dim": 3, "spacing": 4.04 / 9, "sigma": 0.5, "cutoff": 3.0, "focus": 4},
    "model": {"layers": 4, "kernel": 5, "filters": 32, "readout": [64], "upsample": 2, "vacuum_zero": False},
    "train": {"epochs": 400, "batch_size": 4, "learning_rate": 2e-3, "schedule": "cosine", "patience": 60,
              "progress": False},
    "seed": 0,
}


def physics(grid, atoms, ldos, n_e):
    """Fermi level, band energy, -TS, electrons and density from an LDOS (the same code for truth and models)."""
    from ednn.electronic import electronic_properties

    dv = abs(atoms.cell.volume) / np.prod(ldos.shape[:-1])
    return electronic_properties(grid, T_E, n_e, ldos=ldos, voxel_volume=dv)


def compare(pred: dict, true: dict, n_atoms: int) -> dict:
    rho_p, rho_t = pred["density"], true["density"]
    return {"band_energy_meV_per_atom": 1000 * (pred["band_energy"] - true["band_energy"]) / n_atoms,
            "fermi_level_meV": 1000 * (pred["fermi_level"] - true["fermi_level"]),
            "density_mape_pct": float(100 * np.mean(np.abs(rho_p - rho_t) / np.abs(rho_t))),
            "electrons_pct": float(100 * (pred["n_electrons"] - true["n_electrons"]) / true["n_electrons"])}


def local_features(atoms, shape, k: int = 16) -> np.ndarray:
    """Sorted distances (A) from every voxel of a ``shape`` grid to its ``k`` nearest atoms (periodic)."""
    from scipy.spatial import cKDTree

    frac = np.stack(np.meshgrid(*[np.arange(n) / n for n in shape], indexing="ij"), -1).reshape(-1, 3)
    pts = frac @ np.asarray(atoms.cell)
    reps = [np.arange(-2, 3)] * 3
    shifts = np.stack(np.meshgrid(*reps, indexing="ij"), -1).reshape(-1, 3) @ np.asarray(atoms.cell)
    images = (atoms.positions[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    d, _ = cKDTree(images).query(pts, k=k)
    return d.astype(np.float32)


def train_mlp(x, y, minutes: float, seed: int = 0):
    """A per-voxel MLP (features -> LDOS / rms), MSE, Adam, for ``minutes``."""
    import keras

    keras.utils.set_random_seed(seed)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    scale = np.sqrt((y.astype(np.float64) ** 2).mean(0)) + 1e-12
    net = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dense(128, activation="swish"),
                            keras.layers.Dense(128, activation="swish"), keras.layers.Dense(y.shape[1])])
    net.compile(keras.optimizers.Adam(1e-3), "mse")
    t0 = time.time()
    xs, ys = (x - mu) / sd, (y / scale).astype(np.float32)
    epochs = 0
    while time.time() - t0 < 60 * minutes:
        net.fit(xs, ys, batch_size=256, epochs=1, verbose=0, shuffle=True)
        epochs += 1
    return (lambda f: np.asarray(net.predict((f - mu) / sd, batch_size=4096, verbose=0)) * scale), epochs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20.0, help="training budget of each model")
    ap.add_argument("--out", default=str(ROOT / "runs" / "ldos_model"))
    ap.add_argument("--epochs", type=int, default=None)
    args = ap.parse_args(argv)

    import ednn
    from ednn.data import Dataset
    from ednn.data.ldos import ldos_metadata
    from ednn.electronic import EnergyGrid
    from ednn.train import train

    files = [str(DATA / f) for f in TRAIN_FILES]
    cfg = json.loads(json.dumps(CONFIG))
    cfg["data"]["train"] = files
    cfg["out"] = args.out
    cfg["train"]["max_time_s"] = 60 * args.minutes
    if args.epochs:
        cfg["train"]["epochs"] = args.epochs
    t0 = time.time()
    train(cfg, overwrite=True)
    t_train = time.time() - t0
    model = ednn.load(os.path.join(args.out, "model"))
    split = json.loads(Path(args.out, "split.json").read_text())
    meta = ldos_metadata(files)
    grid = EnergyGrid.from_dict(meta["energy_grid"])

    records = []  # (atoms, ldos, info, role)
    for f in files:
        with Dataset(f) as ds:
            records += [(ds[i], ds.target("ldos", i), ds.info(i), "al4") for i in range(len(ds))]
    transfer = []
    for f in TRANSFER_FILES:
        if (DATA / f).exists():
            with Dataset(DATA / f) as ds:
                transfer += [(ds[i], ds.target("ldos", i), ds.info(i), f.split(".")[0]) for i in range(len(ds))]
    tr = [records[i] for i in split["train"]]
    te = [records[i] for i in split["test"]] + transfer

    # baselines on the training voxels
    mean_ldos = np.mean(np.concatenate([r[1].reshape(-1, grid.n) for r in tr]), axis=0)
    feats = np.concatenate([local_features(r[0], r[1].shape[:3]) for r in tr])
    ys = np.concatenate([r[1].reshape(-1, grid.n) for r in tr])
    mlp, mlp_epochs = train_mlp(feats, ys, args.minutes)

    rows = []
    for at, ldos, info, role in te:
        n_e = float(info["n_electrons"])
        true = physics(grid, at, ldos, n_e)
        t1 = time.perf_counter()
        p_cnn = model.electronic_structure(at, T_E)
        t_pred = time.perf_counter() - t1
        p_mean = physics(grid, at, np.broadcast_to(mean_ldos, ldos.shape), n_e)
        p_mlp = physics(grid, at, mlp(local_features(at, ldos.shape[:3])).reshape(ldos.shape), n_e)
        rows.append({"role": role, "n_atoms": len(at), "ionic_temperature_K": at.info.get("ionic_temperature_K"),
                     "fermi_level_gpaw_minus_ldos_meV": 1000 * (info["fermi_level_eV"] - true["fermi_level"]),
                     "predict_seconds": t_pred, "negative_fraction": p_cnn["negative_fraction"],
                     "ldos_rmse": float(np.sqrt(np.mean((model.predict_ldos(at) - ldos) ** 2))),
                     "ednn": compare(p_cnn, true, len(at)), "mean": compare(p_mean, true, len(at)),
                     "mlp": compare(p_mlp, true, len(at)),
                     "dos": {"true": true["dos"].tolist(), "ednn": p_cnn["dos"].tolist(),
                             "mean": p_mean["dos"].tolist()}})

    def summary(role_filter):
        sel = [r for r in rows if role_filter(r)]
        out = {"n": len(sel)}
        for m in ("ednn", "mean", "mlp"):
            out[m] = {k: {"mae": float(np.mean([abs(r[m][k]) for r in sel])),
                          "max": float(np.max([abs(r[m][k]) for r in sel]))} for k in sel[0][m]} if sel else {}
        return out

    res = {"config": cfg, "train_seconds": t_train, "n_train": len(split["train"]), "n_val": len(split["val"]),
           "n_test": len(split["test"]), "mlp_epochs": mlp_epochs, "electronic_temperature_K": T_E,
           "test_al4": summary(lambda r: r["role"] == "al4"),
           "transfer_al32": summary(lambda r: r["role"] != "al4"),
           "records": [{k: v for k, v in r.items() if k != "dos"} for r in rows]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ldos_model.json").write_text(json.dumps(res, indent=1))
    plot(rows, grid, RESULTS / "ldos_model.png")
    for key in ("test_al4", "transfer_al32"):
        print(key, json.dumps(res[key], indent=1))
    return 0


def plot(rows, grid, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    r = rows[0]
    e = grid.energies
    ax[0].plot(e, np.asarray(r["dos"]["true"]) / r["n_atoms"], "k-", lw=1.5, label="DFT (GPAW)")
    ax[0].plot(e, np.asarray(r["dos"]["ednn"]) / r["n_atoms"], "C0-", lw=1, label="ednn CNN")
    ax[0].plot(e, np.asarray(r["dos"]["mean"]) / r["n_atoms"], "C1--", lw=1, label="training-mean LDOS")
    ax[0].set(xlabel="E (eV)", ylabel="DOS (states / eV / atom)", title=f"held-out {r['n_atoms']}-atom Al snapshot")
    ax[0].legend()
    names = ("ednn", "mlp", "mean")
    keys = ("band_energy_meV_per_atom", "fermi_level_meV", "density_mape_pct")
    x = np.arange(len(keys))
    for j, m in enumerate(names):
        vals = [np.mean([abs(q[m][k]) for q in rows]) for k in keys]
        ax[1].bar(x + 0.27 * (j - 1), vals, 0.27, label=m)
    ax[1].set_xticks(x, ["|dE_band| meV/atom", "|dmu| meV", "density MAPE %"])
    ax[1].set_yscale("log")
    ax[1].set_title("mean abs. error over test records (T_e = 298 K)")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
