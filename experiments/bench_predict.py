"""Prediction latency and throughput (issue 5, must-show 7).

1. Latency: 60-atom B/C/N cells predicted one at a time, after warm-up:
   ``model.predict_energy(atoms)``, the ASE calculator's energy, and the
   calculator's energy + forces (autodiff through the TF rasterizer).
   Median and 90th percentile in ms per prediction.
2. Throughput: graphene sheets of 10^4 ... 10^5 atoms (default up to 1.2e5)
   predicted with streaming (``ednn.predict.stream_energy``: strip by strip,
   flat memory), each size in a fresh subprocess, best of 2: seconds, atoms/s, peak
   resident memory (VmHWM) and its growth over the loaded-model baseline.

The model is ``--model PATH`` (a trained model folder, e.g. ``runs/demo/model``
or ``runs/long_train/model``); without it, a model with the architecture and
grid of ``--config`` (e.g. ``experiments/long_train.yaml``) or of the defaults
is built with untrained weights (timings do not depend on the weight values;
the JSON says which was used).

Writes ``experiments/results/bench_predict.json`` and ``bench_predict.png``.

Usage::

    python experiments/bench_predict.py [--model runs/demo/model] [--sizes 10000 30000 100000]
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
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "results")


def _env() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, ROOT)


def get_model(path: str | None, threads: int | None, config: str | None = None):
    """Load a trained model, or build an untrained one (a training config's grid/model, or the defaults)."""
    _env()
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    if path:
        import ednn

        return ednn.load(path), f"trained model {path}"
    from ednn.config import DEFAULTS, load_config
    from ednn.image.grid import GridSpec
    from ednn.predict.model import EnergyModel, receptive_radius

    if config:
        cfg = load_config(config)
        g = {k: v for k, v in cfg["grid"].items() if v is not None}
        g["species"] = g.get("species") or ("B", "C", "N")
        g["context"] = max(g.get("context") or 0, receptive_radius(cfg["model"]), 1)
        model = EnergyModel.create(cfg["model"], GridSpec(**g), seed=0)
        model.refs = np.array([-6.0, -7.4, -7.0])
        model.scale = 0.2
        return model, f"architecture and grid of {config}, untrained weights"
    g = {k: v for k, v in DEFAULTS["grid"].items() if v is not None}
    g["species"] = ("B", "C", "N")
    g["context"] = max(receptive_radius({}), 1)
    model = EnergyModel.create({}, GridSpec(**g), seed=0)
    model.refs = np.array([-6.0, -7.4, -7.0])
    model.scale = 0.5
    return model, "default architecture and grid, untrained weights"


def cells60(n: int, seed: int = 0) -> list:
    """``n`` random 60-atom B/C/N cells (alloys, heterostructures, pristine; rattled, strained)."""
    from ednn.atoms.structures import generate

    return list(generate("mixed", n, seed=seed, n_atoms=(60, 60),
                         mix={"graphene": 0.2, "hbn": 0.2, "bcn": 0.3, "hetero": 0.3}))


def sheet(n_atoms: int):
    """Rectangular graphene sheet with about ``n_atoms`` atoms, rattled (periodic in-plane)."""
    from ednn.atoms.structures import graphene

    nx = max(1, int(round(np.sqrt(n_atoms / 4 / np.sqrt(3)))))
    ny = max(1, int(round(n_atoms / 4 / nx)))
    at = graphene(nx, ny, rectangular=True)
    rng = np.random.default_rng(0)
    at.positions += rng.normal(scale=0.03, size=at.positions.shape)
    at.wrap()
    return at


def _ms(ts: list[float]) -> dict[str, float]:
    a = 1000 * np.asarray(ts)
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)),
            "mean_ms": float(a.mean()), "min_ms": float(a.min()), "n": int(len(a))}


def latency(model, n_cells: int, n_warm: int, n_forces: int) -> dict:
    """Per-call latencies; the three ways are interleaved cell by cell so that load changes on a
    shared machine affect them alike."""
    structs = cells60(n_cells + n_warm)
    warm, meas = structs[:n_warm], structs[n_warm:]
    calc = model.calculator()
    for i, a in enumerate(warm):
        model.predict_energy(a)
        b = a.copy()
        b.calc = calc
        b.get_forces() if i < 3 else b.get_potential_energy()
    t = {"predict_energy": [], "calculator_energy": [], "calculator_energy_forces": []}
    every = max(1, len(meas) // max(n_forces, 1))
    for i, a in enumerate(meas):
        t0 = time.perf_counter()
        model.predict_energy(a)
        t["predict_energy"].append(time.perf_counter() - t0)
        b = a.copy()
        b.calc = calc
        t0 = time.perf_counter()
        b.get_potential_energy()
        t["calculator_energy"].append(time.perf_counter() - t0)
        if i % every == 0 and len(t["calculator_energy_forces"]) < n_forces:
            b = a.copy()
            b.calc = calc
            t0 = time.perf_counter()
            b.get_forces()
            t["calculator_energy_forces"].append(time.perf_counter() - t0)
    res = {k: _ms(v) for k, v in t.items()}
    # batched for comparison (many cells per forward pass); best of 3 (the first pays one-time costs)
    tb = []
    for _ in range(3):
        t0 = time.perf_counter()
        model.predict_energies(meas, batch_size=64)
        tb.append(time.perf_counter() - t0)
    res["batched_ms_per_cell"] = 1000 * min(tb) / len(meas)
    res["atoms_per_cell"] = int(len(meas[0]))
    return res


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(args: argparse.Namespace) -> None:
    """One sheet size in this (fresh) process: prints one JSON line."""
    from ednn.predict import stream_energy

    model, _ = get_model(args.model, args.threads, args.config)
    small = sheet(2000)
    stream_energy(model, small)  # warm-up (tracing) on a small sheet
    at = sheet(args.child)
    base = _rss_kib("VmRSS")
    walls = []
    for _ in range(2):  # best of 2: the machine is shared
        t0 = time.perf_counter()
        e = stream_energy(model, at)
        walls.append(time.perf_counter() - t0)
    wall = min(walls)
    peak = _rss_kib("VmHWM")
    print(json.dumps({"atoms": len(at), "seconds": wall, "atoms_per_second": len(at) / wall,
                      "energy_per_atom": e / len(at), "rss_before_mib": base / 1024, "peak_rss_mib": peak / 1024,
                      "peak_growth_mib": max(0, peak - base) / 1024}))


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ednn.plots import save_fig

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    lat = res["latency_60_atoms"]
    names = ["predict_energy", "calculator_energy", "calculator_energy_forces"]
    med = [lat[k]["median_ms"] for k in names]
    p90 = [lat[k]["p90_ms"] for k in names]
    x = np.arange(len(names))
    ax[0].bar(x - 0.2, med, 0.4, label="median")
    ax[0].bar(x + 0.2, p90, 0.4, label="p90")
    ax[0].axhline(lat["batched_ms_per_cell"], color="k", ls=":", label="batched (64 per pass), per cell")
    ax[0].set_xticks(x, ["predict_energy", "calc energy", "calc E+forces"], fontsize=8)
    ax[0].set_yscale("log")
    ax[0].set_ylabel("ms per 60-atom cell")
    ax[0].set_title("one cell at a time (after warm-up)", fontsize=9)
    ax[0].legend(fontsize=7)
    rows = res["sheets"]
    n = [r["atoms"] for r in rows]
    ax[1].loglog(n, [r["seconds"] for r in rows], "o-", label="seconds")
    ax[1].set_xlabel("atoms in sheet")
    ax[1].set_ylabel("seconds (streaming)")
    a2 = ax[1].twinx()
    a2.semilogx(n, [r["peak_growth_mib"] for r in rows], "s--", color="C1", label="peak RSS growth (MiB)")
    a2.set_ylabel("peak RSS growth over loaded model (MiB)")
    big = rows[-1]
    ax[1].set_title(f"{big['atoms']} atoms: {big['atoms_per_second']:.0f} atoms/s, "
                    f"peak +{big['peak_growth_mib']:.0f} MiB", fontsize=9)
    fig.tight_layout()
    save_fig(fig, path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="trained model folder/zip (default: untrained default architecture)")
    p.add_argument("--config", default=None,
                   help="without --model: build the grid/architecture of this training config (untrained)")
    p.add_argument("--n-cells", type=int, default=200)
    p.add_argument("--n-warm", type=int, default=20)
    p.add_argument("--n-forces", type=int, default=50)
    p.add_argument("--sizes", type=int, nargs="+", default=[10000, 30000, 120000])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--name", default="bench_predict")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    model, what = get_model(args.model, args.threads, args.config)
    print(f"model: {what}; grid {model.grid}", flush=True)
    t0 = time.time()
    lat = latency(model, args.n_cells, args.n_warm, args.n_forces)
    for k in ("predict_energy", "calculator_energy", "calculator_energy_forces"):
        print(f"{k:26s} median {lat[k]['median_ms']:.2f} ms  p90 {lat[k]['p90_ms']:.2f} ms", flush=True)
    print(f"batched: {lat['batched_ms_per_cell']:.2f} ms per cell", flush=True)
    rows = []
    for n in args.sizes:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", str(n), "--threads", str(args.threads)]
        if args.model:
            cmd += ["--model", args.model]
        if args.config:
            cmd += ["--config", args.config]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"sheet of {n} atoms failed")
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"sheet {r['atoms']:>7d} atoms: {r['seconds']:.2f} s, {r['atoms_per_second']:.0f} atoms/s, "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB (+{r['peak_growth_mib']:.0f})", flush=True)
    res = {
        "experiment": "bench_predict",
        "model": what,
        "grid": model.grid.to_dict(),
        "model_config": model.model_config,
        "n_params": int(model.network.count_params()),
        "latency_60_atoms": lat,
        "sheets": rows,
        "threads": args.threads,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "note": "2 shared CPU cores; other jobs were running (see load average), so timings are upper bounds",
        "wall_s": time.time() - t0,
    }
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, args.name + ".json")
    with open(path + ".tmp", "w") as fh:
        json.dump(res, fh, indent=1)
    os.replace(path + ".tmp", path)
    plot(res, os.path.join(OUT, args.name + ".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
