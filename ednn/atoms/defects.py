"""Point and extended defects of honeycomb sheets: vacancies, di-vacancies, Stone-Wales, nanopores.

Each builder returns a new ``ase.Atoms`` (the host is not modified) and appends
what it did to ``info["defect"]`` (e.g. ``"vacancy2;stone_wales;"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.geometry import find_mic
from ase.neighborlist import neighbor_list

from ..errors import InputError
from .build import BOND_CUTOFF, as_rng, wrapped_frac_distance

__all__ = ["coordination", "vacancy", "divacancy", "stone_wales", "nanopore"]


def coordination(atoms: Atoms, cutoff: float = BOND_CUTOFF) -> np.ndarray:
    """Number of neighbours of each atom within ``cutoff`` (periodic where ``pbc``)."""
    i = neighbor_list("i", atoms, cutoff)
    return np.bincount(i, minlength=len(atoms))


def _drop_undercoordinated(atoms: Atoms, min_neighbors: int = 2, cutoff: float = BOND_CUTOFF) -> Atoms:
    """Repeatedly remove atoms with fewer than ``min_neighbors`` neighbours."""
    while len(atoms):
        cn = coordination(atoms, cutoff)
        bad = np.flatnonzero(cn < min_neighbors)
        if bad.size == 0:
            break
        del atoms[bad]
    return atoms


def vacancy(atoms: Atoms, n: int = 1, rng: np.random.Generator | int | None = None,
            indices: Sequence[int] | None = None, min_separation: float = 4.0) -> Atoms:
    """Remove ``n`` atoms (mono-vacancies), at least ``min_separation`` apart.

    Parameters
    ----------
    atoms : ase.Atoms
        Host (not modified).
    n : int
        Number of vacancies.
    rng : Generator or seed
    indices : sequence of int, optional
        Remove these atoms instead of random ones.
    min_separation : float
        Least distance (Angstrom) between removed atoms, so that vacancies stay
        isolated; random draws that cannot satisfy it raise InputError.
    """
    rng = as_rng(rng)
    at = atoms.copy()
    if indices is not None:
        idx = np.unique(np.asarray(indices, dtype=int))
        if idx.size and (idx.min() < 0 or idx.max() >= len(at)):
            raise InputError(f"vacancy indices {idx.tolist()} out of range 0..{len(at) - 1}")
    else:
        if n < 0 or n >= len(at):
            raise InputError(f"cannot make {n} vacancies in a structure of {len(at)} atoms")
        chosen: list[int] = []
        for cand in rng.permutation(len(at)):
            if len(chosen) == n:
                break
            if chosen:
                _, d = find_mic(at.positions[chosen] - at.positions[cand], at.cell, at.pbc)
                if d.min() < min_separation:
                    continue
            chosen.append(int(cand))
        if len(chosen) < n:
            raise InputError(
                f"could not place {n} vacancies {min_separation} A apart in {len(at)} atoms; use a larger cell"
            )
        idx = np.array(sorted(chosen))
    del at[idx]
    at.info["defect"] = at.info.get("defect", "") + f"vacancy{len(idx)};"
    return at


def _random_bond(atoms: Atoms, rng: np.random.Generator, cutoff: float = BOND_CUTOFF) -> tuple[int, int]:
    i, j = neighbor_list("ij", atoms, cutoff)
    keep = i < j
    if not keep.any():
        raise InputError("the structure has no bonds (no neighbours within "
                         f"{cutoff} A); defects need a bonded sheet")
    k = int(rng.integers(keep.sum()))
    return int(i[keep][k]), int(j[keep][k])


def divacancy(atoms: Atoms, rng: np.random.Generator | int | None = None, bond: tuple[int, int] | None = None) -> Atoms:
    """Remove two bonded atoms (the unreconstructed V2 di-vacancy)."""
    rng = as_rng(rng)
    if len(atoms) < 8:
        raise InputError(f"a di-vacancy needs a larger cell than {len(atoms)} atoms")
    i, j = bond if bond is not None else _random_bond(atoms, rng)
    at = atoms.copy()
    del at[[i, j]]
    at.info["defect"] = at.info.get("defect", "") + "divacancy;"
    return at


def stone_wales(atoms: Atoms, rng: np.random.Generator | int | None = None, bond: tuple[int, int] | None = None) -> Atoms:
    """Rotate one bond by 90 degrees about its midpoint (Stone-Wales 55-77 defect).

    Parameters
    ----------
    atoms : ase.Atoms
        Host sheet (not modified); needs at least ~4x4 primitive cells.
    rng : Generator or seed
    bond : (int, int), optional
        The two atoms of the bond to rotate (default: a random bond).
    """
    rng = as_rng(rng)
    if len(atoms) < 24:
        raise InputError(f"a Stone-Wales defect needs at least a 4x3 supercell (24 atoms), got {len(atoms)}")
    i, j = bond if bond is not None else _random_bond(atoms, rng)
    at = atoms.copy()
    d, _ = find_mic(at.positions[j] - at.positions[i], at.cell, at.pbc)
    mid = at.positions[i] + d / 2
    half = np.array([-d[1], d[0], 0.0]) / 2  # d/2 rotated by 90 degrees about z
    at.positions[i] = mid - half
    at.positions[j] = mid + half
    at.wrap()
    at.info["defect"] = at.info.get("defect", "") + "stone_wales;"
    return at


def nanopore(atoms: Atoms, radius: float, rng: np.random.Generator | int | None = None,
             center: Sequence[float] | None = None, clean: bool = True) -> Atoms:
    """Remove all atoms within ``radius`` of an in-plane point (a nanopore).

    Parameters
    ----------
    atoms : ase.Atoms
        Host sheet (not modified).
    radius : float
        Pore radius in Angstrom; must be below half the shortest in-plane
        periodic width minus 2 A so the sheet stays connected.
    rng : Generator or seed
    center : (x, y), optional
        Cartesian in-plane centre (default: random).
    clean : bool
        Remove atoms left with fewer than two neighbours (dangling chains).
    """
    rng = as_rng(rng)
    cell2 = np.array(atoms.cell)[:2, :2]
    area = abs(np.linalg.det(cell2))
    widths = [area / np.linalg.norm(cell2[0]), area / np.linalg.norm(cell2[1])]
    if not 0 < radius <= min(widths) / 2 - 2.0:
        raise InputError(
            f"nanopore radius {radius!r} A does not fit: it must be > 0 and <= {min(widths) / 2 - 2.0:.2f} A "
            "(half the shortest cell width minus 2 A); use a larger cell"
        )
    frac = np.linalg.solve(cell2.T, atoms.positions[:, :2].T).T
    c = rng.uniform(0, 1, size=2) if center is None else np.linalg.solve(cell2.T, np.asarray(center, float)[:2])
    dist = wrapped_frac_distance(frac, c, cell2)
    at = atoms.copy()
    del at[np.flatnonzero(dist <= radius)]
    if clean:
        _drop_undercoordinated(at)
    at.info["defect"] = at.info.get("defect", "") + f"nanopore{radius:.2f};"
    return at
