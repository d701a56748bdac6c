"""Prediction speed of a per-voxel LDOS model against GPAW (issue 13, must-show 6).

The model of ``experiments/ldos_model.py`` (``runs/ldos_model/ednn``) predicts the LDOS of fcc Al
supercells of 4 n^3 atoms (n = 1..--max-n, rattled), each size in a fresh process: the time of
``predict_ldos`` (the network and the depth-to-space reassembly) and of ``electronic_structure``
(DOS, Fermi level, band energy, density at 298 K from that LDOS), per atom and per voxel, and the
peak RSS. GPAW's SCF times of the same kind of cell come from the label records (``scf_seconds`` in
``data/ldos``; k-density 24 A, one core). Output ``experiments/results/ldos_speed.{json,png}``::

    nice python experiments/ldos_speed.py --max-n 4
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"


def one(n: int, mode: str) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ase.build import bulk

    import ednn

    model = ednn.load(str(ROOT / "runs" / "ldos_model" / "ednn" / "model"))
    warm = bulk("Al", "fcc", a=4.04, cubic=True)
    model.electronic_structure(warm, 298.0)
    at = bulk("Al", "fcc", a=4.04, cubic=True).repeat(n)
    at.rattle(0.1, seed=n)
    t0 = time.perf_counter()
    if mode == "full":
        ldos = model.predict_ldos(at)
        t1 = time.perf_counter()
        es = model.electronic_structure(at, 298.0, ldos=ldos)
    else:
        t1 = t0
        es = model.electronic_structure(at, 298.0)
    t2 = time.perf_counter()
    vox = int(es["density"].size)
    return {"mode": mode, "n": n, "atoms": len(at), "voxels": vox, "energies": int(len(es["dos"])), "ldos_s": t1 - t0,
            "physics_s": t2 - t1, "total_s": t2 - t0, "us_per_voxel": 1e6 * (t2 - t0) / vox,
            "ms_per_atom": 1e3 * (t2 - t0) / len(at), "band_energy_per_atom": es["band_energy"] / len(at),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def gpaw_times() -> list[dict]:
    from ednn.data import Dataset

    out = []
    for f in sorted((ROOT / "data" / "ldos").glob("al*_Te298.h5")):
        with Dataset(f) as ds:
            for i in range(len(ds)):
                info = ds.info(i)
                out.append({"file": f.name, "atoms": len(ds.numbers(i)), "scf_s": info["scf_seconds"],
                            "kpts": info["kpts"], "grid": info["grid_shape"]})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-n", type=int, default=8, help="largest n of the readout path")
    ap.add_argument("--max-n-full", type=int, default=4, help="largest n of the full-LDOS path")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="readout", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one is not None:
        print("RESULT " + json.dumps(one(args.one, args.mode)), flush=True)
        return 0
    rows = []
    for mode, top in (("full", args.max_n_full), ("readout", args.max_n)):
        for n in range(1, top + 1):
            p = subprocess.run([sys.executable, __file__, "--one", str(n), "--mode", mode], capture_output=True,
                               text=True)
            line = [x for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if p.returncode or not line:
                print(p.stderr[-2000:])
                return 1
            rows.append(json.loads(line[0][7:]))
            print(rows[-1], flush=True)
    g = gpaw_times()

    def exponent(sel):
        return float(np.polyfit(np.log([r["atoms"] for r in sel[1:]]), np.log([r["total_s"] for r in sel[1:]]),
                                1)[0]) if len(sel) > 2 else float("nan")

    by = {m: [r for r in rows if r["mode"] == m] for m in ("full", "readout")}
    fit = exponent(by["readout"])
    big = by["readout"][-1]
    res = {"ednn": rows, "gpaw": g, "exponent_from_n2": {m: exponent(v) for m, v in by.items()},
           "note": "2-core machine with a GPAW job running on the other core: upper bounds"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ldos_speed.json").write_text(json.dumps(res, indent=1))
    from matplotlib.figure import Figure

    from ednn.plots import save_fig

    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.subplots()
    for m, v in by.items():
        ax.loglog([r["atoms"] for r in v], [r["total_s"] for r in v], "o-",
                  label=f"ednn {m}: LDOS physics, peak {v[-1]['peak_rss_mib']:.0f} MiB at {v[-1]['atoms']} atoms")
    ax.loglog([x["atoms"] for x in g], [x["scf_s"] for x in g], "s", label="GPAW SCF (1 core)")
    ax.set(xlabel="atoms", ylabel="seconds", title=f"Al LDOS: ednn t ~ N^{fit:.2f}; {big['atoms']} atoms "
           f"{big['total_s']:.1f} s, {big['peak_rss_mib']:.0f} MiB")
    ax.legend(fontsize=8)
    save_fig(fig, RESULTS / "ldos_speed.png", dpi=130)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
