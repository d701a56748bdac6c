"""Builders of 2D B/C/N structures: sheets, alloys, heterostructures, defects, disorder.

Conventions (the same everywhere in this module)
------------------------------------------------
* Sheets lie in the xy plane; the cell is ``a1 = (a, 0, 0)``,
  ``a2 = (-a/2, a*sqrt(3)/2, 0)`` (primitive hexagonal, 120 degrees) or
  ``a1 = (a, 0, 0)``, ``a2 = (0, a*sqrt(3), 0)`` (rectangular, 4 atoms), and
  ``a3 = (0, 0, VACUUM_C)`` with ``VACUUM_C = 20`` Angstrom.
* ``pbc = (True, True, False)``; atoms sit at ``z = VACUUM_C / 2``.
* Supercells of ``nx x ny`` cells have in-plane cell lengths ``nx*a`` and
  ``ny*a`` (hexagonal) so that a pixel spacing of ``a / k`` makes every
  hexagonal supercell exactly commensurate with the raster grid.
* Every random function takes a :class:`numpy.random.Generator` (or a seed);
  equal seeds give identical structures. :func:`generate` draws record ``i``
  from ``np.random.default_rng([seed, i, kind_id])`` only, so a resumed
  generation reproduces the records it skipped.

Lattice constants: :data:`A_GRAPHENE` and :data:`A_HBN` are the relaxed values
of the default labeller (Tersoff, BNC.tersoff: 2.492 and 2.498 Angstrom);
:data:`A_BNC` (their mean, 2.495) is used for mixed B/C/N sheets and by the
reference datasets for every kind, so that one pixel spacing fits all cells.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.geometry import find_mic
from ase.neighborlist import neighbor_list

from ..errors import ConfigError, InputError

__all__ = [
    "A_GRAPHENE",
    "A_HBN",
    "A_BNC",
    "VACUUM_C",
    "BOND_CUTOFF",
    "MIN_DISTANCE",
    "KINDS",
    "graphene",
    "hbn",
    "honeycomb",
    "bcn_alloy",
    "heterostructure",
    "bilayer",
    "vacancy",
    "divacancy",
    "stone_wales",
    "nanopore",
    "strain",
    "rattle",
    "md_snapshots",
    "min_distance",
    "coordination",
    "supercell_size",
    "generate",
]

A_GRAPHENE = 2.492  # relaxed graphene lattice constant of BNC.tersoff (C-C from Lindsay & Broido 2010)
A_HBN = 2.498  # relaxed h-BN lattice constant of BNC.tersoff (Sevik et al. 2011)
A_BNC = 2.495  # common lattice constant for mixed sheets and the reference datasets
VACUUM_C = 20.0  # length of the third (vacuum) cell vector, Angstrom
MIN_DISTANCE = 1.2  # generated structures keep atoms at least this far apart (Angstrom)
BOND_CUTOFF = 1.8  # nearest-neighbour cutoff for honeycomb sheets (bond ~1.44 A, 2nd nbr ~2.5 A)

_SQ3 = np.sqrt(3.0)


def _rng(rng: np.random.Generator | int | Sequence[int] | None) -> np.random.Generator:
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
    rng = _rng(rng)
    lo, hi = int(n_atoms[0]), int(n_atoms[1])
    per = 4 if rectangular else 2
    cands = [(i, j) for i in range(1, hi // per + 1) for j in range(1, hi // per + 1)
             if lo <= per * i * j <= hi and max(i, j) <= max_aspect * min(i, j)]
    if not cands:
        raise InputError(f"no supercell with {lo}..{hi} atoms and aspect <= {max_aspect}; widen the range")
    # uniform in the atom count first (so small and large cells are equally likely), then in shape
    counts = sorted({per * i * j for i, j in cands})
    n = counts[int(rng.integers(len(counts)))]
    shapes = [c for c in cands if per * c[0] * c[1] == n]
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
    rng = _rng(rng)
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


def _wrapped_frac_distance(frac: np.ndarray, center: np.ndarray, cell2: np.ndarray) -> np.ndarray:
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
    rng = _rng(rng)
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
            inside |= _wrapped_frac_distance(frac, center, cell2) <= r
        if not inside.any():
            inside[np.argmin(_wrapped_frac_distance(frac, rng.uniform(0, 1, size=2), cell2))] = True
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



# ----------------------------------------------------------------------------
# defects
# ----------------------------------------------------------------------------
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
    rng = _rng(rng)
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
    rng = _rng(rng)
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
    rng = _rng(rng)
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
    rng = _rng(rng)
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
    dist = _wrapped_frac_distance(frac, c, cell2)
    at = atoms.copy()
    del at[np.flatnonzero(dist <= radius)]
    if clean:
        _drop_undercoordinated(at)
    at.info["defect"] = at.info.get("defect", "") + f"nanopore{radius:.2f};"
    return at


# ----------------------------------------------------------------------------
# strain and thermal disorder
# ----------------------------------------------------------------------------
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
    rng = _rng(rng)
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
    from ase import units  # noqa: PLC0415
    from ase.md import velocitydistribution as vd  # noqa: PLC0415
    from ase.md.langevin import Langevin  # noqa: PLC0415

    rng = _rng(rng)
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


# ----------------------------------------------------------------------------
# reproducible generation
# ----------------------------------------------------------------------------
KINDS = ("graphene", "hbn", "bcn", "hetero", "defect", "mixed", "bilayer")
_KIND_ID = {k: i for i, k in enumerate(KINDS)}
MIX = {"graphene": 0.15, "hbn": 0.15, "bcn": 0.25, "hetero": 0.2, "defect": 0.25}


def _relax_positions(at: Atoms, calc: Any, fmax: float = 0.1, steps: int = 80) -> Atoms:
    from ase.optimize import FIRE  # noqa: PLC0415 - more robust than LBFGS for raw defect cuts

    if hasattr(calc, "calculator") and hasattr(calc, "label"):
        calc = calc.calculator()
    work = at.copy()
    work.calc = calc
    FIRE(work, logfile=None).run(fmax=fmax, steps=steps)
    out = work.copy()
    out.calc = None
    out.wrap()
    return out


def _disorder(at: Atoms, rng: np.random.Generator, max_strain: float, rattle_xy: tuple[float, float],
              rattle_z: tuple[float, float], md_fraction: float, calc: Any,
              md_temperature: tuple[float, float]) -> Atoms:
    if max_strain > 0:
        e = rng.uniform(-max_strain, max_strain, size=3)
        e[2] *= 0.5
        at = strain(at, *e)
    use_md = calc is not None and md_fraction > 0 and rng.uniform() < md_fraction
    if use_md:
        t = float(rng.uniform(*md_temperature))
        at = md_snapshots(at, calc, temperature_K=t, n=1, rng=rng, equilibrate=0, interval=30)[0]
    else:
        sxy = float(rng.uniform(*rattle_xy))
        sz = float(rng.uniform(*rattle_z))
        base = at
        for _ in range(10):  # redraw (deterministically) displacements that put atoms too close
            at = rattle(base, sxy, rng, stdev_z=sz)
            if min_distance(at, MIN_DISTANCE) >= MIN_DISTANCE:
                break
            sxy, sz = 0.7 * sxy, 0.7 * sz
        at.info["rattle"] = [sxy, sz]
    at.wrap()
    return at


def _build(kind: str, rng: np.random.Generator, n_atoms: tuple[int, int], a: float,
           rectangular: bool | float) -> Atoms:
    rect = bool(rng.uniform() < rectangular) if isinstance(rectangular, float) else bool(rectangular)
    if kind == "graphene":
        nx, ny = supercell_size(n_atoms, rng, rect)
        return graphene(nx, ny, a=a, rectangular=rect)
    if kind == "hbn":
        nx, ny = supercell_size(n_atoms, rng, rect)
        return hbn(nx, ny, a=a, rectangular=rect)
    if kind == "bcn":
        nx, ny = supercell_size(n_atoms, rng, rect)
        # realistic B_x C_y N_z: B and N nearly balanced (x ~ z), mostly on their h-BN sublattices;
        # fully random, unbalanced B/N-rich sheets (many N-N bonds) are unphysical and excluded
        x_c = float(rng.uniform(0.0, 1.0))
        imbalance = float(rng.uniform(-0.1, 0.1)) * (1 - x_c)
        frac = ((1 - x_c) / 2 + imbalance, x_c, (1 - x_c) / 2 - imbalance)
        ordered = bool(rng.uniform() < 0.8) or x_c < 0.7
        return bcn_alloy(nx, ny, frac, rng, a=a, rectangular=rect, bn_order=ordered)
    if kind == "hetero":
        lo = max(n_atoms[0], 32)
        nx, ny = supercell_size((lo, max(lo, n_atoms[1])), rng, rect)
        return heterostructure(nx, ny, "stripe" if rng.uniform() < 0.5 else "island", rng, a=a, rectangular=rect)
    if kind == "defect":
        lo = max(n_atoms[0], 32)
        nx, ny = supercell_size((lo, max(lo, n_atoms[1])), rng, rect)
        is_c = bool(rng.uniform() < 0.7)
        host = graphene(nx, ny, a=a, rectangular=rect) if is_c else hbn(nx, ny, a=a, rectangular=rect)
        n = len(host)
        # Stone-Wales only in graphene: in h-BN it makes B-B/N-N bonds whose BNC.tersoff angular terms are
        # so stiff that a 0.03 A rattle gives forces of ~70 eV/A
        kinds, p = (["vacancy", "divacancy", "stone_wales", "nanopore"], [0.3, 0.2, 0.3, 0.2]) if is_c else (
            ["vacancy", "divacancy", "nanopore"], [0.4, 0.3, 0.3])
        which = rng.choice(kinds, p=p)
        n_def = max(1, int(rng.poisson(n / 150.0)))
        at = host
        if which == "vacancy":
            try:
                at = vacancy(host, n=n_def, rng=rng)
            except InputError:
                at = vacancy(host, n=1, rng=rng)
        elif which == "divacancy":
            for _ in range(n_def):
                at = divacancy(at, rng)
        elif which == "stone_wales":
            for _ in range(n_def):
                at = stone_wales(at, rng)
        else:
            cell2 = np.array(host.cell)[:2, :2]
            area = abs(np.linalg.det(cell2))
            rmax = min(area / np.linalg.norm(cell2[0]), area / np.linalg.norm(cell2[1])) / 2 - 2.0
            rmax = min(rmax, 7.0)
            if rmax < 2.0:
                at = divacancy(host, rng)
            else:
                at = nanopore(host, float(rng.uniform(1.6, rmax)), rng)
        if min_distance(at) < 1.0:  # overlapping defects (e.g. two SW rotations of one bond): fall back
            at = stone_wales(host, rng)
        return at
    if kind == "bilayer":
        # two sheets (graphene, h-BN either way up, or a BN-ordered alloy) at a random registry and
        # distance; label with the "tersoff-ilp" labeller (the plain Tersoff one has no interlayer term)
        half = (max(4, n_atoms[0] // 2), max(4, n_atoms[1] // 2))
        nx, ny = supercell_size(half, rng, rect)
        sheets = []
        for _ in range(2):
            which = rng.choice(["graphene", "hbn", "bcn"], p=[0.4, 0.4, 0.2])
            if which == "graphene":
                sheets.append(graphene(nx, ny, a=a, rectangular=rect))
            elif which == "hbn":
                sheets.append(honeycomb(("B", "N") if rng.uniform() < 0.5 else ("N", "B"), nx, ny, a=a,
                                        rectangular=rect))
            else:
                x_c = float(rng.uniform(0.2, 0.8))
                sheets.append(bcn_alloy(nx, ny, ((1 - x_c) / 2, x_c, (1 - x_c) / 2), rng, a=a, rectangular=rect,
                                        bn_order=True))
        shift = rng.uniform(0.0, 1.0, 2) @ np.array(sheets[0].cell)[:2, :2]
        return bilayer(sheets[0], sheets[1], distance=float(rng.uniform(3.1, 3.9)), stacking=tuple(shift))
    raise ConfigError(f"unknown structure kind {kind!r}; valid kinds are {list(KINDS)}")


def generate(kind: str = "mixed", n: int = 1, seed: int = 0, start: int = 0, *,
             n_atoms: tuple[int, int] = (8, 200), a: float = A_BNC, rectangular: bool | float = 0.25,
             max_strain: float = 0.02, rattle_xy: tuple[float, float] = (0.0, 0.04),
             rattle_z: tuple[float, float] = (0.0, 0.08), md_fraction: float = 0.0, calc: Any = None,
             md_temperature: tuple[float, float] = (300.0, 1000.0), mix: dict[str, float] | None = None,
             relax_defects: bool = True) -> Iterator[Atoms]:
    """Yield reproducible random structures ``start .. n-1`` of a kind.

    Record ``i`` is drawn from ``np.random.default_rng([seed, i, kind_id])``
    alone, so ``generate(kind, n, seed, start=k)`` yields exactly the tail of
    ``generate(kind, n, seed)``.

    Parameters
    ----------
    kind : {"graphene", "hbn", "bcn", "hetero", "defect", "mixed", "bilayer"}
        ``"mixed"`` draws a kind per record with probabilities ``mix``
        (default :data:`MIX`: 15 % graphene, 15 % h-BN, 25 % BCN alloys, 20 %
        heterostructures, 25 % defects). ``"bilayer"``: two sheets at a
        random registry and distance (3.1-3.9 Angstrom), ``n_atoms`` counting
        both; label them with ``"tersoff-ilp"``.
    n : int
        Total number of records (the index runs from ``start`` to ``n-1``).
    seed : int
        Base seed.
    start : int
        First index to yield (resume).
    n_atoms : (int, int)
        Range of atom counts of the pristine supercell (defects remove a few).
    a : float
        Lattice constant of every kind (default :data:`A_BNC`).
    rectangular : bool or float
        Use rectangular cells; a float is the probability per record.
    max_strain : float
        In-plane strains are uniform in ``[-max_strain, max_strain]``
        (shear at half that).
    rattle_xy, rattle_z : (float, float)
        Ranges of the Gaussian displacement amplitudes (Angstrom).
    md_fraction : float
        Share of records whose thermal disorder comes from a short Langevin MD
        (30 fs from Maxwell-Boltzmann velocities) with ``calc`` instead of a
        rattle.
    calc : ase Calculator or Labeller, optional
        Needed when ``md_fraction > 0``.
    md_temperature : (float, float)
        Temperature range (K) of the MD.
    mix : dict, optional
        Kind probabilities for ``"mixed"``.
    relax_defects : bool
        With ``calc``: relax defective sheets (positions, FIRE to 0.1 eV/A,
        at most 80 steps) before strain and disorder, so that defect records
        are thermal fluctuations around the relaxed defect rather than the
        raw cut (an unrelaxed Stone-Wales bond costs ~28 eV).

    Yields
    ------
    ase.Atoms
        With ``info`` keys ``kind``, ``index``, ``seed`` (and what the
        builders add: ``defect``, ``strain``, ``rattle``...).
    """
    if kind not in _KIND_ID:
        raise ConfigError(f"unknown structure kind {kind!r}; valid kinds are {list(KINDS)}")
    if md_fraction > 0 and calc is None:
        raise ConfigError("md_fraction > 0 needs a calculator (calc=labeller or an ASE calculator)")
    if not (0 < n_atoms[0] <= n_atoms[1]):
        raise ConfigError(f"n_atoms must be a range (lo, hi) with 0 < lo <= hi, got {n_atoms!r}")
    mix = dict(MIX if mix is None else mix)
    valid = set(KINDS) - {"mixed"}
    unknown = set(mix) - valid
    if unknown:
        raise ConfigError(f"unknown kinds {sorted(unknown)} in mix; valid: {sorted(valid)}")
    names = list(mix)
    p = np.array([mix[k] for k in names], dtype=float)
    p /= p.sum()
    for i in range(int(start), int(n)):
        rng = np.random.default_rng([int(seed), i, _KIND_ID[kind]])
        sub = str(rng.choice(names, p=p)) if kind == "mixed" else kind
        at = _build(sub, rng, n_atoms, a, rectangular)
        if sub == "defect" and calc is not None and relax_defects:
            relaxed = _relax_positions(at, calc)
            if min_distance(relaxed, MIN_DISTANCE) < MIN_DISTANCE:  # collapsed: keep the raw cut
                relaxed = at
            at = relaxed
        at = _disorder(at, rng, max_strain, rattle_xy, rattle_z, md_fraction, calc, md_temperature)
        at.info.update({"kind": sub, "index": i, "seed": int(seed)})
        if "sublattice" in at.arrays:
            del at.arrays["sublattice"]
        yield at


