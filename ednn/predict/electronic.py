"""Electronic structure from a per-voxel LDOS model: the LDOS, the density and the derived physics.

A model trained on ``data.targets: [ldos]`` (optionally with ``energy``)
predicts the local density of states ``d(r, E)`` on every voxel of the DFT grid
(``model.upsample`` times finer than its input image). What turns that into
physics is :mod:`ednn.electronic`; what it needs from training is stored in
``model.meta["electronic"]`` (:func:`ednn.data.ldos.ldos_metadata`): the energy
grid of the labels and the valence electrons per element.

Negative predicted values. The network's output is linear, so a predicted
LDOS can dip below zero where the true one is ~0 (band bottoms, between
atoms). It is used as predicted: every quantity is a linear functional of the
LDOS at fixed ``mu``, and clipping would add electrons (a bias of the same sign
everywhere). :func:`electronic_structure` reports the negative part
(``negative_fraction``: the integral of the negative values over the absolute
integral) so that a user sees how much of it there is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..electronic import EnergyGrid, electronic_properties
from ..errors import InputError, ModelError
from ..properties import LDOS

__all__ = ["energy_grid", "n_electrons_of", "predict_ldos", "predict_density", "electronic_structure", "ldos_errors"]


def _meta(model) -> dict[str, Any]:
    e = model.meta.get("electronic")
    if LDOS.key not in model.fields:
        raise ModelError(f"this model predicts {sorted(model.fields) or 'no per-voxel field'}, not the LDOS; train "
                         "one with data.targets: [ldos] on a gpaw-ldos dataset")
    if e is None:
        raise ModelError("this LDOS model carries no electronic metadata (energy grid, valence electrons): it was "
                         "trained from arrays, not from gpaw-ldos datasets. Set model.meta['electronic'] = "
                         "ednn.data.ldos.ldos_metadata(<the training files>) and save it again")
    return e


def energy_grid(model) -> EnergyGrid:
    """The energy grid of the model's LDOS channels."""
    return EnergyGrid.from_dict(_meta(model)["energy_grid"])


def n_electrons_of(model, atoms: Any) -> float:
    """Valence electrons of ``atoms`` (those of the DFT setups the model was trained on)."""
    val = _meta(model)["valence"]
    numbers = np.asarray(atoms.numbers)
    missing = sorted({int(z) for z in numbers} - {int(z) for z in val})
    if missing:
        raise InputError(f"elements {missing} were not in this LDOS model's training data (it knows "
                         f"{sorted(int(z) for z in val)}); it cannot count their electrons")
    return float(sum(val[str(int(z))] for z in numbers))


def _check_bulk(model, atoms: Any) -> None:
    if model.dim == 3 and not np.all(atoms.pbc):
        raise InputError("this 3D LDOS model needs a periodic cell (pbc = True along all three vectors); "
                         "put the structure in a cell (with vacuum where it is not periodic) and set pbc=True")


def predict_ldos(model, atoms: Any, method: str = "auto") -> np.ndarray:
    """The LDOS ``(N1, N2, N3, n_E)`` in 1/(eV Angstrom^3) on the model's field grid."""
    _meta(model)
    _check_bulk(model, atoms)
    return model.predict_field(atoms, LDOS.key, method=method)


def _voxel_volume(atoms: Any, field: np.ndarray) -> float:
    return float(abs(atoms.cell.volume)) / float(np.prod(field.shape[:-1]))


def electronic_structure(model, atoms: Any, temperature: float, ldos: np.ndarray | None = None,
                         mu: float | None = None) -> dict[str, Any]:
    """Everything the predicted LDOS gives at electronic temperature ``temperature`` (K).

    Returns
    -------
    dict
        ``fermi_level`` (eV), ``band_energy`` (eV), ``entropy_term`` (-TS, eV), ``n_electrons`` (the
        integral at the Fermi level), ``n_electrons_expected`` (valence count), ``dos`` (states/eV on
        ``energies``), ``energies`` (eV), ``density`` (1/Angstrom^3 on the field grid), ``voxel_volume``
        (Angstrom^3), ``negative_fraction`` (see the module docstring), ``temperature`` (K),
        ``n_atoms``.
    """
    grid = energy_grid(model)
    d = predict_ldos(model, atoms) if ldos is None else np.asarray(ldos)
    n_e = n_electrons_of(model, atoms)
    dv = _voxel_volume(atoms, d)
    out = electronic_properties(grid, temperature, n_e, ldos=d, voxel_volume=dv, mu=mu)
    a = np.asarray(d, dtype=np.float64)
    out.update({"n_electrons_expected": n_e, "energies": grid.energies, "voxel_volume": dv,
                "negative_fraction": float(-a[a < 0].sum() / max(np.abs(a).sum(), 1e-300)),
                "n_atoms": len(atoms)})
    return out


def predict_density(model, atoms: Any, temperature: float, ldos: np.ndarray | None = None) -> np.ndarray:
    """The electron density ``(N1, N2, N3)`` in 1/Angstrom^3 at electronic temperature ``temperature`` (K),
    from the predicted LDOS at the Fermi level that holds the structure's valence electrons."""
    return electronic_structure(model, atoms, temperature, ldos=ldos)["density"]


def ldos_errors(model, atoms: Any, label: np.ndarray, temperature: float, ldos: np.ndarray | None = None,
                n_electrons: float | None = None) -> dict[str, Any]:
    """A predicted LDOS against a DFT label of the same structure, in the units a user reads.

    Both go through the same physics (:func:`ednn.electronic.electronic_properties` at ``temperature``),
    so the differences are the model's alone: band energy (meV/atom), Fermi level (meV), -TS (meV/atom),
    density mean absolute percentage error (%), electrons of the predicted density against the count (%),
    and the LDOS RMSE (1/(eV A^3)).
    """
    grid = energy_grid(model)
    label = np.asarray(label, dtype=np.float64)
    grid.check_axis(label, "LDOS label")
    p = ldos if ldos is not None else predict_ldos(model, atoms)
    if p.shape != label.shape:
        raise InputError(f"the LDOS label has shape {label.shape} but the model predicts {p.shape} for this "
                         "structure: the label is on another real-space grid than the model's")
    n_e = n_electrons_of(model, atoms) if n_electrons is None else float(n_electrons)
    dv = _voxel_volume(atoms, label)
    t = electronic_properties(grid, temperature, n_e, ldos=label, voxel_volume=dv)
    q = electronic_structure(model, atoms, temperature, ldos=p)
    n = len(atoms)
    rho_t = t["density"]
    return {
        "band_energy_meV_per_atom": 1000 * (q["band_energy"] - t["band_energy"]) / n,
        "fermi_level_meV": 1000 * (q["fermi_level"] - t["fermi_level"]),
        "entropy_term_meV_per_atom": 1000 * (q["entropy_term"] - t["entropy_term"]) / n,
        "density_mape_pct": float(100 * np.mean(np.abs(q["density"] - rho_t) / np.maximum(np.abs(rho_t), 1e-300))),
        "electrons_pct": float(100 * (q["density"].sum() * dv - n_e) / n_e),
        "ldos_rmse": float(np.sqrt(np.mean((p - label) ** 2))),
        "negative_fraction": q["negative_fraction"],
        "dos_true": t["dos"], "dos_pred": q["dos"], "fermi_level_true": t["fermi_level"],
    }
