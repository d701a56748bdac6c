"""Is ednn's representation or its per-pixel readout what loses accuracy and invariance? (issue 11 study)

A trained ednn energy model computes, at every pixel, hidden features h(r_p) (the input of its last, linear
1x1 layer) and sums ``W . h(r_p) + b`` over the pixels. This study keeps the trained network fixed and refits
only a linear readout (ridge regression, regularisation chosen on the validation split, per-atom targets) on
two ways of pooling the same features:

* **pixel sum**: ``sum_p h(r_p)`` and the composition, the network's own pooling (a refit of its last layer);
* **atom sum**: ``h`` interpolated (bilinear, periodic) at every atom, summed per species, and the
  composition: an atom-centred readout of the same CNN features, still exactly extensive.

Reported for both: held-out and size-transfer MAE on the split of ``experiments/peers.py`` (the model is
member 0 of ``experiments/uncertainty.py``'s ensemble, trained on that split), and the largest change of the
energy per atom over 50 held-out sheets under the operations of ``ednn.image.describe.equivalent_structures``.
Output ``experiments/results/atom_readout.json``::

    nice python experiments/atom_readout.py [--model runs/uncertainty/member_0/model]
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


def feature_model(model):
    """Keras model from the network input to the hidden features of the last (linear, 1x1) layer."""
    import keras

    net = model.network
    names = [layer.name for layer in net.layers]
    trunk = net.get_layer("vacuum_zero").trunk if "vacuum_zero" in names else net
    return keras.Model(trunk.inputs, trunk.get_layer("density").input)


def pooled(model, feat, atoms) -> tuple[np.ndarray, np.ndarray]:
    """(pixel-sum features + composition, per-species atom-sum features + composition) of one structure."""
    img, w = model.image(atoms)
    x, _ = model.network_input(img, w)
    f = np.asarray(feat(x[None])[0], dtype=np.float64)  # (n1, n2, k): pixel m sits at fractional m / n
    n = np.array(f.shape[:2])
    u = atoms.get_scaled_positions(wrap=True)[:, :2] * n
    i0 = np.floor(u).astype(int)
    t = u - i0
    h = np.zeros((len(atoms), f.shape[-1]))
    for dx in (0, 1):
        for dy in (0, 1):
            wgt = (t[:, 0] if dx else 1 - t[:, 0]) * (t[:, 1] if dy else 1 - t[:, 1])
            h += wgt[:, None] * f[(i0[:, 0] + dx) % n[0], (i0[:, 1] + dy) % n[1]]
    species = model.species
    comp = np.array([np.sum(atoms.numbers == z) for z in species], float)
    atom = np.concatenate([h[atoms.numbers == z].sum(axis=0) for z in species] + [comp])
    pix = np.concatenate([f.sum(axis=(0, 1)), comp])
    return pix, atom


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(ROOT / "runs" / "uncertainty" / "member_0" / "model"))
    p.add_argument("--n-inv", type=int, default=50)
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "atom_readout.json"))
    args = p.parse_args(argv)
    from _ridge import best_ridge  # experiments/_ridge.py, beside this script

    import ednn
    from ednn.data import Dataset, split_indices
    from ednn.image.describe import equivalent_structures

    t0 = time.time()
    model = ednn.load(args.model)
    feat = feature_model(model)
    with Dataset(str(ROOT / "data" / "train.h5")) as ds:
        tr, va, te = split_indices(len(ds), 0.08, 0.1, 0)
        sets = {name: [ds[int(i)] for i in idx] for name, idx in (("train", tr), ("val", va), ("test", te))}
    with Dataset(str(ROOT / "data" / "transfer.h5")) as ds:
        sets["transfer"] = [ds[i] for i in range(len(ds))]
    feats = {}
    for name, structs in sets.items():
        pa = [pooled(model, feat, a) for a in structs]
        n = np.array([len(a) for a in structs], float)[:, None]
        e = np.array([a.get_potential_energy() for a in structs]) / n[:, 0]
        feats[name] = (np.stack([q[0] for q in pa]) / n, np.stack([q[1] for q in pa]) / n, e)
        print(f"[atom_readout] features of {name}: {len(structs)} structures, {time.time() - t0:.0f} s", flush=True)
    res = {"experiment": "atom_readout", "model": os.path.relpath(args.model, ROOT), "pools": {}}
    rng = np.random.default_rng(0)
    inv = [equivalent_structures(a, rng, model.grid.spacing) for a in sets["test"][: args.n_inv]]
    ops = [k for k in inv[0] if k not in ("permute",)]
    base = {k: np.array(v) for k, v in zip(("pixel", "atom"), zip(*[pooled(model, feat, a)
                                                                     for a in sets["test"][: args.n_inv]]), strict=True)}
    moved = {op: [pooled(model, feat, o[op]) for o in inv] for op in ops}
    for j, pool in enumerate(("pixel", "atom")):
        f, alpha, val_mae = best_ridge(feats["train"][j], feats["train"][2], feats["val"][j], feats["val"][2],
                                       10.0 ** np.arange(-9, 1))
        r = {"alpha": alpha, "val_mae_mev": 1000 * val_mae}
        for name in ("test", "transfer"):
            err = f(feats[name][j]) - feats[name][2]
            r[name] = {"mae_mev": float(1000 * np.abs(err).mean()), "rmse_mev": float(1000 * np.sqrt((err ** 2).mean()))}
        n_inv = np.array([len(a) for a in sets["test"][: args.n_inv]], float)[:, None]
        e0 = f(base[pool] / n_inv)
        r["invariance_max_mev"] = {}
        for op in ops:
            x = np.stack([q[j] / len(o[op]) for q, o in zip(moved[op], inv, strict=True)])
            r["invariance_max_mev"][op] = float(1000 * np.abs(f(x) - e0).max())
        res["pools"][pool] = r
        print(f"[atom_readout] {pool} sum: held-out {r['test']['mae_mev']:.2f}, transfer {r['transfer']['mae_mev']:.2f} "
              f"meV/atom; largest change " + ", ".join(f"{k} {v:.2f}" for k, v in r["invariance_max_mev"].items()),
              flush=True)
    res["time_s"] = time.time() - t0
    with open(args.out + ".tmp", "w") as fh:
        json.dump(res, fh, indent=1)
    os.replace(args.out + ".tmp", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
