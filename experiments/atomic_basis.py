"""Choose the atom-centred basis by measurement, and its learning curve (issue 11).

Fits :func:`ednn.predict.atomic.fit_atomic` (energies only, ridge strength chosen on the validation split) on
the `make data` split that ``experiments/peers.py`` uses (``data/train.h5``: validation 8 %, test 10 %, split
seed 0) for one basis setting after another, changing one parameter at a time around the base setting, and
reports validation, held-out and size-transfer (``data/transfer.h5``) MAE and RMSE in meV/atom, the fit time
and the inference atoms/s. A second stage combines the best first-stage setting with each other change that
beat the base on validation. The setting with the lowest validation MAE is chosen (held-out and transfer are
only reported), then its learning curve (training subsets of 300 .. all), and the chosen basis fitted with
force rows (``--force-weights``; energy and force errors, force MAE on 100 held-out sheets).
Every finished fit is written to ``experiments/results/atomic_basis.json`` at once (a killed run keeps them;
``--resume`` skips them); the figure ``atomic_basis.png`` is drawn at the end::

    nice python experiments/atomic_basis.py            # ~25 min on 2 cores
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
BASE = {"cutoff": 4.0, "n_radial": 8, "l_max": 4, "radial_width": 0.8}
SCAN = {"radial_width": [0.45, 1.1, 1.5], "n_radial": [6, 10], "l_max": [2, 3, 6], "cutoff": [3.5, 4.5, 5.0]}
SIZES = [300, 600, 1200]


def data(val: float, test: float, seed: int):
    from ednn.data import split_indices
    from ednn.train.sets import load_structures

    structs, energies = load_structures(str(ROOT / "data" / "train.h5"))
    tr, va, te = split_indices(len(structs), val, test, seed)
    transfer, e_transfer = load_structures(str(ROOT / "data" / "transfer.h5"))
    pick = lambda idx: ([structs[i] for i in idx], energies[idx])  # noqa: E731
    return {"train": pick(tr), "val": pick(va), "test": pick(te), "transfer": (transfer, e_transfer)}


def errors(model, structs, energies) -> dict:
    from ednn.image.raster import _structure_arrays as _arrays

    t0 = time.time()
    e = model.predict_energies(structs)
    dt = time.time() - t0
    n = np.array([len(_arrays(s)[0]) for s in structs], float)  # structures may be (positions, numbers, cell, pbc)
    err = 1e3 * (e - energies) / n
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
            "max": float(np.abs(err).max()), "atoms_per_s": float(n.sum() / dt)}


def run_one(sets, setting: dict, n_train: int | None = None) -> dict:
    from ednn.nn.atomic import AtomicBasis
    from ednn.predict.atomic import fit_atomic

    tr, e_tr = sets["train"]
    if n_train is not None:
        tr, e_tr = tr[:n_train], e_tr[:n_train]
    basis = AtomicBasis(species=(5, 6, 7), **{k: v for k, v in setting.items() if k != "shared"})
    t0 = time.time()
    model = fit_atomic(tr, e_tr, *sets["val"], basis, shared=setting.get("shared", False))
    out = {"setting": setting, "n_train": len(tr), "n_features": basis.n_features * basis.n_species,
           "fit_s": time.time() - t0, "alpha": model.meta["fit"]["alpha"],
           "val_mae": model.meta["fit"]["val_energy_mae_meV_atom"]}
    for k in ("test", "transfer"):
        out[k] = errors(model, *sets[k])
    return out


def force_rows(sets, setting: dict, weights: list[float]) -> list[dict]:
    """The chosen basis fitted with force rows (atoms.force_weight) beside energies only: energy and force errors."""
    from ednn.data import split_indices
    from ednn.nn.atomic import AtomicBasis
    from ednn.predict.atomic import fit_atomic
    from ednn.train.sets import load_forces

    forces = load_forces(str(ROOT / "data" / "train.h5"))
    tr, va, te = split_indices(len(forces), 0.08, 0.1, 0)
    basis = AtomicBasis(species=(5, 6, 7), **{k: v for k, v in setting.items() if k != "shared"})
    out = []
    for w in weights:
        t0 = time.time()
        model = fit_atomic(*sets["train"], *sets["val"], basis, forces=[forces[i] for i in tr],
                           val_forces=[forces[i] for i in va], force_weight=w, shared=setting.get("shared", False))
        r = {"setting": setting, "force_weight": w, "fit_s": time.time() - t0, "alpha": model.meta["fit"]["alpha"],
             "val_mae": model.meta["fit"]["val_energy_mae_meV_atom"],
             "test": errors(model, *sets["test"]), "transfer": errors(model, *sets["transfer"])}
        pred = model.predict_forces(sets["test"][0][:100])
        r["test_force_mae"] = float(np.mean(np.concatenate([np.abs(p - forces[i]).ravel()
                                                            for p, i in zip(pred, te[:100])])))
        print("force rows", json.dumps({k: r[k] for k in ("force_weight", "val_mae", "test_force_mae", "fit_s")}),
              r["test"]["mae"], r["transfer"]["mae"], flush=True)
        out.append(r)
    return out


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    runs = res["scan"]
    labels = [", ".join(f"{k}={v}" for k, v in r["setting"].items() if v != BASE.get(k, False)) or "base" for r in runs]
    labels = [("* " if r["setting"] == res.get("chosen") else "") + lab for r, lab in zip(runs, labels)]
    x = np.arange(len(runs))
    for k, mk in (("test", "o"), ("transfer", "s")):
        ax[0].plot(x, [r[k]["mae"] for r in runs], mk, label=f"{k} MAE")
    ax[0].set_xticks(x, labels, rotation=60, ha="right", fontsize=7)
    ax[0].set_ylabel("energy MAE (meV/atom)")
    ax[0].set_title(f"basis scan around {BASE}", fontsize=8)
    ax[0].legend()
    lc = sorted(res.get("curve", []), key=lambda r: r["n_train"])
    if lc:
        n = [r["n_train"] for r in lc]
        for k, mk in (("val_mae", "^"), ("test", "o"), ("transfer", "s")):
            ax[1].loglog(n, [r[k] if k == "val_mae" else r[k]["mae"] for r in lc], mk + "-", label=k)
        ax[1].set_xlabel("training structures")
        ax[1].set_ylabel("energy MAE (meV/atom)")
        ax[1].set_title(f"learning curve, {res.get('chosen')}", fontsize=8)
        ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(RESULTS / "atomic_basis.json"))
    p.add_argument("--resume", action="store_true", help="keep the fits already in --out")
    p.add_argument("--force-weights", type=float, nargs="*", default=[0.0, 0.0005, 0.002],
                   help="atoms.force_weight values fitted with the chosen basis (0: energies only)")
    args = p.parse_args(argv)
    out = Path(args.out)
    res = json.loads(out.read_text()) if args.resume and out.exists() else {"base": BASE, "scan": [], "curve": []}

    def save():
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1))
        os.replace(tmp, out)

    sets = data(0.08, 0.1, 0)

    def add(setting: dict, stage: int) -> None:  # one fit of the scan, reported and saved at once
        r = run_one(sets, setting)
        r["stage"] = stage
        print(json.dumps({k: r[k] for k in ("setting", "val_mae", "fit_s")}), r["test"]["mae"], r["transfer"]["mae"],
              flush=True)
        res["scan"].append(r)
        save()
    done = [r["setting"] for r in res["scan"]]
    todo = [dict(BASE)] + [{**BASE, k: v} for k, vs in SCAN.items() for v in vs]
    for s in todo:
        if s in done:
            continue
        add(s, 1)
    # stage 2: the best setting of stage 1 combined with every other change that beat the base on validation
    base_val = next(r["val_mae"] for r in res["scan"] if r["setting"] == BASE)
    best1 = min(res["scan"], key=lambda r: r["val_mae"])
    changed = {k for k in BASE if best1["setting"][k] != BASE[k]}
    for r in list(res["scan"]):
        diff = {k: v for k, v in r["setting"].items() if v != BASE[k]}
        if len(diff) != 1 or set(diff) & changed or r["val_mae"] >= base_val:
            continue
        s = {**best1["setting"], **diff}
        if s in [x["setting"] for x in res["scan"]]:
            continue
        add(s, 2)
    # stage 3: one readout shared by every centre species (S times fewer weights) at three widths, then the
    # other changes at the best of them
    shared = [{**BASE, "radial_width": w, "shared": True} for w in (0.8, 1.1, 1.5)]
    for s3 in shared:
        if s3 not in [x["setting"] for x in res["scan"]]:
            add(s3, 3)
    best3 = min((x for x in res["scan"] if x["setting"].get("shared")), key=lambda r: r["val_mae"])
    for change in ({"n_radial": 6}, {"n_radial": 10}, {"cutoff": 3.5}, {"l_max": 6}):
        s3 = {**best3["setting"], **change}
        if s3 not in [x["setting"] for x in res["scan"]]:
            add(s3, 3)
    best = min(res["scan"], key=lambda r: r["val_mae"])  # chosen on the validation split only
    res["chosen"] = best["setting"]
    res["curve"] = [r for r in res["curve"] if r["setting"] == best["setting"]]
    have = {r["n_train"] for r in res["curve"]}
    for n in SIZES + [len(sets["train"][0])]:
        if n in have:
            continue
        if n == len(sets["train"][0]):
            r = dict(best)
        else:
            r = run_one(sets, best["setting"], n)
        res["curve"].append(r)
        print("curve", n, r["val_mae"], r["test"]["mae"], r["transfer"]["mae"], flush=True)
        save()
    save()
    if any(r.get("setting") != res["chosen"] for r in res.get("force_rows", [])):
        res["force_rows_per_species_basis"] = res.pop("force_rows")  # measured with an earlier choice: kept apart
    done = {r["force_weight"] for r in res.get("force_rows", [])}
    todo = [w for w in args.force_weights if w not in done]
    if todo:
        res["force_rows"] = res.get("force_rows", []) + force_rows(sets, res["chosen"], todo)
        save()
    plot(res, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
