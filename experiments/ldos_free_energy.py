"""Free energy at any electronic temperature from an energy model plus an LDOS model (issue 13).

``F(T_e) = E_0 + Delta(T_e)`` (:func:`ednn.predict.electronic.free_energy`): ``E_0``, the DFT energy
extrapolated to zero electronic width, from an ednn energy model; ``Delta(T_e) = [E_band - T_e S](T_e)
- E_band(0)`` from the LDOS, held fixed ("frozen") while the occupations follow T_e. Measured against
GPAW's free energy at T_e = 298, 933 and 2000 K of the same structures
(``data/ldos/al4_298K_Te{298,933,2000}.h5``: the first 6 snapshots of the 298 K trajectory, each
labelled by a separate GPAW run at each T_e), in three parts:

- ``floor``: ``Delta`` from the *true* 298 K LDOS (the labels at 25 meV, and re-broadened to 0.1 eV as
  the LDOS model's targets): what the frozen-LDOS approximation itself costs;
- ``Delta`` from the LDOS model of ``experiments/ldos_model.py`` (``runs/ldos_model/ednn``, trained at
  T_e = 298 K; which of the 6 records it held out is reported);
- ``E_0`` from an ednn energy model trained here on the same GPAW labels with the 6 snapshots (and the
  first 6 of the 933 K trajectory) held out, beside two baselines on the same training records: the
  composition baseline (mean energy per atom) and ridge regression on a smooth pair-distance histogram.

Output: ``experiments/results/ldos_free_energy.json`` (and the energy model in ``runs/ldos_energy``)::

    nice python experiments/ldos_free_energy.py --minutes 10
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
LABELS = ROOT / "data" / "ldos"
COLD = "al4_298K_Te298.h5"
HOT = "al4_933K_Te298.h5"
T_FILES = {298.0: COLD, 933.0: "al4_298K_Te933.h5", 2000.0: "al4_298K_Te2000.h5"}
N_HELD = 6  # the first 6 snapshots of each trajectory: those GPAW also labelled at 933 and 2000 K

ENERGY_CONFIG = {
    "data": {"targets": ["energy"], "val_fraction": 0.1, "test_fraction": 0.0, "split_seed": 0},
    "grid": {"species": ["Al"], "dim": 3, "spacing": 4.04 / 9, "sigma": 0.5, "cutoff": 3.0, "focus": 4},
    "model": {"layers": 4, "kernel": 5, "filters": 32, "readout": [64]},
    "train": {"epochs": 2000, "batch_size": 4, "learning_rate": 2e-3, "schedule": "cosine", "patience": 200,
              "force_weight": 10.0, "progress": False},
    "seed": 0,
}


def pair_features(atoms, r_max: float = 6.0, n: int = 24, width: float = 0.25) -> np.ndarray:
    """Extensive smooth histogram of pair distances up to ``r_max`` (periodic images included)."""
    from ase.neighborlist import neighbor_list

    d = neighbor_list("d", atoms, r_max)
    centres = np.linspace(2.0, r_max, n)
    cut = 0.5 * (1 + np.cos(np.pi * d / r_max))
    return (np.exp(-(((d[:, None] - centres) / width) ** 2)) * cut[:, None]).sum(0) / 2


def write_energy_sets(out: Path) -> tuple[Path, list]:
    """Training file (energies, forces) without the held-out snapshots; the held-out structures."""
    from ednn.data import Dataset
    from ednn.data.convert import write_dataset

    train, held = [], []
    for name in (COLD, HOT):
        with Dataset(LABELS / name) as ds:
            for i in range(len(ds)):
                (held if i < N_HELD else train).append((name, i, ds[i]))
    path = out / "al4_E0_train.h5"
    if path.exists():
        path.unlink()
    write_dataset(path, [a for _, _, a in train], metadata={"source": f"{COLD}, {HOT} minus the first {N_HELD}"})
    return path, held


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="energy-model training budget")
    ap.add_argument("--eval-only", action="store_true", help="reuse runs/ldos_energy")
    args = ap.parse_args(argv)

    import ednn
    from ednn.data import Dataset
    from ednn.data.ldos import ldos_metadata
    from ednn.electronic import EnergyGrid
    from ednn.predict.electronic import free_energy_change
    from ednn.train import train

    run = ROOT / "runs" / "ldos_energy"
    run.mkdir(parents=True, exist_ok=True)
    train_path, held = write_energy_sets(run)
    t0 = time.time()
    if not args.eval_only:
        cfg = json.loads(json.dumps(ENERGY_CONFIG))
        cfg["data"]["train"] = str(train_path)
        cfg["train"]["max_time_s"] = 60 * args.minutes
        cfg["out"] = str(run / "ednn")
        train(cfg, overwrite=True)
    train_s = time.time() - t0
    emodel = ednn.load(str(run / "ednn" / "model"))
    lmodel_dir = ROOT / "runs" / "ldos_model" / "ednn"
    lmodel = ednn.load(str(lmodel_dir / "model"))
    lsplit = json.loads((lmodel_dir / "split.json").read_text())
    ldos_held = {int(i) for i in lsplit["test"]}  # indices into [COLD records..., HOT records...]

    # E0: ednn against two baselines fitted on the same training records
    with Dataset(train_path) as ds:
        tr = [ds[i] for i in range(len(ds))]
    e_tr = np.array([a.get_potential_energy() for a in tr])
    n_tr = np.array([len(a) for a in tr])
    x_tr = np.array([pair_features(a) for a in tr])
    mu_x, sd_x = x_tr.mean(0), x_tr.std(0) + 1e-12
    lam = 1e-3
    xs = np.c_[(x_tr - mu_x) / sd_x, n_tr]
    coef = np.linalg.solve(xs.T @ xs + lam * np.eye(xs.shape[1]), xs.T @ e_tr)
    per_atom = e_tr.sum() / n_tr.sum()
    e_rows = []
    for name, i, at in held:
        x = np.r_[(pair_features(at) - mu_x) / sd_x, len(at)]
        e_true = at.get_potential_energy()
        e_rows.append({"file": name, "record": i, "ednn": 1000 * (emodel.predict_energy(at) - e_true) / len(at),
                       "pair_ridge": 1000 * (float(x @ coef) - e_true) / len(at),
                       "composition": 1000 * (per_atom * len(at) - e_true) / len(at)})
    e_summary = {k: {"mae_meV_per_atom": float(np.mean([abs(r[k]) for r in e_rows])),
                     "max_meV_per_atom": float(np.max([abs(r[k]) for r in e_rows]))}
                 for k in ("ednn", "pair_ridge", "composition")}
    e_summary["label_spread_meV_per_atom"] = float(1000 * np.std(e_tr / n_tr))
    print(json.dumps(e_summary, indent=1), flush=True)

    # Delta(T_e) and F(T_e) on the 6 snapshots labelled at every T_e
    rows = []
    ds = {t: Dataset(LABELS / f) for t, f in T_FILES.items()}
    s100 = Dataset(LABELS / "s100" / COLD)
    raw_meta = ldos_metadata([LABELS / COLD])
    try:
        for i in range(N_HELD):
            at = ds[298.0][i]
            e0_true = float(ds[298.0].info(i)["energy_zero_width_eV"])
            e0_pred = emodel.predict_energy(at)
            pred_ldos = lmodel.predict_ldos(at)
            for t, d in ds.items():
                assert np.array_equal(d.positions(i), at.positions), "the T_e files share the 298 K snapshots"
                f_true = float(d.info(i)["free_energy_eV"])
                n = len(at)
                dl_true = _delta(raw_meta, at, ds[298.0].target("ldos", i), t)
                dl_s100 = free_energy_change(lmodel, at, t, ldos=s100.target("ldos", i))["free_energy_change"]
                dl_pred = free_energy_change(lmodel, at, t, ldos=pred_ldos)["free_energy_change"]
                row = {"record": i, "electronic_temperature_K": t, "ldos_model_held_out": i in ldos_held,
                       "gpaw_F_minus_E0_meV_per_atom": 1000 * (f_true - e0_true) / n,
                       "delta_true_ldos_meV_per_atom": 1000 * dl_true / n,
                       "delta_true_ldos_0.1eV_meV_per_atom": 1000 * dl_s100 / n,
                       "delta_ednn_meV_per_atom": 1000 * dl_pred / n,
                       "E0_error_meV_per_atom": 1000 * (e0_pred - e0_true) / n,
                       "F_error_meV_per_atom": 1000 * (e0_pred + dl_pred - f_true) / n}
                for k in ("delta_true_ldos", "delta_true_ldos_0.1eV", "delta_ednn"):
                    row[k + "_error_meV_per_atom"] = row[k + "_meV_per_atom"] - row["gpaw_F_minus_E0_meV_per_atom"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        for d in ds.values():
            d.close()
        s100.close()
    summary = {}
    for t in T_FILES:
        sel = [r for r in rows if r["electronic_temperature_K"] == t]
        summary[str(int(t))] = {
            "gpaw_F_minus_E0_meV_per_atom_mean": float(np.mean([r["gpaw_F_minus_E0_meV_per_atom"] for r in sel])),
            **{f"{k}_mae": float(np.mean([abs(r[k]) for r in sel])) for k in (
                "delta_true_ldos_error_meV_per_atom", "delta_true_ldos_0.1eV_error_meV_per_atom",
                "delta_ednn_error_meV_per_atom", "E0_error_meV_per_atom", "F_error_meV_per_atom")}}
    out = {"energy_model": str(run / "ednn"), "ldos_model": str(lmodel_dir), "energy_train_s": train_s,
           "energy_config": ENERGY_CONFIG, "energy_minutes": args.minutes, "E0_held_out": e_summary,
           "E0_rows": e_rows, "summary": summary, "rows": rows,
           "energy_grid": EnergyGrid.from_dict(raw_meta["energy_grid"]).to_dict()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ldos_free_energy.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


def _delta(meta, atoms, ldos, t: float) -> float:
    """``Delta(T_e)`` of a DFT LDOS label (the physics floor), by the library's own physics."""
    from ednn.electronic import EnergyGrid, electronic_properties
    from ednn.predict.electronic import ZERO_KELVIN

    grid = EnergyGrid.from_dict(meta["energy_grid"])
    n_e = float(sum(meta["valence"][str(int(z))] for z in atoms.numbers))
    dv = abs(atoms.cell.volume) / np.prod(ldos.shape[:-1])
    hot = electronic_properties(grid, t, n_e, ldos=ldos, voxel_volume=dv)
    cold = electronic_properties(grid, ZERO_KELVIN, n_e, ldos=ldos, voxel_volume=dv)
    return hot["band_energy"] + hot["entropy_term"] - cold["band_energy"]


if __name__ == "__main__":
    raise SystemExit(main())
