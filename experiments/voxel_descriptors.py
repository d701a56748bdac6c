"""Invariant descriptors at the voxels instead of a CNN on the image: accuracy and invariance (issue 11 study).

``experiments/peers.py`` found SOAP + ridge regression (one SOAP vector per *atom*, summed) far more accurate
on the `make data` set than ednn's CNN (3.5 against 14-25 meV/atom held out) and, being a function of
interatomic vectors, invariant by construction. ednn's method needs a *voxel* sum (exact tiling, per-voxel
targets). This study asks whether the same invariant descriptor, evaluated at ednn's pixel centres instead of
at the atoms, keeps that accuracy, and how invariant the voxel sum is:

    E = sum_v  w . D(r_v) * A_pixel  +  sum_s n_s mu_s

with D(r) the SOAP power spectrum of the atoms around the point r (dscribe, cutoff 5 A, n_max 6, l_max 4),
r_v the centres of ednn's 2D pixel grid (spacing 0.624 A along the cell vectors, at the sheet's mean height),
A_pixel the pixel area, w and mu a ridge fit (per atom) on the training split of ``peers.py``. The sum is a
quadrature of the integral of w . D(r) over the cell, so any description of the structure (origin, basis,
supercell) changes it only by the quadrature error; ``--shifts K`` averages K^2 sub-pixel offsets as
``model.shift_average`` does. Rotations, mirrors and permutations leave D unchanged.

Reported: held-out and size-transfer MAE (the same split as ``peers.py``), and the largest change of the
energy per atom over 50 held-out structures for each operation. Runs in the peers' environment::

    .venv-peers/bin/python experiments/voxel_descriptors.py [--shifts 1 2] [--n-inv 50]

Output ``experiments/results/voxel_descriptors.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPACING = 0.62375  # ednn's default pixel spacing (A_BNC / 4)


def centres(atoms, shift: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, float]:
    """Pixel centres of ednn's 2D grid of ``atoms`` (round(|a_i| / SPACING) pixels along a_i), offset by
    ``shift`` pixels, at the atoms' mean height; and the pixel area."""
    cell = np.array(atoms.cell)
    n = [max(1, int(round(np.linalg.norm(cell[i]) / SPACING))) for i in range(2)]
    i, j = np.meshgrid(np.arange(n[0]), np.arange(n[1]), indexing="ij")
    frac = np.stack([(i.ravel() + shift[0]) / n[0], (j.ravel() + shift[1]) / n[1]], axis=1)
    pts = frac @ cell[:2]
    pts[:, 2] = atoms.positions[:, 2].mean()
    area = abs(np.linalg.det(cell[:2, :2])) / (n[0] * n[1])
    return pts, area


def voxel_features(soap, atoms, species, k: int) -> np.ndarray:
    """Pixel area x the sum of D over the pixel centres (mean over k^2 sub-pixel offsets), and the composition."""
    acc = None
    for a in range(k):
        for b in range(k):
            pts, area = centres(atoms, (a / k, b / k))
            x = soap.create(atoms, centers=pts).sum(axis=0) * area
            acc = x if acc is None else acc + x
    comp = np.array([np.sum(atoms.numbers == z) for z in species], float)
    return np.concatenate([acc / (k * k), comp])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(ROOT / "runs" / "peers" / "data"))
    p.add_argument("--shifts", type=int, nargs="+", default=[1, 2])
    p.add_argument("--n-inv", type=int, default=50, help="held-out structures for the invariance checks")
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "voxel_descriptors.json"))
    args = p.parse_args(argv)
    from ase.io import read
    from dscribe.descriptors import SOAP
    from sklearn.linear_model import Ridge

    sys.path.insert(0, str(ROOT))  # ednn's description operations (NumPy and ASE only: no TensorFlow here)
    from ednn.image.describe import equivalent_structures

    sets = {k: read(os.path.join(args.data, f"{k}.extxyz"), ":") for k in ("train", "val", "test", "transfer")}
    species = sorted({int(z) for s in sets["train"] for z in s.numbers})
    soap = SOAP(species=species, r_cut=5.0, n_max=6, l_max=4, periodic=True, sparse=False)
    res = {"experiment": "voxel_descriptors", "soap": {"r_cut": 5.0, "n_max": 6, "l_max": 4},
           "spacing_A": SPACING, "runs": {}}
    rng = np.random.default_rng(0)
    inv_structs = sets["test"][: args.n_inv]
    inv_ops = [equivalent_structures(a, rng, SPACING) for a in inv_structs]
    for k in args.shifts:
        t0 = time.time()
        feats = {name: np.stack([voxel_features(soap, a, species, k) for a in structs])
                 for name, structs in sets.items()}
        t_feat = time.time() - t0
        n = {name: np.array([len(a) for a in structs], float)[:, None] for name, structs in sets.items()}
        e = {name: np.array([a.get_potential_energy() for a in structs]) for name, structs in sets.items()}
        xtr = feats["train"] / n["train"]
        mu, sd = xtr.mean(axis=0), xtr.std(axis=0) + 1e-12
        best = None
        for alpha in 10.0 ** np.arange(-10, 2):  # sklearn's alpha (not scaled by the number of rows)
            reg = Ridge(alpha=alpha).fit((xtr - mu) / sd, e["train"] / n["train"][:, 0])
            mae = float(np.mean(np.abs(reg.predict((feats["val"] / n["val"] - mu) / sd) - e["val"] / n["val"][:, 0])))
            if best is None or mae < best[0]:
                best = (mae, alpha, reg)
        val_mae, alpha, reg = best

        def energy_per_atom(x, na, reg=reg, mu=mu, sd=sd):
            return reg.predict((x / na - mu) / sd)

        run = {"shifts": k, "alpha": float(alpha), "features_s": t_feat, "val_mae_mev": 1000 * val_mae}
        for name in ("test", "transfer"):
            err = energy_per_atom(feats[name], n[name]) - e[name] / n[name][:, 0]
            run[name] = {"mae_mev": float(1000 * np.abs(err).mean()), "rmse_mev": float(1000 * np.sqrt((err ** 2).mean())),
                         "n": len(err)}
        base = np.array([energy_per_atom(voxel_features(soap, a, species, k)[None], len(a))[0] for a in inv_structs])
        inv = {}
        for op in inv_ops[0]:
            d = [abs(energy_per_atom(voxel_features(soap, ops[op], species, k)[None], len(ops[op]))[0] - b)
                 for ops, b in zip(inv_ops, base, strict=True)]
            inv[op] = {"max_mev": float(1000 * max(d)), "median_mev": float(1000 * np.median(d))}
        run["invariance"] = inv
        res["runs"][str(k)] = run
        print(f"[voxel_descriptors] K={k}: held-out MAE {run['test']['mae_mev']:.2f}, transfer MAE "
              f"{run['transfer']['mae_mev']:.2f} meV/atom (features {t_feat:.0f} s); largest change: "
              + ", ".join(f"{op} {v['max_mev']:.3f}" for op, v in inv.items()) + " meV/atom", flush=True)
        with open(args.out + ".tmp", "w") as fh:
            json.dump(res, fh, indent=1)
        os.replace(args.out + ".tmp", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
