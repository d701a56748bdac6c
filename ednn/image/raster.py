"""Atoms -> Gaussian density images (2D) or voxel grids (3D).

Pixels run along the cell vectors: pixel ``m = (m_1, ..., m_d)`` sits at the
fractional coordinates ``m_i / n_i``, so hexagonal and other non-orthogonal
cells work and an ``n x m`` supercell image is the tiled cell image whenever the
cell lengths are whole multiples of the spacing.

Each atom contributes a normalised Gaussian
``w * (2 pi sigma^2)^(-d/2) * exp(-r^2 / (2 sigma^2))`` evaluated with the real
Cartesian distance ``r`` to every periodic image within ``cutoff * sigma``.
``w`` is 1 in its species channel (``mode="species"``) or the atomic number in
a single channel (``mode="z"``). The integral of a channel over the cell,
``image[..., c].sum() * pixel_volume(atoms, spec)``, is therefore the number of atoms of that
species (times Z in mode ``"z"``), up to the truncation at the cutoff
(``exp(-cutoff^2/2)`` relative in 2D) and the grid sampling error.

Every atom visits a fixed stencil of pixels around it. :func:`rasterize_strips`
yields the image a strip of rows (along cell vector 1) at a time, so
arbitrarily large sheets rasterize with bounded image memory. The atoms are
sorted by pixel row once (a radix sort, O(N)); each strip then reads only
the atoms whose stencil reaches it, so the cost is O(N_atoms * stencil +
pixels) for any number of strips.

Two implementations: :func:`rasterize` here (NumPy, the readable reference) and
:func:`ednn.image.raster_tf.rasterize_tf` (TensorFlow, differentiable with
respect to positions and cell).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from ase.data import chemical_symbols

from ..errors import GridError, InputError, SpeciesError
from .grid import GridSpec

__all__ = [
    "Prepared",
    "prepare",
    "image_shape",
    "pixel_volume",
    "rasterize",
    "rasterize_strips",
]

_CHUNK_ENTRIES = 1 << 17  # atoms x stencil entries evaluated at once (fits in cache)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A validated structure, reduced to what rasterization needs.

    Holds references to the structure's own position and number arrays (no
    per-atom copies), so that memory stays O(chunk) while rasterizing.

    Attributes
    ----------
    lattice : (d, d) array
        Rows are the periodic cell vectors (Cartesian; for 2D their xy part).
    positions : (N, 3) array
        Cartesian positions (a view of the structure's array).
    numbers : (N,) int array
    lut_channel, lut_weight : arrays indexed by atomic number
        Channel index and Gaussian weight (1, or Z in mode "z") of each element.
    shape : tuple of int
        Pixels along each periodic cell vector.
    """

    lattice: np.ndarray
    positions: np.ndarray
    numbers: np.ndarray
    lut_channel: np.ndarray
    lut_weight: np.ndarray
    shape: tuple[int, ...]
    z_ref: float = 0.0

    @property
    def dim(self) -> int:
        return len(self.shape)

    def height(self, sl: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Height of atoms ``sl`` above the structure's mean plane (Angstrom)."""
        return self.positions[sl, 2] - self.z_ref

    @property
    def n_atoms(self) -> int:
        return len(self.numbers)

    def frac(self, sl: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Fractional coordinates of atoms ``sl`` (a slice or an index array), wrapped into [0, 1)."""
        d = self.dim
        f = self.positions[sl, :d] @ np.linalg.inv(self.lattice)
        f -= np.floor(f)
        f[f >= 1.0] = 0.0  # -1e-17 wraps to 1.0 in floating point
        return f

    def channel(self, sl: slice | np.ndarray = slice(None)) -> np.ndarray:
        return self.lut_channel[self.numbers[sl]]

    def weight(self, sl: slice | np.ndarray = slice(None)) -> np.ndarray:
        return self.lut_weight[self.numbers[sl]]


_VALIDATE_CHUNK = 1 << 16
_PASS_ATOMS = 1 << 16  # atoms read per pass over the structure in rasterize_strips


def _structure_arrays(atoms: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """positions, numbers, cell, pbc from an ase.Atoms, a dict or a 4-tuple."""
    if hasattr(atoms, "get_positions") and hasattr(atoms, "cell"):
        return (
            np.asarray(atoms.positions, dtype=np.float64),  # the Atoms' own array, not a copy
            np.asarray(atoms.numbers),
            np.asarray(atoms.cell[:], dtype=np.float64),
            np.asarray(atoms.pbc, dtype=bool),
        )
    if isinstance(atoms, dict):
        try:
            atoms = (atoms["positions"], atoms["numbers"], atoms["cell"], atoms.get("pbc", True))
        except KeyError as e:
            raise InputError(f"structure dict lacks {e}; give positions, numbers, cell (and pbc)") from e
    if isinstance(atoms, (tuple, list)) and len(atoms) == 4:
        pos, num, cell, pbc = atoms
        pos = np.asarray(pos, dtype=np.float64)
        num = np.asarray(num, dtype=np.int64).reshape(-1)
        cell = np.asarray(cell, dtype=np.float64)
        if cell.shape == (3,):
            cell = np.diag(cell)
        pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
        if pos.ndim != 2 or pos.shape[1] != 3 or (len(pos) and pos.shape[0] != num.shape[0]):
            raise InputError(
                f"positions must have shape (N, 3) matching numbers (N,), got {pos.shape} and {num.shape}"
            )
        if cell.shape != (3, 3):
            raise InputError(f"cell must have shape (3, 3), got {cell.shape}")
        return pos, num, cell, pbc
    raise InputError(
        f"cannot rasterize a {type(atoms).__name__}; give an ase.Atoms or (positions, numbers, cell, pbc)"
    )


def _height(cell: np.ndarray, axis: int) -> float:
    """The cell's thickness along cell vector ``axis``: its distance between the two faces that vector spans."""
    a, b = (cell[i] for i in range(3) if i != axis)
    n = np.cross(a, b)
    return float(abs(np.dot(cell[axis], n)) / max(np.linalg.norm(n), 1e-300))


def _check_lattice(cell: np.ndarray, pbc: np.ndarray, z_extent: float, spec: GridSpec) -> np.ndarray:
    if not np.all(np.isfinite(cell)):
        raise InputError("cell contains NaN or inf; give a finite cell in Angstrom")
    lengths = np.linalg.norm(cell, axis=1)
    d = spec.dim
    if d == 2:
        if not (pbc[0] and pbc[1]):
            raise InputError(
                f"a 2D grid needs periodic in-plane cell vectors 1 and 2, but pbc={tuple(bool(p) for p in pbc)}; "
                "set atoms.pbc = (True, True, False)"
            )
        for i in (0, 1):
            if lengths[i] < 1e-8:
                raise InputError(f"cell vector {i + 1} is zero: 2D systems need two in-plane periodic vectors")
            if abs(cell[i, 2]) > 1e-6 * lengths[i]:
                raise InputError(
                    f"cell vector {i + 1} = {cell[i].tolist()} is not in the xy plane: 2D grids need the sheet in "
                    "the xy plane with vacuum along z (rotate the structure, e.g. ase.build.rotate)"
                )
        lat = cell[:2, :2].copy()
        area = abs(np.linalg.det(lat))
        if area < 1e-6 * lengths[0] * lengths[1]:
            raise InputError("cell vectors 1 and 2 are parallel (degenerate cell): the in-plane cell has no area")
        if pbc[2]:
            if lengths[2] < 1e-8:
                raise InputError(
                    "cell vector 3 is zero but pbc[2] is True: 2D systems need vacuum along z; "
                    "set atoms.pbc = (True, True, False) or add vacuum with atoms.center(vacuum=10, axis=2)"
                )
            vacuum = _height(cell, 2) - z_extent
            if vacuum < spec.min_vacuum:
                raise InputError(
                    f"2D system without vacuum: only {vacuum:.2f} A between periodic images along z "
                    f"(need >= {spec.min_vacuum} A). For a bulk crystal use a 3D grid (dim=3); for a sheet add "
                    "vacuum with atoms.center(vacuum=10, axis=2) or set pbc=(True, True, False)"
                )
        return lat
    if not np.all(pbc):
        # a sheet (periodic in-plane, vacuum along z) in its box: the 3D grid fills the box, periodic along z as
        # in a DFT slab calculation, which is exact once the vacuum separates the periodic images
        in_plane = max(abs(cell[0, 2]), abs(cell[1, 2])) <= 1e-6 * max(lengths[0], lengths[1])
        slab = bool(pbc[0] and pbc[1] and not pbc[2]) and lengths[2] > 1e-8 and in_plane
        vacuum = _height(cell, 2) - z_extent if slab else 0.0
        if not slab or vacuum < spec.min_vacuum:
            raise InputError(
                f"a 3D grid needs a cell periodic in all three directions, or a sheet (pbc=(True, True, False)) "
                f"in a box with >= {spec.min_vacuum} A of vacuum along z (grid.min_vacuum), but "
                f"pbc={tuple(bool(p) for p in pbc)}"
                + (f" and only {vacuum:.2f} A of vacuum" if slab else "")
                + "; for a 2D material's energy use a 2D grid (dim=2), for its per-voxel fields give the box "
                "with vacuum (atoms.center(vacuum=10, axis=2))"
            )
    for i in range(3):
        if lengths[i] < 1e-8:
            raise InputError(
                f"cell vector {i + 1} is zero: 3D grids need three periodic cell vectors"
                + (" (2D systems need vacuum along z and a 2D grid, dim=2)" if i == 2 else "")
            )
    vol = abs(np.linalg.det(cell))
    if vol < 1e-6 * np.prod(lengths):
        raise InputError("cell vectors are linearly dependent (degenerate cell): the cell has no volume")
    return cell.copy()


def prepare(atoms: Any, spec: GridSpec) -> Prepared:
    """Validate a structure against a grid specification.

    Parameters
    ----------
    atoms : ase.Atoms or (positions, numbers, cell, pbc)
    spec : GridSpec

    Raises
    ------
    InputError, SpeciesError
        With a message naming the problem and the fix.
    """
    pos, num, cell, pbc = _structure_arrays(atoms)
    if len(num) == 0:
        raise InputError("structure is empty (no atoms); nothing to rasterize")
    lut_channel = np.full(max(int(num.max()) + 1, max(spec.species) + 1), -1, dtype=np.int64)
    for i, z in enumerate(spec.species):
        lut_channel[z] = i if spec.mode == "species" else 0
    lut_weight = np.ones(len(lut_channel)) if spec.mode == "species" else np.arange(len(lut_channel), dtype=np.float64)
    zmin, zmax, zsum = np.inf, -np.inf, 0.0
    for c0 in range(0, len(num), _VALIDATE_CHUNK):  # O(chunk) memory, however large the structure
        sl = slice(c0, c0 + _VALIDATE_CHUNK)
        bad = np.flatnonzero(~np.all(np.isfinite(pos[sl]), axis=1))
        if bad.size:
            bad += c0
            raise InputError(
                f"positions of atom(s) {bad[:10].tolist()}{'...' if bad.size > 10 else ''} are NaN or inf; "
                "fix the structure before rasterizing"
            )
        nz = num[sl]
        if nz.min() < 0 or np.any(lut_channel[nz] < 0):
            unknown = sorted(set(np.unique(num).tolist()) - set(spec.species))
            names = ", ".join(
                f"{chemical_symbols[z] if 0 < z < len(chemical_symbols) else '?'} (Z={z})" for z in unknown
            )
            raise SpeciesError(
                f"element(s) {names} not in the grid's species list {list(spec.symbols)}; "
                "remove them or use a grid/model whose species include them"
            )
        zmin, zmax = min(zmin, pos[sl, 2].min()), max(zmax, pos[sl, 2].max())
        zsum += float(pos[sl, 2].sum())
    lat = _check_lattice(cell, pbc, float(zmax - zmin), spec)
    shape = spec.pixels_along(np.linalg.norm(lat, axis=1))
    return Prepared(
        lattice=lat, positions=pos, numbers=num, lut_channel=lut_channel, lut_weight=lut_weight, shape=shape,
        z_ref=zsum / len(num),
    )


def image_shape(atoms: Any, spec: GridSpec) -> tuple[int, ...]:
    """Shape ``(n_1, ..., n_d, channels)`` of the image of ``atoms``."""
    return prepare(atoms, spec).shape + (spec.n_channels,)


def pixel_volume(atoms_or_prepared: Any, spec: GridSpec) -> float:
    """Area (2D, A^2) or volume (3D, A^3) of one pixel."""
    p = atoms_or_prepared if isinstance(atoms_or_prepared, Prepared) else prepare(atoms_or_prepared, spec)
    return float(abs(np.linalg.det(p.lattice)) / np.prod(p.shape))


def _stencil(lattice: np.ndarray, shape: tuple[int, ...], radius: float) -> np.ndarray:
    """Integer pixel offsets that can lie within ``radius`` of an atom in a pixel.

    An atom at fractional pixel position ``b + phi`` (``phi`` in [0, 1)^d)
    reaches pixel ``b + o``; we keep the offsets ``o`` for which some ``phi``
    gives a distance <= radius (a safe superset by the triangle inequality).
    """
    n = np.asarray(shape, dtype=np.float64)
    inv = np.linalg.inv(lattice)
    reach = radius * np.linalg.norm(inv, axis=0) * n  # extent in pixels along each axis
    k = np.ceil(reach).astype(int)
    ranges = [np.arange(-ki, ki + 2) for ki in k]
    off = np.array(list(itertools.product(*ranges)), dtype=np.int64)
    corners = np.array(list(itertools.product((0.0, 1.0), repeat=len(shape))))
    half_diag = np.max(np.linalg.norm(((corners - 0.5) / n) @ lattice, axis=1))
    centre = np.linalg.norm(((off - 0.5) / n) @ lattice, axis=1)
    return off[centre - half_diag <= radius + 1e-12]


def _norm(spec: GridSpec) -> float:
    return float((2.0 * np.pi * spec.sigma**2) ** (-spec.dim / 2.0))


def _bin_by_row(p: Prepared, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Atom indices sorted by the pixel row (along cell vector 1) of their base pixel, and row starts.

    ``order[starts[r]:starts[r + 1]]`` are the atoms whose base pixel is in row
    ``r``, in index order (so sums are deterministic). A counting sort in
    chunks of atoms, O(N) time: per atom, a 2-byte row key (4 past 65,536
    rows) and a 4-byte index (8 past 2^31 atoms); no sort of all N keys and no
    per-atom float arrays of size N.
    """
    N, n0 = p.n_atoms, int(n[0])
    rows = np.empty(N, dtype=np.uint16 if n0 <= 1 << 16 else np.int32)
    counts = np.zeros(n0, dtype=np.int64)
    for a0 in range(0, N, _PASS_ATOMS):
        sl = slice(a0, a0 + _PASS_ATOMS)
        r = np.minimum(np.floor(p.frac(sl)[:, 0] * n[0]).astype(np.int64), n0 - 1)
        rows[sl] = r
        counts += np.bincount(r, minlength=n0)
    starts = np.zeros(n0 + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    order = np.empty(N, dtype=np.int32 if N < 1 << 31 else np.int64)
    cursor = starts[:-1].copy()  # next free slot of each row
    for a0 in range(0, N, _PASS_ATOMS):
        r = rows[a0 : a0 + _PASS_ATOMS].astype(np.int64)
        o = np.argsort(r, kind="stable")  # this chunk's atoms by row, index order within a row
        rs = r[o]
        c = np.bincount(rs, minlength=n0)
        first = np.cumsum(c) - c  # position in the chunk's sorted list where each row begins
        order[cursor[rs] + (np.arange(len(rs)) - first[rs])] = o + a0
        cursor += c
    return order, starts


def element_counts(numbers: np.ndarray, minlength: int = 119) -> np.ndarray:
    """Atoms of each atomic number, ``bincount`` in chunks (no int64 copy of a huge uint8 array)."""
    numbers = np.asarray(numbers).ravel()
    out = np.zeros(minlength, dtype=np.int64)
    for a0 in range(0, len(numbers), _PASS_ATOMS * 16):
        part = numbers[a0 : a0 + _PASS_ATOMS * 16]
        if part.min() < 0 or part.max() >= minlength:
            raise SpeciesError(f"atomic numbers must be in 0..{minlength - 1}; got {int(part.min())}..{int(part.max())}")
        c = np.bincount(part, minlength=minlength)
        out += c
    return out


def atoms_reaching_rows(order: np.ndarray, starts: np.ndarray, row0: int, h: int, o0min: int,
                        o0max: int) -> np.ndarray:
    """Indices of the atoms whose stencil (row offsets ``o0min .. o0max``) reaches image rows
    ``row0 .. row0 + h - 1`` (mod n_1), from :func:`_bin_by_row`'s ``order`` and ``starts``; each atom once.

    Their base rows are ``row0 - o0max .. row0 + h - 1 - o0min`` (mod n_1), a span of at most n_1 rows.
    """
    n0 = len(starts) - 1
    span = h + o0max - o0min
    if span >= n0:
        return order
    lo = (row0 - o0max) % n0
    hi = lo + span  # exclusive, may exceed n0 (wrap)
    sel = order[starts[lo] : starts[min(hi, n0)]]
    if hi > n0:
        sel = np.concatenate([sel, order[: starts[hi - n0]]])
    return sel


def rasterize_strips(
    atoms: Any,
    spec: GridSpec,
    rows_per_strip: int | None = None,
    dtype: Any = np.float32,
    prepared: Prepared | None = None,
    ranges: Sequence[tuple[int, int]] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield the image strip by strip along cell vector 1.

    Parameters
    ----------
    atoms : ase.Atoms or (positions, numbers, cell, pbc)
    spec : GridSpec
    rows_per_strip : int, optional
        Pixel rows (along cell vector 1) per strip; by default about 2^22
        values (pixels x channels) per strip.
    dtype : numpy dtype of the yielded strips.
    ranges : sequence of (start, stop), optional
        Only these row ranges (``0 <= start < stop <= n_1``), in this order,
        each cut into strips of ``rows_per_strip`` (default: all rows). The
        atoms are binned by row once per call, so any number of ranges costs
        O(N + their pixels).

    Yields
    ------
    (start_row, strip)
        ``strip`` has shape ``(rows, n_2[, n_3], channels)``; concatenating
        the strips along axis 0 gives :func:`rasterize`'s image.
    """
    p = prepared if prepared is not None else prepare(atoms, spec)
    shape = p.shape
    n = np.asarray(shape)
    n0 = int(shape[0])
    rest = tuple(shape[1:])
    n_rest = int(np.prod(rest)) if rest else 1
    C = spec.n_channels
    C0, K = spec.n_density_channels, spec.heights
    if rows_per_strip is None:
        rows_per_strip = max(1, (1 << 22) // max(1, n_rest * C))
    if rows_per_strip < 1:
        raise GridError(f"rows_per_strip must be >= 1, got {rows_per_strip}")

    off = _stencil(p.lattice, shape, spec.radius)
    off_cart = (off / n) @ p.lattice  # (S, d)
    off_sq = np.einsum("sd,sd->s", off_cart, off_cart)
    S = len(off)
    R2 = spec.radius**2
    inv2s2 = 0.5 / spec.sigma**2
    norm = _norm(spec)
    o0min, o0max = int(off[:, 0].min()), int(off[:, 0].max())

    chunk = max(1, _CHUNK_ENTRIES // S)
    order, starts = _bin_by_row(p, n)  # atoms sorted by their base row, once: O(N)

    ranges = [(0, n0)] if ranges is None else [(int(a), int(b)) for a, b in ranges]
    for a, b in ranges:
        if not 0 <= a < b <= n0:
            raise GridError(f"row range ({a}, {b}) is not within the image's {n0} rows")
    for r0, r1 in ((r0, min(b, r0 + rows_per_strip)) for a, b in ranges for r0 in range(a, b, rows_per_strip)):
        h = r1 - r0
        acc = np.zeros(h * n_rest * C, dtype=np.float64)
        sel = atoms_reaching_rows(order, starts, r0, h, o0min, o0max)
        # only this strip's atoms, in chunks sorted by row (each chunk touches a band of the strip)
        for c0 in range(0, len(sel), chunk):
            idx = sel[c0 : c0 + chunk]
            scaled = p.frac(idx) * n
            base = np.minimum(np.floor(scaled).astype(np.int64), n - 1)
            ch, w_at = p.channel(idx), p.weight(idx)
            phi = scaled - base  # (M, d) in [0, 1]
            phi_cart = (phi / n) @ p.lattice  # (M, d)
            r2 = off_sq[None, :] - 2.0 * (phi_cart @ off_cart.T) + np.einsum("md,md->m", phi_cart, phi_cart)[:, None]
            m0 = (base[:, 0][:, None] + off[None, :, 0]) % n0
            keep = (r2 <= R2) & (m0 >= r0) & (m0 < r1)
            ai, si = np.nonzero(keep)
            if ai.size == 0:
                continue
            vals = np.exp(-r2[ai, si] * inv2s2) * (norm * w_at[ai])
            flat = (m0[ai, si] - r0) * n_rest
            for j in range(1, len(shape)):
                mj = (base[ai, j] + off[si, j]) % shape[j]
                flat = flat + mj * int(np.prod(shape[j + 1 :]))
            flat = flat * C + ch[ai]
            lo_flat = int(flat.min())
            band = np.bincount(flat - lo_flat, weights=vals)
            acc[lo_flat : lo_flat + band.size] += band
            if K:  # height-weighted copies of the density channels
                hz = p.height(idx)[ai] / spec.sigma
                hk = np.ones_like(hz)
                for k in range(1, K + 1):
                    hk = hk * hz
                    band = np.bincount(flat + k * C0 - lo_flat, weights=vals * hk)
                    acc[lo_flat : lo_flat + band.size] += band
        yield r0, acc.reshape((h,) + rest + (C,)).astype(dtype, copy=False)


def rasterize(atoms: Any, spec: GridSpec, dtype: Any = np.float32) -> np.ndarray:
    """Rasterize a structure into an image (NumPy reference implementation).

    Parameters
    ----------
    atoms : ase.Atoms or (positions, numbers, cell, pbc)
    spec : GridSpec
    dtype : numpy dtype of the result (accumulation is in float64).

    Returns
    -------
    image : ndarray, shape ``(n_1, ..., n_d, channels)``
        Density in atoms per A^d (times Z in mode "z").

    Examples
    --------
    >>> from ase.build import graphene
    >>> from ednn import GridSpec, rasterize
    >>> img = rasterize(graphene(a=2.46, vacuum=None), GridSpec(species=("C",)))
    """
    p = prepare(atoms, spec)
    out = np.empty(p.shape + (spec.n_channels,), dtype=dtype)
    for r0, strip in rasterize_strips(None, spec, dtype=dtype, prepared=p):
        out[r0 : r0 + strip.shape[0]] = strip
    return out
