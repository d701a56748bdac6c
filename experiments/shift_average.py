"""Translation invariance of trained models by averaging over sub-pixel shifts (issue 11).

A trained model's energy changes when every atom moves by a fraction of a pixel (the images alias and
the network turns the aliasing into energy; ``experiments/invariance.py``). ``model.shift_average: K``
predicts the mean energy over the K^2 translations ``(i/K, j/K)`` pixel: the network's energy is a
smooth function of the translation, periodic over one pixel, so this uniform quadrature of its mean
converges exponentially with K, and every term stays exactly extensive.

For trained models (the ``make demo`` model, spacing 0.624 A; the 0.50 A model of
``experiments/spacing_study.py``; the demo recipe trained 8 minutes with ``train.augment: translate``, a
random origin per structure and epoch, by ``experiments/augment_study.py``; and with ``augment: reduced``,
a random origin and a random reduced basis of the lattice, predicted with ``model.cell_average`` on),
for K = 1..4: every operation of
``invariance.py`` on ``--n`` structures of each generated kind (max and median |dE| in meV/atom), the
held-out MAE on the demo's test set, and the prediction time per structure. Output
``experiments/results/shift_average.{json,png}``::

    nice python experiments/shift_average.py --n 10
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
#: name -> (model folder, cell_average): the last one is trained on reduced bases (augment: reduced) and
#: predicts the mean over them
MODELS = {"demo (h 0.624 A)": (ROOT / "runs" / "demo" / "run" / "model", False),
          "spacing study (h 0.50 A)": (ROOT / "runs" / "spacing_study" / "h0.50" / "model", False),
          "augment: translate (h 0.624 A)": (ROOT / "runs" / "augment_study" / "augment_translate" / "model", False),
          "augment: reduced + cell_average": (ROOT / "runs" / "augment_study" / "augment_reduced" / "model", True)}
TEST = ROOT / "runs" / "demo" / "data" / "test.h5"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="structures per kind")
    ap.add_argument("--k", type=int, nargs="*", default=[1, 2, 3, 4])
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON")
    args = ap.parse_args(argv)
    if args.plot_only:
        _plot(json.loads((RESULTS / "shift_average.json").read_text()), RESULTS / "shift_average.png")
        return 0
    sys.path.insert(0, str(ROOT / "experiments"))
    from invariance import KINDS, operations

    import ednn
    from ednn.atoms.generate import generate
    from ednn.data import Dataset

    rng = np.random.default_rng(0)
    cases = []  # (original, {op: structure}), the same for every model and K
    for kind in KINDS:
        for at in generate(kind, args.n, seed=11, n_atoms=(20, 120), relax_defects=False):
            cases.append((kind, at, rng.integers(1 << 31)))
    with Dataset(TEST) as ds:
        test = [ds[i] for i in range(len(ds))]
        e_test = ds.energies
    n_test = np.array([len(a) for a in test], float)
    res = {"n_per_kind": args.n, "kinds": list(KINDS), "models": {}}
    for name, (path, cell_average) in MODELS.items():
        model = ednn.load(str(path))
        model.cell_average = cell_average
        spacing = float(model.grid.spacing)
        ops = [(kind, at, operations(at, np.random.default_rng(seed), spacing)) for kind, at, seed in cases]
        rows = {}
        for k in args.k:
            model.shift_average = k
            t0 = time.perf_counter()
            d: dict[str, list[float]] = {}
            for _, at, o in ops:
                e = model.predict_energies([at] + list(o.values()))
                e0 = e[0] / len(at)
                for (op, s), ei in zip(o.items(), e[1:], strict=True):
                    d.setdefault(op, []).append(1000 * abs(ei / len(s) - e0))
            dt = (time.perf_counter() - t0) / (len(ops) * 11)
            mae = float(1000 * np.mean(np.abs(model.predict_energies(test) - e_test) / n_test))
            rows[str(k)] = {"ops": {op: {"max": float(np.max(v)), "median": float(np.median(v))} for op, v in d.items()},
                            "test_mae_mev_per_atom": mae, "seconds_per_structure": dt}
            print(name, k, {op: round(v["max"], 3) for op, v in rows[str(k)]["ops"].items()},
                  f"test MAE {mae:.2f}", f"{1000 * dt:.1f} ms/structure", flush=True)
        res["models"][name] = {"path": os.path.relpath(path, ROOT), "spacing": spacing, "cell_average": cell_average,
                               "by_k": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "shift_average.json"
    out.write_text(json.dumps(res, indent=1))
    _plot(res, out.with_suffix(".png"))
    return 0


def _plot(res: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    from ednn.plots import save_fig

    fig = Figure(figsize=(12, 3.8), layout="constrained")
    axes = fig.subplots(1, len(res["models"]), sharey=True)
    for ax, (name, m) in zip(np.atleast_1d(axes), res["models"].items(), strict=True):
        ks = sorted(m["by_k"], key=int)
        for op in ("translate", "subpixel", "supercell", "basis", "rect_super"):
            ax.semilogy([int(k) for k in ks], [max(m["by_k"][k]["ops"][op]["max"], 1e-4) for k in ks], "o-",
                        label=op)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set(xlabel="K (shifts per axis; cost K^2)", xticks=[int(k) for k in ks])
        ax.set_title(name, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("max |dE| (meV/atom); 0 drawn at 1e-4")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    save_fig(fig, path, dpi=130)


if __name__ == "__main__":
    raise SystemExit(main())
