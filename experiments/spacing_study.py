"""Pixel spacing against sub-pixel invariance and accuracy on trained models (issue 11), same data, same time.

The default grid (spacing 0.624 A, sigma 0.5 A: sigma/h = 0.8) against a finer
one (0.5 A: sigma/h = 1.0, where untrained networks' sub-pixel spread drops
20x, ``experiments/subpixel_sampling.py``), with the network's receptive field
kept at the same physical radius (5 x 0.624 = 3.1 A: 6 layers at 0.5 A). The
`make demo` recipe and data, ``--minutes`` each, one after the other; held-out
and transfer MAE and the invariance table of ``experiments/invariance.py``.
Writes ``experiments/results/spacing_study.json`` after each run (rerun to
continue)::

    nice python experiments/spacing_study.py --minutes 8 --n 20

A first look at one budget, not the learning curves at the full budget that the
grid choice needs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

from augment_study import run  # noqa: E402

VARIANTS = {"h0.624": ({}, {}), "h0.50": ({"spacing": 0.5}, {"layers": 6})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "spacing_study.json"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    res = json.loads(out.read_text()) if out.exists() else {"config": {"minutes": args.minutes, "n_per_kind": args.n}}
    for name, (grid, model) in VARIANTS.items():
        if name in res.get("runs", {}):
            continue
        print(f"== {name}", flush=True)
        r = run("none", args.minutes, args.n, ROOT / "runs" / "spacing_study", name=name, grid=grid, model=model)
        r.update({"grid": grid, "model": model})
        res.setdefault("runs", {})[name] = r
        print(json.dumps({k: v for k, v in r.items() if k != "invariance"}), flush=True)
        print({k: round(v["max"], 2) for k, v in r["invariance"].items()}, flush=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1))
        tmp.replace(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
