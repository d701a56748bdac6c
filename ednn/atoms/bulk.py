"""Bulk snapshots for the electronic-structure datasets: fcc aluminium from classical MD.

:func:`aluminium_snapshots` gives ionic configurations of fcc aluminium at an
ionic temperature, the benchmark system of the MALA project (Ellis et al.,
PRB 104, 035120 (2021)): a cubic supercell of ``4 * size**3`` atoms at the
lattice constant ``a`` (4.04 A, near PBE's), thermalised with ASE's EMT
potential (Jacobsen, Stoltze and Norskov 1996; no files needed) by Langevin
dynamics. Record ``i`` depends only on ``(seed, i)``: each snapshot is an
independent trajectory started from the perfect crystal with Maxwell-Boltzmann
velocities at twice the target temperature (equipartition brings it to the
target), so a generation killed at any point restarts exactly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import numpy as np
from ase import Atoms, units
from ase.build import bulk

from ..errors import InputError

__all__ = ["aluminium_snapshots", "AL_LATTICE"]

#: fcc Al lattice constant (Angstrom) used for the snapshots (PBE gives 4.04, experiment 4.05 at 298 K).
AL_LATTICE = 4.04


def aluminium_snapshots(n: int, size: int = 1, temperature: float = 298.0, seed: int = 0, start: int = 0,
                        a: float = AL_LATTICE, steps: int = 300, timestep: float = 2.0) -> Iterator[Atoms]:
    """Snapshots ``start .. n-1`` of fcc aluminium at ionic temperature ``temperature``.

    Parameters
    ----------
    n : int
        Number of snapshots (total, including the ``start`` already made).
    size : int
        Repeats of the 4-atom cubic cell along each axis: 1 gives 4 atoms, 2
        gives 32, 3 gives 108.
    temperature : float
        Ionic temperature (K) of the Langevin thermostat (> 0; 0 gives the perfect crystal).
    seed : int
        Base seed.
    start : int
        First snapshot index to produce (to resume).
    a : float
        Lattice constant (Angstrom).
    steps : int
        Langevin steps per snapshot.
    timestep : float
        MD time step (fs).

    Yields
    ------
    ase.Atoms
        With ``info = {"kind": "aluminium", "ionic_temperature_K", "size", "seed", "index"}``.
    """
    from ase.calculators.emt import EMT  # noqa: PLC0415
    from ase.md.langevin import Langevin  # noqa: PLC0415
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution  # noqa: PLC0415

    for name, v in (("n", n), ("size", size), ("seed", seed), ("start", start), ("steps", steps)):
        if not isinstance(v, (int, np.integer)) or v < 0:
            raise InputError(f"{name} must be a non-negative integer, got {v!r}")
    if size < 1:
        raise InputError(f"size must be >= 1 (repeats of the 4-atom cubic cell), got {size}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise InputError(f"ionic temperature must be >= 0 K, got {temperature!r}")
    if not (isinstance(a, (int, float)) and 3.0 < a < 5.5):
        raise InputError(f"lattice constant a={a!r} A is not a plausible one for fcc Al (3-5.5 A)")
    for i in range(start, n):
        rng = np.random.default_rng([int(seed), int(i), int(size), int(round(temperature))])
        at = bulk("Al", "fcc", a=a, cubic=True).repeat(size)
        if temperature > 0:
            at.calc = EMT()
            with warnings.catch_warnings():  # ASE 3.29 prefers thermalize_momenta; this one keeps the snapshots
                warnings.simplefilter("ignore", DeprecationWarning)  # of the existing datasets bit for bit
                MaxwellBoltzmannDistribution(at, temperature_K=2 * temperature, rng=rng)
            dyn = Langevin(at, timestep * units.fs, temperature_K=temperature, friction=0.02, rng=rng, fixcm=False)
            dyn.run(steps)
            at.calc = None
            at.set_velocities(np.zeros((len(at), 3)))
        at.wrap()
        at.info = {"kind": "aluminium", "ionic_temperature_K": float(temperature), "size": int(size),
                   "seed": int(seed), "index": int(i)}
        yield at
