"""Atom-centred density projections: the Gaussian species density seen from each atom's own frame.

The voxel image samples the atoms' Gaussian densities on a pixel lattice fixed to the cell, so its energy
depends (weakly, but measurably) on where that lattice sits and how it is oriented: sub-pixel translations,
equivalent cells and rotations change it (issue 11; ``experiments/peers.py`` and
``experiments/voxel_descriptors.py`` measured it). Here the same neighbour density is expanded around every
atom instead, in a radial x angular basis whose invariants do not depend on the frame:

* radial: ``g_n(r) = exp(-((r - mu_n) / w)^2) f_c(r)`` with ``n_radial`` centres ``mu_n`` evenly spaced
  on ``[r_min, cutoff)``, width ``w`` their spacing, and the smooth cutoff ``f_c = (1 - (r/r_c)^2)^3``
  (value, slope and curvature vanish at ``r_c``: forces are continuous when a neighbour crosses it);
* angular: the moments of the unit vectors ``u`` up to order ``l_max``,
  ``A[a, n, l] = sum_{j in species a} g_n(r_ij) u_ij^{(x) l}``, stored as the weighted monomials
  ``sqrt(l! / (p! q! s!)) u_x^p u_y^q u_z^s`` so that a plain dot product is the full tensor
  contraction ``<A[a,n,l], A[b,m,l]> = sum_jk g_n(r_ij) g_m(r_ik) (u_ij . u_ik)^l``;
* descriptor of atom ``i``: the two-body terms ``A[a, n, 0]`` and every contraction above with
  ``(a, n) <= (b, m)`` and ``l = 0 .. l_max`` (powers of cos(theta_jik) up to ``l_max`` span the same space
  as the Legendre polynomials of a SOAP power spectrum with the same ``l_max``).

Every invariance of the physics is exact by construction: translations (only differences of positions
enter), rotations and mirrors (only lengths and dot products), permutations (sums over neighbours), the
choice of periodic cell (the neighbour list sees the same vectors in any equivalent cell), and
extensivity (a sum of per-atom terms). :func:`neighbour_inputs` builds the neighbour list in NumPy;
:func:`descriptors_tf` is differentiable with respect to positions and a strain (forces, stress).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import InputError, SpeciesError
from ..image.raster import _structure_arrays

__all__ = ["AtomicBasis", "neighbour_inputs", "batch_inputs", "centre_chunk", "input_signature", "descriptors_tf",
           "descriptors"]


@dataclass(frozen=True)
class AtomicBasis:
    """The contract of an atom-centred model: species and basis, saved with it and reused at prediction."""

    species: tuple[int, ...]
    cutoff: float = 4.0
    n_radial: int = 8
    l_max: int = 6
    r_min: float = 0.8
    radial_width: float | None = 0.8  # A (chosen in experiments/atomic_basis.py); None: the centres' spacing

    def __post_init__(self):
        if not self.species or len(set(self.species)) != len(self.species):
            raise InputError(f"species must be distinct atomic numbers, got {self.species}")
        object.__setattr__(self, "species", tuple(int(z) for z in self.species))
        if not (0 < self.r_min < self.cutoff):
            raise InputError(f"need 0 < r_min < cutoff, got r_min={self.r_min}, cutoff={self.cutoff}")
        if self.n_radial < 1 or self.l_max < 0:
            raise InputError(f"need n_radial >= 1 and l_max >= 0, got {self.n_radial}, {self.l_max}")

    # -------------------------------------------------------------- sizes
    @property
    def n_species(self) -> int:
        return len(self.species)

    @property
    def n_channels(self) -> int:
        """``K``: one radial function per neighbour species."""
        return self.n_species * self.n_radial

    @property
    def n_features(self) -> int:
        k = self.n_channels
        return k + (self.l_max + 1) * k * (k + 1) // 2

    @property
    def centres(self) -> np.ndarray:
        return self.r_min + (self.cutoff - self.r_min) * np.arange(self.n_radial) / self.n_radial

    @property
    def width(self) -> float:
        return self.radial_width or (self.cutoff - self.r_min) / self.n_radial

    def monomials(self) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """``(powers (M, 3), coefficient (M,))`` of the weighted monomials and each order's column range."""
        pw, coef, ranges = [], [], []
        for ell in range(self.l_max + 1):
            start = len(pw)
            for p in range(ell, -1, -1):
                for q in range(ell - p, -1, -1):
                    s = ell - p - q
                    pw.append((p, q, s))
                    coef.append(math.sqrt(math.factorial(ell) / (math.factorial(p) * math.factorial(q)
                                                                * math.factorial(s))))
            ranges.append((start, len(pw)))
        return np.array(pw), np.array(coef), ranges

    def index(self, numbers: np.ndarray) -> np.ndarray:
        """Species index (0 .. S-1) of each atomic number; SpeciesError naming the unknown ones."""
        numbers = np.asarray(numbers)
        lut = {z: k for k, z in enumerate(self.species)}
        unknown = sorted({int(z) for z in np.unique(numbers)} - set(lut))
        if unknown:
            from ase.data import chemical_symbols  # noqa: PLC0415

            raise SpeciesError(f"the structure contains {[chemical_symbols[z] for z in unknown]}, which this model "
                               f"was not trained on (it knows {[chemical_symbols[z] for z in self.species]})")
        return np.array([lut[int(z)] for z in numbers], dtype=np.int32)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["species"] = list(self.species)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AtomicBasis:
        return cls(**{**d, "species": tuple(d["species"])})


def neighbour_inputs(atoms: Any, basis: AtomicBasis) -> dict[str, np.ndarray]:
    """Everything :func:`descriptors_tf` needs besides the positions: the neighbour list and species.

    ``atoms``: an ase.Atoms or ``(positions, numbers, cell, pbc)``. Keys: ``i``, ``j`` (pair indices),
    ``shift`` (integer cell shifts of ``j``, float), ``cell``, ``species`` (per atom), ``slot`` (the pair's
    place among ``i``'s neighbours) and ``size`` (``[centre atoms, most neighbours, first centre]``: all atoms
    from 0 here; :func:`centre_chunk` takes a range of them).
    """
    from ase.neighborlist import primitive_neighbor_list  # noqa: PLC0415

    pos, numbers, cell, pbc = _structure_arrays(atoms)
    if len(pos) == 0:
        raise InputError("the structure has no atoms")
    if not np.all(np.isfinite(pos)):
        raise InputError("the structure has non-finite positions")
    species = basis.index(numbers)
    for ax in range(3):
        if pbc[ax] and np.linalg.norm(cell[ax]) < 1e-8:
            raise InputError(f"axis {ax} is periodic but its cell vector is zero; give the cell or set pbc False")
    i, j, s = primitive_neighbor_list("ijS", pbc, cell, pos, basis.cutoff, self_interaction=False)
    order = np.lexsort((j, i))
    i, j, s = i[order], j[order], s[order]
    counts = np.bincount(i, minlength=len(pos))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(len(i)) - starts[i]
    return {"i": i.astype(np.int32), "j": j.astype(np.int32), "shift": s.astype(np.float64),
            "cell": cell, "species": species,
            "slot": slot.astype(np.int32),
            "size": np.array([len(pos), max(int(counts.max(initial=0)), 1), 0], np.int32)}


def input_signature() -> dict[str, Any]:
    """``tf.TensorSpec`` of every :func:`neighbour_inputs` key (sizes free): one traced function serves all."""
    import tensorflow as tf

    return {"i": tf.TensorSpec([None], tf.int32), "j": tf.TensorSpec([None], tf.int32),
            "shift": tf.TensorSpec([None, 3], tf.float64), "cell": tf.TensorSpec([3, 3], tf.float64),
            "species": tf.TensorSpec([None], tf.int32), "slot": tf.TensorSpec([None], tf.int32),
            "size": tf.TensorSpec([3], tf.int32)}


def centre_chunk(inputs: dict[str, np.ndarray], start: int, stop: int) -> dict[str, np.ndarray]:
    """The inputs of centre atoms ``start .. stop - 1`` only (their pairs; every atom stays a neighbour):
    descriptors of a large structure chunk by chunk in flat memory."""
    lo, hi = np.searchsorted(inputs["i"], [start, stop])
    counts = np.bincount(inputs["i"][lo:hi] - start, minlength=stop - start)
    return {**inputs, "i": (inputs["i"][lo:hi] - start).astype(np.int32), "j": inputs["j"][lo:hi],
            "shift": inputs["shift"][lo:hi], "slot": inputs["slot"][lo:hi],
            "size": np.array([stop - start, max(int(counts.max(initial=0)), 1), start], np.int32)}


def batch_inputs(inputs: list[dict[str, np.ndarray]], positions: list[np.ndarray]) -> tuple[np.ndarray, dict, np.ndarray]:
    """Several structures as one: positions stacked, shifts made Cartesian (cell = identity).

    Returns ``(positions, inputs, structure index of every atom)``.
    """
    offs = np.cumsum([0] + [int(d["size"][0]) for d in inputs])
    out = {
        "i": np.concatenate([d["i"] + o for d, o in zip(inputs, offs)]).astype(np.int32),
        "j": np.concatenate([d["j"] + o for d, o in zip(inputs, offs)]).astype(np.int32),
        "shift": np.concatenate([d["shift"] @ d["cell"] for d in inputs]),
        "cell": np.eye(3),
        "species": np.concatenate([d["species"] for d in inputs]).astype(np.int32),
        "slot": np.concatenate([d["slot"] for d in inputs]).astype(np.int32),
        "size": np.array([offs[-1], max(int(d["size"][1]) for d in inputs), 0], np.int32),
    }
    owner = np.repeat(np.arange(len(inputs)), np.diff(offs))
    return np.concatenate(positions), out, owner


def descriptors_tf(positions, inputs: dict[str, Any], basis: AtomicBasis, deform=None):
    """Per-atom descriptors ``(N, basis.n_features)`` (float64) from positions and :func:`neighbour_inputs`.

    ``deform`` (3 x 3, optional): positions and cell are mapped ``r -> r deform`` (a strain), so the
    derivative with respect to it gives the stress.
    """
    import tensorflow as tf

    f64 = tf.float64
    pos = tf.cast(positions, f64)
    cell = tf.cast(inputs["cell"], f64)
    if deform is not None:
        deform = tf.cast(deform, f64)
        pos = tf.matmul(pos, deform)
        cell = tf.matmul(cell, deform)
    i, j = tf.cast(inputs["i"], tf.int32), tf.cast(inputs["j"], tf.int32)
    size = tf.cast(inputs["size"], tf.int32)  # [centres, most neighbours, index of the first centre]
    d = tf.gather(pos, j) - tf.gather(pos, i + size[2]) + tf.matmul(tf.cast(inputs["shift"], f64), cell)
    r2 = tf.reduce_sum(d * d, axis=1)
    rc = basis.cutoff
    inside = r2 < rc * rc
    r = tf.sqrt(tf.where(inside, r2, rc * rc))  # pairs beyond the cutoff (moved since the list) weigh zero
    x = r2 / (rc * rc)
    fc = tf.where(inside, (1.0 - x) ** 3, tf.zeros_like(x))
    g = tf.exp(-(((r[:, None] - basis.centres[None, :]) / basis.width) ** 2)) * fc[:, None]  # (P, n_radial)
    sp = tf.cast(inputs["species"], tf.int32)
    onehot = tf.one_hot(tf.gather(sp, j), basis.n_species, dtype=f64)  # neighbour species
    G = tf.reshape(onehot[:, :, None] * g[:, None, :], [-1, basis.n_channels])  # (P, K)
    u = d / r[:, None]
    pw, coef, ranges = basis.monomials()
    L = basis.l_max
    powers = []  # 3 x (P, L+1): u_ax^0 .. u_ax^L by products (pow would give NaN gradients at u_ax = 0)
    for ax in range(3):
        cols = [tf.ones_like(r)]
        for _ in range(L):
            cols.append(cols[-1] * u[:, ax])
        powers.append(tf.stack(cols, axis=1))
    T = (tf.gather(powers[0], pw[:, 0], axis=1) * tf.gather(powers[1], pw[:, 1], axis=1)
         * tf.gather(powers[2], pw[:, 2], axis=1) * coef[None, :])  # (P, M)
    idx = tf.stack([i, tf.cast(inputs["slot"], tf.int32)], axis=1)
    Gp = tf.scatter_nd(idx, G, tf.stack([size[0], size[1], basis.n_channels]))
    Tp = tf.scatter_nd(idx, T, tf.stack([size[0], size[1], T.shape[1]]))
    A = tf.matmul(Gp, Tp, transpose_a=True)  # (N, K, M): the moments
    K = basis.n_channels
    iu = np.stack(np.triu_indices(K), axis=1)
    feats = [A[:, :, 0]]  # two-body: A[a, n, 0] (the l = 0 monomial is 1)
    for a, b in ranges:
        B = tf.matmul(A[:, :, a:b], A[:, :, a:b], transpose_b=True)  # (N, K, K)
        feats.append(tf.transpose(tf.gather_nd(tf.transpose(B, [1, 2, 0]), iu)))  # (N, K (K + 1) / 2)
    return tf.concat(feats, axis=1)


def descriptors(atoms: Any, basis: AtomicBasis) -> np.ndarray:
    """Per-atom descriptors ``(N, F)`` of one structure (NumPy in, NumPy out)."""
    inp = neighbour_inputs(atoms, basis)
    return descriptors_tf(_structure_arrays(atoms)[0], inp, basis).numpy()
