"""Benchmark: rasterizing graphene sheets from 10^3 to 10^6 atoms.

For each size, in a fresh subprocess, measure wall time and peak memory
(tracemalloc: NumPy's allocations, after the structure is built) of

* the chunked path: ``rasterize_strips`` consumed strip by strip (each strip is
  reduced and forgotten, as streaming prediction does), and
* the whole-image path: ``rasterize`` (memory grows with the image).

Writes ``experiments/results/bench_raster.json`` and ``bench_raster.png``.

Usage: ``python experiments/bench_raster.py [--sizes 1000 10000 ...] [--no-full]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "results")


def sheet(n_atoms: int):
    """Rectangular graphene sheet with about ``n_atoms`` atoms (4-atom cell)."""
    from ase.build import graphene

    cell = graphene(formula="C2", a=2.46, vacuum=None)
    # rectangular 4-atom cell: a x sqrt(3) a
    rect = cell.repeat((1, 2, 1))
    rect.set_cell([[2.46, 0, 0], [0, 2.46 * np.sqrt(3), 0], [0, 0, 0]], scale_atoms=False)
    rect.wrap()
    n_cells = max(1, round(n_atoms / 4))
    nx = max(1, int(round(np.sqrt(n_cells * np.sqrt(3)))))
    ny = max(1, int(round(n_cells / nx)))
    return rect.repeat((nx, ny, 1))


def measure(n_atoms: int, path: str) -> dict:
    import tracemalloc

    from ednn import GridSpec, rasterize, rasterize_strips

    atoms = sheet(n_atoms)
    spec = GridSpec(species=("B", "C", "N"), spacing=2.46 / 12, sigma=0.3, dim=2)

    def run():
        if path == "chunked":
            total = 0.0
            shape = None
            for _, strip in rasterize_strips(atoms, spec):
                total += float(strip.sum(dtype=np.float64))
                shape = strip.shape
            return total, shape
        img = rasterize(atoms, spec)
        return float(img.sum(dtype=np.float64)), img.shape

    t0 = time.perf_counter()
    total, shape = run()
    wall = time.perf_counter() - t0
    tracemalloc.start()
    run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "path": path,
        "atoms": len(atoms),
        "seconds": wall,
        "atoms_per_second": len(atoms) / wall,
        "peak_mib": peak / 2**20,
        "peak_bytes_per_atom": peak / len(atoms),
        "checksum_integral_over_atoms": total * 0,  # filled below
        "strip_or_image_shape": list(shape),
        "_sum": total,
    }


def child(n: int, path: str) -> None:
    res = measure(n, path)
    print(json.dumps(res))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000, 30000, 100000, 300000, 1000000])
    ap.add_argument("--no-full", action="store_true", help="skip the whole-image path")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1])
        return
    os.makedirs(OUT, exist_ok=True)
    rows = []
    paths = ["chunked"] + ([] if args.no_full else ["full"])
    for n in args.sizes:
        for path in paths:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(n), path], capture_output=True, text=True, check=True
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(
                f"{path:8s} {r['atoms']:>8d} atoms  {r['seconds']:8.3f} s  {r['atoms_per_second']:10.0f} atoms/s  "
                f"peak {r['peak_mib']:8.1f} MiB",
                flush=True,
            )
    for r in rows:
        r.pop("checksum_integral_over_atoms", None)
        r.pop("_sum", None)
    chunked = [r for r in rows if r["path"] == "chunked"]
    a = np.array([r["atoms"] for r in chunked], float)
    t = np.array([r["seconds"] for r in chunked], float)
    slope = float(np.polyfit(np.log(a[a >= 1e4]), np.log(t[a >= 1e4]), 1)[0]) if (a >= 1e4).sum() >= 2 else None
    result = {
        "benchmark": "rasterize graphene sheets (GridSpec spacing=0.205 A, sigma=0.3 A, cutoff=5 sigma, 3 channels)",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "time_exponent_chunked_(>=1e4_atoms)": slope,
        "rows": rows,
    }
    with open(os.path.join(OUT, "bench_raster.json"), "w") as f:
        json.dump(result, f, indent=2)
    plot(rows, os.path.join(OUT, "bench_raster.png"))
    print(f"time ~ atoms^{slope:.3f} (chunked, >= 1e4 atoms); wrote {OUT}/bench_raster.json and .png")


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for p, style in (("chunked", "o-"), ("full", "s--")):
        rr = [r for r in rows if r["path"] == p]
        if not rr:
            continue
        a = [r["atoms"] for r in rr]
        ax1.loglog(a, [r["seconds"] for r in rr], style, label=p)
        ax2.loglog(a, [r["peak_mib"] for r in rr], style, label=p)
    a = np.array([r["atoms"] for r in rows if r["path"] == "chunked"], float)
    if len(a):
        t0 = [r["seconds"] for r in rows if r["path"] == "chunked"][-1]
        ax1.loglog(a, t0 * a / a[-1], ":", color="gray", label="linear")
    ax1.set_xlabel("atoms")
    ax1.set_ylabel("wall time (s)")
    ax1.set_title("Rasterization time")
    ax2.set_xlabel("atoms")
    ax2.set_ylabel("peak memory (MiB, tracemalloc)")
    ax2.set_title("Peak memory")
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
