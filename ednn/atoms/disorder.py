"""Strain and thermal disorder: homogeneous strain, random displacements, short Langevin MD."""

from __future__ import annotations

from typing import Any

import numpy as np
from ase import Atoms, units
from ase.md import velocitydistribution as vd
from ase.md.langevin import Langevin
from ase.neighborlist import neighbor_list

from ..errors import InputError
from .build import as_rng

__all__ = ["strain", "rattle", "md_snapshots", "min_distance"]


def strain(atoms: Atoms, eps_xx: float = 0.0, eps_yy: float = 0.0, eps_xy: float = 0.0) -> Atoms:
    """Apply a homogeneous in-plane strain to cell and positions.

    The deformation gradient is ``F = 1 + [[eps_xx, eps_xy], [eps_xy, eps_yy]]``
    (symmetric, in-plane; the z axis is untouched). Returns a new Atoms.
    """
    for name, e in (("eps_xx", eps_xx), ("eps_yy", eps_yy), ("eps_xy", eps_xy)):
        if not np.isfinite(e) or abs(e) >= 0.5:
            raise InputError(f"{name}={e!r}: strains must be finite and |eps| < 0.5 (0.02 means 2 %)")
    f = np.eye(3)
    f[0, 0] += eps_xx
    f[1, 1] += eps_yy
    f[0, 1] += eps_xy
    f[1, 0] += eps_xy
    at = atoms.copy()
    at.set_cell(np.array(atoms.cell) @ f.T, scale_atoms=False)
    at.positions = atoms.positions @ f.T
    at.info["strain"] = [float(eps_xx), float(eps_yy), float(eps_xy)]
    return at


def rattle(atoms: Atoms, stdev: float = 0.05, rng: np.random.Generator | int | None = None,
           stdev_z: float | None = None) -> Atoms:
    """Gaussian random displacements (Angstrom) in-plane (``stdev``) and along z (``stdev_z``).

    ``stdev_z`` defaults to ``stdev``. Returns a new Atoms.
    """
    rng = as_rng(rng)
    sz = stdev if stdev_z is None else stdev_z
    if stdev < 0 or sz < 0:
        raise InputError("rattle amplitudes must be >= 0")
    at = atoms.copy()
    d = rng.normal(size=(len(at), 3)) * np.array([stdev, stdev, sz])
    at.positions = at.positions + d
    return at


def md_snapshots(atoms: Atoms, calc: Any, temperature_K: float = 300.0, n: int = 1,
                 rng: np.random.Generator | int | None = None, interval: int = 10, equilibrate: int = 20,
                 timestep_fs: float = 1.0, friction: float = 0.05) -> list[Atoms]:
    """Short Langevin MD with the labeller's forces; returns ``n`` snapshots.

    Parameters
    ----------
    atoms : ase.Atoms
        Start structure (not modified).
    calc : ase Calculator or Labeller
        Force provider; a :class:`~ednn.atoms.labellers.Labeller` is converted with
        ``.calculator()``.
    temperature_K : float
        Langevin thermostat temperature (velocities start Maxwell-Boltzmann at
        this temperature, so equipartition is reached within a few dozen fs).
    n : int
        Number of snapshots.
    rng : Generator or seed
        Seeds velocities and the Langevin noise (deterministic).
    interval : int
        MD steps between snapshots.
    equilibrate : int
        MD steps before the first snapshot.
    timestep_fs : float
        Time step in fs.
    friction : float
        Langevin friction in 1/fs.

    Returns
    -------
    list of ase.Atoms
        Copies without calculators; ``info["md_temperature_K"]`` is set.
    """
    rng = as_rng(rng)
    if temperature_K < 0 or n < 1 or interval < 1 or equilibrate < 0:
        raise InputError("md_snapshots needs temperature_K >= 0, n >= 1, interval >= 1, equilibrate >= 0")
    if hasattr(calc, "calculator") and hasattr(calc, "label"):
        calc = calc.calculator()
    at = atoms.copy()
    at.calc = calc
    if hasattr(vd, "thermalize_momenta"):  # ASE >= 3.28
        vd.thermalize_momenta(at, temperature_K, rng=rng)
    else:  # pragma: no cover - older ASE
        vd.MaxwellBoltzmannDistribution(at, temperature_K=temperature_K, rng=rng)
    vd.Stationary(at)
    dyn = Langevin(at, timestep_fs * units.fs, temperature_K=temperature_K, friction=friction / units.fs, rng=rng,
                   fixcm=False)
    out = []
    if equilibrate:
        dyn.run(equilibrate)
    for _ in range(n):
        dyn.run(interval)
        snap = at.copy()
        snap.calc = None
        snap.info["md_temperature_K"] = float(temperature_K)
        out.append(snap)
    return out


def min_distance(atoms: Atoms, cutoff: float = 3.0) -> float:
    """Smallest interatomic distance (minimum image where periodic); inf if none within ``cutoff``."""
    if len(atoms) < 2:
        return float("inf")
    i, d = neighbor_list("id", atoms, cutoff)
    if len(d) == 0:
        return float("inf")
    return float(d.min())
