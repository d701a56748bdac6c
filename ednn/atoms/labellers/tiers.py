"""Electronic-structure labellers: tblite GFN1-xTB (Gamma point) and GPAW LCAO (optional extra)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from ...errors import BackendError, InputError
from .base import CalculatorLabeller

__all__ = ["xtb_labeller", "gpaw_labeller"]


def _min_periodic_length(atoms: Atoms) -> float:
    """Shortest non-zero lattice vector within the periodic directions."""
    cell = np.array(atoms.cell)[atoms.pbc]
    if len(cell) == 0:
        return np.inf
    best = np.inf
    rng = range(-2, 3)
    for coeffs in itertools.product(rng, repeat=len(cell)):
        if not any(coeffs):
            continue
        v = np.asarray(coeffs) @ cell
        best = min(best, float(np.linalg.norm(v)))
    return best


def xtb_labeller(method: str = "GFN1-xTB", min_cell_length: float = 14.0, electronic_temperature: float = 300.0,
                  accuracy: float = 1.0) -> CalculatorLabeller:
    """The ``"xtb"`` labeller: tblite GFN1-xTB at the Gamma point.

    Parameters
    ----------
    method : str
        tblite method name.
    min_cell_length : float
        Shortest periodic repeat (Angstrom) accepted; smaller cells are refused
        because one k-point does not sample them.
    electronic_temperature : float
        Fermi smearing temperature (K).
    accuracy : float
        tblite accuracy factor.
    """
    try:
        from tblite.ase import TBLite  # noqa: PLC0415
    except ImportError as exc:
        raise BackendError(
            f"the 'xtb' labeller needs tblite ({exc}); install it with `pip install tblite` "
            "(or `pip install .[data]`)"
        ) from exc

    def check(atoms: Atoms) -> None:
        length = _min_periodic_length(atoms)
        if length < min_cell_length:
            raise InputError(
                f"xtb (tblite) samples the Gamma point only; the shortest periodic repeat of this cell is "
                f"{length:.2f} A < min_cell_length={min_cell_length} A (about 6x6 primitive graphene "
                "cells). Use a larger supercell (atoms.repeat) or lower min_cell_length knowingly"
            )

    settings = {"method": method, "engine": "tblite", "kpoints": "Gamma", "min_cell_length": min_cell_length,
                "electronic_temperature_K": electronic_temperature, "accuracy": accuracy}

    def factory() -> Calculator:
        return TBLite(method=method, electronic_temperature=electronic_temperature, accuracy=accuracy,
                      verbosity=0)

    return CalculatorLabeller(factory, name="xtb", settings=settings, check=check)


def gpaw_labeller(basis: str = "dzp", xc: str = "PBE", kpts: tuple[int, int, int] = (1, 1, 1),
                   h: float = 0.2, txt: str | None = None, **extra: Any) -> CalculatorLabeller:
    """The ``"gpaw"`` labeller: GPAW LCAO, a fresh calculator per structure.

    Parameters
    ----------
    basis, xc : str
        LCAO basis and exchange-correlation functional.
    kpts : (int, int, int)
        k-point mesh.
    h : float
        Real-space grid spacing (Angstrom).
    txt : str, optional
        GPAW log file (None: silent).
    **extra
        Further GPAW keywords (stored in the settings).
    """
    try:
        from gpaw import GPAW  # noqa: PLC0415
    except ImportError as exc:
        raise BackendError(
            f"the 'gpaw' labeller needs GPAW ({exc}); install the DFT extra: `pip install .[dft]` "
            "(on Debian/Ubuntu first `apt-get install -y libxc-dev libopenblas-dev`, then "
            "`CC=g++ pip install gpaw gpaw-data`)"
        ) from exc
    settings = {"engine": "gpaw", "mode": "lcao", "basis": basis, "xc": xc, "kpts": list(kpts), "h": h, **extra}

    def factory() -> Calculator:
        return GPAW(mode="lcao", basis=basis, xc=xc, kpts=tuple(kpts), h=h, txt=txt, **extra)

    # a fresh GPAW per structure: a reused one keeps the first structure's symmetry and stops with
    # SymmetryBrokenError on the next, less symmetric one
    # no stress: GPAW's LCAO mode does not implement it (it fails with an AttributeError, not
    # PropertyNotImplementedError), so every record says so in info["stress_absent"]
    return CalculatorLabeller(factory, name="gpaw", settings=settings, fresh=True, stress=False)
