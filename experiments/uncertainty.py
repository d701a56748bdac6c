"""Does the ensemble spread rank the errors, and does it flag structures unlike the training data? (issue 11)

The ensemble: ``ednn train experiments/uncertainty.yaml --ensemble 4`` (4 voxel-image members, seeds 0..3,
the same split of the `make data` set, the earlier demo recipe, 8 minutes each), or the atom-centred one,
``ednn train experiments/uncertainty_atoms.yaml --ensemble 8`` (closed-form fits on bootstrap resamples, the
members' cutoffs spread over 4-5 A by ``atoms.ensemble_cutoff_spread``; ``--ensemble runs/uncertainty_atoms``).
For each structure the prediction is the members' mean and the uncertainty their standard deviation (ddof 1),
both per atom. Reported:

* held-out split (300 sheets of the training kinds) and size transfer (``data/transfer.h5``, 60 sheets of
  1000-5000 atoms): MAE, RMSE of the mean and of each member, the Spearman correlation between the std and
  the absolute error (the issue asks >= 0.5 on the transfer set), the median std;
* out-of-distribution sheets, labelled here (Tersoff; bilayers with ``tersoff-ilp``): bilayers (the model
  knows single layers only), species-poor sheets (all-boron and all-nitrogen honeycombs, B-rich BC
  alloys), and sheets strained 8 % (training strain <= 2 %): their std against the held-out median (the issue
  asks >= 3x) and their true error beside it;
* ``experiments/results/uncertainty.{json,png}``: the numbers and |error| against std for every set.

    nice python experiments/uncertainty.py [--ensemble runs/uncertainty] [--n-ood 10]
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
RESULTS = ROOT / "experiments" / "results"


def _ood_sets(n: int, seed: int = 7) -> dict[str, list]:
    """Labelled structures outside the training distribution (each an ``ase.Atoms`` with ``info['energy']``)."""
    from ednn.atoms.generate import generate
    from ednn.atoms.labellers import get_labeller

    rng = np.random.default_rng(seed)
    sets: dict[str, list] = {"bilayer": list(generate("bilayer", n, seed=seed, n_atoms=(40, 200)))}
    base = list(generate("graphene", 3 * n, seed=seed, n_atoms=(20, 150)))
    boron, nitrogen, brich = [], [], []
    for k, a in enumerate(base):
        b = a.copy()
        if k < n:
            b.numbers[:] = 5
            boron.append(b)
        elif k < 2 * n:
            b.numbers[:] = 7
            nitrogen.append(b)
        else:
            b.numbers[:] = np.where(rng.random(len(b)) < 0.85, 5, 6)
            brich.append(b)
    sets["all-B honeycomb"] = boron
    sets["all-N honeycomb"] = nitrogen
    sets["B-rich BC alloy (85 % B)"] = brich
    strained = []
    for a in generate("mixed", n, seed=seed + 1, n_atoms=(20, 150)):
        s = a.copy()
        c = np.array(s.cell)
        c[:2] *= 1.08
        s.set_cell(c, scale_atoms=True)
        strained.append(s)
    sets["8 % biaxial strain"] = strained
    out = {}
    for name, structs in sets.items():
        lab = get_labeller("tersoff-ilp" if name == "bilayer" else "tersoff")
        for a in structs:
            a.info["energy"] = float(lab.label(a)["energy"])
        out[name] = structs
    return out


def _n_atoms(s) -> int:
    """Atoms of an ``ase.Atoms`` or of a dataset's lean ``(positions, numbers, cell, pbc)`` tuple."""
    return len(s[1]) if isinstance(s, tuple) else len(s)


def _stats(ens, structs, energies) -> dict:
    from scipy.stats import spearmanr

    n = np.array([_n_atoms(a) for a in structs], float)
    per = np.stack([m.predict_energies(structs) for m in ens.members]) / n  # (members, structures) per atom
    mean = per.mean(axis=0)
    std = per.std(axis=0, ddof=1)
    err = mean - np.asarray(energies, float) / n
    rho = spearmanr(std, np.abs(err))
    return {
        "n": len(structs), "atoms": [int(n.min()), int(n.max())],
        "mae_mev": float(1000 * np.mean(np.abs(err))), "rmse_mev": float(1000 * np.sqrt(np.mean(err ** 2))),
        "bias_mev": float(1000 * np.mean(err)),
        "member_mae_mev": [float(1000 * np.mean(np.abs(p - np.asarray(energies) / n))) for p in per],
        "std_median_mev": float(1000 * np.median(std)), "std_max_mev": float(1000 * std.max()),
        "spearman_std_abs_error": float(rho.statistic), "spearman_p": float(rho.pvalue),
        "abs_error_mev": (1000 * np.abs(err)).tolist(), "std_mev": (1000 * std).tolist(),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ensemble", default=str(ROOT / "runs" / "uncertainty"))
    p.add_argument("--n-ood", type=int, default=10, help="structures per out-of-distribution kind")
    p.add_argument("--out", default=str(RESULTS / "uncertainty"))
    args = p.parse_args(argv)

    import ednn
    from ednn.train import load_structures

    t0 = time.time()
    ens = ednn.load(args.ensemble)
    split = json.load(open(os.path.join(args.ensemble, "member_0", "split.json")))
    train_s, train_e = load_structures(str(ROOT / "data" / "train.h5"))
    test_idx = split["test"]
    sets = {"held-out": ([train_s[i] for i in test_idx], train_e[test_idx])}
    tr_s, tr_e = load_structures(str(ROOT / "data" / "transfer.h5"))
    sets["size transfer"] = (tr_s, tr_e)
    ood = _ood_sets(args.n_ood)
    cutoffs = [float(m.basis.cutoff) for m in ens.members if getattr(m, "basis", None) is not None]
    res: dict = {"experiment": "uncertainty", "ensemble": os.path.relpath(args.ensemble, ROOT),
                 "members": len(ens), "kind": "atom-centred" if cutoffs else "voxel image",
                 "member_cutoffs_A": cutoffs, "sets": {}}
    for name, (s, e) in sets.items():
        res["sets"][name] = _stats(ens, s, e)
        r = res["sets"][name]
        print(f"[uncertainty] {name:<28s} n {r['n']:3d}  MAE {r['mae_mev']:6.1f} (members "
              f"{', '.join(f'{m:.1f}' for m in r['member_mae_mev'])})  median std {r['std_median_mev']:5.2f}  "
              f"Spearman {r['spearman_std_abs_error']:+.2f} (p {r['spearman_p']:.1e}) meV/atom", flush=True)
    ref = res["sets"]["held-out"]["std_median_mev"]
    for name, structs in ood.items():
        r = _stats(ens, structs, [a.info["energy"] for a in structs])
        std = np.array(r["std_mev"])
        r["std_over_heldout_median"] = (std / ref).tolist()
        r["min_ratio"] = float(std.min() / ref)
        r["median_ratio"] = float(np.median(std) / ref)
        r["flagged_3x"] = int(np.sum(std >= 3 * ref))
        res["sets"][name] = r
        print(f"[uncertainty] {name:<28s} n {r['n']:3d}  MAE {r['mae_mev']:8.1f}  median std {np.median(std):7.2f} "
              f"= {r['median_ratio']:.1f}x held-out (min {r['min_ratio']:.1f}x), flagged at 3x: {r['flagged_3x']}/"
              f"{r['n']}", flush=True)
    res["heldout_median_std_mev"] = ref
    res["time_s"] = time.time() - t0
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json.tmp", "w") as fh:
        json.dump(res, fh, indent=1)
    os.replace(args.out + ".json.tmp", args.out + ".json")
    _plot(res, args.out + ".png")
    print(f"[uncertainty] wrote {args.out}.json/.png in {res['time_s']:.0f} s", flush=True)
    return 0


def _plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.0))
    markers = iter("osD^v<>ph")
    for name, r in res["sets"].items():
        lab = name + (f" (Spearman {r['spearman_std_abs_error']:+.2f})" if name in ("held-out", "size transfer")
                      else "")
        ax.scatter(r["std_mev"], r["abs_error_mev"], s=14, marker=next(markers), alpha=0.7, label=lab)
    ref = res["heldout_median_std_mev"]
    ax.axvline(3 * ref, color="k", ls="--", lw=0.8, label="3x held-out median std")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ensemble std (meV/atom)")
    ax.set_ylabel("|error| of the ensemble mean (meV/atom)")
    ax.set_title(f"ednn ensemble of {res['members']} ({res.get('kind', 'voxel image')} members, make data set)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
