"""How much a trained model's energy changes when the same structure is written down differently (issue 11).

For random structures of every kind the library generates (graphene, h-BN,
B/C/N alloys, heterostructures, defects; ``ednn.atoms.generate``), each of
these descriptions of the *same* physical structure is predicted and the
change of the energy per atom against the original recorded:

``translate``
    all atoms moved by a random in-plane vector (any amount: sub-pixel parts included);
``subpixel``
    all atoms moved by 0.5 pixel along cell vector 1;
``basis``
    the cell (a1, a2) rewritten as (a1, a1 + a2): another basis of the same lattice;
``basis_120``
    (a1, a2) -> (a1, a2 - a1): for hexagonal cells the 60 against 120 degree convention;
``supercell``
    the 2x1 supercell (energy per atom compared; exact extensivity when the
    image of the supercell is the image of the cell twice);
``rect_super``
    the supercell with matrix [[1, 0], [1, 2]]: for hexagonal cells the rectangular one;
``swap``
    a1 and a2 exchanged (a mirror of the cell's description);
``rotate``
    atoms and cell rotated together by a random angle about z (the pixel grid follows the cell);
``mirror``
    atoms and cell mirrored (y -> -y);
``permute``
    atoms listed in a random order.

Writes ``experiments/results/invariance.json`` (max and median |dE| in
meV/atom per operation and kind) and ``invariance.png``::

    python experiments/invariance.py [--model runs/demo/run/model] [--n 50]
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
KINDS = ("graphene", "hbn", "bcn", "hetero", "defect")


def operations(at, rng, spacing: float):
    """{name: structure} for one original structure (:func:`ednn.image.describe.equivalent_structures`)."""
    from ednn.image.describe import equivalent_structures

    return equivalent_structures(at, rng, spacing)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "runs" / "demo" / "run" / "model"))
    ap.add_argument("--n", type=int, default=50, help="structures per kind")
    ap.add_argument("--out", default=str(RESULTS / "invariance.json"))
    args = ap.parse_args(argv)
    import ednn
    from ednn.atoms.generate import generate

    model = ednn.load(args.model)
    spacing = float(model.grid.spacing)
    rng = np.random.default_rng(0)
    res: dict = {"model": os.path.relpath(args.model, ROOT), "grid": model.grid.to_dict(), "n_per_kind": args.n,
                 "by_kind": {}}
    t0 = time.time()
    allops: dict[str, list[float]] = {}
    for kind in KINDS:
        rows: dict[str, list[float]] = {}
        for at in generate(kind, args.n, seed=11, n_atoms=(20, 120), relax_defects=False):
            ops = operations(at, rng, spacing)
            structs = [at] + list(ops.values())
            e = model.predict_energies(structs)
            e0 = e[0] / len(at)
            for (name, s), ei in zip(ops.items(), e[1:], strict=True):
                d = 1000 * abs(ei / len(s) - e0)
                rows.setdefault(name, []).append(d)
                allops.setdefault(name, []).append(d)
        res["by_kind"][kind] = {k: {"max": float(np.max(v)), "median": float(np.median(v))} for k, v in rows.items()}
        print(kind, {k: round(v["max"], 2) for k, v in res["by_kind"][kind].items()}, flush=True)
    res["all"] = {k: {"max": float(np.max(v)), "median": float(np.median(v)), "n": len(v)} for k, v in allops.items()}
    res["seconds"] = time.time() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(out)
    _plot(res, out.with_suffix(".png"))
    print(json.dumps(res["all"], indent=1))
    return 0


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res["all"])
    fig, ax = plt.subplots(figsize=(9, 3.8))
    x = np.arange(len(names))
    for j, kind in enumerate(res["by_kind"]):
        vals = [res["by_kind"][kind][n]["max"] for n in names]
        ax.bar(x + (j - 2) * 0.16, [v if v > 0 else np.nan for v in vals], 0.16, label=kind)

    ax.axhline(1.0, color="k", ls="--", lw=0.8, label="1 meV/atom (issue 11)")
    ax.set_ylim(bottom=0.1)
    for xi, n in zip(x, names, strict=True):
        if all(res["by_kind"][k][n]["max"] == 0 for k in res["by_kind"]):  # exactly invariant: no bar on a log axis
            ax.text(xi, 0.15, "exactly 0", ha="center", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=30)
    ax.set_ylabel("max |dE| (meV/atom)")
    ax.set_title(f"same structure, another description: {res['model']}, {res['n_per_kind']} structures per kind",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


if __name__ == "__main__":
    raise SystemExit(main())
