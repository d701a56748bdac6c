"""Symmetries of a cell's pixel grid: axis permutations and reversals that map the grid onto itself.

Pixel ``m`` sits at the fractional coordinates ``m_k / n_k`` (:mod:`ednn.image.raster`). A
:class:`GridOp` maps fractional coordinates ``s`` to ``s'_k = sign_k * s_{perm[k]}`` and pixel ``m`` to
``m'_k = sign_k * m_{perm[k]} mod n_k``. When the op keeps the cell's metric (``M^T G M = G`` for the
op's matrix ``M`` and the metric ``G = A A^T`` of the periodic cell vectors ``A``) and the grid's shape
(``n_k = n_{perm[k]}``), it is a rotation or mirror of space that the cell admits: applied to the atoms
(:func:`transform_atoms`) it gives a congruent structure, whose Gaussian image is the image with the op
applied to its pixels (:meth:`GridOp.apply`), and whose scalar per-voxel fields (LDOS, density) are the
fields with the op applied to their voxels, on any grid that refines the image's by a whole factor.

For a cube this is the full cubic group (48 ops); a tetragonal box (a sheet in vacuum on a 3D grid)
keeps 16, a hexagonal sheet's in-plane cell 4 (its 12-element point group includes rotations by 60
degrees, which no permutation of the cell axes realises).

Uses: training on a random op of every structure each epoch (``train.augment: symmetry``, exact for
energies, forces and per-voxel labels alike) and averaging a field over the ops
(``model.symmetrize_fields``), which makes the prediction exactly equivariant under them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["GridOp", "grid_symmetries", "cell_symmetries", "transform_atoms", "transform_vectors",
           "metric_tolerance"]

#: relative tolerance on the metric tensor when deciding whether an op keeps the cell
metric_tolerance = 1e-6


@dataclass(frozen=True)
class GridOp:
    """An axis permutation and reversal of a ``d``-dimensional pixel grid (see the module notes)."""

    perm: tuple[int, ...]
    signs: tuple[int, ...]

    @property
    def dim(self) -> int:
        return len(self.perm)

    @property
    def is_identity(self) -> bool:
        return self.perm == tuple(range(self.dim)) and all(s == 1 for s in self.signs)

    def matrix(self) -> np.ndarray:
        """``M`` with ``s' = M s`` for fractional coordinates (column vectors)."""
        M = np.zeros((self.dim, self.dim))
        for k, (p, s) in enumerate(zip(self.perm, self.signs, strict=True)):
            M[k, p] = s
        return M

    def inverse(self) -> GridOp:
        inv = [0] * self.dim
        for k, p in enumerate(self.perm):
            inv[p] = k
        return GridOp(tuple(inv), tuple(self.signs[inv[j]] for j in range(self.dim)))

    def apply(self, array: np.ndarray) -> np.ndarray:
        """The op on an array whose first ``dim`` axes are the grid (any trailing channel axes):
        ``out[m'] = array[m]``."""
        a = np.asarray(array)
        d = self.dim
        if a.ndim < d:
            raise InputError(f"a {d}D grid op needs an array with >= {d} axes, got shape {a.shape}")
        shape = a.shape[:d]
        if any(shape[k] != shape[p] for k, p in enumerate(self.perm)):
            raise InputError(f"the op {self} exchanges grid axes of different lengths {shape}")
        out = np.transpose(a, tuple(self.perm) + tuple(range(d, a.ndim)))
        for k, s in enumerate(self.signs):
            if s < 0:  # m -> -m mod n: reverse, then roll by one so that pixel 0 stays at 0
                out = np.roll(np.flip(out, axis=k), 1, axis=k)
        return np.ascontiguousarray(out)

    def cartesian(self, lattice: np.ndarray) -> np.ndarray:
        """The orthogonal ``R`` (d x d) with ``r' = r R`` for Cartesian row vectors, given the periodic cell
        vectors as rows of ``lattice``."""
        A = np.asarray(lattice, dtype=np.float64)
        return np.linalg.solve(A, self.matrix().T @ A)


def _keeps(op: GridOp, G: np.ndarray, shape: tuple[int, ...], tol: float) -> bool:
    if any(shape[k] != shape[p] for k, p in enumerate(op.perm)):
        return False
    M = op.matrix()
    return bool(np.all(np.abs(M.T @ G @ M - G) <= tol * np.abs(G).max()))


def grid_symmetries(lattice: np.ndarray, shape: tuple[int, ...], tol: float | None = None) -> list[GridOp]:
    """The grid ops that the cell ``lattice`` (periodic vectors as rows, d x d) and the grid ``shape`` admit.

    The identity comes first; the rest in a fixed order (permutations, then signs), so that a seeded
    choice among them is reproducible.
    """
    A = np.asarray(lattice, dtype=np.float64)
    d = len(shape)
    if A.shape != (d, d):
        raise InputError(f"lattice of shape {A.shape} for a {d}D grid; give the {d} periodic cell vectors as rows")
    G = A @ A.T
    t = metric_tolerance if tol is None else tol
    ops = []
    for perm in itertools.permutations(range(d)):
        for signs in itertools.product((1, -1), repeat=d):
            op = GridOp(tuple(perm), tuple(signs))
            if _keeps(op, G, tuple(shape), t):
                ops.append(op)
    return ops


def cell_symmetries(atoms: Any, grid: Any) -> tuple[np.ndarray, list[GridOp]]:
    """The periodic lattice of ``atoms`` on ``grid`` (a GridSpec) and the grid ops it admits (identity first)."""
    from .raster import prepare  # noqa: PLC0415

    p = prepare(atoms, grid)
    return p.lattice, grid_symmetries(p.lattice, p.shape)


def transform_atoms(atoms: Any, op: GridOp, lattice: np.ndarray) -> Any:
    """A copy of ``atoms`` (same cell, same order) with every position mapped by ``op``: the congruent
    structure whose image is ``op.apply(image)``. ``lattice``: the grid's periodic vectors (Cartesian rows;
    for a 2D grid the in-plane xy part, z untouched)."""
    from .describe import _as_atoms  # noqa: PLC0415

    at = _as_atoms(atoms)
    R = op.cartesian(lattice)
    d = op.dim
    pos = np.array(at.positions, dtype=np.float64)
    pos[:, :d] = pos[:, :d] @ R
    at.positions = pos
    return at


def transform_vectors(vectors: np.ndarray, op: GridOp, lattice: np.ndarray) -> np.ndarray:
    """Per-atom Cartesian vectors (forces) of the structure mapped by ``op`` (:func:`transform_atoms`)."""
    v = np.array(vectors, dtype=np.float64)
    d = op.dim
    v[:, :d] = v[:, :d] @ op.cartesian(lattice)
    return v
