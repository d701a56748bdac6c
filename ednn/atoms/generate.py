"""Reproducible random structures of a kind (:func:`generate`), with relaxed defects and disorder.

:func:`generate` draws record ``i`` from ``np.random.default_rng([seed, i, kind_id])``
only, so a resumed generation reproduces the records it skipped. Its options are
checked up front by :func:`check_generate_args` (also used by ``ednn gen`` before it
creates any file).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.optimize import FIRE

from ..errors import ConfigError, InputError
from .build import (
    A_BNC,
    MIN_DISTANCE,
    bcn_alloy,
    bilayer,
    graphene,
    hbn,
    heterostructure,
    honeycomb,
    supercell_counts,
    supercell_size,
)
from .defects import divacancy, nanopore, stone_wales, vacancy
from .disorder import md_snapshots, min_distance, rattle, strain

__all__ = ["KINDS", "MIX", "GENERATE_OPTIONS", "generate", "check_generate_args"]

KINDS = ("graphene", "hbn", "bcn", "hetero", "defect", "mixed", "bilayer")
_KIND_ID = {k: i for i, k in enumerate(KINDS)}
MIX = {"graphene": 0.15, "hbn": 0.15, "bcn": 0.25, "hetero": 0.2, "defect": 0.25}

#: keyword options of :func:`generate` with their defaults
GENERATE_OPTIONS: dict[str, Any] = {
    "n_atoms": (8, 200),
    "a": A_BNC,
    "rectangular": 0.25,
    "max_strain": 0.02,
    "rattle_xy": (0.0, 0.04),
    "rattle_z": (0.0, 0.08),
    "md_fraction": 0.0,
    "calc": None,
    "md_temperature": (300.0, 1000.0),
    "mix": None,
    "relax_defects": True,
}


# ----------------------------------------------------------------------------
# option checks
# ----------------------------------------------------------------------------
def _is_number(v: Any) -> bool:
    return not isinstance(v, bool | np.bool_) and isinstance(v, int | float | np.integer | np.floating)


def _number(name: str, v: Any, lo: float, hi: float, what: str, lo_open: bool = False, hi_open: bool = False
            ) -> float:
    ok = _is_number(v) and math.isfinite(v)
    ok = ok and ((v > lo) if lo_open else (v >= lo)) and ((v < hi) if hi_open else (v <= hi))
    if not ok:
        span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ConfigError(f"generate option {name}={v!r} must be a number in {span}: {what}")
    return float(v)


def _pair(name: str, v: Any, lo: float, what: str, integer: bool = False) -> tuple[float, float]:
    ok = isinstance(v, Sequence) and not isinstance(v, str) and len(v) == 2 and all(_is_number(x) for x in v)
    if ok:
        ok = all(math.isfinite(x) for x in v) and lo <= v[0] <= v[1]
        ok = ok and (not integer or all(int(x) == x for x in v))
    if not ok:
        kind = "integers" if integer else "numbers"
        raise ConfigError(f"generate option {name}={v!r} must be two {kind} [lo, hi] with {lo:g} <= lo <= hi: {what}")
    return (int(v[0]), int(v[1])) if integer else (float(v[0]), float(v[1]))


def _cell_range(kind: str, n_atoms: tuple[int, int]) -> tuple[int, int]:
    """Atom-count range of the pristine supercell that :func:`_build` draws for ``kind``."""
    if kind in ("hetero", "defect"):  # room for domains and isolated defects
        lo = max(n_atoms[0], 32)
        return lo, max(lo, n_atoms[1])
    if kind == "bilayer":  # n_atoms counts both sheets
        return max(4, n_atoms[0] // 2), max(4, n_atoms[1] // 2)
    return n_atoms


def check_generate_args(kind: str = "mixed", n: int = 1, seed: int = 0, start: int = 0, **options: Any
                        ) -> dict[str, Any]:
    """Check the arguments of :func:`generate` and return its options with defaults filled in.

    Every problem raises :class:`~ednn.errors.ConfigError` naming the option, the
    value and what is valid: unknown option names (listing the valid ones), values
    of the wrong type or range, a seed below 0, and atom-count ranges that hold no
    supercell of a kind that may be drawn.

    Returns
    -------
    dict
        All keyword options of :func:`generate` (:data:`GENERATE_OPTIONS`).
    """
    if kind not in _KIND_ID:
        raise ConfigError(f"unknown structure kind {kind!r}; valid kinds are {list(KINDS)}")
    unknown = sorted(set(options) - set(GENERATE_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown generate option(s) {unknown}; valid options are {sorted(GENERATE_OPTIONS)}")
    for name, v, low in (("n", n, 0), ("seed", seed, 0), ("start", start, 0)):
        if not _is_number(v) or int(v) != v or v < low:
            raise ConfigError(f"{name}={v!r} must be an integer >= {low}")
    o = {**GENERATE_OPTIONS, **options}
    o["n_atoms"] = _pair("n_atoms", o["n_atoms"], 1, "the atom-count range of the cells, e.g. [8, 200]", True)
    o["a"] = _number("a", o["a"], 1.0, 5.0, "the lattice constant in Angstrom, e.g. 2.495", lo_open=True)
    r = o["rectangular"]
    if not isinstance(r, bool | np.bool_):
        r = _number("rectangular", r, 0.0, 1.0, "true, false, or the probability of a rectangular cell")
        r = bool(r) if r in (0.0, 1.0) and isinstance(o["rectangular"], int | np.integer) else r
    o["rectangular"] = r
    o["max_strain"] = _number("max_strain", o["max_strain"], 0.0, 0.5, "the largest in-plane strain, 0.02 = 2 %",
                              hi_open=True)
    o["rattle_xy"] = _pair("rattle_xy", o["rattle_xy"], 0.0, "in-plane displacement amplitudes (Angstrom)")
    o["rattle_z"] = _pair("rattle_z", o["rattle_z"], 0.0, "out-of-plane displacement amplitudes (Angstrom)")
    o["md_fraction"] = _number("md_fraction", o["md_fraction"], 0.0, 1.0, "the share of records disordered by MD")
    o["md_temperature"] = _pair("md_temperature", o["md_temperature"], 0.0, "the MD temperature range (K)")
    if not isinstance(o["relax_defects"], bool | np.bool_):
        raise ConfigError(f"generate option relax_defects={o['relax_defects']!r} must be true or false")
    if o["md_fraction"] > 0 and o["calc"] is None:
        raise ConfigError("md_fraction > 0 needs a calculator (calc=labeller or an ASE calculator)")
    mix = dict(MIX if o["mix"] is None else o["mix"]) if isinstance(o["mix"], dict | None) else None
    valid = set(KINDS) - {"mixed"}
    if (mix is None or set(mix) - valid or sum(mix.values()) <= 0
            or not all(_is_number(p) and math.isfinite(p) and p >= 0 for p in mix.values())):
        raise ConfigError(f"generate option mix={o['mix']!r} must map kinds {sorted(valid)} to weights >= 0 "
                          "(not all 0), e.g. {\"graphene\": 1, \"defect\": 1}")
    o["mix"] = mix
    if isinstance(r, bool | np.bool_):
        shapes = [bool(r)]
    else:  # a probability: rng.uniform() < r is never true for 0 and always for 1
        shapes = [False] if r == 0.0 else [True] if r == 1.0 else [False, True]
    for sub in ([k for k, p in mix.items() if p > 0] if kind == "mixed" else [kind]):
        lo, hi = _cell_range(sub, o["n_atoms"])
        for rect in shapes:
            if not supercell_counts(lo, hi, 4 if rect else 2, 2.0).size:
                raise ConfigError(
                    f"n_atoms={list(o['n_atoms'])}: no {'rectangular' if rect else 'hexagonal'} {sub} supercell "
                    f"has {lo}..{hi} atoms ({4 if rect else 2} atoms per cell, aspect <= 2); widen the range, "
                    "e.g. [8, 200]"
                )
    return o


# ----------------------------------------------------------------------------
# one record
# ----------------------------------------------------------------------------
def _relax_positions(at: Atoms, calc: Any, fmax: float = 0.1, steps: int = 80) -> Atoms:
    """Relax positions with FIRE (more robust than LBFGS for raw defect cuts)."""
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
    cells = _cell_range(kind, n_atoms)
    if kind == "graphene":
        nx, ny = supercell_size(cells, rng, rect)
        return graphene(nx, ny, a=a, rectangular=rect)
    if kind == "hbn":
        nx, ny = supercell_size(cells, rng, rect)
        return hbn(nx, ny, a=a, rectangular=rect)
    if kind == "bcn":
        nx, ny = supercell_size(cells, rng, rect)
        # realistic B_x C_y N_z: B and N nearly balanced (x ~ z), mostly on their h-BN sublattices;
        # fully random, unbalanced B/N-rich sheets (many N-N bonds) are unphysical and excluded
        x_c = float(rng.uniform(0.0, 1.0))
        imbalance = float(rng.uniform(-0.1, 0.1)) * (1 - x_c)
        frac = ((1 - x_c) / 2 + imbalance, x_c, (1 - x_c) / 2 - imbalance)
        ordered = bool(rng.uniform() < 0.8) or x_c < 0.7
        return bcn_alloy(nx, ny, frac, rng, a=a, rectangular=rect, bn_order=ordered)
    if kind == "hetero":
        nx, ny = supercell_size(cells, rng, rect)
        return heterostructure(nx, ny, "stripe" if rng.uniform() < 0.5 else "island", rng, a=a, rectangular=rect)
    if kind == "defect":
        nx, ny = supercell_size(cells, rng, rect)
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
        nx, ny = supercell_size(cells, rng, rect)
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


# ----------------------------------------------------------------------------
# reproducible generation
# ----------------------------------------------------------------------------
def generate(kind: str = "mixed", n: int = 1, seed: int = 0, start: int = 0, *,
             n_atoms: tuple[int, int] = (8, 200), a: float = A_BNC, rectangular: bool | float = 0.25,
             max_strain: float = 0.02, rattle_xy: tuple[float, float] = (0.0, 0.04),
             rattle_z: tuple[float, float] = (0.0, 0.08), md_fraction: float = 0.0, calc: Any = None,
             md_temperature: tuple[float, float] = (300.0, 1000.0), mix: dict[str, float] | None = None,
             relax_defects: bool = True) -> Iterator[Atoms]:
    """Reproducible random structures ``start .. n-1`` of a kind (an iterator; arguments checked at the call).

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
        Needed when ``md_fraction > 0``; relaxes the defects (see ``relax_defects``).
    md_temperature : (float, float)
        Temperature range (K) of the MD.
    mix : dict, optional
        Kind probabilities for ``"mixed"``.
    relax_defects : bool
        With ``calc`` (whatever ``md_fraction`` is): relax defective sheets
        (positions, FIRE to 0.1 eV/A, at most 80 steps) before strain and
        disorder, so that defect records are thermal fluctuations around the
        relaxed defect rather than the raw cut (an unrelaxed Stone-Wales bond
        costs ~28 eV). Without ``calc`` defects stay unrelaxed.

    Returns
    -------
    Iterator of ase.Atoms
        With ``info`` keys ``kind``, ``index``, ``seed`` (and what the
        builders add: ``defect``, ``strain``, ``rattle``...); defect records
        carry ``relaxed`` (True when the relaxed structure was used).

    Raises
    ------
    ConfigError
        At the call, before any record is built, for any bad argument
        (see :func:`check_generate_args`).
    """
    o = check_generate_args(kind, n, seed, start, n_atoms=n_atoms, a=a, rectangular=rectangular,
                            max_strain=max_strain, rattle_xy=rattle_xy, rattle_z=rattle_z, md_fraction=md_fraction,
                            calc=calc, md_temperature=md_temperature, mix=mix, relax_defects=relax_defects)
    return _records(kind, int(n), int(seed), int(start), o)


def _records(kind: str, n: int, seed: int, start: int, o: dict[str, Any]) -> Iterator[Atoms]:
    """The records of :func:`generate` (options checked by :func:`check_generate_args`)."""
    names = list(o["mix"])
    p = np.array([o["mix"][k] for k in names], dtype=float)
    p /= p.sum()
    calc = o["calc"]
    for i in range(start, n):
        rng = np.random.default_rng([seed, i, _KIND_ID[kind]])
        sub = str(rng.choice(names, p=p)) if kind == "mixed" else kind
        at = _build(sub, rng, o["n_atoms"], o["a"], o["rectangular"])
        if sub == "defect":  # relaxed whenever there is a calculator, whatever md_fraction is
            relaxed = None
            if calc is not None and o["relax_defects"]:
                relaxed = _relax_positions(at, calc)
                if min_distance(relaxed, MIN_DISTANCE) < MIN_DISTANCE:  # collapsed: keep the raw cut
                    relaxed = None
            at = at if relaxed is None else relaxed
            at.info["relaxed"] = relaxed is not None
        at = _disorder(at, rng, o["max_strain"], o["rattle_xy"], o["rattle_z"], o["md_fraction"], calc,
                       o["md_temperature"])
        at.info.update({"kind": sub, "index": i, "seed": seed})
        if "sublattice" in at.arrays:
            del at.arrays["sublattice"]
        yield at
