"""ednn against the established peers, in one run on the same data and budget (issue 11).

All models train on the same `make data` split (``data/train.h5``: validation 8 %, test 10 %, split
seed 0, the split rule of ``ednn.data.split_indices``) for the same wall-clock budget on this machine, one
after the other, each with 2 threads, and are evaluated alike:

* **ednn atoms**: the atom-centred model a config naming only the data fits (``model.representation`` auto;
  closed-form ridge fit, ~1 minute of the budget);
* **ednn image**: the earlier demo recipe of the voxel-image CNN (``experiments/uncertainty.yaml``: library
  defaults for grid and network, energies only, cosine schedule fitted to the budget);
* **PaiNN** (SchNetPack 2.1, energies and forces, cutoff 4 A, 64 features, 3 interactions, per-element
  reference energies fitted by least squares, the best validation loss kept);
* **SOAP + ridge** (dscribe: the sum of the atoms' SOAP vectors plus the composition, per-atom ridge
  regression; cutoff and regularisation chosen on the validation split within the budget).

The peers run in their own environment (``scripts/peers_env.sh`` builds ``.venv-peers``) on extended-XYZ
copies of the split that this script exports. Reported: energy MAE, RMSE and bias (meV/atom) on the
held-out split and on the size-transfer set (``data/transfer.h5``, 60 sheets of 1000-5000 atoms), force MAE
(eV/A, Tersoff forces) on 50 held-out structures, and inference atoms/s (energies of the transfer set;
energies and forces of the 50). Output ``experiments/results/peers.{json,png}``::

    bash scripts/peers_env.sh .venv-peers
    nice python experiments/peers.py --minutes 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
N_FORCES = 50  # held-out structures whose forces every model predicts
MAX_FORCE_ATOMS = 160  # ... of at most this many atoms (SOAP's analytic derivatives grow as atoms^2)


def export(out: Path, val: float, test: float, seed: int) -> dict:
    """Write train/val/test/transfer as extended XYZ (energy, forces) and the force subset; returns the split."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from ednn.data import Dataset, split_indices

    out.mkdir(parents=True, exist_ok=True)
    with Dataset(str(ROOT / "data" / "train.h5")) as ds:
        n = len(ds)
        tr, va, te = split_indices(n, val, test, seed)
        parts = {"train": tr, "val": va, "test": te}
        for name, idx in parts.items():
            _write_xyz(out / f"{name}.extxyz", ds, idx, write, SinglePointCalculator)
        sizes = [int(ds.n_atoms[i]) for i in te]
    with Dataset(str(ROOT / "data" / "transfer.h5")) as ds:
        _write_xyz(out / "transfer.extxyz", ds, range(len(ds)), write, SinglePointCalculator)
    sub = [k for k, s in enumerate(sizes) if s <= MAX_FORCE_ATOMS][:N_FORCES]
    (out / "forces_subset.json").write_text(json.dumps(sub))
    return {k: v.tolist() for k, v in parts.items()}


def _write_xyz(path: Path, ds, idx, write, spc) -> None:
    tmp = path.with_suffix(".tmp")
    structs = []
    for i in idx:
        a = ds[int(i)]
        a.calc = spc(a, energy=ds.energy(int(i)), forces=ds.forces(int(i)))
        structs.append(a)
    write(str(tmp), structs, format="extxyz")
    os.replace(tmp, path)


def _timed_predictions(model, data: Path, res: dict) -> dict:
    """An ednn model's energies (test, transfer) and forces (the subset) with their atoms/s, added to ``res``."""
    from ase.io import read

    test, transfer = read(str(data / "test.extxyz"), ":"), read(str(data / "transfer.extxyz"), ":")
    sub = [test[i] for i in json.loads((data / "forces_subset.json").read_text())]
    model.predict_energies(test[:2])  # build the graphs outside the timings, as the peers' first call does
    model.predict_forces(test[:1])
    t0 = time.time()
    res["test_energy"] = model.predict_energies(test).tolist()
    t_test = time.time() - t0
    t0 = time.time()
    res["transfer_energy"] = model.predict_energies(transfer).tolist()
    t_tr = time.time() - t0
    t0 = time.time()
    res["forces"] = [f.tolist() for f in model.predict_forces(sub)]
    t_f = time.time() - t0
    res["times_s"] = {"test_energy": t_test, "transfer_energy": t_tr, "forces_subset": t_f}
    res["atoms_per_s"] = {"test_energy": sum(map(len, test)) / t_test,
                          "transfer_energy": sum(map(len, transfer)) / t_tr,
                          "energy_and_forces": sum(map(len, sub)) / t_f}
    return res


def run_ednn(args, data: Path) -> dict:
    import yaml

    import ednn

    cfg = yaml.safe_load((ROOT / "experiments" / "uncertainty.yaml").read_text())
    cfg["out"] = str(Path(args.out_runs) / "ednn")
    cfg["train"]["max_time_s"] = 60 * args.minutes
    cfg["train"]["threads"] = 2
    t0 = time.time()
    model = ednn.train.train(cfg, overwrite=True)
    t_train = time.time() - t0
    hist = json.loads((Path(cfg["out"]) / "log.json").read_text())
    res = {"model": "ednn (demo recipe)", "train_s": t_train, "epochs": len(hist),
           "n_params": int(model.network.count_params()), "settings": {"grid": model.grid.to_dict()}}
    return _timed_predictions(model, data, res)


def run_ednn_atoms(args, data: Path) -> dict:
    """ednn's atom-centred model from a config that names only the data (and the split everyone uses)."""

    import ednn

    cfg = {"out": str(Path(args.out_runs) / "ednn_atoms"),
           "data": {"train": str(ROOT / "data" / "train.h5"), "val_fraction": 0.08, "test_fraction": 0.1,
                    "split_seed": 0},
           "train": {"threads": 2, "progress": False}}
    t0 = time.time()
    model = ednn.train.train(cfg, overwrite=True)
    t_train = time.time() - t0
    res = {"model": "ednn (atom-centred, config names only the data)", "train_s": t_train, "epochs": 1,
           "n_params": int(model.weights.size + model.refs.size),
           "settings": {"basis": model.basis.to_dict(), "alpha": model.meta["fit"]["alpha"]}}
    return _timed_predictions(model, data, res)


def metrics(res: dict, data: Path) -> dict:
    from ase.io import read

    out = {}
    for name, key in (("held-out", "test"), ("size transfer", "transfer")):
        structs = read(str(data / f"{key}.extxyz"), ":")
        n = np.array([len(s) for s in structs], float)
        ref = np.array([s.get_potential_energy() for s in structs])
        err = (np.asarray(res[f"{key}_energy"]) - ref) / n
        out[name] = {"mae_mev": float(1000 * np.abs(err).mean()), "rmse_mev": float(1000 * np.sqrt((err ** 2).mean())),
                     "bias_mev": float(1000 * err.mean()), "n": len(structs), "atoms": [int(n.min()), int(n.max())]}
    test = read(str(data / "test.extxyz"), ":")
    sub = [test[i] for i in json.loads((data / "forces_subset.json").read_text())]
    fr = np.concatenate([s.get_forces() for s in sub]).ravel()
    fp = np.concatenate([np.asarray(f) for f in res["forces"]]).ravel()
    out["force_mae_ev_per_a"] = float(np.abs(fp - fr).mean())
    out["force_rms_reference_ev_per_a"] = float(np.sqrt((fr ** 2).mean()))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=8.0, help="training budget of every model")
    p.add_argument("--peers-python", default=str(ROOT / ".venv-peers" / "bin" / "python"))
    p.add_argument("--out-runs", default=str(ROOT / "runs" / "peers"))
    p.add_argument("--models", nargs="*", default=["ednn_atoms", "ednn", "painn", "soap"])
    p.add_argument("--results", default="peers")
    p.add_argument("--reuse", action="store_true",
                   help="take the models not in --models from their earlier results in --out-runs (M.json)")
    args = p.parse_args(argv)
    if any(m in ("painn", "soap") for m in args.models) and not os.path.exists(args.peers_python):
        raise SystemExit(f"{args.peers_python} not found: build the peers' environment first "
                         "(bash scripts/peers_env.sh .venv-peers)")
    data = Path(args.out_runs) / "data"
    t0 = time.time()
    split = export(data, 0.08, 0.1, 0)
    print(f"[peers] exported train {len(split['train'])} / val {len(split['val'])} / test {len(split['test'])} "
          f"and the transfer set in {time.time() - t0:.0f} s", flush=True)
    runs = {}
    for m in ("ednn_atoms", "ednn", "painn", "soap"):
        part = Path(args.out_runs) / f"{m}.json"
        if m not in args.models:
            if args.reuse and part.exists():
                r = json.loads(part.read_text())
                r["metrics"] = metrics(r, data)
                runs[m] = r
            continue
        if m in ("ednn", "ednn_atoms"):
            r = (run_ednn if m == "ednn" else run_ednn_atoms)(args, data)
            part.write_text(json.dumps(r))
        else:
            subprocess.run([args.peers_python, str(ROOT / "experiments" / "peers_models.py"), m, "--data", str(data),
                            "--minutes", str(args.minutes), "--out", str(part), "--threads", "2"], check=True)
            r = json.loads(part.read_text())
        r["metrics"] = metrics(r, data)
        runs[m] = r
        mt = r["metrics"]
        print(f"[peers] {r['model']:<28s} trained {r['train_s']:4.0f} s | held-out MAE {mt['held-out']['mae_mev']:5.1f} "
              f"RMSE {mt['held-out']['rmse_mev']:5.1f} | transfer MAE {mt['size transfer']['mae_mev']:5.1f} RMSE "
              f"{mt['size transfer']['rmse_mev']:5.1f} meV/atom | force MAE {mt['force_mae_ev_per_a']:.3f} eV/A | "
              f"{r['atoms_per_s']['transfer_energy']:8.0f} atoms/s (energies), "
              f"{r['atoms_per_s']['energy_and_forces']:7.0f} (with forces)", flush=True)
    res = {"experiment": "peers", "data": "data/train.h5 (split val 0.08, test 0.1, seed 0), data/transfer.h5",
           "minutes_per_model": args.minutes, "forces_on": f"{N_FORCES} held-out structures <= {MAX_FORCE_ATOMS} atoms",
           "models": {m: {k: v for k, v in r.items() if k not in ("test_energy", "transfer_energy", "forces")}
                      for m, r in runs.items()}}
    out = RESULTS / args.results
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1))
    os.replace(tmp, out.with_suffix(".json"))
    plot(res, str(out.with_suffix(".png")))
    print(f"[peers] wrote {out}.json/.png", flush=True)
    return 0


def plot(res: dict, path: str) -> None:
    from matplotlib.figure import Figure

    from ednn.plots import save_fig

    models = list(res["models"])
    names = [res["models"][m]["model"] for m in models]
    panels = [("held-out MAE (meV/atom)", lambda r: r["metrics"]["held-out"]["mae_mev"], False),
              ("size-transfer MAE (meV/atom)", lambda r: r["metrics"]["size transfer"]["mae_mev"], False),
              ("force MAE (eV/A)", lambda r: r["metrics"]["force_mae_ev_per_a"], False),
              ("atoms/s, energies (transfer set)", lambda r: r["atoms_per_s"]["transfer_energy"], True)]
    fig = Figure(figsize=(3.2 * (len(panels) + 1), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels) + 1)
    short = {"ednn_atoms": "ednn atoms", "ednn": "ednn image"}
    front = axes[-1]  # the frontier: accuracy against inference speed, one point per model and set
    for i, m in enumerate(models):
        r = res["models"][m]
        lab = short.get(m, names[i].split(" (")[0])
        for key, mk in (("held-out", "o"), ("size transfer", "s")):
            front.loglog(r["atoms_per_s"]["transfer_energy"], r["metrics"][key]["mae_mev"], mk, color=f"C{i}",
                         label=f"{lab}, {key}")
    front.set(xlabel="atoms/s, energies (transfer set)", ylabel="MAE (meV/atom)")
    front.set_title("accuracy against speed (o held-out, s transfer)", fontsize=9)
    front.legend(fontsize=6, frameon=False)
    from matplotlib.ticker import NullFormatter

    front.xaxis.set_minor_formatter(NullFormatter())
    for ax, (title, get, log) in zip(axes[:-1], panels, strict=True):
        vals = [get(res["models"][m]) for m in models]
        ax.bar(range(len(models)), vals, color=[f"C{i}" for i in range(len(models))])
        for i, v in enumerate(vals):
            ax.annotate(f"{v:.3g}", (i, v), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(models)), [short.get(m, n.split(" (")[0]) for m, n in zip(models, names)],
                      fontsize=8, rotation=20)
        ax.set_title(title, fontsize=9)
        if log:
            ax.set_yscale("log")
    fig.suptitle(f"same `make data` split, {res['minutes_per_model']:g} min of training each, 2 CPU threads",
                 fontsize=10)
    save_fig(fig, path)


if __name__ == "__main__":
    sys.exit(main())
