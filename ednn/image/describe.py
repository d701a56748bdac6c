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

__all__ = ["AUGMENT_MODES", "BASES", "redescribe", "reduced_bases", "in_basis", "equivalent_structures"]

AUGMENT_MODES = ("none", "translate", "cell", "reduced", "symmetry")

#: relative tolerance on lengths and right angles when the reduced bases of a lattice are enumerated
REDUCED_TOL = 1e-3

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


def _gauss_reduce(a: np.ndarray) -> np.ndarray:
    """Integer rows ``P`` (det +-1) with ``P @ a`` a Lagrange-Gauss reduced basis of the 2D lattice ``a`` (2x2):
    ``|b1| <= |b2|``, ``|b1 . b2| <= |b1|^2 / 2``; its lengths are the lattice's successive minima."""
    P = np.eye(2, dtype=np.int64)
    b = P @ a
    for _ in range(200):
        if b[1] @ b[1] < b[0] @ b[0]:
            P = P[::-1].copy()
            b = P @ a
        m = int(np.rint((b[0] @ b[1]) / (b[0] @ b[0])))
        if m == 0:
            return P
        P[1] -= m * P[0]
        b = P @ a
    raise ConfigError(f"lattice reduction did not converge for the in-plane cell {a.tolist()} (degenerate cell?)")


def reduced_bases(cell: Any, tol: float = REDUCED_TOL) -> list[np.ndarray]:
    """Every reduced basis of a 2D lattice, as integer matrices ``P`` (rows: new vectors in terms of the old).

    The set: bases ``(u, w)`` with ``|u|`` and ``|w|`` the lattice's successive minima (to ``tol``
    relative) and a cell angle of at least 90 degrees (to ``tol``): 2 for an oblique lattice (``+-``), 4
    for a rectangular one, 8 for a square one, 12 for a hexagonal one. It depends on the lattice only, not
    on the basis it is given in, so a quantity averaged over it is exactly invariant to the choice of basis
    (another basis, the 60/120-degree conventions, exchanged vectors). Sorted, so the order is fixed too.
    """
    c = np.asarray(cell, dtype=np.float64)
    a = c[:2, :2]
    if abs(np.linalg.det(a)) < 1e-12 * max(float(np.abs(a).max()), 1e-300) ** 2:
        raise ConfigError(f"the in-plane cell vectors {a.tolist()} are parallel or zero: no 2D lattice")
    P0 = _gauss_reduce(a)
    b = P0 @ a
    l1, l2 = float(np.linalg.norm(b[0])), float(np.linalg.norm(b[1]))
    area = abs(float(np.linalg.det(b)))
    ij = np.array([(i, j) for i in range(-2, 3) for j in range(-2, 3) if (i, j) != (0, 0)], dtype=np.int64)
    v = ij @ b
    n = np.linalg.norm(v, axis=1)
    first = [k for k in range(len(v)) if n[k] <= l1 * (1 + tol)]
    second = [k for k in range(len(v)) if n[k] <= l2 * (1 + tol)]
    out = []
    for i in first:
        for j in second:
            det = v[i, 0] * v[j, 1] - v[i, 1] * v[j, 0]
            if abs(abs(det) - area) > 1e-6 * area or v[i] @ v[j] > tol * n[i] * n[j]:
                continue
            out.append(np.stack([ij[i], ij[j]]) @ P0)
    return sorted(out, key=lambda m: tuple(m.ravel()))


def in_basis(atoms: Any, P: np.ndarray) -> Any:
    """An ``ase.Atoms`` copy of ``atoms`` in the in-plane cell ``P @ cell[:2]`` (``det P = +-1``), the third vector
    kept, atoms in the same order wrapped into the new cell (same forces, same energy physically)."""
    at = _as_atoms(atoms)
    c = np.asarray(at.cell[:], dtype=np.float64).copy()
    c[:2] = np.asarray(P, dtype=np.float64) @ c[:2]
    at.set_cell(c, scale_atoms=False)
    at.wrap()
    return at


def _as_atoms(atoms: Any) -> Any:
    if hasattr(atoms, "copy") and hasattr(atoms, "cell"):
        return atoms.copy()
    from ase import Atoms  # noqa: PLC0415

    from .raster import _structure_arrays  # noqa: PLC0415

    pos, num, cell, pbc = _structure_arrays(atoms)
    return Atoms(numbers=np.asarray(num, dtype=np.int64), positions=pos, cell=cell, pbc=pbc)


def redescribe(atoms: Any, rng: np.random.Generator, mode: str = "cell", dim: int = 2) -> Any:
    """The same structure in a random equivalent description (an ``ase.Atoms`` copy).

    Parameters
    ----------
    atoms : ase.Atoms or (positions, numbers, cell, pbc)
    rng : numpy Generator
    mode : "translate" (a random origin), "cell" (a random origin and a random basis from :data:`BASES`
        whose cell angle stays within 40..140 degrees) or "reduced" (a random origin and a random one of
        :func:`reduced_bases`: what ``model.cell_average`` averages over); bases for 2D grids only, 3D: the
        origin only
    dim : 2 or 3, the grid's dimension (2: in-plane shifts and bases; 3: shifts along all cell vectors)
    """
    if mode not in AUGMENT_MODES or mode in ("none", "symmetry"):
        raise ConfigError(f"augment must be one of {list(AUGMENT_MODES[1:4])} here (symmetry: ednn.image.symmetry), "
                          f"got {mode!r}")
    at = _as_atoms(atoms)  # (positions, numbers, cell, pbc) too, as datasets give them
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
    if mode == "reduced" and dim == 2:
        cands = reduced_bases(cell)
        return in_basis(at, cands[int(rng.integers(len(cands)))])
    at.wrap()
    return at


def equivalent_structures(atoms: Any, rng: np.random.Generator, spacing: float) -> dict[str, Any]:
    """The same physical structure written down in other ways, for symmetry checks of a model (2D sheets).

    ``translate``: all atoms moved by a random in-plane vector; ``subpixel``: by half a pixel (``spacing``)
    along a1; ``basis``: the cell (a1, a1 + a2); ``basis_120``: (a1, a2 - a1), for hexagonal cells the other
    60/120-degree convention; ``supercell``: the 2x1 supercell; ``rect_super``: the supercell (a1, a1 + 2 a2),
    for hexagonal cells the rectangular one; ``swap``: a1 and a2 exchanged; ``rotate``: atoms and cell rotated
    about z by a random angle; ``mirror``: y -> -y; ``permute``: the atoms in a random order. Compare
    energies per atom (the supercells have more atoms).
    """
    from ase.build import make_supercell  # noqa: PLC0415
    from ase.geometry import wrap_positions  # noqa: PLC0415

    at = _as_atoms(atoms)

    def recell(P):
        M = np.eye(3, dtype=int)
        M[:2, :2] = P
        return make_supercell(at, M, wrap=True)

    ops = {}
    t = at.copy()
    t.positions[:, :2] += rng.uniform(-5, 5, 2)
    t.wrap()
    ops["translate"] = t
    s = at.copy()
    s.positions += 0.5 * spacing * at.cell[0] / np.linalg.norm(at.cell[0])
    s.wrap()
    ops["subpixel"] = s
    ops["basis"] = recell([[1, 0], [1, 1]])
    ops["basis_120"] = recell([[1, 0], [-1, 1]])
    ops["supercell"] = recell([[2, 0], [0, 1]])
    ops["rect_super"] = recell([[1, 0], [1, 2]])
    w = at.copy()
    c = w.cell[:].copy()
    w.set_cell([c[1], c[0], c[2]], scale_atoms=False)
    ops["swap"] = w
    r = at.copy()
    r.rotate(float(rng.uniform(0, 360)), "z", rotate_cell=True)
    ops["rotate"] = r
    m = at.copy()
    m.positions[:, 1] *= -1
    c = m.cell[:].copy()
    c[:, 1] *= -1
    m.set_cell(c, scale_atoms=False)
    m.positions = wrap_positions(m.positions, m.cell, pbc=m.pbc)
    ops["mirror"] = m
    ops["permute"] = at[rng.permutation(len(at))]
    return ops
