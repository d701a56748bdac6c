"""Huge disordered B/C/N sheets in linear time and lean memory (the 35.2-million-atom prediction).

:func:`paper_sheet` builds a rectangular, periodic honeycomb sheet of tens of
millions of atoms with h-BN domains in graphene, roundish pores, single
vacancies and thermal-like rattling. Every step is vectorised NumPy over
blocks of lattice rows, without ``(N, K)`` temporaries: the only arrays the
size of the sheet are two boolean site masks, one float32 field (while its
quantile is taken) and the returned positions and numbers.

Cost, measured with ``ru_maxrss`` in a fresh interpreter that had imported
:mod:`ednn.atoms.structures` (85 MiB: Python, numpy, ase), defaults,
``as_arrays=True`` (``False`` measures the same), the returned positions and
numbers included, on one core shared with other jobs:

===========  ===========  ========  ==========================================
sites        peak RSS     time      notes
===========  ===========  ========  ==========================================
2.0e5        100 MiB      0.05 s    15 MiB of fixed block temporaries
1.0e6        132 MiB      0.16 s
2.0e6        164 MiB      0.3 s     slope 1e6 -> 2e6: 33.5 bytes per site
3.52e7       ~1.23 GiB    ~5 s      extrapolated: 85 + 15 MiB + 33.5 B x 3.52e7
===========  ===========  ========  ==========================================

(measured with int64 numbers; the numbers are now uint8, 7 bytes per atom
less.) The bytes per site are the returned float64 positions and uint8 numbers
(25 bytes per atom: 845 + 35 MB at 35.2 million atoms) and two boolean site
masks; the float32 random fields (8 bytes per site with the copy taken for
their quantile) are freed before the positions are written. The
:meth:`LargeSheet.to_atoms` Atoms shares the arrays (no copy).
"""

from __future__ import annotations

import dataclasses
import math
import numbers as _numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from ase import Atoms

from ..errors import InputError
from ..image.raster import element_counts
from .build import A_BNC, VACUUM_C

__all__ = ["LargeSheet", "paper_sheet", "sheet_shape"]

_SQ3 = math.sqrt(3.0)
# the 4 sites of the rectangular cell a x a*sqrt(3) (as build.honeycomb(rectangular=True)):
# x in units of a, y in units of a*sqrt(3); sublattice A = sites 0 and 2, B = sites 1 and 3
_SITE_X = np.array([0.0, 0.5, 0.5, 0.0])
_SITE_Y = np.array([0.0, 1 / 6, 0.5, 2 / 3])
_SUBLATTICE = np.array([0, 1, 0, 1])
_CHUNK_SITES = 1 << 18  # lattice sites per block of rows (2 MB per float64 temporary)
_RATTLE_CLIP = 4.0  # in-plane displacements are capped at this many rattle_xy (radially)
_Z_B, _Z_C, _Z_N = 5, 6, 7


@dataclasses.dataclass(frozen=True, eq=False)
class LargeSheet:
    """Arrays of a large sheet, accepted wherever ednn takes a structure.

    Attributes
    ----------
    positions : (N, 3) float64 array
        Cartesian positions (Angstrom), wrapped into the in-plane cell.
    numbers : (N,) uint8 array
        Atomic numbers (5, 6, 7): one byte per atom (35 MB, not 282, at 35 million atoms).
    cell : (3, 3) float64 array
        Rows are the cell vectors: ``(Lx, 0, 0)``, ``(0, Ly, 0)``, ``(0, 0, vacuum)``.
    pbc : (3,) bool array
        ``(True, True, False)``.
    info : dict
        Summary of the build (see :func:`paper_sheet`).

    Notes
    -----
    The rasterizer and :func:`ednn.predict.stream.stream_energy` accept the
    object itself (it has ``positions``, ``numbers``, ``cell``, ``pbc`` and
    ``get_positions``, like an ``ase.Atoms``) or :meth:`as_tuple`.
    """

    positions: np.ndarray
    numbers: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    info: dict[str, Any]

    def __len__(self) -> int:
        return len(self.numbers)

    def get_positions(self) -> np.ndarray:
        """The positions array itself (not a copy, unlike ``ase.Atoms.get_positions``)."""
        return self.positions

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(positions, numbers, cell, pbc)``, the structure tuple of :func:`ednn.image.raster.prepare`."""
        return self.positions, self.numbers, self.cell, self.pbc

    def to_atoms(self) -> Atoms:
        """An ``ase.Atoms`` that shares (does not copy) the positions array.

        Modifying the Atoms' positions in place therefore modifies this sheet's.
        The numbers become the int64 array ASE expects (8 bytes per atom).
        ``info`` is a shallow copy.
        """
        at = Atoms(cell=self.cell, pbc=self.pbc)
        # ase.Atoms(positions=...) copies; assigning the arrays dict keeps one copy of 1+ GB sheets
        at.arrays["numbers"] = self.numbers.astype(np.int64)
        at.arrays["positions"] = self.positions
        at.info.update(self.info)
        return at


def sheet_shape(n_atoms: int) -> tuple[int, int]:
    """Rectangular-cell repetitions ``(nx, ny)`` of a near-square sheet of at least ``n_atoms`` atoms.

    The sheet has ``4 * nx * ny >= n_atoms`` atoms and in-plane lengths
    ``nx * a`` and ``ny * a * sqrt(3)``: the fewest atoms among the shapes
    whose sides differ by at most 5%, then the shape closest to square. When
    no shape is within 5% (a few hundred atoms or fewer), the shape closest to
    square is taken.
    """
    n = _check_n_atoms(n_atoms)
    m = -(-n // 4)  # rectangular cells needed
    ideal = math.sqrt(m / _SQ3)  # ny of a square sheet: nx * a = ny * a * sqrt(3)
    ny = np.arange(max(1, math.floor(ideal / 1.2)), math.ceil(ideal * 1.2) + 1, dtype=np.int64)
    nx = -(-m // ny)
    count = 4 * nx * ny
    skew = np.abs(np.log(nx / (ny * _SQ3)))
    ok = skew <= math.log(1.05) + 1e-12
    if not ok.any():
        ok = skew == skew.min()
    best = np.flatnonzero(ok)[np.lexsort((skew[ok], count[ok]))[0]]
    return int(nx[best]), int(ny[best])


def paper_sheet(n_atoms: int, seed: int | Sequence[int] | np.random.Generator | None = 0, *,
                a: float = A_BNC, hbn_fraction: float = 0.3, domain_size: float = 40.0,
                pore_fraction: float = 0.01, pore_size: float = 15.0, vacancy_fraction: float = 0.002,
                rattle_xy: float = 0.03, rattle_z: float = 0.05, vacuum: float = VACUUM_C,
                min_neighbors: int = 2, as_arrays: bool = False) -> Atoms | LargeSheet:
    """Periodic graphene sheet with h-BN domains, pores, vacancies and rattling, of any size in O(N).

    The sheet is ``nx x ny`` rectangular 4-atom cells (``a x a*sqrt(3)``, see
    :func:`sheet_shape`), close to square, periodic in-plane, in the
    conventions of :mod:`ednn.atoms.build`: ``pbc = (True, True, False)``,
    third cell vector ``(0, 0, vacuum)`` and the sheet at ``z = vacuum / 2``.
    The disorder has the same statistics at every size (one pattern scale in
    Angstrom, fractions fixed by quantiles over the sheet), so energies per
    atom of a 1e5-atom and a 3.5e7-atom sheet are comparable.

    1. **Pores**: a smooth periodic random field (standard normal values on a
       coarse periodic grid of spacing ~``pore_size``, bilinearly
       interpolated to every lattice site) removes the ``pore_fraction`` of
       the sites where it is largest: roundish holes around its maxima.
    2. **h-BN domains**: an independent field of spacing ~``domain_size``
       turns the ``hbn_fraction`` of the sites where it is largest into h-BN,
       B on sublattice A and N on sublattice B (B-N bonds only inside the
       domains; C-B and C-N bonds at their edges).
    3. **Vacancies**: every remaining atom is removed with probability
       ``vacancy_fraction``.
    4. **Clean-up**: atoms left with fewer than ``min_neighbors`` bonded
       neighbours (dangling atoms at pore edges or between vacancies) are
       removed, repeatedly, as :func:`ednn.atoms.defects.nanopore` does.
    5. **Rattle**: Gaussian displacements of standard deviation ``rattle_xy``
       in-plane and ``rattle_z`` along z; the in-plane displacement is capped
       at ``4 * rattle_xy`` (3e-4 of the atoms), so no bond is shorter than
       ``a / sqrt(3) - 8 * rattle_xy`` (1.20 Angstrom for the defaults; the
       library's ``MIN_DISTANCE``).

    Parameters
    ----------
    n_atoms : int
        Number of lattice sites wanted (>= 16); the sheet has the fewest
        ``4 * nx * ny >= n_atoms`` sites of a near-square shape, before defects.
    seed : int, sequence of int, Generator or None
        Seeds four independent streams (pore field, domain field, vacancies,
        rattle); equal seeds give identical sheets. A Generator is used to
        draw the seed; None draws fresh entropy. ``info["seed"]`` records it.
    a : float
        Lattice constant (Angstrom), by default the common B/C/N value.
    hbn_fraction : float
        Share of the lattice sites that are h-BN, in [0, 1).
    domain_size : float
        Spacing (Angstrom) of the coarse grid of the domain field: the typical
        size of the h-BN domains.
    pore_fraction : float
        Share of the lattice sites removed by pores, in [0, 1).
    pore_size : float
        Spacing (Angstrom) of the coarse grid of the pore field; pores are
        smaller (the field's tops above a high quantile).
    vacancy_fraction : float
        Probability, in [0, 1), that each atom left by the pores is removed.
    rattle_xy, rattle_z : float
        Standard deviations (Angstrom, >= 0) of the displacements.
    vacuum : float
        Length of the third cell vector (Angstrom); the sheet lies at its middle.
    min_neighbors : {0, 1, 2}
        Atoms with fewer bonded lattice neighbours are removed (0: keep all).
    as_arrays : bool
        Return a :class:`LargeSheet` (arrays, no ase overhead) instead of an
        ``ase.Atoms``.

    Returns
    -------
    ase.Atoms or LargeSheet
        Atoms ordered by lattice row. ``info`` (``Atoms.info`` or
        ``LargeSheet.info``) holds ``n_sites``, ``n_atoms``, ``n_B``, ``n_C``,
        ``n_N``, ``hbn_fraction`` (B and N share of the atoms),
        ``pore_removed`` and ``pore_fraction`` (of the sites),
        ``vacancy_removed`` and ``vacancy_fraction`` (of the atoms the pores
        left), ``dangling_removed``, ``repetitions`` ``(nx, ny)``,
        ``cell_lengths``, ``domain_grid`` and ``pore_grid`` (coarse grid
        shapes), ``seed``.

    Notes
    -----
    Cost: ~0.15 s and ~33.5 bytes of peak memory per 1e6 sites on one core,
    plus ~100 MiB (interpreter, numpy, ase, block temporaries). The 35.2e6-atom
    sheet (4000 x 2200 cells, 998 x 951 nm) extrapolates from the measurements
    at 1e6 and 2e6 sites to ~1.23 GiB peak RSS including the 1.13 GB of
    returned arrays, and ~5 s; see the module docstring.
    """
    n = _check_n_atoms(n_atoms)
    for name, value in (("hbn_fraction", hbn_fraction), ("pore_fraction", pore_fraction),
                        ("vacancy_fraction", vacancy_fraction)):
        if not _is_real(value) or not 0.0 <= value < 1.0:
            raise InputError(f"{name}={value!r} must be a fraction in [0, 1) (e.g. 0.3 for 30%)")
    for name, value in (("domain_size", domain_size), ("pore_size", pore_size), ("vacuum", vacuum)):
        if not _is_real(value) or not 0.0 < value < math.inf:
            raise InputError(f"{name}={value!r} must be a positive length in Angstrom")
    for name, value in (("rattle_xy", rattle_xy), ("rattle_z", rattle_z)):
        if not _is_real(value) or not 0.0 <= value < math.inf:
            raise InputError(f"{name}={value!r} must be a standard deviation >= 0 in Angstrom (0: no rattle)")
    if not _is_real(a) or not 0.5 < a < math.inf:
        raise InputError(f"lattice constant a={a!r} Angstrom is not physical; B/C/N sheets have a ~ 2.46-2.50")
    if min_neighbors not in (0, 1, 2) or isinstance(min_neighbors, bool):
        raise InputError(f"min_neighbors={min_neighbors!r} must be 0, 1 or 2 (3 would erase the sheet)")
    entropy = _entropy(seed)
    rng_pore, rng_domain, rng_vac, rng_rattle = (np.random.default_rng([*entropy, k]) for k in range(4))

    nx, ny = sheet_shape(n)
    lx, ly = nx * a, ny * a * _SQ3
    n_sites = 4 * nx * ny
    rows = max(1, _CHUNK_SITES // (4 * nx))
    blocks = [(j0, min(j0 + rows, ny)) for j0 in range(0, ny, rows)]

    # 1. pores and 2. domains: site masks of shape (ny, nx, 4), flat index = lattice order of the atoms
    pore_grid = _grid_shape(lx, ly, pore_size)
    keep = ~_top_fraction(_site_field(rng_pore, pore_grid, nx, ny, blocks), pore_fraction)
    pore_removed = n_sites - int(np.count_nonzero(keep))
    domain_grid = _grid_shape(lx, ly, domain_size)
    is_bn = _top_fraction(_site_field(rng_domain, domain_grid, nx, ny, blocks), hbn_fraction)

    # 3. vacancies, drawn for every site in lattice order (the draw does not depend on the blocks)
    vacancy_removed = 0
    if vacancy_fraction > 0:
        for j0, j1 in blocks:
            k = keep[j0:j1]
            hit = rng_vac.random(k.shape) < vacancy_fraction
            hit &= k
            vacancy_removed += int(np.count_nonzero(hit))
            k &= ~hit

    # 4. dangling atoms
    n_before = int(np.count_nonzero(keep))
    if min_neighbors:
        _drop_dangling(keep, min_neighbors)
    n_keep = int(np.count_nonzero(keep))
    dangling_removed = n_before - n_keep
    if n_keep == 0:
        raise InputError(
            f"no atom is left of the {n_sites} sites; lower pore_fraction={pore_fraction} or "
            f"vacancy_fraction={vacancy_fraction}, or give more atoms"
        )

    # 5. positions (float64, written once into the output) and numbers, block by block
    positions = np.empty((n_keep, 3))
    numbers = np.empty(n_keep, dtype=np.uint8)
    bn_number = np.where(_SUBLATTICE == 0, _Z_B, _Z_N).astype(np.uint8)
    xs = np.arange(nx, dtype=np.float64)[None, :, None] + _SITE_X
    cap2 = (_RATTLE_CLIP * rattle_xy) ** 2
    z0 = vacuum / 2
    out = 0
    for j0, j1 in blocks:
        k = keep[j0:j1]
        m = int(np.count_nonzero(k))
        if m == 0:
            continue
        sl = slice(out, out + m)
        out += m
        jj, ii, ss = np.nonzero(k)
        numbers[sl] = np.where(is_bn[j0:j1][k], bn_number[ss], np.uint8(_Z_C))
        pos = positions[sl]
        pos[:, 0] = xs[0, ii, ss] * a
        pos[:, 1] = (jj + j0 + _SITE_Y[ss]) * (a * _SQ3)
        pos[:, 2] = z0
        del jj, ii, ss
        if rattle_xy > 0 or rattle_z > 0:
            d = rng_rattle.standard_normal((m, 3))
            d[:, :2] *= rattle_xy
            d[:, 2] *= rattle_z
            if rattle_xy > 0:
                r2 = d[:, 0] ** 2 + d[:, 1] ** 2
                big = np.flatnonzero(r2 > cap2)
                if big.size:
                    d[big, :2] *= np.sqrt(cap2 / r2[big])[:, None]
                del r2
            pos += d
            del d
            np.mod(pos[:, 0], lx, out=pos[:, 0])
            np.mod(pos[:, 1], ly, out=pos[:, 1])
    del keep, is_bn

    counts = element_counts(numbers, minlength=8)
    n_b, n_c, n_n = int(counts[_Z_B]), int(counts[_Z_C]), int(counts[_Z_N])
    cell = np.array([[lx, 0.0, 0.0], [0.0, ly, 0.0], [0.0, 0.0, float(vacuum)]])
    info: dict[str, Any] = {
        "builder": "paper_sheet",
        "n_sites": n_sites,
        "n_atoms": n_keep,
        "n_B": n_b,
        "n_C": n_c,
        "n_N": n_n,
        "hbn_fraction": (n_b + n_n) / n_keep,
        "pore_removed": pore_removed,
        "pore_fraction": pore_removed / n_sites,
        "vacancy_removed": vacancy_removed,
        "vacancy_fraction": vacancy_removed / max(1, n_sites - pore_removed),
        "dangling_removed": dangling_removed,
        "repetitions": (nx, ny),
        "cell_lengths": (lx, ly, float(vacuum)),
        "domain_grid": domain_grid,
        "pore_grid": pore_grid,
        "seed": entropy[0] if len(entropy) == 1 else tuple(entropy),
    }
    sheet = LargeSheet(positions=positions, numbers=numbers, cell=cell,
                       pbc=np.array([True, True, False]), info=info)
    return sheet if as_arrays else sheet.to_atoms()


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
def _is_real(value: Any) -> bool:
    return isinstance(value, _numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_n_atoms(n_atoms: Any) -> int:
    if isinstance(n_atoms, bool) or not isinstance(n_atoms, _numbers.Integral | float) or n_atoms != int(n_atoms):
        raise InputError(f"n_atoms={n_atoms!r} must be an integer number of atoms (>= 16)")
    if n_atoms < 16:
        raise InputError(f"n_atoms={n_atoms!r} is too small: a periodic sheet needs >= 16 atoms (2 x 2 cells)")
    return int(n_atoms)


def _entropy(seed: Any) -> list[int]:
    """Non-negative integers that seed the streams (``[*entropy, stream]``)."""
    if isinstance(seed, np.random.Generator):
        return [int(seed.integers(0, 2**63))]
    if seed is None:
        return [int(np.random.SeedSequence().entropy) % 2**63]
    values = [seed] if isinstance(seed, _numbers.Integral) else list(seed) if isinstance(seed, Sequence) else None
    if not values or not all(isinstance(v, _numbers.Integral) and not isinstance(v, bool) and v >= 0
                             for v in values):
        raise InputError(f"seed={seed!r} must be a non-negative integer, a sequence of them, a Generator or None")
    return [int(v) for v in values]


def _grid_shape(lx: float, ly: float, spacing: float) -> tuple[int, int]:
    """Coarse periodic grid ``(gy, gx)`` of spacing ~``spacing`` (>= 2 points, so the field varies)."""
    return max(2, round(ly / spacing)), max(2, round(lx / spacing))


def _site_field(rng: np.random.Generator, grid_shape: tuple[int, int], nx: int, ny: int,
                blocks: list[tuple[int, int]]) -> np.ndarray:
    """Bilinear periodic interpolation of a standard normal grid to every lattice site, float32 ``(ny, nx, 4)``.

    Separable: the grid is interpolated along x once per sublattice site
    (``(gy, nx)``), then along y block by block.
    """
    gy, gx = grid_shape
    values = rng.standard_normal((gy, gx))
    field = np.empty((ny, nx, 4), dtype=np.float32)
    for s in range(4):
        u = (np.arange(nx) + _SITE_X[s]) * (gx / nx)  # grid coordinate along x (cell length nx cells = gx)
        i0 = np.floor(u).astype(np.int64)
        t = u - i0
        i0 %= gx
        along_x = values[:, i0] * (1.0 - t) + values[:, (i0 + 1) % gx] * t  # (gy, nx)
        for j0, j1 in blocks:
            v = (np.arange(j0, j1) + _SITE_Y[s]) * (gy / ny)
            r0 = np.floor(v).astype(np.int64)
            w = (v - r0)[:, None]
            r0 %= gy
            field[j0:j1, :, s] = along_x[r0] * (1.0 - w) + along_x[(r0 + 1) % gy] * w
    return field


def _top_fraction(field: np.ndarray, fraction: float) -> np.ndarray:
    """Mask of the ``round(fraction * size)`` largest values of ``field`` (ties may add a few)."""
    n = field.size
    k = round(fraction * n)
    if k == 0:
        return np.zeros(field.shape, dtype=bool)
    threshold = np.partition(field.reshape(-1), n - k)[n - k]
    return field >= threshold


def _drop_dangling(keep: np.ndarray, min_neighbors: int) -> None:
    """Remove (in place) sites of ``keep`` ``(ny, nx, 4)`` with fewer than ``min_neighbors`` kept neighbours.

    The honeycomb bonds of the rectangular cell, by lattice indices: site 0 of
    cell (i, j) bonds to site 1 of (i, j) and (i-1, j) and site 3 of (i, j-1);
    site 2 bonds to site 1 of (i, j) and site 3 of (i, j) and (i+1, j).
    """
    while True:
        k0, k1, k2, k3 = (keep[:, :, s].view(np.uint8) for s in range(4))
        cn = (
            k1 + np.roll(k1, 1, axis=1) + np.roll(k3, 1, axis=0),
            k0 + np.roll(k0, -1, axis=1) + k2,
            k1 + k3 + np.roll(k3, -1, axis=1),
            k2 + np.roll(k2, 1, axis=1) + np.roll(k0, -1, axis=0),
        )
        changed = False
        for s in range(4):
            drop = keep[:, :, s] & (cn[s] < min_neighbors)
            if drop.any():
                keep[:, :, s] &= ~drop
                changed = True
        if not changed:
            return
