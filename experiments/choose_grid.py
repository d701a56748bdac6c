"""Measure accuracy vs cost of grid spacing / sigma / architecture on a small Tersoff set.

Usage: python experiments/choose_grid.py [--n 400] [--time 90] [--only NAME]
Writes experiments/results/choose_grid.json. Each setting trains for a fixed
wall-clock budget (train.max_time_s) on the same data; we report held-out MAE
(meV/atom), seconds per epoch and epochs done.

Results: choose_grid_round1.json (earlier input normalisation and an earlier
structure generator: not comparable in absolute terms), choose_grid.json and
choose_grid_b.json (current code, round 2). Short runs on a shared 2-core
machine: they rank costs at equal time, not final accuracies.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np

from ednn.atoms.labellers import get_labeller
from ednn.atoms.structures import A_BNC, generate
from ednn.train import train

SETTINGS = {
    "k4_L5_f32_b4_lr1e-3": ({"spacing": A_BNC / 4, "sigma": 0.5}, {"layers": 5, "filters": 32, "kernel": 3}, {"batch_size": 4, "learning_rate": 1e-3}),
    "k4_L5_f48_b8_lr2e-3": ({"spacing": A_BNC / 4, "sigma": 0.5}, {"layers": 5, "filters": 48, "kernel": 3}, {"batch_size": 8, "learning_rate": 2e-3}),
    "k4_L5_f32_b8_huber": ({"spacing": A_BNC / 4, "sigma": 0.5}, {"layers": 5, "filters": 32, "kernel": 3}, {"batch_size": 8, "loss": "huber"}),
    "k4_s50_L5_f32_b8": ({"spacing": A_BNC / 4, "sigma": 0.5}, {"layers": 5, "filters": 32, "kernel": 3}, {"batch_size": 8}),
    "k4_s55_L6_f32_b8": ({"spacing": A_BNC / 4, "sigma": 0.55}, {"layers": 6, "filters": 32, "kernel": 3}, {"batch_size": 8}),
    "k5_s45_L6_f32_b8": ({"spacing": A_BNC / 5, "sigma": 0.45}, {"layers": 6, "filters": 32, "kernel": 3}, {"batch_size": 8}),
    "k5_s45_L6_f24_b8": ({"spacing": A_BNC / 5, "sigma": 0.45}, {"layers": 6, "filters": 24, "kernel": 3}, {"batch_size": 8}),
    "k5_s45_L4k5_f24_b8": ({"spacing": A_BNC / 5, "sigma": 0.45}, {"layers": 4, "filters": 24, "kernel": 5}, {"batch_size": 8}),
    "k5_s45_L6": ({"spacing": A_BNC / 5, "sigma": 0.45}, {"layers": 6, "filters": 32, "kernel": 3}),
    "k6_s40_L6": ({"spacing": A_BNC / 6, "sigma": 0.40}, {"layers": 6, "filters": 32, "kernel": 3}),
    "k6_s30_L6": ({"spacing": A_BNC / 6, "sigma": 0.30}, {"layers": 6, "filters": 32, "kernel": 3}),
    "k6_s40_L8": ({"spacing": A_BNC / 6, "sigma": 0.40}, {"layers": 8, "filters": 32, "kernel": 3}),
    "k8_s35_L8": ({"spacing": A_BNC / 8, "sigma": 0.35}, {"layers": 8, "filters": 32, "kernel": 3}),
    "k6_s40_L4k5": ({"spacing": A_BNC / 6, "sigma": 0.40}, {"layers": 4, "filters": 32, "kernel": 5}),
}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--time", type=float, default=90.0)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--out", default="experiments/results/choose_grid.json")
    args = ap.parse_args()
    lab = get_labeller("tersoff")
    t0 = time.time()
    structs = list(generate("mixed", args.n, seed=11, n_atoms=(8, 100)))
    E = np.array([lab.label(a)["energy"] for a in structs])
    print(f"{len(structs)} structures labelled in {time.time() - t0:.1f} s", file=sys.stderr)
    results = {}
    if os.path.exists(args.out):
        results = json.load(open(args.out))
    for name, setting in SETTINGS.items():
        grid, model = setting[:2]
        over = setting[2] if len(setting) > 2 else {}
        if args.only and name not in args.only:
            continue
        cfg = {"out": f"runs/choose_grid/{name}", "seed": 0, "grid": grid, "model": model,
               "data": {"val_fraction": 0.2},
               "train": {"epochs": 40, "batch_size": 16, "learning_rate": 3e-3, "max_time_s": args.time,
                         "progress": False, **over}}
        t1 = time.time()
        m = train(cfg, structures=structs, energies=E)
        hist = json.load(open(f"runs/choose_grid/{name}/log.json"))
        best = min(h["val_mae_mev"] for h in hist)
        results[name] = {"grid": grid, "model": model, "best_val_mae_mev": best, "epochs": len(hist),
                         "s_per_epoch": float(np.mean([h["time_s"] for h in hist])),
                         "wall_s": time.time() - t1, "scale_mev": 1000 * m.scale}
        print(name, results[name], file=sys.stderr, flush=True)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        json.dump(results, open(args.out, "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
