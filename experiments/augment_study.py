"""Training on equivalent descriptions (``train.augment``) against the data as given, same data, same time.

Both runs use the `make demo` recipe (``ednn.workflows.demo.DEMO_CONFIG``: default
grid and network, energies only) on the `make demo` data (``runs/demo/data``:
train.h5, test.h5, transfer.h5), with the same wall-clock budget, one after the
other (never two trainings at once). For each: held-out and size-transfer MAE
(meV/atom), and the invariance table of ``experiments/invariance.py`` (max and
median |dE| over ``--n`` generated structures per kind). Results go to
``experiments/results/augment_study.json`` after each run (rerun to continue)
and ``augment_study.png``::

    nice python experiments/augment_study.py --minutes 8 --n 20
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
DATA = ROOT / "runs" / "demo" / "data"
MODES = ("none", "cell", "translate", "reduced")


def invariance_table(model, n: int) -> dict:
    sys.path.insert(0, str(ROOT / "experiments"))
    from invariance import KINDS, operations

    from ednn.atoms.generate import generate

    rng = np.random.default_rng(0)
    rows: dict[str, list[float]] = {}
    for kind in KINDS:
        for at in generate(kind, n, seed=11, n_atoms=(20, 120), relax_defects=False):
            ops = operations(at, rng, float(model.grid.spacing))
            e = model.predict_energies([at] + list(ops.values()))
            for (name, s), ei in zip(ops.items(), e[1:], strict=True):
                rows.setdefault(name, []).append(1000 * abs(ei / len(s) - e[0] / len(at)))
    return {k: {"max": float(np.max(v)), "median": float(np.median(v))} for k, v in rows.items()}


def run(mode: str, minutes: float, n: int, out: Path, name: str | None = None, grid: dict | None = None,
        model: dict | None = None, reuse: bool = False) -> dict:
    """Train the demo recipe for ``minutes`` (with ``train.augment: mode`` and grid/model overrides), then the
    held-out and transfer metrics and the invariance table."""
    from ednn.train import load_structures, train
    from ednn.workflows.demo import DEMO_CONFIG
    from ednn.workflows.evaluate import metrics, n_atoms

    cfg = json.loads(json.dumps(DEMO_CONFIG))
    cfg["out"] = str(out / (name or f"augment_{mode}"))
    cfg["data"] = {"train": str(DATA / "train.h5"), "val_fraction": 0.1, "test_fraction": 0.0}
    cfg["train"].update({"max_time_s": 60.0 * minutes, "augment": mode, "progress": False})
    cfg["grid"].update(grid or {})
    cfg["model"].update(model or {})
    t0 = time.time()
    hist = None
    if reuse and (Path(cfg["out"]) / "model").exists():  # a finished run whose evaluation was interrupted
        import ednn

        model = ednn.load(str(Path(cfg["out"]) / "model"))
        hist = json.load(open(Path(cfg["out"]) / "log.json"))
        t_train = float(sum(h.get("time_s", 0.0) for h in hist))  # the epochs of the finished run
    else:
        model = train(cfg, overwrite=True)
        t_train = time.time() - t0
    hist = hist or json.load(open(Path(cfg["out"]) / "log.json"))
    res = {"mode": mode, "train_s": t_train, "epochs": len(hist), "val_mae_mev": hist[-1].get("val_mae_mev")}
    for name in ("test", "transfer"):
        structs, E = load_structures(str(DATA / f"{name}.h5"))
        nat = np.array([n_atoms(a) for a in structs], float)
        res[name] = metrics(E, model.predict_energies(structs), nat)
    res["invariance"] = invariance_table(model, n)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=8.0, help="training budget per run (wall clock)")
    ap.add_argument("--n", type=int, default=20, help="structures per kind in the invariance table")
    ap.add_argument("--out", default=str(RESULTS / "augment_study.json"))
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "augment_study"))
    ap.add_argument("--reuse", action="store_true", help="evaluate finished runs again instead of retraining")
    args = ap.parse_args(argv)
    if not (DATA / "train.h5").exists():
        raise SystemExit(f"{DATA}/train.h5 is missing: run `make demo` first (it builds the data)")
    out = Path(args.out)
    res = json.loads(out.read_text()) if out.exists() else {}
    res.setdefault("config", {"minutes": args.minutes, "n_per_kind": args.n, "data": str(DATA.relative_to(ROOT))})
    for mode in MODES:
        if mode in res.get("runs", {}):
            continue
        print(f"== augment: {mode}", flush=True)
        r = run(mode, args.minutes, args.n, Path(args.runs_dir), reuse=args.reuse)
        res.setdefault("runs", {})[mode] = r
        print(json.dumps({k: v for k, v in r.items() if k != "invariance"}, indent=1), flush=True)
        print({k: round(v["max"], 2) for k, v in r["invariance"].items()}, flush=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1))
        tmp.replace(out)
    _plot(res, out.with_suffix(".png"))
    return 0


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = res.get("runs", {})
    if not runs:
        return
    names = list(next(iter(runs.values()))["invariance"])
    fig, ax = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [3, 1]})
    x = np.arange(len(names))
    for j, (mode, r) in enumerate(runs.items()):
        vals = [r["invariance"][k]["max"] for k in names]
        ax[0].bar(x + (j - 0.5) * 0.4, [v if v > 0 else np.nan for v in vals], 0.4, label=f"augment: {mode}")

        ax[1].bar(np.arange(2) + (j - 0.5) * 0.4, [r["test"]["mae_mev_per_atom"], r["transfer"]["mae_mev_per_atom"]],
                  0.4, label=f"augment: {mode}")
    ax[0].axhline(1.0, color="k", ls="--", lw=0.8)
    ax[0].set_ylim(bottom=0.1)
    for xi, k in zip(x, names, strict=True):
        if all(r["invariance"][k]["max"] == 0 for r in runs.values()):  # exactly invariant: no bar on a log axis
            ax[0].text(xi, 0.15, "exactly 0", ha="center", fontsize=7)
    ax[0].set_yscale("log")
    ax[0].set_xticks(x, names, rotation=30)
    ax[0].set_ylabel("max |dE| (meV/atom)")
    ax[0].set_title("same structure, another description", fontsize=9)
    ax[1].set_xticks([0, 1], ["held-out", "size transfer"])
    ax[1].set_ylabel("MAE (meV/atom)")
    for a in ax:
        a.legend(fontsize=8)
    fig.suptitle(f"make-demo data and recipe, {res['config']['minutes']:.0f} min of training each", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


if __name__ == "__main__":
    raise SystemExit(main())
