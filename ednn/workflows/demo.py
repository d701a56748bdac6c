"""The main job (``ednn demo``, ``make demo``): data, training, evaluation, report.

:func:`run_demo` builds the default Tersoff dataset (graphene, h-BN, B/C/N
alloys, heterostructures and defects with strain and thermal disorder: small
training and held-out cells, and size-transfer cells of at least 10x the
largest training cell), trains a model for a time budget, evaluates it on the
held-out and size-transfer cells against the composition-only baseline, and
writes ``report.md`` with parity plots, the learning curve and a learned-energy
map of a large cell (figures as PNG, PDF or SVG).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from ase.data import chemical_symbols

from ..atoms.labellers import get_labeller
from ..atoms.structures import generate
from ..data import DatasetWriter
from ..plots import atom_energy_plot, energy_map_plot, figure_format, learning_curve, parity_plot
from ..train import train
from .evaluate import (
    composition_baseline_mae,
    force_errors,
    metrics,
    size_table,
    species_counts,
    table_md,
)

__all__ = ["DEMO_CONFIG", "run_demo", "demo_report"]

DEMO_CONFIG: dict[str, Any] = {
    # a config that names only the data (run_demo adds it): the library default for energies, the atom-centred
    # model (model.representation "auto" -> "atoms"; experiments/atomic_basis.py chose its basis). The voxel-image
    # CNN of earlier demos is one key away (model.representation: image; its recipe: experiments/uncertainty.yaml)
    "seed": 0,
}


def _label(structs: Sequence[Any], labeller: Any, desc: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Energies and forces of ``structs`` from ``labeller``, with a progress bar."""
    from tqdm import tqdm

    E = np.empty(len(structs))
    F = []
    for i, a in enumerate(tqdm(structs, desc=desc, file=sys.stderr, leave=False)):
        out = labeller.label(a)
        E[i] = out["energy"]
        F.append(out["forces"])
    return E, F


def _write(path: str, structs: Sequence[Any], E: np.ndarray, F: Sequence[np.ndarray], labeller: Any) -> None:
    """A fresh HDF5 dataset of labelled structures (with the labeller's name and settings)."""

    meta = {"labeller": {"name": getattr(labeller, "name", "tersoff"),
                         "settings": getattr(labeller, "settings", {})}}
    with DatasetWriter(path, metadata=meta, resume=False, every=1 << 30, interval=1e9) as w:
        for a, e, f in zip(structs, E, F, strict=True):
            info = {k: v for k, v in a.info.items() if isinstance(v, (str, int, float))}
            w.append(a, energy=float(e), forces=f, info=info or None)


def run_demo(out: str = "runs/demo", quick: bool = False, minutes: float | None = None, fmt: str = "png") -> int:
    """Run the main job and write ``out/report.md``, ``out/summary.json`` and the figures.

    Parameters
    ----------
    out : str
        Output folder: ``data/`` (train, test, transfer HDF5), ``run/`` (the
        training run and its ``model/``), the report, the summary and figures.
    quick : bool
        A tiny version (160 training cells, 3 epochs; about a minute), for smoke tests.
    minutes : float, optional
        Training time budget of a voxel-image CNN (``DEMO_CONFIG`` with ``model.representation: image``; default 8,
        or 0.5 with ``quick``). The default atom-centred model is fitted in closed form and needs no budget.
    fmt : {"png", "pdf", "svg"}
        Figure format.

    Returns
    -------
    int
        0 (the exit code of ``ednn demo``).
    """

    figure_format(f"x.{fmt}")  # refuse an unknown format before any work
    t_all = time.time()
    os.makedirs(out, exist_ok=True)
    n_train, n_test, n_big = (160, 40, 6) if quick else (1600, 200, 40)
    train_atoms = (8, 60) if quick else (8, 100)
    budget = 60.0 * (minutes if minutes is not None else (0.5 if quick else 8.0))
    lab = get_labeller("tersoff")
    print(f"[demo] building the Tersoff dataset: {n_train} training cells ({train_atoms[0]}-{train_atoms[1]} atoms), "
          f"{n_test} held-out, {n_big} size-transfer", file=sys.stderr, flush=True)
    t0 = time.time()
    tr = list(generate("mixed", n_train, seed=0, n_atoms=train_atoms))
    te = list(generate("mixed", n_test, seed=1, n_atoms=train_atoms))
    max_train = max(len(a) for a in tr)
    big_lo = 10 * max_train
    big = list(generate("mixed", n_big, seed=2, n_atoms=(big_lo + 20, int(big_lo * 1.6))))
    big = [a for a in big if len(a) >= big_lo]
    (E_tr, F_tr), (E_te, F_te), (E_big, F_big) = (_label(tr, lab, "label train"), _label(te, lab, "label test"),
                                                  _label(big, lab, "label big"))
    data_dir = os.path.join(out, "data")
    os.makedirs(data_dir, exist_ok=True)
    for name, s, e, f in (("train", tr, E_tr, F_tr), ("test", te, E_te, F_te), ("transfer", big, E_big, F_big)):
        _write(os.path.join(data_dir, f"{name}.h5"), s, e, f, lab)
    t_data = time.time() - t0
    print(f"[demo] data ready in {t_data:.1f} s (largest training cell {max_train} atoms; transfer cells "
          f"{min(len(a) for a in big)}-{max(len(a) for a in big)} atoms)", file=sys.stderr, flush=True)

    cfg = json.loads(json.dumps(DEMO_CONFIG))
    cfg["out"] = os.path.join(out, "run")
    # the held-out cells are a separate dataset (another seed), so no test split is taken from train.h5
    cfg["data"] = {"train": os.path.join(data_dir, "train.h5"), "val_fraction": 0.1, "test_fraction": 0.0}
    image = (cfg.get("model") or {}).get("representation") == "image"
    if image:  # the voxel-image CNN trains for a budget; the atom-centred fit is one closed-form step
        cfg.setdefault("train", {})["max_time_s"] = budget
        if quick:
            cfg["train"]["epochs"] = 3
    t0 = time.time()
    model = train(cfg, overwrite=True)  # the demo rebuilds its data, so it retrains from scratch
    t_train = time.time() - t0
    hist = None
    if os.path.exists(os.path.join(cfg["out"], "log.json")):
        with open(os.path.join(cfg["out"], "log.json")) as fh:
            hist = json.load(fh)

    t0 = time.time()
    n_te = np.array([len(a) for a in te], float)
    n_big_ = np.array([len(a) for a in big], float)
    p_te = model.predict_energies(te)
    p_big = model.predict_energies(big)
    f_te = force_errors(model.predict_forces(te), F_te)["mae_ev_per_a"]
    t_eval = time.time() - t0
    m_te, m_big = metrics(E_te, p_te, n_te), metrics(E_big, p_big, n_big_)
    base_te = composition_baseline_mae(model, te, E_te, n_te)
    base_big = composition_baseline_mae(model, big, E_big, n_big_)
    resid_tr = (E_tr - species_counts(model, tr) @ model.refs) / np.array([len(a) for a in tr])
    resid_te = (E_te - species_counts(model, te) @ model.refs) / n_te
    spread_tr, spread_te = 1000 * float(np.std(resid_tr)), 1000 * float(np.std(resid_te))
    kinds_te = [a.info.get("kind", "?") for a in te]
    by_kind = []
    for k in sorted(set(kinds_te)):
        sel = np.array(kinds_te) == k
        by_kind.append({"kind": k, **metrics(E_te[sel], p_te[sel], n_te[sel])})
    figs = {
        "parity_test": parity_plot(E_te / n_te, p_te / n_te, os.path.join(out, f"parity_test.{fmt}"),
                                   "held-out cells", groups=kinds_te, baseline_mae_mev=base_te),
        "parity_transfer": parity_plot(E_big / n_big_, p_big / n_big_, os.path.join(out, f"parity_transfer.{fmt}"),
                                       f"size transfer ({int(n_big_.min())}-{int(n_big_.max())} atoms)",
                                       groups=[a.info.get("kind", "?") for a in big], baseline_mae_mev=base_big),
    }
    if hist is not None:
        figs["learning_curve"] = learning_curve(hist, os.path.join(out, f"learning_curve.{fmt}"))
    ib = int(np.argmax(n_big_))
    if model.grid is not None:
        emap = model.energy_map(big[ib], include_reference=False)  # the learned part (references removed)
        b = 4  # 4 x 4 pixel blocks (about 2.5 A) for a readable map
        figs["energy_map"] = energy_map_plot(big[ib], emap, os.path.join(out, f"energy_map.{fmt}"),
                                             f"learned energy density ({b}x{b}-pixel blocks), "
                                             f"{big[ib].info.get('kind')} ({len(big[ib])} atoms)", block=b)
    else:
        e_at = model.atom_energies(big[ib]) - model.refs[model.basis.index(big[ib].numbers)]
        figs["energy_map"] = atom_energy_plot(big[ib], e_at, os.path.join(out, f"energy_map.{fmt}"),
                                              f"learned atom energies, {big[ib].info.get('kind')} ({len(big[ib])} atoms)")
    symbols = [chemical_symbols[z] for z in model.species]
    if model.grid is not None:
        fw, desc = float(cfg["train"].get("force_weight", 0.0)), {"grid": model.grid.to_dict(), "model": model.model_config}
    else:
        fw = float(model.meta["train_config"]["atoms"]["force_weight"])
        desc = {"basis": model.basis.to_dict(), "ridge_alpha": model.meta["fit"]["alpha"]}
    summary = {
        "n_train": len(tr), "n_test": len(te), "n_transfer": len(big),
        "max_train_atoms": max_train, "transfer_atoms": [int(n_big_.min()), int(n_big_.max())],
        "label_spread_train_mev": spread_tr, "label_spread_test_mev": spread_te,
        "test": m_te, "transfer": m_big, "test_force_mae_ev_per_a": f_te,
        "force_weight": fw, "representation": "image" if model.grid is not None else "atoms",
        "baseline_test_mae_mev": base_te, "baseline_transfer_mae_mev": base_big,
        "ratio_test": base_te / m_te["mae_mev_per_atom"], "ratio_transfer": base_big / m_big["mae_mev_per_atom"],
        "by_size_test": size_table(E_te, p_te, n_te), "by_kind_test": by_kind,
        "epochs": len(hist) if hist is not None else None, "time_data_s": t_data, "time_train_s": t_train,
        "time_eval_s": t_eval, "time_total_s": time.time() - t_all, **desc,
        "reference_energies_eV": dict(zip(symbols, model.refs.tolist())),
    }
    with open(os.path.join(out, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
    report = demo_report(summary, figs)
    with open(os.path.join(out, "report.md.tmp"), "w") as fh:
        fh.write(report)
    os.replace(os.path.join(out, "report.md.tmp"), os.path.join(out, "report.md"))
    print(report)
    print(f"[demo] report written to {os.path.join(out, 'report.md')} ({summary['time_total_s']:.0f} s in all)",
          file=sys.stderr)
    return 0


def demo_report(s: dict[str, Any], figs: dict[str, str]) -> str:
    """The markdown report of a demo run from its summary and its figures' paths."""
    t, b = s["test"], s["transfer"]
    g = s.get("grid")
    lines = [
        "# ednn demo: B/C/N sheets with the Tersoff potential",
        "",
        f"Training on {s['n_train']} small cells (up to {s['max_train_atoms']} atoms; 10% of them for validation), "
        f"testing on {s['n_test']} held-out cells of the same kind and on {s['n_transfer']} cells of "
        f"{s['transfer_atoms'][0]}-{s['transfer_atoms'][1]} atoms (>= 10x the largest training cell).",
        "",
        "| set | EDNN MAE | RMSE | max | composition baseline MAE | baseline / EDNN |",
        "|---|---|---|---|---|---|",
        f"| held-out | {t['mae_mev_per_atom']:.2f} | {t['rmse_mev_per_atom']:.2f} | {t['max_mev_per_atom']:.1f} | "
        f"{s['baseline_test_mae_mev']:.1f} | {s['ratio_test']:.1f}x |",
        f"| size transfer | {b['mae_mev_per_atom']:.2f} | {b['rmse_mev_per_atom']:.2f} | {b['max_mev_per_atom']:.1f} | "
        f"{s['baseline_transfer_mae_mev']:.1f} | {s['ratio_transfer']:.1f}x |",
        "",
        (f"Trained on energies and forces (force_weight {s['force_weight']:g})" if s["force_weight"] > 0
         else "Trained on energies only")
        + f"; held-out force MAE {s['test_force_mae_ev_per_a']:.3f} eV/A.",
        "",
        "All errors in meV/atom. Label spread (std of per-atom energies after the per-element references): "
        f"{s['label_spread_train_mev']:.1f} meV/atom (train), {s['label_spread_test_mev']:.1f} (held-out).",
        "",
        (f"Grid: spacing {g['spacing']:.4f} A, sigma {g['sigma']} A, species {g['species']}; model: {s['model']}. "
         f"{s['epochs']} epochs" if g else
         f"Atom-centred model (the library default for energies): basis {s['basis']}, ridge strength "
         f"{s['ridge_alpha']:g} chosen on the validation split, fitted in closed form")
        + f"; times: data {s['time_data_s']:.0f} s, training {s['time_train_s']:.0f} s, "
        f"evaluation {s['time_eval_s']:.1f} s, total {s['time_total_s']:.0f} s.",
        "",
        "Held-out errors by cell size:",
        "",
        table_md(s["by_size_test"]),
        "Held-out errors by structure kind:",
        "",
        table_md(s["by_kind_test"], key="kind"),
    ]
    for k, p in figs.items():
        lines.append(f"![{k}]({os.path.basename(p)})")
    return "\n".join(lines) + "\n"
