"""Time and peak memory against the number of atoms (issue 14): ednn streaming, the LAMMPS Tersoff labeller, GPAW.

For each size N, in a fresh process (so that the peak RSS is the size's own):

``ednn``
    :func:`ednn.atoms.large.paper_sheet` (graphene with 30 % h-BN domains,
    1 % pores, 0.2 % vacancies, rattled) is built as plain arrays and its energy
    streamed with :func:`ednn.predict.stream.stream_predict` (block energy map
    included) by the `make demo` model (``runs/demo/run/model``) or, without it,
    the default architecture with untrained weights (same cost). The time is
    split into rasterization (the strip generator), the network
    (``model._forward``) and the rest (bookkeeping); peak RSS includes the
    structure.
``ednn_forces``
    energy and forces of the same sheets streamed chunk by chunk
    (:func:`ednn.predict.stream_forces.stream_forces`), and the time of one
    ASE velocity-Verlet step up to 10^6 atoms;
``lammps``
    energy and forces of the same sheet by the default labeller (LAMMPS,
    BNC.tersoff), up to ``--lammps-max`` atoms.
``gpaw``
    GPAW LCAO dzp PBE at the Gamma point (the ``gpaw`` labeller) on small
    graphene cells, up to ``--gpaw-max`` atoms.

The log-log fit of time against N (N >= 1e4) gives the exponent; results go to
``experiments/results/scaling.json`` as each size finishes (rerun to continue)
and ``scaling.png``::

    nice python experiments/scaling.py                    # ednn 1e4 .. 1e7, LAMMPS to 1e6, GPAW to 60 atoms
    nice python experiments/scaling.py --ednn-max 3.6e7  # + the paper's 35.2-million-atom sheet
    nice python experiments/scaling.py --gpaw-max 800    # GPAW until a cell takes more than 20 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"
DEMO_MODEL = ROOT / "runs" / "demo" / "run" / "model"
# graphene cells (nx, ny: 2 nx ny atoms) that GPAW and the ednn calculator both label
GPAW_REPS = ((8, (2, 1)), (18, (3, 3)), (32, (4, 4)), (60, (5, 6)), (98, (7, 7)), (200, (10, 10)), (392, (14, 14)),
             (800, (20, 20)))
GPAW_SIZES = tuple(n for n, _ in GPAW_REPS)
GPAW_LIMIT_S = 1200.0  # GPAW sizes stop after the first that takes longer than this ("feasible here": ~20 min)
SIZES = [1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3.57e7]  # 3.57e7 sites: 35.25 million atoms after the defects


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _model():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import ednn

    if DEMO_MODEL.exists():
        return ednn.load(str(DEMO_MODEL)), f"make demo model ({DEMO_MODEL.relative_to(ROOT)})"
    sys.path.insert(0, str(ROOT / "experiments"))
    from bench_predict import get_model

    return get_model(None, None)


def child_ednn(n: int, out_dir: str | None) -> dict:
    """Stream one paper sheet of about n atoms; time split into raster / network / rest."""
    from ednn.atoms.large import paper_sheet
    from ednn.workflows.large import predict_large

    model, what = _model()
    model._forward(np.zeros((1, 16, 16, model.in_channels), np.float32))  # trace the graph once, outside the timing
    rss_model = _rss_mib()
    t0 = time.perf_counter()
    sheet = paper_sheet(int(n), seed=0, as_arrays=True)
    t_build = time.perf_counter() - t0
    rss_sheet = _rss_mib()
    pipe = model.pipeline
    acc = {"raster": 0.0, "network": 0.0}
    strips, forward = pipe.strips, model._forward

    def timed_strips(*a, **k):
        it = strips(*a, **k)
        while True:
            t = time.perf_counter()
            try:
                s = next(it)
            except StopIteration:
                return
            acc["raster"] += time.perf_counter() - t
            yield s

    def timed_forward(x):
        t = time.perf_counter()
        y = forward(x)
        acc["network"] += time.perf_counter() - t
        return y

    pipe.strips, model._forward = timed_strips, timed_forward
    res = predict_large(model, sheet, out=out_dir, progress=False)
    total = res["seconds"]
    return {"n_atoms": res["n_atoms"], "seconds": total, "atoms_per_second": res["n_atoms"] / total,
            "raster_s": acc["raster"], "network_s": acc["network"],
            "rest_s": total - acc["raster"] - acc["network"], "build_s": t_build, "pixels": res["pixels"],
            "energy_per_atom": res["energy_per_atom"], "counts": res["counts"], "peak_rss_mib": _rss_mib(),
            "rss_after_model_mib": rss_model, "rss_after_sheet_mib": rss_sheet, "model": what}


def child_ednn_forces(n: int) -> dict:
    """Energy and forces of one paper sheet streamed chunk by chunk (one MD step's worth of work)."""
    from ase.md.verlet import VelocityVerlet

    from ednn.atoms.large import paper_sheet
    from ednn.predict.stream_forces import stream_forces

    model, what = _model()
    stream_forces(model, paper_sheet(2000, seed=1))  # trace the chunk function once, outside the timing
    sheet = paper_sheet(int(n), seed=0)
    t0 = time.perf_counter()
    e, f = stream_forces(model, sheet)
    dt = time.perf_counter() - t0
    out = {"n_atoms": len(sheet), "seconds": dt, "atoms_per_second": len(sheet) / dt,
           "energy_per_atom": e / len(sheet), "max_force": float(np.abs(f).max()), "model": what}
    if n <= 1.1e6:  # one ASE velocity-Verlet step with the calculator (which streams such sheets by itself)
        from ase import units

        sheet.calc = model.calculator()
        dyn = VelocityVerlet(sheet, 0.5 * units.fs)
        dyn.run(1)  # the first step evaluates the forces at the start too
        t1 = time.perf_counter()
        dyn.run(1)
        out["md_step_seconds"] = time.perf_counter() - t1
    out["peak_rss_mib"] = _rss_mib()
    return out


def child_lammps(n: int) -> dict:
    from ednn.atoms.labellers import get_labeller
    from ednn.atoms.large import paper_sheet

    at = paper_sheet(int(n), seed=0)
    lab = get_labeller("tersoff")
    lab.prepare()
    t0 = time.perf_counter()
    out = lab.label(at)
    dt = time.perf_counter() - t0
    return {"n_atoms": len(at), "seconds": dt, "atoms_per_second": len(at) / dt,
            "energy_per_atom": out["energy"] / len(at), "peak_rss_mib": _rss_mib()}


def child_gpaw(n: int) -> dict:
    from ednn.atoms import structures as st
    from ednn.atoms.labellers import get_labeller

    nx, ny = dict(GPAW_REPS).get(int(n), (int(round(np.sqrt(n / 2))),) * 2)
    at = st.graphene(nx, ny)
    at.pbc = True
    at.calc = get_labeller("gpaw").calculator()  # LCAO dzp PBE, Gamma point: energy and forces (no stress)
    t0 = time.perf_counter()
    e = at.get_potential_energy()
    at.get_forces()
    dt = time.perf_counter() - t0
    return {"n_atoms": len(at), "seconds": dt, "atoms_per_second": len(at) / dt,
            "energy_per_atom": e / len(at), "peak_rss_mib": _rss_mib()}


def child_ednn_small(n: int) -> dict:
    """Energy and forces of the same small graphene cells GPAW labels, by the ednn calculator (median of 20
    calls, each on freshly rattled positions so nothing is cached): the speed-up against DFT."""
    from ednn.atoms import structures as st

    model, what = _model()
    reps = dict(GPAW_REPS)
    nx, ny = reps[int(n)]
    at = st.graphene(nx, ny)
    at.pbc = True
    at.calc = model.calculator()
    rng = np.random.default_rng(0)
    base = at.positions.copy()
    times = []
    for i in range(23):
        at.positions = base + rng.normal(0, 0.01, base.shape)
        t0 = time.perf_counter()
        at.get_potential_energy()
        at.get_forces()
        if i >= 3:  # the first calls trace the graphs
            times.append(time.perf_counter() - t0)
    dt = float(np.median(times))
    return {"n_atoms": len(at), "seconds": dt, "atoms_per_second": len(at) / dt, "peak_rss_mib": _rss_mib(),
            "model": what}


def fit_exponent(n: list[float], t: list[float]) -> tuple[float, float]:
    """Slope and intercept of log t against log n."""
    b, a = np.polyfit(np.log(n), np.log(t), 1)
    return float(b), float(a)


def main(argv: list[str] | None = None) -> int:
    """Run the sizes not yet in the JSON, then fit and plot (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=2, metavar=("WHAT", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--map-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--ednn-max", type=float, default=1e7)
    ap.add_argument("--forces-max", type=float, default=1e6)
    ap.add_argument("--lammps-max", type=float, default=1e6)
    ap.add_argument("--gpaw-max", type=float, default=60, help="largest GPAW cell (atoms; up to 800)")
    ap.add_argument("--out", default=str(RESULTS / "scaling.json"))
    args = ap.parse_args(argv)
    if args.child:
        what, n = args.child[0], int(float(args.child[1]))
        res = {"ednn": lambda: child_ednn(n, args.map_out), "ednn_forces": lambda: child_ednn_forces(n),
               "ednn_small": lambda: child_ednn_small(n),
               "lammps": lambda: child_lammps(n), "gpaw": lambda: child_gpaw(n)}[what]()
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {}
    data.setdefault("machine", {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                                "python": platform.python_version()})
    plan = [("ednn", n) for n in SIZES if n <= args.ednn_max]
    plan += [("ednn_forces", n) for n in (1e4, 1e5, 1e6) if n <= args.forces_max]
    plan += [("lammps", n) for n in (1e3, 1e4, 1e5, 1e6) if n <= args.lammps_max]
    plan += [("gpaw", n) for n in GPAW_SIZES if n <= args.gpaw_max]
    plan += [("ednn_small", n) for n in GPAW_SIZES if n <= args.gpaw_max]
    for what, n in plan:
        key = f"{n:.3g}"
        if key in data.get(what, {}):
            continue
        if what == "gpaw" and any(r["seconds"] > GPAW_LIMIT_S for r in data.get("gpaw", {}).values()):
            print(f"gpaw N={n:.3g}: skipped, a smaller cell already took more than {GPAW_LIMIT_S:.0f} s", flush=True)
            continue
        cmd = [sys.executable, __file__, "--child", what, str(n)]
        if what == "ednn" and n >= 3e7:
            cmd += ["--map-out", str(RESULTS / "paper_sheet_35M")]
        print(f"{what} N={n:.3g} ...", flush=True)
        t0 = time.time()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True,
                               timeout=GPAW_LIMIT_S * 1.25 if what == "gpaw" else None)
        except subprocess.TimeoutExpired:  # GPAW past the feasibility limit: recorded as such, the size unknown
            data.setdefault(what, {})[key] = {"n_atoms": int(n), "seconds": time.time() - t0, "timed_out": True,
                                              "atoms_per_second": None, "peak_rss_mib": None}
            print(f"  {what} N={n:.3g}: stopped after {time.time() - t0:.0f} s (over the limit)", flush=True)
            out.write_text(json.dumps(data, indent=1))
            continue
        line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
        if p.returncode or line is None:
            print(p.stdout[-2000:], p.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{what} at N={n:.3g} failed (exit {p.returncode})")
        r = json.loads(line[7:])
        r["wall_s"] = time.time() - t0
        data.setdefault(what, {})[key] = r
        print(f"  {r['n_atoms']:,} atoms: {r['seconds']:.2f} s, {r['atoms_per_second']:,.0f} atoms/s, "
              f"peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(out)
    summary = {}
    for what in ("ednn", "ednn_forces", "lammps", "gpaw"):
        rows = sorted((r for r in data.get(what, {}).values() if not r.get("timed_out")), key=lambda r: r["n_atoms"])
        big = [r for r in rows if r["n_atoms"] >= (9e3 if what != "gpaw" else 1)]  # the 1e4 sheet has 9,901 atoms
        if len(big) >= 2:
            b, _ = fit_exponent([r["n_atoms"] for r in big], [r["seconds"] for r in big])
            summary[what] = {"exponent": b, "n_range": [big[0]["n_atoms"], big[-1]["n_atoms"]]}
    e = sorted(data.get("ednn", {}).values(), key=lambda r: r["n_atoms"])
    if e:
        def near(target: float) -> dict:
            return min(e, key=lambda r: abs(np.log(r["n_atoms"] / target)))

        summary["ednn"]["atoms_per_second_1e5"] = near(1e5)["atoms_per_second"]
        summary["ednn"]["atoms_per_second_1e7"] = near(1e7)["atoms_per_second"]
        big = e[-1]
        summary["ednn"]["time_split_largest"] = {k: big[k] for k in ("raster_s", "network_s", "rest_s")}
        # the limits: the network alone ~320,000 atoms/s (620 kFLOP/atom at ~200 GFLOP/s), the NumPy
        # rasterizer alone 114,000 atoms/s; what each part achieves inside the stream
        summary["ednn"]["largest"] = {
            "n_atoms": big["n_atoms"], "seconds": big["seconds"], "peak_rss_mib": big["peak_rss_mib"],
            "energy_per_atom": big["energy_per_atom"], "energy_per_atom_1e5": near(1e5)["energy_per_atom"],
            "network_atoms_per_second": big["n_atoms"] / big["network_s"],
            "raster_atoms_per_second": big["n_atoms"] / big["raster_s"],
            "fraction_of_network_limit": big["atoms_per_second"] / 320000.0}
    g, sm = data.get("gpaw", {}), data.get("ednn_small", {})
    if g:
        summary["gpaw_vs_ednn"] = {k: {"n_atoms": g[k]["n_atoms"], "gpaw_s": g[k]["seconds"],
                                       "ednn_s": sm[k]["seconds"], "speedup": g[k]["seconds"] / sm[k]["seconds"]}
                                   for k in g if k in sm and not g[k].get("timed_out")}
        ok = [r for r in g.values() if r["seconds"] <= GPAW_LIMIT_S]
        fin = sorted((r for r in g.values() if not r.get("timed_out")), key=lambda r: r["n_atoms"])
        if len(fin) >= 2:  # the trend of the two largest cells, continued to the next size tried
            b, _ = fit_exponent([r["n_atoms"] for r in fin[-2:]], [r["seconds"] for r in fin[-2:]])
            nxt = next((n for n in GPAW_SIZES if n > fin[-1]["n_atoms"]), None)
            summary["gpaw_trend"] = {"exponent_last_two": b, "next_size": nxt,
                                     "next_size_projected_s": fin[-1]["seconds"] * (nxt / fin[-1]["n_atoms"]) ** b
                                     if nxt else None}
        summary["gpaw_largest_within_limit"] = {"limit_s": GPAW_LIMIT_S,
                                                "n_atoms": max(r["n_atoms"] for r in ok) if ok else None,
                                                "first_over_limit": min((r["n_atoms"] for r in g.values()
                                                                         if r["seconds"] > GPAW_LIMIT_S), default=None)}
    lm, ef = data.get("lammps", {}).get("1e+06"), data.get("ednn_forces", {}).get("1e+06")
    if lm and e:
        summary["ednn_vs_lammps_1e6"] = {"lammps_atoms_per_second": lm["atoms_per_second"],
                                         "ednn_energy_atoms_per_second": near(1e6)["atoms_per_second"],
                                         "ednn_energy_forces_atoms_per_second": ef["atoms_per_second"] if ef else None}
    data["summary"] = summary
    out.write_text(json.dumps(data, indent=1))
    print(json.dumps(summary, indent=1))
    _plot(data, out.with_suffix(".png"))
    return 0


def _plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.3))
    for what, style in (("ednn", "o-"), ("ednn_forces", "D-"), ("ednn_small", "v-"), ("lammps", "s-"),
                        ("gpaw", "^-")):
        rows = sorted((r for r in data.get(what, {}).values() if not r.get("timed_out")), key=lambda r: r["n_atoms"])
        if not rows:
            continue
        n = np.array([r["n_atoms"] for r in rows])
        t = np.array([r["seconds"] for r in rows])
        fit = data.get("summary", {}).get(what)
        label = what + (f" (t ~ N^{fit['exponent']:.2f})" if fit else "")
        ax[0].loglog(n, t, style, label=label)
        ax[1].loglog(n, n / t, style, label=what)
        ax[2].loglog(n, [r["peak_rss_mib"] for r in rows], style, label=what)
    sm = data.get("summary", {})
    notes = []
    if sm.get("gpaw_vs_ednn"):
        k = max(sm["gpaw_vs_ednn"], key=lambda k: sm["gpaw_vs_ednn"][k]["n_atoms"] if sm["gpaw_vs_ednn"][k]["n_atoms"]
                <= 60 else -1)
        r = sm["gpaw_vs_ednn"][k]
        notes.append(f"{r['n_atoms']} atoms: GPAW {r['gpaw_s']:.1f} s, ednn {1000 * r['ednn_s']:.1f} ms "
                     f"({r['speedup']:,.0f}x)")
    lim = sm.get("gpaw_largest_within_limit")
    if lim and lim["n_atoms"]:
        over = lim["first_over_limit"]
        tr = sm.get("gpaw_trend") or {}
        nxt = (f" ({tr['next_size']} atoms: ~{tr['next_size_projected_s'] / 60:.0f} min by its N^"
               f"{tr['exponent_last_two']:.1f} trend)" if tr.get("next_size") else "")
        notes.append(f"GPAW within {lim['limit_s'] / 60:.0f} min: {lim['n_atoms']} atoms"
                     + (f" ({over} atoms: longer)" if over else nxt))
    vs = sm.get("ednn_vs_lammps_1e6")
    if vs:
        notes.append(f"1e6 atoms: ednn {vs['ednn_energy_atoms_per_second']:,.0f} atoms/s (energy), LAMMPS "
                     f"{vs['lammps_atoms_per_second']:,.0f} (energy + forces)")
    if notes:
        ax[0].text(0.02, 0.98, "\n".join(notes), transform=ax[0].transAxes, va="top", fontsize=7)
    ax[0].set(xlabel="atoms", ylabel="seconds", title="time (energy; LAMMPS and GPAW with forces)")
    ax[1].set(xlabel="atoms", ylabel="atoms / s", title="throughput")
    ax[2].set(xlabel="atoms", ylabel="MiB", title="peak RSS (structure included)")
    for a in ax:
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(f"{data['machine']['cores']} cores, {data['machine']['cpu']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


if __name__ == "__main__":
    raise SystemExit(main())
