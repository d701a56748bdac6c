"""The physics checks of issue 11 on ednn's trained atom-centred model: symmetries, forces, MD.

The model is the one a config naming only the data trains (``model.representation`` resolves to ``atoms``;
``--model`` takes a saved one instead, e.g. ``runs/peers/ednn_atoms/model`` from ``experiments/peers.py``).

1. **Invariance** (must-show 1): 50 random structures (10 of each kind ``ednn.atoms.generate`` makes, 20-200
   atoms, rattled 0.05 A) under every operation of ``ednn.image.describe.equivalent_structures``: translation
   by any amount, sub-pixel translation, another basis, the 120-degree convention, 2x1 and rectangular
   supercells, exchanged vectors, a random in-plane rotation, a mirror, a permutation of the atoms. The
   largest energy change (meV/atom), and the largest deviation of the forces of the rotated structure from
   the rotated forces (eV/A).
2. **Forces** (must-show 3): the calculator's forces against central differences of its own energy
   (h = 1e-4 A) on a perfect and a rattled sheet with atoms exactly on the cell boundaries; force MAE against
   Tersoff on held-out structures.
3. **MD** (must-show 3): NVE of a rattled 200-atom graphene sheet from 300 K for 1 ps (0.5 fs steps,
   ``experiments/force_training.py``'s ``md_run``), beside Tersoff.

Writes ``experiments/results/atomic_physics.{json,png}``::

    nice python experiments/atomic_physics.py [--model runs/peers/ednn_atoms/model]
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
sys.path.insert(0, str(ROOT / "experiments"))
RESULTS = ROOT / "experiments" / "results"
KINDS = ("graphene", "hbn", "bcn", "hetero", "defect")
OPS = ("translate", "subpixel", "basis", "basis_120", "supercell", "rect_super", "swap", "rotate", "mirror",
       "permute")


def invariance(model, n_per_kind: int, seed: int) -> dict:
    from ednn.atoms.generate import generate
    from ednn.image.describe import equivalent_structures

    rng = np.random.default_rng(seed)
    worst = {op: 0.0 for op in OPS}
    f_worst, count = 0.0, 0
    for k, kind in enumerate(KINDS):
        for at in generate(kind, n_per_kind, seed=seed + 10 * k, n_atoms=(20, 200), relax_defects=False):
            at.rattle(0.05, seed=int(rng.integers(1 << 30)))
            ops = equivalent_structures(at, rng, 0.62375)
            e0 = model.predict_energy(at) / len(at)
            e = model.predict_energies([ops[o] for o in OPS]) / np.array([len(ops[o]) for o in OPS])
            for o, v in zip(OPS, e):
                worst[o] = max(worst[o], 1e3 * abs(v - e0))
            rot = ops["rotate"]
            R = np.linalg.solve(at.cell[:], rot.cell[:])  # rows: cell_rot = cell @ R, so r_rot = r @ R (R orthogonal)
            f0 = model.predict_forces([at])[0]
            f1 = model.predict_forces([rot])[0]
            f_worst = max(f_worst, float(np.abs(f1 - f0 @ R).max()))
            count += 1
    return {"structures": count, "max_energy_change_mev_per_atom": worst,
            "max_force_rotation_error_ev_per_a": f_worst}


def fd_forces(model) -> dict:
    from ednn.atoms import structures as st

    out = {}
    for name, rattle in (("perfect", 0.0), ("rattled", 0.05)):
        at = st.graphene(5, 5, a=st.A_BNC)
        at.positions -= at.positions[0]  # atom 0 exactly on the cell corner, others on its edges
        if rattle:
            at = st.rattle(at, rattle, rng=1)
        f = model.predict_forces([at])[0]
        h, worst = 1e-4, 0.0
        for i in range(len(at)):
            for ax in range(3):
                p, m = at.copy(), at.copy()
                p.positions[i, ax] += h
                m.positions[i, ax] -= h
                fd = -(model.predict_energy(p) - model.predict_energy(m)) / (2 * h)
                worst = max(worst, abs(fd - f[i, ax]))
        out[name] = {"atoms": len(at), "max_abs_force_ev_per_a": float(np.abs(f).max()),
                     "max_fd_deviation_ev_per_a": worst}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="a saved model (default: train one from a config naming only the data)")
    p.add_argument("--n-per-kind", type=int, default=10)
    p.add_argument("--md-steps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from force_training import md_run

    import ednn
    from ednn.atoms.labellers import get_labeller
    from ednn.data import Dataset, split_indices

    if args.model:
        model = ednn.load(args.model)
    else:
        model = ednn.train.train({"out": str(ROOT / "runs" / "atomic_physics"),
                                  "data": {"train": str(ROOT / "data" / "train.h5"), "val_fraction": 0.08,
                                           "test_fraction": 0.1}}, overwrite=True)
    res = {"model": args.model or "runs/atomic_physics/model", "basis": model.basis.to_dict()}
    t0 = time.time()
    res["invariance"] = invariance(model, args.n_per_kind, args.seed)
    print("[atomic_physics] invariance", json.dumps(res["invariance"]), f"{time.time() - t0:.0f} s", flush=True)
    res["fd_forces"] = fd_forces(model)
    print("[atomic_physics] fd", json.dumps(res["fd_forces"]), flush=True)
    with Dataset(str(ROOT / "data" / "train.h5")) as ds:
        _, _, te = split_indices(len(ds), 0.08, 0.1, 0)
        te = te[:100]
        structs = [ds[int(i)] for i in te]
        ref = [ds.forces(int(i)) for i in te]
    pred = model.predict_forces(structs)
    diff = np.concatenate([(a - b).ravel() for a, b in zip(pred, ref)])
    res["held_out_forces"] = {"structures": len(te), "mae_ev_per_a": float(np.abs(diff).mean()),
                              "rms_reference_ev_per_a": float(np.sqrt(np.mean(np.concatenate(ref) ** 2)))}
    print("[atomic_physics] held-out forces", json.dumps(res["held_out_forces"]), flush=True)
    res["md"] = md_run(model.calculator(), args.md_steps, size=10)
    res["md_tersoff"] = md_run(get_labeller("tersoff").calculator(), args.md_steps, size=10)
    for k in ("md", "md_tersoff"):
        m = res[k]
        print(f"[atomic_physics] {k}: {m['time_fs']:.0f} fs, drift {m['etot_drift_mev_per_atom']:.3f} meV/atom, "
              f"max excursion {m['etot_max_excursion_mev_per_atom']:.3f}, T_final {m['temperature_final_K']:.0f} K, "
              f"{m['ms_per_step']:.1f} ms/step, failure {m['failure']}", flush=True)
    out = RESULTS / "atomic_physics.json"
    out.with_suffix(".tmp").write_text(json.dumps(res, indent=1))
    os.replace(out.with_suffix(".tmp"), out)
    plot(res, out.with_suffix(".png"))
    return 0


def plot(res: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    from ednn.plots import save_fig

    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax = fig.subplots(1, 2)
    w = res["invariance"]["max_energy_change_mev_per_atom"]
    ax[0].bar(range(len(w)), [max(v, 1e-16) for v in w.values()])
    ax[0].axhline(1.0, color="r", ls="--", label="issue 11 tolerance (1 meV/atom)")
    ax[0].set_yscale("log")
    ax[0].set_xticks(range(len(w)), list(w), rotation=45, ha="right", fontsize=8)
    ax[0].set_ylabel("largest energy change (meV/atom)")
    ax[0].set_title(f"{res['invariance']['structures']} random sheets per operation", fontsize=9)
    ax[0].legend(fontsize=8)
    for k, lab in (("md", "ednn (atoms)"), ("md_tersoff", "Tersoff")):
        t = res[k]["temperatures_K"]
        ax[1].plot(5 * np.arange(len(t)) * 1.0, t, label=lab)
    ax[1].set_xlabel("time (fs)")
    ax[1].set_ylabel("temperature (K)")
    ax[1].set_title(f"NVE, 200-atom sheet: drift {res['md']['etot_drift_mev_per_atom']:.3f} meV/atom "
                    f"(Tersoff {res['md_tersoff']['etot_drift_mev_per_atom']:.3f})", fontsize=9)
    ax[1].legend(fontsize=8)
    save_fig(fig, str(path))


if __name__ == "__main__":
    raise SystemExit(main())
