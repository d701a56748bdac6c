"""Equivalent descriptions of one periodic structure: another cell basis of the same lattice, another origin.

A structure's energy does not depend on which basis of its lattice or which
origin describes it, but ednn's image does: pixels are laid along the cell
vectors and start at the origin (``experiments/invariance.py`` measures what
that costs a model trained on one description per structure). Training on
random equivalent descriptions (``train.augment``) teaches the network the
invariance instead of leaving it to chance.

:func:`redescribe` returns the same atoms (same order, same Cartesian
positions up to the shift, hence the same forces) in the cell ``P @ cell``
for an integer in-plane matrix ``P`` with ``det P = +-1`` (for 2D grids), all
moved by a random vector and wrapped into the new cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["AUGMENT_MODES", "BASES", "redescribe"]

AUGMENT_MODES = ("none", "translate", "cell")

# in-plane unimodular basis changes (rows: new vectors in terms of the old): another basis of the same lattice,
# the 60/120-degree conventions, exchanged and reversed vectors
BASES = tuple(np.array(m, dtype=np.int64) for m in (
    [[1, 0], [0, 1]], [[1, 0], [1, 1]], [[1, 0], [-1, 1]], [[1, 1], [0, 1]], [[1, -1], [0, 1]],
    [[0, 1], [1, 0]], [[0, 1], [-1, 0]], [[-1, 0], [0, -1]], [[1, 0], [0, -1]], [[1, 1], [-1, 0]],
))
_MIN_ANGLE = 40.0  # degrees: bases with a flatter cell angle are skipped (long, thin pixels)


def _angle(v1: np.ndarray, v2: np.ndarray) -> float:
    c = float(v1 @ v2) / float(np.linalg.norm(v1) * np.linalg.norm(v2))
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def redescribe(atoms: Any, rng: np.random.Generator, mode: str = "cell", dim: int = 2) -> Any:
    """The same structure in a random equivalent description (an ``ase.Atoms`` copy).

    Parameters
    ----------
    atoms : ase.Atoms or (positions, numbers, cell, pbc)
    rng : numpy Generator
    mode : "translate" (a random origin) or "cell" (a random origin and a random basis from :data:`BASES`
        whose cell angle stays within 40..140 degrees; 2D grids only, 3D: the origin only)
    dim : 2 or 3, the grid's dimension (2: in-plane shifts and bases; 3: shifts along all cell vectors)
    """
    if mode not in AUGMENT_MODES or mode == "none":
        raise ConfigError(f"augment must be one of {list(AUGMENT_MODES[1:])} here, got {mode!r}")
    if hasattr(atoms, "copy") and hasattr(atoms, "cell"):
        at = atoms.copy()
    else:  # (positions, numbers, cell, pbc), as datasets give them
        from ase import Atoms  # noqa: PLC0415

        from .raster import _structure_arrays  # noqa: PLC0415

        pos, num, cell, pbc = _structure_arrays(atoms)
        at = Atoms(numbers=np.asarray(num, dtype=np.int64), positions=pos, cell=cell, pbc=pbc)
    cell = np.asarray(at.cell[:], dtype=np.float64)
    frac_shift = np.zeros(3)
    frac_shift[:dim] = rng.random(dim)
    at.positions = at.positions + frac_shift @ cell
    if mode == "cell" and dim == 2:
        order = rng.permutation(len(BASES))
        for k in order:
            P = BASES[k]
            new = P @ cell[:2, :2]
            if _MIN_ANGLE <= _angle(new[0], new[1]) <= 180.0 - _MIN_ANGLE:
                c = cell.copy()
                c[:2, :2] = new
                c[:2, 2] = 0.0
                at.set_cell(c, scale_atoms=False)
                break
    at.wrap()
    return at
