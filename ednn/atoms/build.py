"""Pristine sheets, alloys, heterostructures and bilayers of B/C/N (``ase.Atoms`` builders).

Conventions (shared by every module of :mod:`ednn.atoms`)
--------------------------------------------------------
* Sheets lie in the xy plane; the cell is ``a1 = (a, 0, 0)``,
  ``a2 = (-a/2, a*sqrt(3)/2, 0)`` (primitive hexagonal, 120 degrees) or
  ``a1 = (a, 0, 0)``, ``a2 = (0, a*sqrt(3), 0)`` (rectangular, 4 atoms), and
  ``a3 = (0, 0, VACUUM_C)`` with ``VACUUM_C = 20`` Angstrom.
* ``pbc = (True, True, False)``; atoms sit at ``z = VACUUM_C / 2``.
* Supercells of ``nx x ny`` cells have in-plane cell lengths ``nx*a`` and
  ``ny*a`` (hexagonal) so that a pixel spacing of ``a / k`` makes every
  hexagonal supercell exactly commensurate with the raster grid.
* Every random function takes a :class:`numpy.random.Generator` (or a seed);
  equal seeds give identical structures.

Lattice constants: :data:`A_GRAPHENE` and :data:`A_HBN` are the relaxed values
of the default labeller (Tersoff, BNC.tersoff: 2.492 and 2.498 Angstrom);
:data:`A_BNC` (their mean, 2.495) is used for mixed B/C/N sheets and by the
reference datasets for every kind, so that one pixel spacing fits all cells.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.neighborlist import neighbor_list

from ..errors import InputError

__all__ = [
    "A_GRAPHENE",
    "A_HBN",
    "A_BNC",
    "VACUUM_C",
    "BOND_CUTOFF",
    "MIN_DISTANCE",
    "STACKINGS",
    "D_INTERLAYER",
    "honeycomb",
    "graphene",
    "hbn",
    "supercell_size",
    "bcn_alloy",
    "heterostructure",
    "bilayer",
]

A_GRAPHENE = 2.492  # relaxed graphene lattice constant of BNC.tersoff (C-C from Lindsay & Broido 2010)
A_HBN = 2.498  # relaxed h-BN lattice constant of BNC.tersoff (Sevik et al. 2011)
A_BNC = 2.495  # common lattice constant for mixed sheets and the reference datasets
VACUUM_C = 20.0  # length of the third (vacuum) cell vector, Angstrom
MIN_DISTANCE = 1.2  # generated structures keep atoms at least this far apart (Angstrom)
BOND_CUTOFF = 1.8  # nearest-neighbour cutoff for honeycomb sheets (bond ~1.44 A, 2nd nbr ~2.5 A)

_SQ3 = np.sqrt(3.0)


def as_rng(rng: np.random.Generator | int | Sequence[int] | None) -> np.random.Generator:
    """``rng`` itself if it is a Generator, else ``np.random.default_rng(rng)``."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _check_reps(nx: int, ny: int) -> tuple[int, int]:
    if int(nx) != nx or int(ny) != ny or nx < 1 or ny < 1:
        raise InputError(f"supercell repetitions must be positive integers, got nx={nx!r}, ny={ny!r}")
    return int(nx), int(ny)


# ----------------------------------------------------------------------------
# pristine sheets
# ----------------------------------------------------------------------------
def honeycomb(symbols: tuple[str, str], nx: int = 1, ny: int = 1, a: float = A_GRAPHENE,
              rectangular: bool = False, vacuum: float = VACUUM_C) -> Atoms:
    """Honeycomb sheet with ``symbols[0]`` on sublattice A and ``symbols[1]`` on B.

    Parameters
    ----------
    symbols : (str, str)
        Elements of the two sublattices, e.g. ``("C", "C")`` or ``("B", "N")``.
    nx, ny : int
        Repetitions of the (primitive or rectangular) cell.
    a : float
        Lattice constant (Angstrom); the bond length is ``a / sqrt(3)``.
    rectangular : bool
        Use the 4-atom rectangular cell ``a x a*sqrt(3)`` instead of the
        2-atom primitive cell.
    vacuum : float
        Length of the third cell vector (Angstrom); atoms at ``z = vacuum/2``.

    Returns
    -------
    ase.Atoms
        With ``pbc=(True, True, False)`` and an integer array ``"sublattice"``
        (0 for A, 1 for B).
    """
    nx, ny = _check_reps(nx, ny)
    if not a > 0.5:
        raise InputError(f"lattice constant a={a!r} Angstrom is not physical; graphene has a ~ 2.46-2.50")
    if not vacuum > 0:
        raise InputError(f"vacuum={vacuum!r}: the third cell vector must be positive (e.g. {VACUUM_C})")
    if rectangular:
        cell = np.array([[a, 0, 0], [0, a * _SQ3, 0], [0, 0, vacuum]])
        frac = np.array([[0, 0], [0.5, 1 / 6], [0.5, 0.5], [0.0, 2 / 3]])
        sub = np.array([0, 1, 0, 1])
    else:
        cell = np.array([[a, 0, 0], [-a / 2, a * _SQ3 / 2, 0], [0, 0, vacuum]])
        frac = np.array([[0.0, 0.0], [2 / 3, 1 / 3]])
        sub = np.array([0, 1])
    pos = np.zeros((len(frac), 3))
    pos[:, :2] = frac @ cell[:2, :2]
    pos[:, 2] = vacuum / 2
    at = Atoms(symbols=[symbols[s] for s in sub], positions=pos, cell=cell, pbc=(True, True, False))
    at.set_array("sublattice", sub.astype(np.int64))
    if (nx, ny) != (1, 1):
        at = at.repeat((nx, ny, 1))
    return at


def graphene(nx: int = 1, ny: int = 1, a: float = A_GRAPHENE, rectangular: bool = False,
             vacuum: float = VACUUM_C) -> Atoms:
    """Graphene sheet (see :func:`honeycomb` for the conventions)."""
    return honeycomb(("C", "C"), nx, ny, a=a, rectangular=rectangular, vacuum=vacuum)


def hbn(nx: int = 1, ny: int = 1, a: float = A_HBN, rectangular: bool = False, vacuum: float = VACUUM_C) -> Atoms:
    """Hexagonal boron nitride sheet: B on sublattice A, N on B (see :func:`honeycomb`)."""
    return honeycomb(("B", "N"), nx, ny, a=a, rectangular=rectangular, vacuum=vacuum)


def supercell_counts(lo: int, hi: int, per: int, max_aspect: float) -> np.ndarray:
    """Sorted atom counts ``per*nx*ny`` in ``[lo, hi]`` that some ``nx x ny`` of aspect <= ``max_aspect`` has.

    A sieve over the cell counts ``m = nx*ny`` (one strided slice per smaller factor), so
    ranges of millions of atoms take milliseconds and ``hi/per`` bytes.
    """
    m_lo, m_hi = max(1, -(-lo // per)), hi // per
    if m_hi < m_lo:
        return np.zeros(0, dtype=np.int64)
    ok = np.zeros(m_hi + 1, dtype=bool)
    for i in range(1, math.isqrt(m_hi) + 1):  # i: the smaller factor, j in [i, max_aspect * i]
        j_max = m_hi // i if math.isinf(max_aspect) else min(m_hi // i, math.floor(max_aspect * i))
        if j_max >= i:
            ok[i * i : i * j_max + 1 : i] = True
    return per * (m_lo + np.flatnonzero(ok[m_lo:])).astype(np.int64)


def _supercell_shapes(m: int, max_aspect: float) -> list[tuple[int, int]]:
    """All ``(nx, ny)`` with ``nx*ny = m`` and aspect <= ``max_aspect``, ``nx`` ascending."""
    small = [i for i in range(1, math.isqrt(m) + 1) if m % i == 0]
    divisors = small + [m // i for i in reversed(small) if i * i != m]
    return [(i, m // i) for i in divisors if max(i, m // i) <= max_aspect * min(i, m // i)]


def supercell_size(n_atoms: tuple[int, int], rng: np.random.Generator | int | None = None,
                   rectangular: bool = False, max_aspect: float = 2.0) -> tuple[int, int]:
    """Draw supercell repetitions ``(nx, ny)`` with an atom count in a range.

    Parameters
    ----------
    n_atoms : (int, int)
        Inclusive range of the number of atoms.
    rng : Generator or seed
    rectangular : bool
        Count 4 atoms per cell instead of 2.
    max_aspect : float
        Largest ``max(nx, ny) / min(nx, ny)``.
    """
    rng = as_rng(rng)
    lo, hi = int(n_atoms[0]), int(n_atoms[1])
    if not max_aspect >= 1.0:
        raise InputError(f"max_aspect={max_aspect!r} must be >= 1 (1 allows square supercells only)")
    per = 4 if rectangular else 2
    counts = supercell_counts(lo, hi, per, max_aspect)
    if not counts.size:
        raise InputError(f"no supercell with {lo}..{hi} atoms and aspect <= {max_aspect}; widen the range")
    # uniform in the atom count first (so small and large cells are equally likely), then in shape
    n = int(counts[int(rng.integers(len(counts)))])
    shapes = _supercell_shapes(n // per, max_aspect)
    return shapes[int(rng.integers(len(shapes)))]


# ----------------------------------------------------------------------------
# alloys and heterostructures
# ----------------------------------------------------------------------------
def _counts(fractions: Sequence[float], n: int) -> np.ndarray:
    f = np.asarray(fractions, dtype=float)
    if f.shape != (3,) or np.any(f < 0) or not np.isfinite(f).all() or f.sum() <= 0:
        raise InputError(f"fractions must be three non-negative numbers (xB, xC, xN), got {fractions!r}")
    f = f / f.sum()
    c = np.floor(f * n).astype(int)
    rest = n - c.sum()
    order = np.argsort(-(f * n - c), kind="stable")
    c[order[:rest]] += 1
    return c


def bcn_alloy(nx: int, ny: int, fractions: Sequence[float] = (1 / 3, 1 / 3, 1 / 3),
              rng: np.random.Generator | int | None = None, a: float = A_BNC, rectangular: bool = False,
              bn_order: bool = False, vacuum: float = VACUUM_C) -> Atoms:
    """Random B_x C_y N_z honeycomb alloy with an exact composition.

    Parameters
    ----------
    nx, ny : int
        Supercell repetitions.
    fractions : (xB, xC, xN)
        Target fractions (normalised); counts are rounded to sum to the atom count.
    rng : Generator or seed
    a : float
        Lattice constant.
    rectangular : bool
        Rectangular instead of primitive cells.
    bn_order : bool
        False: every site is random. True: B goes preferentially onto
        sublattice A and N onto B (the h-BN motif, no B-B / N-N bonds while
        the composition allows), carbon fills the rest.
    vacuum : float
        Third cell vector length.
    """
    rng = as_rng(rng)
    at = honeycomb(("C", "C"), nx, ny, a=a, rectangular=rectangular, vacuum=vacuum)
    n = len(at)
    nb, nc, nn = _counts(fractions, n)
    numbers = np.full(n, 6)
    if not bn_order:
        perm = rng.permutation(n)
        numbers[perm[:nb]] = 5
        numbers[perm[nb:nb + nn]] = 7
    else:
        sub = at.arrays["sublattice"]
        a_sites = rng.permutation(np.flatnonzero(sub == 0))
        b_sites = rng.permutation(np.flatnonzero(sub == 1))
        nb_a = min(nb, len(a_sites))
        nn_b = min(nn, len(b_sites))
        numbers[a_sites[:nb_a]] = 5
        numbers[b_sites[:nn_b]] = 7
        # overflow (composition beyond one sublattice) goes to random remaining sites
        free = rng.permutation(np.flatnonzero(numbers == 6))
        k = nb - nb_a
        numbers[free[:k]] = 5
        numbers[free[k:k + nn - nn_b]] = 7
    at.numbers = numbers
    return at


def wrapped_frac_distance(frac: np.ndarray, center: np.ndarray, cell2: np.ndarray) -> np.ndarray:
    """In-plane minimum-image distances from ``center`` (fractional) to fractional positions."""
    d = frac - center
    d -= np.round(d)
    best = None
    for i in (-1, 0, 1):
        for j in (-1, 0, 1):
            v = (d + np.array([i, j])) @ cell2
            r = np.linalg.norm(v, axis=1)
            best = r if best is None else np.minimum(best, r)
    return best


def heterostructure(nx: int, ny: int, kind: str = "stripe", rng: np.random.Generator | int | None = None,
                    a: float = A_BNC, rectangular: bool = False, period: tuple[float, float] = (10.0, 30.0),
                    radius: tuple[float, float] = (4.0, 10.0), island_density: float = 1 / 800.0,
                    vacuum: float = VACUUM_C) -> Atoms:
    """In-plane graphene / h-BN heterostructure: stripes or islands.

    Parameters
    ----------
    nx, ny : int
        Supercell repetitions.
    kind : {"stripe", "island"}
        ``"stripe"``: domains bounded by lines parallel to ``a1`` (zigzag
        interfaces); the number of stripe pairs follows the cell length
        divided by a random period in ``period``. ``"island"``: circular
        domains of radius drawn from ``radius`` (at least one; about
        ``island_density`` per square Angstrom), graphene islands in h-BN or
        h-BN islands in graphene.
    rng : Generator or seed
    a : float
        Common lattice constant.
    rectangular : bool
        Rectangular instead of primitive cells (stripes then have armchair
        interfaces).
    period, radius : (float, float)
        Ranges in Angstrom.
    island_density : float
        Islands per square Angstrom.
    vacuum : float
        Third cell vector length.

    Returns
    -------
    ase.Atoms
        ``info["carbon_fraction"]`` records the carbon share.
    """
    rng = as_rng(rng)
    if kind not in ("stripe", "island"):
        raise InputError(f"heterostructure kind must be 'stripe' or 'island', got {kind!r}")
    at = honeycomb(("C", "C"), nx, ny, a=a, rectangular=rectangular, vacuum=vacuum)
    cell2 = np.array(at.cell)[:2, :2]
    frac = np.linalg.solve(cell2.T, at.positions[:, :2].T).T
    sub = at.arrays["sublattice"]
    bn = np.where(sub == 0, 5, 7)
    if kind == "stripe":
        width = np.linalg.norm(np.cross(at.cell[0], at.cell[1])) / np.linalg.norm(at.cell[0])  # height along a2
        n_pairs = max(1, int(round(width / rng.uniform(*period))))
        edges = np.sort(rng.uniform(0, 1, size=2 * n_pairs))
        u = frac[:, 1] % 1.0
        idx = np.searchsorted(edges, u, side="right")
        is_c = (idx % 2) == 1
        if not is_c.any() or is_c.all():  # degenerate draw: split the cell in halves
            is_c = u < 0.5
    else:
        area = abs(np.linalg.det(cell2))
        short = min(np.linalg.norm(cell2[0]), np.linalg.norm(cell2[1]),
                    area / np.linalg.norm(cell2[0]), area / np.linalg.norm(cell2[1]))
        n_isl = max(1, int(rng.poisson(area * island_density)))
        inside = np.zeros(len(at), dtype=bool)
        for _ in range(n_isl):
            r_max = min(radius[1], 0.45 * short)
            r = rng.uniform(min(radius[0], r_max), r_max)
            center = rng.uniform(0, 1, size=2)
            inside |= wrapped_frac_distance(frac, center, cell2) <= r
        if not inside.any():
            inside[np.argmin(wrapped_frac_distance(frac, rng.uniform(0, 1, size=2), cell2))] = True
        is_c = inside if rng.uniform() < 0.5 else ~inside
        if is_c.all() or not is_c.any():
            is_c = inside
    at.numbers = np.where(is_c, 6, bn)
    at.info["carbon_fraction"] = float(is_c.mean())
    at.info["hetero"] = kind
    return at


# ----------------------------------------------------------------------------
# stacks
# ----------------------------------------------------------------------------
STACKINGS = ("AA", "AB")
D_INTERLAYER = 3.4  # Angstrom: bilayer graphene / graphite (3.35) and h-BN (3.33) in round figures


def bilayer(bottom: Atoms, top: Atoms | None = None, distance: float = D_INTERLAYER,
            stacking: str | Sequence[float] = "AB") -> Atoms:
    """Stack two sheets with the same in-plane cell.

    Parameters
    ----------
    bottom : ase.Atoms
        A sheet in the conventions of this module (``pbc=(True, True, False)``).
    top : ase.Atoms, optional
        The upper sheet; a copy of ``bottom`` when omitted. Its in-plane cell
        must equal ``bottom``'s (build both with the same ``a`` and
        repetitions, e.g. ``A_BNC`` for graphene on h-BN).
    distance : float
        Interlayer distance (Angstrom) between the mean heights of the sheets.
    stacking : "AA", "AB" or (float, float)
        ``"AA"``: the top sheet directly above the bottom one; ``"AB"``
        (Bernal): shifted by one bond, so that half of the top atoms sit above
        hexagon centres; or an explicit in-plane shift in Cartesian Angstrom.
        For h-BN on h-BN, ``top=honeycomb(("N", "B"), ...)`` with ``"AA"`` is
        the AA' stacking of bulk h-BN.

    Returns
    -------
    ase.Atoms
        The bottom sheet followed by the top sheet, an integer array
        ``"layer"`` (0, 1), ``info["stacking"]`` and ``info["distance"]``.
        The third cell vector is lengthened if the stack needs it.
    """
    top = bottom if top is None else top
    c_bot, c_top = np.array(bottom.cell), np.array(top.cell)
    if not np.allclose(c_bot[:2], c_top[:2], atol=1e-6):
        raise InputError(
            "the two sheets have different in-plane cells; build them with the same lattice constant and "
            f"repetitions (e.g. a=A_BNC={A_BNC}). Bottom: {np.round(c_bot[:2], 4).tolist()}, top: "
            f"{np.round(c_top[:2], 4).tolist()}"
        )
    if not np.isfinite(distance) or distance < 2.0:
        raise InputError(f"interlayer distance {distance!r} Angstrom is unphysical; typical values are 3.2-3.6")
    if isinstance(stacking, str):
        key = stacking.upper()
        if key not in STACKINGS:
            raise InputError(f"unknown stacking {stacking!r}; use one of {list(STACKINGS)} or an (x, y) shift")
        # AB: shifted by the A->B bond vector (a/2, a/(2 sqrt3)), the same in the primitive and the
        # rectangular cells of this module
        a = _lattice_a(bottom)
        shift = np.zeros(2) if key == "AA" else np.array([a / 2, a / (2 * _SQ3)])
    else:
        shift = np.asarray(stacking, dtype=float).reshape(-1)
        if shift.shape != (2,) or not np.all(np.isfinite(shift)):
            raise InputError(f"stacking shift must be two finite numbers (Angstrom), got {stacking!r}")
        key = [float(v) for v in shift]
    lo = bottom.positions[:, 2].mean()
    upper = top.positions.copy()
    upper[:, 2] += lo + distance - upper[:, 2].mean()
    upper[:, :2] += shift
    at = Atoms(numbers=np.concatenate([bottom.numbers, top.numbers]),
               positions=np.vstack([bottom.positions, upper]), cell=c_bot, pbc=(True, True, False))
    extent = at.positions[:, 2].max() - at.positions[:, 2].min()
    if at.cell[2, 2] < extent + 10.0:
        cell = np.array(at.cell)
        cell[2] = [0.0, 0.0, extent + VACUUM_C]
        at.set_cell(cell)
    at.positions[:, 2] += at.cell[2, 2] / 2 - (lo + distance / 2)  # centred in the cell
    at.set_array("layer", np.repeat([0, 1], [len(bottom), len(top)]).astype(np.int64))
    at.wrap()
    at.info["stacking"] = key
    at.info["distance"] = float(distance)
    return at


def _lattice_a(sheet: Atoms) -> float:
    """Lattice constant of a honeycomb sheet from its shortest bond (bond * sqrt(3))."""
    if len(sheet) < 2:
        raise InputError("a honeycomb sheet has at least 2 atoms")
    d = neighbor_list("d", sheet, BOND_CUTOFF)
    if len(d) == 0:
        raise InputError("no bonds shorter than 1.8 Angstrom: is this a honeycomb sheet?")
    return float(d.min() * _SQ3)
