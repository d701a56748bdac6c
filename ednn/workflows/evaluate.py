"""Evaluating a trained energy model on labelled structures: errors, tables, figures.

:func:`evaluate` is what ``ednn evaluate MODEL DATA`` runs: energy errors in
meV/atom (overall, by cell size), the composition-only baseline, force errors
in eV/A when the data have forces, a parity plot and the run's learning curve.
The helpers (:func:`metrics`, :func:`size_table`, :func:`composition_baseline_mae`,
...) are shared with the demo (:mod:`ednn.workflows.demo`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data import Dataset
from ..errors import DatasetError, InputError
from ..plots import figure_format, learning_curve, parity_plot
from ..predict.model import load
from ..train import load_structures, load_targets

__all__ = [
    "metrics",
    "size_table",
    "table_md",
    "n_atoms",
    "species_counts",
    "composition_baseline_mae",
    "force_errors",
    "DataForces",
    "dataset_forces",
    "evaluate",
]


def n_atoms(structure: Any) -> int:
    """Number of atoms of an ``ase.Atoms`` or a ``(positions, numbers, cell, pbc)`` tuple."""
    return len(structure.numbers) if hasattr(structure, "numbers") else len(structure[1])


def metrics(true: Sequence[float], pred: Sequence[float], n_atoms: Sequence[int]) -> dict[str, float]:
    """MAE / RMSE / max |error| of energies per atom, in meV/atom.

    Parameters
    ----------
    true, pred : sequence of float
        Reference and predicted total energies (eV).
    n_atoms : sequence of int
        Atoms per structure.

    Returns
    -------
    dict
        ``n``, ``mae_mev_per_atom``, ``rmse_mev_per_atom``, ``max_mev_per_atom``.
    """
    err = 1000 * (np.asarray(pred, float) - np.asarray(true, float)) / np.asarray(n_atoms, float)
    return {"n": int(len(err)), "mae_mev_per_atom": float(np.mean(np.abs(err))),
            "rmse_mev_per_atom": float(np.sqrt(np.mean(err**2))), "max_mev_per_atom": float(np.max(np.abs(err)))}


def size_table(true: np.ndarray, pred: np.ndarray, n_atoms: np.ndarray, bins: Sequence[int] | None = None) -> list[dict]:
    """Per-size error rows: ``atoms`` range, then :func:`metrics` of the structures in it.

    ``bins`` are atom-count edges (default: the quintiles of ``n_atoms``); the
    last bin includes its upper edge.
    """
    true, pred, n_atoms = np.asarray(true, float), np.asarray(pred, float), np.asarray(n_atoms)
    if bins is None:
        bins = list(np.unique(np.quantile(n_atoms, np.linspace(0, 1, 6)).astype(int)))
    rows = []
    for lo, hi in zip(bins[:-1], bins[1:], strict=True):
        last = hi == bins[-1]
        sel = (n_atoms >= lo) & ((n_atoms <= hi) if last else (n_atoms < hi))
        if sel.any():
            rows.append({"atoms": f"{lo}-{hi}", **metrics(true[sel], pred[sel], n_atoms[sel])})
    return rows


def table_md(rows: list[dict], key: str = "atoms") -> str:
    """A markdown table of :func:`size_table`-like rows (``key``, N, MAE, RMSE, max)."""
    s = f"| {key} | N | MAE | RMSE | max |\n|---|---|---|---|---|\n"
    for r in rows:
        s += (f"| {r[key]} | {r['n']} | {r['mae_mev_per_atom']:.2f} | {r['rmse_mev_per_atom']:.2f} | "
              f"{r['max_mev_per_atom']:.1f} |\n")
    return s


def species_counts(model: Any, structures: Sequence[Any]) -> np.ndarray:
    """Atoms of each of the model's species per structure, shape ``(n_structures, n_species)``."""
    lut = {z: i for i, z in enumerate(model.species)}
    c = np.zeros((len(structures), len(lut)))
    for i, s in enumerate(structures):
        nums = s.numbers if hasattr(s, "numbers") else s[1]
        for z in np.asarray(nums).tolist():
            c[i, lut[z]] += 1
    return c


def composition_baseline_mae(model: Any, structures: Sequence[Any], energies: np.ndarray,
                             n_atoms: np.ndarray) -> float:
    """MAE (meV/atom) of the model's per-element reference energies alone (the composition-only baseline)."""
    resid = np.asarray(energies, float) - species_counts(model, structures) @ model.refs
    return float(1000 * np.mean(np.abs(resid) / np.asarray(n_atoms, float)))


def force_errors(pred: Sequence[np.ndarray], ref: Sequence[np.ndarray]) -> dict[str, Any]:
    """Force-component errors (eV/A): ``n_components`` and, when there are any, MAE / RMSE / max."""
    if not len(ref):
        return {"n_components": 0}
    df = np.concatenate([(np.asarray(p) - np.asarray(f)).ravel() for p, f in zip(pred, ref, strict=True)])
    return {"n_components": int(df.size), "mae_ev_per_a": float(np.mean(np.abs(df))),
            "rmse_ev_per_a": float(np.sqrt(np.mean(df**2))), "max_ev_per_a": float(np.max(np.abs(df)))}


@dataclasses.dataclass
class DataForces:
    """The reference forces of a dataset, with what is missing or unusable said out loud.

    Attributes
    ----------
    forces : list
        One ``(N, 3)`` array per structure, ``None`` where there are none or they are not finite.
    missing : list of int
        Structures without forces.
    nonfinite : list of int
        Structures whose forces contain NaN or inf (a labeller that failed).
    """

    forces: list[np.ndarray | None]
    missing: list[int]
    nonfinite: list[int]

    @property
    def usable(self) -> list[int]:
        """Indices of the structures with finite forces."""
        return [i for i, f in enumerate(self.forces) if f is not None]


def dataset_forces(path: str) -> DataForces:
    """Reference forces of every structure of a dataset (``.h5`` or any file ase.io reads).

    Structures come in the order of :func:`ednn.train.load_structures`.
    Non-finite forces are not dropped silently: they are listed in
    :attr:`DataForces.nonfinite`.
    """
    forces: list[np.ndarray | None] = []
    missing: list[int] = []
    nonfinite: list[int] = []
    if path.endswith((".h5", ".hdf5")):

        with Dataset(path) as ds:
            for i in range(len(ds)):
                try:
                    f = ds.forces(i)
                except DatasetError:  # Dataset.forces refuses NaN/inf forces; count them
                    nonfinite.append(i)
                    forces.append(None)
                    continue
                if f is None:
                    missing.append(i)
                forces.append(f)
        return DataForces(forces, missing, nonfinite)
    import ase.io

    for i, a in enumerate(ase.io.read(path, index=":")):
        results = a.calc.results if a.calc is not None else {}
        f = results.get("forces")
        if f is None:
            missing.append(i)
        elif not np.all(np.isfinite(f)):
            nonfinite.append(i)
            f = None
        forces.append(None if f is None else np.asarray(f, dtype=np.float64))
    return DataForces(forces, missing, nonfinite)


def evaluate(model_path: str, data: str, out: str, fmt: str = "png", symmetrize: bool = False) -> dict[str, Any]:
    """Evaluate a model on a labelled dataset and write the results to ``out``.

    Parameters
    ----------
    model_path : str
        Model folder (or .zip).
    data : str
        Labelled structures: an ednn ``.h5`` dataset or any file ase.io reads.
    out : str
        Output folder: ``metrics.json``, ``by_size.md``, ``parity.<fmt>`` and
        ``learning_curve.<fmt>`` (when the model's run folder has ``log.json``).
    fmt : {"png", "pdf", "svg"}
        Figure format.
    symmetrize : bool
        Fields averaged over the cell's grid symmetries (``model.symmetrize_fields``).

    Returns
    -------
    dict
        The metrics (as in ``metrics.json``): energy errors in meV/atom,
        ``by_size``, ``composition_baseline_mae_mev_per_atom`` and, when the
        data have forces, ``forces`` (eV/A errors, the number of structures used
        and those left out because their forces are missing or not finite).
        For a model with per-voxel fields, ``fields``: per field its unit, MAE,
        RMSE and max error over all voxels, beside the error of the data's mean;
        for an electron-density field, ``density`` (:func:`density_metrics`).

    Raises
    ------
    DatasetError
        The data lack the energies (of an energy model) or the targets (of a field model).
    """

    figure_format(f"x.{fmt}")  # refuse an unknown format before any work
    model = load(model_path)
    if symmetrize:
        if not model.fields:
            raise InputError(f"symmetrize averages per-voxel fields; {model_path} predicts none")
        model.symmetrize_fields = True
    has_energy = model.energy_output is not None
    structs, E = load_structures(data, need_energy=has_energy)
    os.makedirs(out, exist_ok=True)
    m: dict[str, Any] = {"symmetrize_fields": True} if symmetrize else {}
    if has_energy:
        m.update(_energy_metrics(model, data, structs, E, out, fmt))
    if model.fields:
        m["fields"] = field_metrics(model, data, structs)
        if "ldos" in model.fields and model.meta.get("electronic"):
            m["electronic"] = ldos_metrics(model, data, structs, out, fmt)
        if "density" in model.fields:
            m["density"] = density_metrics(model, data, structs, out, fmt)
    log = os.path.join(os.path.dirname(os.path.abspath(model_path)), "log.json")
    if os.path.exists(log):
        learning_curve(log, os.path.join(out, f"learning_curve.{fmt}"))
    tmp = os.path.join(out, f"metrics.json.tmp{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(m, fh, indent=1)
    os.replace(tmp, os.path.join(out, "metrics.json"))
    if has_energy:
        with open(os.path.join(out, "by_size.md"), "w") as fh:
            fh.write(table_md(m["by_size"]))
    return m


def _energy_metrics(model, data: str, structs: list, E: np.ndarray, out: str, fmt: str) -> dict[str, Any]:
    """Energy errors (meV/atom), by size, the composition baseline, force errors and the parity plot."""
    pred = model.predict_energies(structs)
    n = np.array([n_atoms(s) for s in structs], dtype=float)
    m: dict[str, Any] = metrics(E, pred, n)
    m["by_size"] = size_table(E, pred, n)
    m["composition_baseline_mae_mev_per_atom"] = composition_baseline_mae(model, structs, E, n)
    ref = dataset_forces(data)
    if len(ref.missing) < len(structs):  # the data have forces (some of them may be unusable)
        if model.head == "dense":
            warnings.warn(f"{data!r} has forces but the model has the dense head, which gives no forces; "
                          "force errors are not computed", stacklevel=3)
        else:
            use = ref.usable
            pred_f = model.predict_forces([structs[i] for i in use])
            m["forces"] = {**force_errors(pred_f, [ref.forces[i] for i in use]), "n_structures": len(use),
                           "n_structures_without_forces": len(ref.missing),
                           "n_structures_nonfinite": len(ref.nonfinite)}
            if ref.nonfinite:
                m["forces"]["nonfinite_records"] = ref.nonfinite[:20]
                warnings.warn(f"forces of {len(ref.nonfinite)} of {len(structs)} structures in {data!r} contain "
                              f"NaN or inf (records {ref.nonfinite[:10]}); they are left out of the force errors. "
                              "Relabel those structures (the labeller failed on them)", stacklevel=3)
    parity_plot(E / n, pred / n, os.path.join(out, f"parity.{fmt}"), title=os.path.basename(data),
                baseline_mae_mev=m["composition_baseline_mae_mev_per_atom"])
    return m


def ldos_metrics(model, data: str, structs: list, out: str, fmt: str = "png") -> dict[str, Any]:
    """An LDOS model on a labelled dataset, in physical units: per record and on average the band energy
    (meV/atom), Fermi level (meV), -TS (meV/atom), density MAPE (%) and electrons (%), each at the record's
    electronic temperature against the same physics on the DFT label; beside them the training-free baseline
    of the dataset's mean LDOS at every voxel. Writes ``dos.<fmt>`` and ``density.<fmt>`` (first record)."""
    from ..plots import density_slice_plot, dos_plot  # noqa: PLC0415
    from ..predict.electronic import energy_grid, ldos_errors  # noqa: PLC0415

    check_energy_grid(model, data)
    labels = load_targets(data, ["ldos"])["ldos"]
    with Dataset(data) as ds:
        infos = [ds.info(i) for i in range(len(ds))]
    mean = np.mean(np.concatenate([np.asarray(a, np.float64).reshape(-1, a.shape[-1]) for a in labels]), axis=0)
    keys = ("band_energy_meV_per_atom", "fermi_level_meV", "entropy_term_meV_per_atom", "density_mape_pct",
            "electrons_pct", "ldos_rmse")
    rows, base = [], []
    for i, (s, lab) in enumerate(zip(structs, labels, strict=True)):
        atoms = _as_atoms(s)
        t_e = float(infos[i].get("electronic_temperature_K", 298.0))
        pred = model.predict_ldos(atoms)
        r = ldos_errors(model, atoms, lab, t_e, ldos=pred)
        b = ldos_errors(model, atoms, lab, t_e, ldos=np.broadcast_to(mean, np.shape(lab)))
        rows.append({"record": i, "n_atoms": len(atoms), "electronic_temperature_K": t_e,
                     **{k: r[k] for k in keys}, "negative_fraction": r["negative_fraction"]})
        base.append({k: b[k] for k in keys})
        if i == 0:
            dos_plot(energy_grid(model).energies, {"DFT": r["dos_true"], "ednn": r["dos_pred"],
                                                   "dataset-mean LDOS": b["dos_pred"]},
                     os.path.join(out, f"dos.{fmt}"), n_atoms=len(atoms), fermi_level=r["fermi_level_true"],
                     title=f"{os.path.basename(data)} record 0")
            from ..electronic import electronic_properties  # noqa: PLC0415
            from ..predict.electronic import predict_density  # noqa: PLC0415

            dv = abs(atoms.cell.volume) / np.prod(np.shape(lab)[:-1])
            rho_t = electronic_properties(energy_grid(model), t_e, float(infos[i].get("n_electrons", 0)) or None,
                                          ldos=lab, voxel_volume=dv, mu=r["fermi_level_true"])["density"]
            density_slice_plot({"DFT": rho_t, "ednn": predict_density(model, atoms, t_e, ldos=pred)},
                               os.path.join(out, f"density.{fmt}"), title="density, slice z = 0")
    summ = {k: {"mae": float(np.mean([abs(r[k]) for r in rows])), "max": float(np.max([abs(r[k]) for r in rows])),
                "baseline_mae": float(np.mean([abs(b[k]) for b in base]))} for k in keys}
    return {"n_records": len(rows), "summary": summ, "records": rows,
            "baseline": "the dataset's mean LDOS at every voxel"}


def density_metrics(model, data: str, structs: list, out: str, fmt: str = "png") -> dict[str, Any]:
    """A density model against the dataset's density labels, per record and over all
    (:func:`ednn.predict.electronic.density_errors`: MAPE over the voxels above 1 % of the label's maximum,
    electrons against the label's, RMSE), beside the baseline of the dataset's mean density
    at every voxel; for a model that knows the valence electrons (trained on gpaw-ldos records) also
    ``conserved_density_mape_pct``, the MAPE of its density scaled to them (``predict_density(...,
    conserve_electrons=True)``). Writes ``density.<fmt>``: the first record's slice through its densest plane
    along z."""
    from ..plots import density_slice_plot  # noqa: PLC0415
    from ..predict.electronic import density_errors, n_electrons_of  # noqa: PLC0415

    labels = load_targets(data, ["density"])["density"]
    true = [np.asarray(t, np.float64).reshape(np.shape(t)[:3]) for t in labels]
    mean = float(np.mean([t.mean() for t in true]))
    conserve = "valence" in (model.meta.get("electronic") or {})
    rows = []
    for i, (s, t) in enumerate(zip(structs, true, strict=True)):
        pred = model.predict_field(s, "density")[..., 0]
        if pred.shape != t.shape:
            raise InputError(f"record {i}: the density label has shape {t.shape}, the model predicts {pred.shape}")
        dv = abs(float(np.linalg.det(_as_atoms(s).cell))) / t.size
        rows.append({"record": i, "n_atoms": n_atoms(s), **density_errors(pred, t, dv),
                     "mean_baseline_mape_pct": density_errors(np.full_like(t, mean), t, dv)["density_mape_pct"]})
        if conserve:
            n_e = n_electrons_of(model, _as_atoms(s))
            rows[-1]["conserved_density_mape_pct"] = density_errors(
                pred * (n_e / (float(pred.sum()) * dv)), t, dv)["density_mape_pct"]
        if i == 0:
            k = int(np.argmax(t.sum(axis=(0, 1))))
            density_slice_plot({"DFT": t, "ednn": pred}, os.path.join(out, f"density.{fmt}"), axis=2, index=k,
                               title=f"density, slice z = {k} (densest plane)")
    keys = ("density_mape_pct", "electrons_pct", "rmse", "mean_baseline_mape_pct") + (
        ("conserved_density_mape_pct",) if conserve else ())
    return {"records": rows, **{k: {"mae": float(np.mean([abs(r[k]) for r in rows])),
                                    "max": float(np.max([abs(r[k]) for r in rows]))} for k in keys}}


def _as_atoms(s: Any):
    if hasattr(s, "positions"):
        return s
    from ase import Atoms  # noqa: PLC0415

    return Atoms(numbers=s[1], positions=s[0], cell=s[2], pbc=s[3])


def check_energy_grid(model, data: str) -> None:
    """DatasetError when an LDOS model meets a dataset on another energy grid (channels would be other energies)."""
    e = model.meta.get("electronic")
    if "ldos" not in model.fields or e is None or not str(data).endswith((".h5", ".hdf5")):
        return
    with Dataset(data) as ds:
        theirs = ds.metadata.get("energy_grid")
    if theirs is not None and theirs != e["energy_grid"]:
        raise DatasetError(f"the LDOS of {data} is on the energy grid {theirs}, but the model predicts it on "
                           f"{e['energy_grid']}: the channels would be other energies. Evaluate on data labelled "
                           "with the model's energy grid (gpaw-ldos energy_grid=...) or train a model on this one")


def field_metrics(model, data: str, structs: list) -> dict[str, dict[str, Any]]:
    """Per field of the model: MAE, RMSE and max error over all voxels and channels (the field's unit),
    beside the error of predicting the data's mean value everywhere."""
    out: dict[str, dict[str, Any]] = {}
    check_energy_grid(model, data)
    labels = load_targets(data, list(model.fields))
    for name, f in model.fields.items():
        err = []
        ref = []
        for i, s in enumerate(structs):
            pred = model.predict_field(s, name)
            t = f.check(labels[name][i], tuple(n // f.factor for n in pred.shape[:-1]), where=f"record {i}: ")
            err.append((pred - t).ravel())
            ref.append(np.asarray(t, np.float64).ravel())
        e, r = np.concatenate(err), np.concatenate(ref)
        base = r - r.mean()
        out[name] = {"unit": f.prop.unit, "n_structures": len(structs), "n_values": int(e.size),
                     "mae": float(np.abs(e).mean()), "rmse": float(np.sqrt(np.mean(e * e))),
                     "max": float(np.abs(e).max()), "mean_baseline_rmse": float(np.sqrt(np.mean(base * base))),
                     "mean_baseline_mae": float(np.abs(base).mean())}
    return out
