"""Time and peak memory of the atom-centred model against the number of atoms (linear time, flat memory).

Perfect-lattice B/C/N sheets (random species on a graphene lattice, rattled 0.05 A) of 10^3 .. 2x10^6 atoms,
each predicted in a fresh process (so that its peak resident memory is its own): the energy through
``model.predict_energy`` (structures above ``ednn.predict.atomic.STREAM_ATOMS`` atoms are predicted strip by
strip) and, up to ``--max-forces`` atoms, energy and forces through the calculator. The model is any saved
atom-centred model (default: ``runs/peers/ednn_atoms/model`` from ``experiments/peers.py``); its weights do not
change the cost. Writes ``experiments/results/atomic_scaling.{json,png}``::

    nice python experiments/atomic_scaling.py
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"


def sheet(n_atoms: int, seed: int = 0):
    from ednn.atoms import structures as st

    side = max(1, int(round(np.sqrt(n_atoms / 2))))
    at = st.graphene(side, side, a=st.A_BNC)
    rng = np.random.default_rng(seed)
    at.numbers = rng.choice([5, 6, 7], size=len(at))
    at.positions += rng.normal(scale=0.05, size=at.positions.shape)
    return at


def one(model_path: str, n: int, forces: bool) -> dict:
    """Runs in its own process: build, predict, report time and peak RSS."""
    import ednn

    model = ednn.load(model_path)
    model.predict_energy(sheet(200))  # graphs built outside the timing
    at = sheet(n)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    e = model.predict_energy(at)
    dt = time.perf_counter() - t0
    out = {"atoms": len(at), "energy_s": dt, "atoms_per_s": len(at) / dt, "energy_per_atom_eV": e / len(at),
           "streamed": bool(model._huge(at)), "rss_before_MiB": rss0,
           "peak_rss_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if forces:
        calc = model.calculator()
        calc._domain = None  # a timing: the domain check (a neighbour list) is not the model's cost
        at.calc = calc
        t0 = time.perf_counter()
        f = at.get_forces()
        out["energy_forces_s"] = time.perf_counter() - t0
        out["max_force_eV_A"] = float(np.abs(f).max())
        out["peak_rss_forces_MiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(ROOT / "runs" / "peers" / "ednn_atoms" / "model"))
    p.add_argument("--sizes", type=int, nargs="*", default=[1000, 10_000, 100_000, 300_000, 1_000_000, 2_000_000])
    p.add_argument("--max-forces", type=int, default=1_000_000)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.model, args.one, args.one <= args.max_forces)))
        return 0
    rows = []
    out = RESULTS / "atomic_scaling.json"
    for n in args.sizes:
        r = subprocess.run([sys.executable, __file__, "--model", args.model, "--one", str(n),
                            "--max-forces", str(args.max_forces)], capture_output=True, text=True, check=True)
        row = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"model": args.model, "rows": rows}, indent=1))
        os.replace(tmp, out)
    n = np.array([r["atoms"] for r in rows], float)
    t = np.array([r["energy_s"] for r in rows])
    big = n >= 1e4
    slope = float(np.polyfit(np.log(n[big]), np.log(t[big]), 1)[0]) if big.sum() >= 2 else None
    res = {"model": args.model, "rows": rows, "time_exponent_from_1e4": slope}
    out.write_text(json.dumps(res, indent=1))
    plot(res, out.with_suffix(".png"))
    print(f"time ~ N^{slope:.2f}" if slope is not None else "", flush=True)
    return 0


def plot(res: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    from ednn.plots import save_fig

    rows = res["rows"]
    n = [r["atoms"] for r in rows]
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax = fig.subplots(1, 2)
    ax[0].loglog(n, [r["energy_s"] for r in rows], "o-", label="energy")
    fr = [r for r in rows if "energy_forces_s" in r]
    if fr:
        ax[0].loglog([r["atoms"] for r in fr], [r["energy_forces_s"] for r in fr], "s-", label="energy + forces")
    ax[0].loglog(n, np.array(n) * rows[-1]["energy_s"] / n[-1], "k:", lw=0.8, label="linear")
    k = res["time_exponent_from_1e4"]
    ax[0].set(xlabel="atoms", ylabel="time (s)", title=f"time ~ N^{k:.2f} from 1e4" if k is not None else "")
    ax[0].legend(fontsize=8)
    ax[1].semilogx(n, [r["peak_rss_MiB"] for r in rows], "o-", label="energy")
    if fr:
        ax[1].semilogx([r["atoms"] for r in fr], [r["peak_rss_forces_MiB"] for r in fr], "s-", label="+ forces")
    ax[1].set(xlabel="atoms", ylabel="peak resident memory (MiB)", title="one process per size")
    ax[1].legend(fontsize=8)
    save_fig(fig, str(path))


if __name__ == "__main__":
    raise SystemExit(main())
