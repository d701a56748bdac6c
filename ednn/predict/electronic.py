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

from ..electronic import EnergyGrid, electronic_properties, occupation_weights
from ..errors import InputError, ModelError
from ..properties import DENSITY, LDOS

__all__ = ["energy_grid", "n_electrons_of", "predict_ldos", "predict_density", "electronic_structure", "ldos_errors",
           "density_errors", "free_energy_change", "free_energy"]

#: The "zero" electronic temperature (K) of the reference E_band(0): k_B T = 0.9 micro-eV, far below any energy
#: grid spacing; the piecewise-linear weights make E_band(T) - E_band(0) ~ T^2 exact to ~1e-8 eV here.
ZERO_KELVIN = 0.01


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
    """Valence electrons of ``atoms`` (those of the DFT setups the model was trained on): an LDOS model's, or a
    density model's trained on gpaw-ldos records (both store the counts per element)."""
    if LDOS.key in model.fields:
        val = _meta(model)["valence"]
    else:
        val = (model.meta.get("electronic") or {}).get("valence")
        if val is None:
            raise ModelError("this model carries no valence electron counts (model.meta['electronic']['valence']): "
                             "it was trained from arrays or on records without their electron counts. Set "
                             "model.meta['electronic'] = ednn.data.ldos.ldos_metadata(<gpaw-ldos training files>, "
                             "ldos=False) and save it again")
    numbers = np.asarray(atoms.numbers)
    missing = sorted({int(z) for z in numbers} - {int(z) for z in val})
    if missing:
        raise InputError(f"elements {missing} were not in this model's training data (it knows "
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
    readout = _readout(model) if ldos is None else None
    if readout is not None:  # never holds the LDOS: memory of the density only
        return _electronic_structure_readout(model, atoms, temperature, grid, mu, readout)
    d = predict_ldos(model, atoms) if ldos is None else np.asarray(ldos)
    n_e = n_electrons_of(model, atoms)
    dv = _voxel_volume(atoms, d)
    out = electronic_properties(grid, temperature, n_e, ldos=d, voxel_volume=dv, mu=mu)
    a = np.asarray(d, dtype=np.float64)
    out.update({"n_electrons_expected": n_e, "energies": grid.energies, "voxel_volume": dv,
                "negative_fraction": float(-a[a < 0].sum() / max(np.abs(a).sum(), 1e-300)),
                "n_atoms": len(atoms)})
    return out


def _readout(model):
    """``(features model, W, b)`` with the LDOS network channels ``= features @ W + b`` (the network's last
    layer is linear and 1x1), or None where that does not hold (a vacuum-zero wrapper subtracts the
    empty-tile output inside the network, or ``model.symmetrize_fields`` averages several predictions)."""
    if (model.head != "density" or model.network.get_layer(index=-1).name != "density"
            or model.symmetrize_fields):
        return None
    last = model.network.get_layer("density")
    if not hasattr(model, "_ldos_features"):  # shares the network's layers: follows its weights
        import keras  # noqa: PLC0415

        model._ldos_features = keras.Model(model.network.inputs, last.input)
    k, b = last.get_weights()  # read at every call: weights set after the first call count
    f = model.fields[LDOS.key]
    k = np.asarray(k, dtype=np.float64).reshape(-1, k.shape[-1])[:, f.start : f.stop]
    return model._ldos_features, k, np.asarray(b, dtype=np.float64)[f.start : f.stop]


#: pixels per block when the LDOS is formed block by block (2048 x 8 x 569 float64: 75 MB)
_READOUT_PIXELS = 2048


def _electronic_structure_readout(model, atoms: Any, temperature: float, grid: EnergyGrid,
                                  mu: float | None, readout: tuple) -> dict[str, Any]:
    """:func:`electronic_structure` without the LDOS array: the network runs up to its last hidden layer
    (``k`` features per pixel); the last layer is linear, so the DOS is ``(sum_pixels h) @ W + P b`` and the
    density at each sub-voxel is ``h @ (W (scale * w_occ)) + b (scale * w_occ)``. Memory: the features and the
    density, not the ``n_E`` values per voxel (6.4 GB for 256 Al atoms); equal to the direct path up to
    float round-off."""
    import dataclasses  # noqa: PLC0415

    _check_bulk(model, atoms)
    feats_model, w_net, b_net = readout
    f = model.fields[LDOS.key]
    img, wgt = model.image(atoms)
    n_e = n_electrons_of(model, atoms)
    x, _ = model.network_input(img, wgt)
    h = np.asarray(feats_model([x[None].astype(np.float32)], training=False)[0], dtype=np.float64)
    n_pix = int(np.prod(h.shape[:-1]))
    h = h.reshape(n_pix, -1)
    subs, c = f.sub_voxels, f.channels
    scale = np.asarray(f.scale, dtype=np.float64)
    dv = float(abs(atoms.cell.volume)) / (n_pix * subs)
    dos = ((h.sum(0) @ w_net + n_pix * b_net).reshape(subs, c).sum(0)) * scale * dv
    neg = tot = 0.0
    for i in range(0, n_pix, _READOUT_PIXELS):  # the negative part needs the values: block by block
        y = (h[i : i + _READOUT_PIXELS] @ w_net + b_net).reshape(-1, subs, c) * scale
        neg -= y[y < 0].sum()
        tot += np.abs(y).sum()
    if not np.isfinite(dos).all():
        raise InputError("the predicted LDOS contains NaN or inf values")
    out = electronic_properties(grid, temperature, n_e, dos=dos, mu=mu)
    w_occ = occupation_weights(grid, out["fermi_level"], out["temperature"]) * scale
    per_sub = h @ (w_net.reshape(-1, subs, c) @ w_occ) + b_net.reshape(subs, c) @ w_occ  # (P, subs)
    one = dataclasses.replace(f, start=0, channels=1, scale=np.ones(1))
    out["density"] = one.from_network(per_sub.reshape(tuple(img.shape[:-1]) + (subs,)))[..., 0]
    out.update({"n_electrons_expected": n_e, "energies": grid.energies, "voxel_volume": dv,
                "negative_fraction": float(neg / max(tot, 1e-300)), "n_atoms": len(atoms)})
    return out


def predict_density(model, atoms: Any, temperature: float | None = None, ldos: np.ndarray | None = None,
                    conserve_electrons: bool = False) -> np.ndarray:
    """The electron density ``(N1, N2, N3)`` in 1/Angstrom^3 on the model's field grid.

    An LDOS model (``data.targets: [ldos]``): from the predicted LDOS (or ``ldos``, an earlier
    :func:`predict_ldos` of the structure) at electronic temperature ``temperature`` (K, required), at the
    Fermi level that holds the structure's valence electrons: they are conserved by construction.

    A density model (``data.targets: [density]``): its predicted field, at the electronic temperature of its
    labels; ``temperature``, if given, must be that one (a density model cannot move it: an LDOS model can).
    The network's density is not constrained to hold the structure's electrons (off by about a percent on
    the sheet data); ``conserve_electrons=True`` scales it by ``N_valence / integral``, so that it holds them
    exactly. That needs the valence counts, which training on gpaw-ldos records stores.
    """
    if LDOS.key in model.fields:
        if temperature is None:
            raise InputError("an LDOS model's density depends on the electronic temperature: give temperature= "
                             "(K), e.g. that of the labels, model.meta['electronic']['electronic_temperatures_K']")
        return electronic_structure(model, atoms, temperature, ldos=ldos)["density"]
    if DENSITY.key not in model.fields:
        raise ModelError(f"this model predicts {sorted(model.fields) or 'no per-voxel field'}, neither the LDOS nor "
                         "the density; train one with data.targets: [density] or [ldos]")
    if ldos is not None:
        raise InputError("ldos= is the predicted LDOS of an LDOS model; this model predicts the density directly: "
                         "leave ldos out")
    if model.dim != 3:
        raise ModelError("predict_density is for 3D voxel models (a density in 1/A^3); this 2D model's field is "
                         "model.predict_field(atoms, 'density')")
    if temperature is not None:
        temps = (model.meta.get("electronic") or {}).get("electronic_temperatures_K") or []
        if not any(abs(float(temperature) - t) <= 1e-6 * max(t, 1.0) for t in temps):
            known = f"that of its labels, {temps} K" if temps else "that of its labels (not recorded: trained from arrays)"
            raise InputError(f"this density model predicts the density at one electronic temperature, {known}, not "
                             f"at {temperature} K: leave temperature out, or train an LDOS model (data.targets: "
                             "[ldos]) to reach other temperatures")
    rho = np.asarray(model.predict_field(atoms, DENSITY.key)[..., 0], dtype=np.float64)  # sheets in a box too
    if conserve_electrons:
        n_e = n_electrons_of(model, atoms)
        held = float(rho.sum()) * _voxel_volume(atoms, rho[..., None])
        if not held > 0:
            raise InputError(f"the predicted density holds {held:.4g} electrons: it cannot be scaled to the "
                             f"structure's {n_e:g}")
        rho *= n_e / held
    return rho


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


def density_errors(pred: np.ndarray, label: np.ndarray, voxel_volume: float, n_electrons: float | None = None,
                   threshold: float = 0.01) -> dict[str, float]:
    """A predicted electron density against its label on the same grid (both 1/A^3).

    ``density_mape_pct``: the mean absolute percentage error over the voxels where the label exceeds
    ``threshold`` times its maximum (a sheet's box is mostly vacuum, where a percentage means nothing);
    ``voxels_counted``: how many those are; ``electrons_pct``: the predicted density's electrons against
    ``n_electrons`` (default: the label's); ``rmse``: over all voxels (1/A^3).
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(label, dtype=np.float64)
    if p.shape != t.shape:
        raise InputError(f"predicted density of shape {p.shape} against a label of shape {t.shape}: give both on "
                         "the same grid")
    if not (0 <= threshold < 1):
        raise InputError(f"threshold is a fraction of the label's maximum in [0, 1), got {threshold!r}")
    if not np.all(np.isfinite(t)) or t.max() <= 0:
        raise InputError("the density label must be finite with a positive maximum")
    mask = t > threshold * t.max()
    n_e = float(t.sum() * voxel_volume) if n_electrons is None else float(n_electrons)
    return {
        "density_mape_pct": float(100 * np.mean(np.abs(p[mask] - t[mask]) / t[mask])),
        "voxels_counted": int(mask.sum()),
        "electrons_pct": float(100 * (p.sum() * voxel_volume - n_e) / n_e),
        "rmse": float(np.sqrt(np.mean((p - t) ** 2))),
    }


def free_energy_change(model, atoms: Any, temperature: float, ldos: np.ndarray | None = None) -> dict[str, Any]:
    """``Delta(T_e) = [E_band - T_e S](T_e) - E_band(0)`` (eV) of the structure, from one (predicted) LDOS.

    The Fermi level is found from the electron count at each temperature; the LDOS itself is held fixed
    ("frozen"), so the change of the density with ``T_e`` is left out. Because the Kohn-Sham free energy
    is variational in the density, that omission is of second order: on the Al4 GPAW labels the true
    298 K LDOS gives GPAW's ``F(T_e) - E_0`` to 0.05 meV/atom at 298, 933 and 2000 K
    (``experiments/ldos_free_energy.py``). Returns the electronic structure at ``temperature``
    (:func:`electronic_structure`) with ``free_energy_change`` (eV) and ``band_energy_zero`` (eV) added.
    """
    hot = electronic_structure(model, atoms, temperature, ldos=ldos)
    cold = electronic_properties(energy_grid(model), ZERO_KELVIN, hot["n_electrons_expected"], dos=hot["dos"])
    hot["band_energy_zero"] = cold["band_energy"]
    hot["free_energy_change"] = hot["band_energy"] + hot["entropy_term"] - cold["band_energy"]
    return hot


def free_energy(model, atoms: Any, temperature: float, energy_model=None, ldos: np.ndarray | None = None
                ) -> dict[str, Any]:
    """The free energy ``F(T_e)`` (eV) at electronic temperature ``temperature`` (K).

    ``F(T_e) = E_0 + Delta(T_e)``: ``E_0`` is the energy extrapolated to zero electronic width (what the
    ``gpaw-ldos`` labeller stores as a record's energy), predicted by ``energy_model`` (or by ``model``
    itself if it was trained with ``data.targets: [ldos, energy]``); ``Delta`` is
    :func:`free_energy_change` of ``model``'s LDOS. The approximation is the frozen LDOS (see there);
    the error of ``F`` is that of ``E_0`` plus that of ``Delta``, which the returned dict keeps apart:
    ``free_energy``, ``energy_zero`` (``E_0``), ``free_energy_change`` (``Delta``), and the electronic
    structure at ``temperature``.
    """
    em = model if energy_model is None else energy_model
    if getattr(em, "energy_output", None) is None:
        raise ModelError("the free energy needs E_0 from an energy model: this LDOS model predicts no energy. "
                         "Pass energy_model= (a model trained on the same DFT settings' energies), or train "
                         "the LDOS model with data.targets: [ldos, energy]")
    out = free_energy_change(model, atoms, temperature, ldos=ldos)
    out["energy_zero"] = float(em.predict_energy(atoms))
    out["free_energy"] = out["energy_zero"] + out["free_energy_change"]
    return out
