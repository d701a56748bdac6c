"""Electronic-structure records: checks of the LDOS and density targets, and the data checks of a dataset.

An electronic-structure record (written by the ``gpaw-ldos`` labeller) holds
``targets["ldos"]`` ``(N1, N2, N3, n_E)`` in 1/(eV Angstrom^3) on the dataset's
energy grid, ``targets["density"]`` ``(N1, N2, N3)`` in 1/Angstrom^3, and in its
info the electronic temperature, the DFT code's Fermi level, the electron count,
the eigenvalues and k-point weights, the voxel volume and the energy grid.

:func:`check_electronic_targets` refuses, when a record is appended, what
would make such a dataset wrong: an LDOS on another energy grid than the
dataset's, a grid that does not fill the cell, negative or non-finite
densities, a non-positive electronic temperature.

:func:`validate_ldos_dataset` (``ednn ldos check FILE``) recomputes from each
record's LDOS what the DFT run knows independently: the electron count, the
broadened eigenvalue DOS, the Fermi level, the density summed from the states
and the eigenvalue band energy, and reports each difference against its
tolerance.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from ..electronic import (
    EnergyGrid,
    band_energy,
    broadened_dos,
    density_from_ldos,
    dos_from_ldos,
    fermi_level,
    number_of_electrons,
)
from ..errors import DatasetError, InputError
from .reader import Dataset

__all__ = ["check_electronic_targets", "validate_ldos_dataset", "validate_record", "ldos_metadata",
           "electron_counts_known", "broaden_dataset", "TOLERANCES"]

#: Tolerances of the data checks (issue 12): relative electron count, relative DOS (max over the window,
#: relative to the DOS maximum), Fermi level (eV), density mean absolute percentage error (%).
TOLERANCES = {"electrons_rel": 1e-3, "dos_rel": 1e-4, "fermi_level_eV": 0.010, "density_mape_pct": 0.5}


def check_electronic_targets(targets: dict[str, Any], info: dict[str, Any] | None, cell_volume: float,
                             energy_grid: dict | EnergyGrid | None) -> None:
    """InputError for LDOS / density targets that do not belong in an electronic-structure dataset.

    Parameters
    ----------
    targets : dict
        The record's targets; only ``"ldos"`` and ``"density"`` are checked.
    info : dict or None
        The record's info (``energy_grid``, ``electronic_temperature_K``,
        ``voxel_volume_A3``, ``grid_shape`` are checked where present; an LDOS
        needs ``energy_grid``).
    cell_volume : float
        Volume of the record's cell (Angstrom^3).
    energy_grid : dict or EnergyGrid or None
        The dataset's energy grid (its metadata ``energy_grid``); required for an LDOS.
    """
    info = info or {}
    ldos = targets.get("ldos")
    density = targets.get("density")
    if ldos is None and density is None:
        return
    t_e = info.get("electronic_temperature_K")
    if t_e is not None and not (isinstance(t_e, (int, float)) and math.isfinite(t_e) and t_e > 0):
        raise InputError(f"electronic temperature must be > 0 K, got {t_e!r} (info['electronic_temperature_K'])")
    grid_shape = None
    if ldos is not None:
        ldos = np.asarray(ldos)
        if energy_grid is None:
            raise InputError(
                "an LDOS target needs the dataset's energy grid: create the writer with "
                "DatasetWriter(path, metadata={'energy_grid': grid.to_dict()}) (ednn.electronic.EnergyGrid)"
            )
        grid = energy_grid if isinstance(energy_grid, EnergyGrid) else EnergyGrid.from_dict(energy_grid)
        mine = info.get("energy_grid")
        if mine is None:
            raise InputError("an LDOS record needs info['energy_grid'] (the energy grid it was computed on)")
        mine = EnergyGrid.from_dict(mine)
        if mine != grid:
            raise InputError(
                f"this LDOS is on the energy grid {mine.to_dict()}, the dataset's is {grid.to_dict()}: every record "
                "of a dataset must share one absolute energy window; relabel with the dataset's energy_grid"
            )
        grid.check_axis(ldos, "the LDOS target")
        if ldos.ndim != 4:
            raise InputError(f"an LDOS target must have shape (N1, N2, N3, n_E), got {ldos.shape}")
        grid_shape = ldos.shape[:3]
    if density is not None:
        density = np.asarray(density)
        if density.ndim != 3:
            raise InputError(f"a density target must have shape (N1, N2, N3), got {density.shape}")
        if grid_shape is not None and density.shape != grid_shape:
            raise InputError(f"the density grid {density.shape} differs from the LDOS grid {grid_shape}")
        grid_shape = density.shape
        if np.any(density < 0):
            raise InputError(
                f"the density has {int(np.sum(density < 0))} negative values (min {float(density.min()):.3g} "
                "1/A^3): an electron density is >= 0; check the labeller"
            )
    for name, arr in (("ldos", ldos), ("density", density)):
        if arr is not None and not np.all(np.isfinite(arr)):
            raise InputError(f"the {name} target contains NaN or inf")
    if "grid_shape" in info and tuple(info["grid_shape"]) != tuple(grid_shape):
        raise InputError(f"info['grid_shape'] {info['grid_shape']} differs from the target grid {grid_shape}")
    dv = info.get("voxel_volume_A3")
    if dv is not None:
        filled = float(dv) * float(np.prod(grid_shape))
        if not math.isclose(filled, cell_volume, rel_tol=1e-6):
            raise InputError(
                f"the grid {tuple(grid_shape)} with voxels of {float(dv):.6g} A^3 fills {filled:.6g} A^3, but the "
                f"cell's volume is {cell_volume:.6g} A^3: the density grid does not match the cell"
            )


def validate_record(atoms: Any, ldos: np.ndarray, density: np.ndarray | None, info: dict[str, Any],
                    grid: EnergyGrid) -> dict[str, Any]:
    """The data checks of one record: figures and pass/fail against :data:`TOLERANCES`.

    Returns
    -------
    dict
        ``electrons_ldos`` (from the LDOS at the DFT Fermi level and
        temperature) against ``n_electrons``; ``dos_rel`` (max difference of the
        LDOS's DOS and the broadened eigenvalue DOS over the DOS maximum);
        ``fermi_level_ldos`` against ``fermi_level_dft``; ``density_mape_pct``
        (density from the LDOS at the LDOS's own Fermi level against the density
        summed from the states); ``band_energy_bias_meV_per_atom`` (LDOS band
        energy at the LDOS Fermi level minus the eigenvalue sum: the broadening
        bias, reported, not checked); and ``ok`` (all checks within tolerance). A
        record whose LDOS cannot hold its electrons in the window fails, with the
        reason in ``error``.
    """
    t_e = float(info["electronic_temperature_K"])
    dv = float(info["voxel_volume_A3"])
    n_e = float(info["n_electrons"])
    mu_dft = float(info["fermi_level_eV"])
    dos = dos_from_ldos(ldos, dv)
    out: dict[str, Any] = {"n_atoms": len(atoms), "electronic_temperature_K": t_e, "n_electrons": n_e,
                           "fermi_level_dft": mu_dft}
    out["electrons_ldos"] = float(number_of_electrons(dos, grid, mu_dft, t_e))
    out["electrons_rel"] = abs(out["electrons_ldos"] - n_e) / n_e
    eig = np.asarray(info["eigenvalues_eV"], dtype=float)  # (n_spins, n_k, n_b)
    wk = np.asarray(info["kpoint_weights"], dtype=float)
    ns = eig.shape[0]
    occ_w = np.broadcast_to((2.0 / ns) * wk[None, :, None], eig.shape)
    ref = broadened_dos(eig, occ_w, grid, float(info["broadening_eV"]))
    out["dos_rel"] = float(np.max(np.abs(dos - ref)) / np.max(ref))
    try:
        mu = float(fermi_level(dos, grid, n_e, t_e))
    except InputError as e:  # the window does not hold the electrons: a failed record, reported as such
        out.update({"fermi_level_ldos": None, "fermi_level_error_eV": math.inf, "error": str(e),
                    "band_energy_bias_meV_per_atom": math.nan, "ok": False,
                    "checks": {"electrons_rel": out["electrons_rel"] <= TOLERANCES["electrons_rel"],
                               "dos_rel": out["dos_rel"] <= TOLERANCES["dos_rel"], "fermi_level_eV": False}})
        return out
    out["fermi_level_ldos"] = mu
    out["fermi_level_error_eV"] = mu - mu_dft
    if density is not None:
        n_ldos = density_from_ldos(ldos, grid, mu, t_e)
        ref_d = np.asarray(density, dtype=np.float64)
        keep = ref_d > 1e-3 * ref_d.max()
        out["density_mape_pct"] = float(100 * np.mean(np.abs(n_ldos[keep] - ref_d[keep]) / ref_d[keep]))
    eb = float(band_energy(dos, grid, mu, t_e))
    out["band_energy_ldos"] = eb
    out["band_energy_eigen"] = float(info["band_energy_eigen_eV"])
    out["band_energy_bias_meV_per_atom"] = 1000 * (eb - out["band_energy_eigen"]) / len(atoms)
    checks = {
        "electrons_rel": out["electrons_rel"] <= TOLERANCES["electrons_rel"],
        "dos_rel": out["dos_rel"] <= TOLERANCES["dos_rel"],
        "fermi_level_eV": abs(out["fermi_level_error_eV"]) <= TOLERANCES["fermi_level_eV"],
    }
    if "density_mape_pct" in out:
        checks["density_mape_pct"] = out["density_mape_pct"] <= TOLERANCES["density_mape_pct"]
    out["checks"] = checks
    out["ok"] = all(checks.values())
    return out


def validate_ldos_dataset(path: str | os.PathLike, on_record: Any = None) -> dict[str, Any]:
    """Run :func:`validate_record` on every record of an electronic-structure dataset.

    Returns
    -------
    dict
        ``{"path", "n_records", "energy_grid", "tolerances", "records": [...], "ok",
        "worst": {check: worst value}}``.
    """

    with Dataset(path) as ds:
        if "ldos" not in ds.target_names and "density" in ds.target_names:
            return _validate_density_only(ds, path, on_record)
        if "ldos" not in ds.target_names:
            raise DatasetError(f"{path} has no 'ldos' target (targets: {ds.target_names}); "
                               "make it with the gpaw-ldos labeller (ednn gen aluminium ...)")
        meta = ds.metadata
        grid_d = meta.get("energy_grid")
        if grid_d is None:
            raise DatasetError(f"{path} has an LDOS but no energy_grid in its metadata; it was not written by ednn")
        grid = EnergyGrid.from_dict(grid_d)
        records = []
        for i in range(len(ds)):
            dens = ds.target("density", i) if "density" in ds.target_names else None
            rec = validate_record(ds[i], ds.target("ldos", i), dens, ds.info(i), grid)
            rec["index"] = i
            rec["label_seconds"] = ds.info(i).get("label_seconds", ds.info(i).get("seconds"))
            records.append(rec)
            if on_record is not None:
                on_record(rec)
    bias = np.array([r["band_energy_bias_meV_per_atom"] for r in records])
    worst = {
        "electrons_rel": max(r["electrons_rel"] for r in records),
        "dos_rel": max(r["dos_rel"] for r in records),
        "fermi_level_error_eV": max(abs(r["fermi_level_error_eV"]) for r in records),
        "band_energy_bias_meV_per_atom": [float(np.nanmin(bias)), float(np.nanmax(bias))] if np.isfinite(bias).any()
        else [math.nan, math.nan],
    }
    if all("density_mape_pct" in r for r in records):
        worst["density_mape_pct"] = max(r["density_mape_pct"] for r in records)
    return {"path": os.fspath(path), "n_records": len(records), "energy_grid": grid.to_dict(),
            "tolerances": TOLERANCES, "records": records, "ok": all(r["ok"] for r in records), "worst": worst}


def _validate_density_only(ds: Dataset, path: Any, on_record: Any) -> dict[str, Any]:
    """Checks of a density-only dataset (``gpaw-ldos`` with ``density_only``): finite, non-negative, and
    integrating to the record's electron count to ``TOLERANCES["electrons_rel"]``."""
    records = []
    for i in range(len(ds)):
        info = ds.info(i)
        d = np.asarray(ds.target("density", i), dtype=np.float64)
        vol = abs(float(np.linalg.det(ds.cell(i)))) / d.size
        n_e = float(info.get("n_electrons", math.nan))
        n_int = float(d.sum() * vol)
        rel = abs(n_int - n_e) / n_e if n_e > 0 else math.nan
        rec = {"index": i, "n_atoms": len(ds.numbers(i)), "grid": list(d.shape), "electrons": n_int,
               "n_electrons": n_e, "electrons_rel": rel, "density_min": float(d.min()),
               "finite": bool(np.all(np.isfinite(d))),
               "label_seconds": info.get("label_seconds", info.get("seconds"))}
        rec["ok"] = bool(rec["finite"] and rec["density_min"] >= 0 and rel <= TOLERANCES["electrons_rel"])
        records.append(rec)
        if on_record is not None:
            on_record(rec)
    return {"path": os.fspath(path), "n_records": len(records), "density_only": True, "tolerances": TOLERANCES,
            "records": records, "ok": all(r["ok"] for r in records),
            "worst": {"electrons_rel": max(r["electrons_rel"] for r in records),
                      "density_min": min(r["density_min"] for r in records)}}


def electron_counts_known(paths: str | os.PathLike | list) -> bool:
    """Whether every record of ``paths`` carries its electron count (``info["n_electrons"]``, as gpaw-ldos
    records do): what :func:`ldos_metadata` needs to solve the valence electrons per element."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    for p in paths:
        with Dataset(p) as ds:
            if not all("n_electrons" in ds.info(i) for i in range(len(ds))):
                return False
    return True


def ldos_metadata(paths: str | os.PathLike | list, ldos: bool = True) -> dict[str, Any]:
    """What a model trained on the LDOS of ``paths`` must remember to turn its predictions into physics.

    Returns
    -------
    dict
        ``energy_grid`` (the one grid every file shares), ``broadening_eV``, ``valence`` (electrons per
        element, ``{"13": 3.0}``, solved from the records' electron counts and compositions and checked to
        reproduce every count to 1e-6), ``electronic_temperatures_K`` (of the labels), and what the
        LDOS-moment loss terms of training refer to: ``fermi_level_eV`` (the median of the records' DFT
        Fermi levels) and ``electron_density`` (all valence electrons over all cell volumes, 1/A^3).
        With ``ldos=False`` (a model of the density alone, trained on density-only gpaw-ldos records): no
        ``energy_grid`` or ``broadening_eV`` (such files need none); the rest as above, the valence counts
        being what lets the model's density be scaled to a structure's electrons.
    """
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    grid = None
    widths, temps, n_el = set(), set(), []
    rows, mus, volume = [], [], 0.0
    for p in paths:
        with Dataset(p) as ds:
            if ldos:
                g = ds.metadata.get("energy_grid")
                if g is None:
                    raise DatasetError(f"{p} has no energy_grid in its metadata: it is not an ednn LDOS dataset "
                                       "(make it with the gpaw-ldos labeller)")
                g = EnergyGrid.from_dict(g)
                if grid is not None and g != grid:
                    raise DatasetError(f"{p} has the energy grid {g.to_dict()} but {paths[0]} has "
                                       f"{grid.to_dict()}; an LDOS model needs one energy grid: relabel, or train "
                                       "on one grid's files")
                grid = g
            for i in range(len(ds)):
                info = ds.info(i)
                if "n_electrons" not in info:
                    raise DatasetError(f"{p} record {i} has no n_electrons in its info; relabel it with gpaw-ldos")
                z = ds.numbers(i)
                rows.append(np.bincount(z, minlength=119))
                n_el.append(float(info["n_electrons"]))
                volume += abs(float(np.linalg.det(ds.cell(i))))
                if "fermi_level_eV" in info:
                    mus.append(float(info["fermi_level_eV"]))
                temps.add(float(info.get("electronic_temperature_K", math.nan)))
                widths.add(float(info.get("broadening_eV", math.nan)))
    if not rows:
        raise DatasetError(f"{paths} hold no records")
    counts = np.array(rows, dtype=np.float64)
    species = [int(z) for z in np.flatnonzero(counts.sum(0))]
    a = counts[:, species]
    val, *_ = np.linalg.lstsq(a, np.array(n_el), rcond=None)
    if np.abs(a @ val - np.array(n_el)).max() > 1e-6:
        raise DatasetError(f"the electron counts of {paths} are not a fixed number of valence electrons per "
                           "element (charged cells, or several setups?); ednn's electronic models need neutral cells")
    out = {"valence": {str(z): float(v) for z, v in zip(species, val, strict=True)},
           "electronic_temperatures_K": sorted(temps),
           "fermi_level_eV": float(np.median(mus)) if mus else None, "electron_density": sum(n_el) / volume}
    if ldos:
        out = {"energy_grid": grid.to_dict(),
               "broadening_eV": sorted(widths)[0] if len(widths) == 1 else sorted(widths), **out}
    return out


def broaden_dataset(src: str | os.PathLike, dst: str | os.PathLike, width: float, progress: bool = False) -> dict:
    """Copy an LDOS dataset with every LDOS re-broadened to ``width`` eV (:func:`ednn.electronic.rebroaden`).

    Why: with a narrow broadening the LDOS of a small cell is a comb of k-point peaks that no local model
    can predict; a wider one keeps the physics (the band-energy and Fermi-level biases are reported by
    ``ednn ldos check``) and leaves a smooth target. Each record's ``broadening_eV`` becomes ``width``, so
    the data checks (the DOS against the eigenvalue DOS at that width) still apply. The wider Gaussians
    near the window's top would need states above it, so the energy grid loses its top
    ``ceil(4 sigma / dE)`` points (sigma = the extra width / sqrt 2): the copy's grid is the source's,
    shorter. Resumable and kill-safe like every dataset writer: rerun to continue.
    """
    from ..electronic import rebroaden  # noqa: PLC0415
    from .writer import DatasetWriter  # noqa: PLC0415

    with Dataset(src) as ds:
        if "ldos" not in ds.target_names:
            raise DatasetError(f"{src} has no 'ldos' target to broaden")
        grid = EnergyGrid.from_dict(ds.metadata["energy_grid"])
        meta = {k: v for k, v in ds.metadata.items() if k != "created"}  # the writer stamps its own
        old = {float(ds.info(i)["broadening_eV"]) for i in range(len(ds))}
        if len(old) != 1:
            raise DatasetError(f"{src} mixes broadenings {sorted(old)}; broaden one width at a time")
        s0 = old.pop()
        extra = math.sqrt(max(float(width) ** 2 - s0**2, 0.0))
        crop = int(math.ceil(4.0 * extra / math.sqrt(2.0) / grid.spacing - 1e-9))
        if crop >= grid.n - 1:
            raise InputError(f"broadening to {width} eV would leave no energy window (it spans {grid.n} points)")
        new_grid = EnergyGrid(start=grid.start, spacing=grid.spacing, n=grid.n - crop)
        meta["energy_grid"] = new_grid.to_dict()
        meta["rebroadened"] = {"from_eV": s0, "to_eV": float(width), "source": os.path.basename(os.fspath(src)),
                               "top_points_dropped": crop}
        with DatasetWriter(dst, metadata=meta) as w:
            it = range(len(w), len(ds))
            if progress:
                from tqdm import tqdm  # noqa: PLC0415

                it = tqdm(it, desc="broaden", leave=False)
            for i in it:
                lab = ds.labels(i)
                lab["targets"]["ldos"] = rebroaden(lab["targets"]["ldos"], grid, s0, width)[..., : new_grid.n].astype(
                    np.float32)
                lab["info"].update(broadening_eV=float(width), energy_grid=new_grid.to_dict())
                w.append(ds[i], **lab)
            n = len(w)
    return {"n_records": n, "width_eV": float(width)}
