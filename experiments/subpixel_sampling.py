"""Sub-pixel translation error against the pixel spacing, before any training (issue 11, the sampling floor).

A trained model's energy changes when all atoms move by a fraction of a pixel
(``experiments/invariance.py``: up to ~50-66 meV/atom with the default grid,
spacing 0.624 A and sigma 0.5 A, whatever the training). Part of that is the
image itself: a Gaussian of width sigma sampled at spacing h aliases, and the
network's nonlinear layers turn the aliasing into energy. This measures it
with no training at all, so that it isolates the grid: for each spacing h
(sigma fixed), networks of the default architecture with random weights
(several seeds) give energies per atom of 20 rattled B/C/N sheets at 8 shifts
along a1 (0 .. 7/8 pixel); the figure of merit is the spread over shifts
(max - min, per structure, max over structures) relative to the spread of the
energies per atom across structures (what the network can tell apart). Both
come from the same random network, so their ratio does not depend on its
arbitrary scale.

Writes ``experiments/results/subpixel_sampling.{json,png}`` (``--cutoff C``: Gaussians truncated at
C sigma instead of the default 4, written to ``subpixel_sampling_cutoff<C>.{json,png}``)::

    python experiments/subpixel_sampling.py [--cutoff 7]
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
SIGMA = 0.5
SPACINGS = (0.62375, 0.5, 0.42, 0.35, 0.3, 0.25)
SHIFTS = 8
SEEDS = (0, 1, 2)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cutoff", type=float, default=None, help="Gaussian truncation radius in sigmas")
    args = ap.parse_args(argv)
    from ednn.atoms.generate import generate
    from ednn.config import normalize_model_config
    from ednn.image.grid import GridSpec
    from ednn.predict.model import EnergyModel

    structs = list(generate("bcn", 20, seed=3, n_atoms=(40, 80)))
    res = {"sigma": SIGMA, "cutoff_sigmas": args.cutoff or GridSpec(species=(6,)).cutoff, "shifts": SHIFTS, "seeds": list(SEEDS), "n_structures": len(structs), "rows": []}
    t0 = time.time()
    for h in SPACINGS:
        extra = {} if args.cutoff is None else {"cutoff": args.cutoff}
        g = GridSpec(species=(5, 6, 7), spacing=h, sigma=SIGMA, heights=1, **extra)
        # the default network, its receptive field kept at the default physical radius (5 px of 0.624 A)
        layers = max(2, int(round(5 * 0.62375 / h)))
        cfg = normalize_model_config({"layers": layers})
        rel = []
        for seed in SEEDS:
            m = EnergyModel.create(cfg, g, seed=seed)
            m.refs = np.zeros(3)
            e = np.empty((len(structs), SHIFTS))
            for i, at in enumerate(structs):
                a1 = at.cell[0] / np.linalg.norm(at.cell[0])
                step = np.linalg.norm(at.cell[0]) / g.pixels_along(np.linalg.norm(at.cell[:2], axis=1))[0]
                shifted = []
                for k in range(SHIFTS):
                    b = at.copy()
                    b.positions += (k / SHIFTS) * step * a1
                    b.wrap()
                    shifted.append(b)
                e[i] = m.predict_energies(shifted) / len(at)
            spread_shift = float((e.max(1) - e.min(1)).max())
            spread_struct = float(np.ptp(e[:, 0]))
            rel.append(spread_shift / spread_struct)
        row = {"spacing": h, "sigma_over_h": SIGMA / h, "layers": layers, "relative_subpixel_spread": rel,
               "median": float(np.median(rel))}
        res["rows"].append(row)
        print(f"h = {h:.3f} A (sigma/h {SIGMA / h:.2f}, {layers} layers): sub-pixel spread / structure spread "
              f"{np.median(rel):.3g} (seeds {[f'{r:.3g}' for r in rel]})", flush=True)
    res["seconds"] = time.time() - t0
    out = RESULTS / ("subpixel_sampling.json" if args.cutoff is None else f"subpixel_sampling_cutoff{args.cutoff:g}.json")
    out.write_text(json.dumps(res, indent=1))
    _plot(res, out.with_suffix(".png"))
    return 0


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["sigma_over_h"] for r in res["rows"]]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for j in range(len(res["seeds"])):
        ax.semilogy(x, [r["relative_subpixel_spread"][j] for r in res["rows"]], "o-", alpha=0.6,
                    label=f"random weights, seed {res['seeds'][j]}")
    ax.set_xlabel("sigma / pixel spacing")
    ax.set_ylabel("sub-pixel spread / spread across structures")
    ax.set_title(f"untrained default network, sigma = {res['sigma']} A, {res['n_structures']} B/C/N sheets",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


if __name__ == "__main__":
    raise SystemExit(main())
