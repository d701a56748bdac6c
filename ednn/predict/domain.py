"""Domain of applicability: what a model saw in training, stored with it, and checked at prediction.

A network is only trustworthy on structures like its training data. At the
end of training :func:`Domain.from_structures` records, from the training
structures:

``species``
    the elements that occur (the grid may list more);
``layers`` (2D)
    the largest number of atomic layers in one structure (layers: atoms
    sorted by height, a new layer where the gap exceeds ``LAYER_GAP``);
``height`` (2D)
    the range of atom heights above each structure's mean plane (Angstrom);
``density``
    the range of atoms per area (2D, per A^2 of the in-plane cell) or per
    volume (3D);
``nn``
    the range of every atom's nearest-neighbour distance (Angstrom): bond
    lengths, local strain;
``mean_nn``
    the range of a structure's mean first-shell bond length (pairs shorter
    than ``BOND_SHELL`` times its median nearest-neighbour distance): its
    overall strain.

:meth:`Domain.check` compares a structure against these ranges, with the
tolerances below, and returns what lies outside (an empty list when nothing
does). Two cases are errors whatever the model saw (:meth:`Domain.check`
raises :class:`~ednn.errors.InputError` for them): atoms that overlap (closer
than ``OVERLAP`` times the shortest training distance, and never closer than
0.5 A) and, for sheets, atoms far from the sheet (more than ``DETACHED`` A
beyond the training heights). The calculator warns
(:class:`DomainWarning`, once per kind of problem), ``ednn predict`` stops
unless ``--force``.

Nearest neighbours come from :func:`ase.neighborlist.neighbor_list` within
``NN_CUTOFF``; structures above ``NN_MAX_ATOMS`` atoms (huge sheets) are
checked for species, layers, heights and density only, in O(N) chunks.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
from ase.data import chemical_symbols

from ..errors import InputError

__all__ = ["Domain", "DomainWarning", "structure_stats"]

LAYER_GAP = 1.5  # A: atoms of one rattled/buckled layer lie within this of each other in height
HEIGHT_TOL = 0.25  # A beyond the training heights before a height counts as outside
DETACHED = 3.0  # A beyond the training heights: the atom has left the sheet (an error)
DENSITY_TOL = 0.05  # relative
NN_TOL = 0.05  # A beyond the training nearest-neighbour distances
MEAN_NN_TOL = 0.01  # relative (1 % strain)
OVERLAP = 0.5  # fraction of the shortest training distance below which atoms overlap (an error)
NN_CUTOFF = 5.0  # A: nearest neighbours searched within this
BOND_SHELL = 1.25  # first-shell bonds: shorter than this times the median nearest-neighbour distance
NN_MAX_ATOMS = 200_000  # above: no neighbour list (huge sheets), the O(N) checks only
_CHUNK = 1 << 20


class DomainWarning(UserWarning):
    """A structure outside the domain of applicability of the model that predicts it."""


def _arrays(atoms: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from ..image.raster import _structure_arrays  # noqa: PLC0415

    return _structure_arrays(atoms)


def _heights(z: np.ndarray) -> np.ndarray:
    return z - z.mean()


def _layers(z: np.ndarray) -> int:
    if len(z) > NN_MAX_ATOMS:  # sorted heights of a huge sheet: a histogram with LAYER_GAP / 4 bins instead
        lo, hi = float(z.min()), float(z.max())
        nb = max(1, int(np.ceil((hi - lo) / (LAYER_GAP / 4))) + 1)
        occ = np.zeros(nb, dtype=bool)
        for a in range(0, len(z), _CHUNK):
            occ[((z[a : a + _CHUNK] - lo) / (LAYER_GAP / 4)).astype(np.int64)] = True
        filled = np.flatnonzero(occ)
        return int(1 + np.count_nonzero(np.diff(filled) > 4))
    zs = np.sort(z)
    return int(1 + np.count_nonzero(np.diff(zs) > LAYER_GAP))


def _nn(atoms: Any) -> tuple[np.ndarray, float | None]:
    """Every atom's nearest-neighbour distance (inf where none within NN_CUTOFF), and the mean first-shell bond
    length: all pairs shorter than ``BOND_SHELL`` times the median nearest-neighbour distance (unlike the mean
    nearest-neighbour distance, not biased low by thermal rattling: a strain measure)."""
    from ase import Atoms  # noqa: PLC0415
    from ase.neighborlist import neighbor_list  # noqa: PLC0415

    pos, num, cell, pbc = _arrays(atoms)
    at = Atoms(numbers=np.asarray(num, dtype=np.int64), positions=pos, cell=cell, pbc=pbc)
    i, d = neighbor_list("id", at, NN_CUTOFF)
    out = np.full(len(at), np.inf)
    np.minimum.at(out, i, d)
    fin = out[np.isfinite(out)]
    bond = None
    if fin.size:
        shell = d[d < BOND_SHELL * float(np.median(fin))]
        bond = float(shell.mean())
    return out, bond


def structure_stats(atoms: Any, dim: int, with_nn: bool | None = None) -> dict[str, Any]:
    """What :class:`Domain` records of one structure (``nn`` only up to ``NN_MAX_ATOMS`` atoms)."""
    pos, num, cell, _ = _arrays(atoms)
    n = len(num)
    out: dict[str, Any] = {"species": sorted(int(z) for z in np.unique(num))}
    if dim == 2:
        z = np.asarray(pos[:, 2], dtype=np.float64)
        h = _heights(z)
        out["layers"] = _layers(z)
        out["height"] = [float(h.min()), float(h.max())]
        out["height_argmax"] = int(np.argmax(np.abs(h)))
        area = abs(float(np.linalg.det(np.asarray(cell, dtype=np.float64)[:2, :2])))
        out["density"] = n / area
    else:
        out["density"] = n / abs(float(np.linalg.det(np.asarray(cell, dtype=np.float64))))
    if with_nn is None:
        with_nn = n <= NN_MAX_ATOMS
    if with_nn:
        nn, bond = _nn(atoms)
        out["nn_all"] = nn
        fin = nn[np.isfinite(nn)]
        out["nn"] = [float(fin.min()), float(fin.max())] if fin.size else None
        out["mean_nn"] = bond
    return out


@dataclasses.dataclass
class Domain:
    """Ranges a model saw in training (see the module docstring); JSON-serialisable with :meth:`to_dict`."""

    dim: int
    species: list[int]
    density: tuple[float, float]
    nn: tuple[float, float] | None = None
    mean_nn: tuple[float, float] | None = None
    layers: int | None = None
    height: tuple[float, float] | None = None
    n_structures: int = 0

    @classmethod
    def from_structures(cls, structures: Iterable[Any], dim: int) -> Domain:
        """The domain of these (training) structures."""
        sp: set[int] = set()
        dens, nn_lo, nn_hi, mnn, lay, hlo, hhi = [], [], [], [], [], [], []
        count = 0
        for at in structures:
            s = structure_stats(at, dim)
            count += 1
            sp.update(s["species"])
            dens.append(s["density"])
            if s.get("nn"):
                nn_lo.append(s["nn"][0])
                nn_hi.append(s["nn"][1])
                mnn.append(s["mean_nn"])
            if dim == 2:
                lay.append(s["layers"])
                hlo.append(s["height"][0])
                hhi.append(s["height"][1])
        if count == 0:
            raise InputError("no structures to take a domain of applicability from")
        return cls(dim=dim, species=sorted(sp), density=(min(dens), max(dens)),
                   nn=(min(nn_lo), max(nn_hi)) if nn_lo else None, mean_nn=(min(mnn), max(mnn)) if mnn else None,
                   layers=max(lay) if lay else None, height=(min(hlo), max(hhi)) if hlo else None,
                   n_structures=count)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Domain:
        d = dict(d)
        for k in ("density", "nn", "mean_nn", "height"):
            if d.get(k) is not None:
                d[k] = tuple(float(x) for x in d[k])
        return cls(**d)

    def check(self, atoms: Any) -> list[tuple[str, str]]:
        """``(kind, message)`` for each way ``atoms`` lies outside this domain; [] inside.

        Raises
        ------
        InputError
            Overlapping atoms, or (sheets) an atom far from the sheet.
        """
        s = structure_stats(atoms, self.dim)
        out: list[tuple[str, str]] = []
        if s.get("nn_all") is not None:
            nn = s["nn_all"]
            limit = max(0.5, OVERLAP * (self.nn[0] if self.nn else 1.0))
            bad = np.flatnonzero(nn < limit)
            if bad.size:
                raise InputError(
                    f"atoms overlap: atom(s) {bad[:10].tolist()} have a neighbour {float(nn[bad].min()):.3f} A away "
                    f"(the training data's shortest distance is {self.nn[0] if self.nn else float('nan'):.3f} A); "
                    "fix the structure (duplicated atoms?)")
        if self.dim == 2 and self.height is not None:
            lo, hi = s["height"]
            worst = s["height_argmax"]
            if lo < self.height[0] - DETACHED or hi > self.height[1] + DETACHED:
                raise InputError(
                    f"atom {worst} is {max(-lo, hi):.2f} A from the sheet's mean plane; the training data reach "
                    f"{max(-self.height[0], self.height[1]):.2f} A: it has left the sheet (a detached atom or "
                    "adsorbate the model never saw); remove it or model it separately")
        extra = sorted(set(s["species"]) - set(self.species))
        if extra:
            names = ", ".join(chemical_symbols[z] for z in extra)
            out.append(("species", f"element(s) {names} never occur in the training data (only "
                                   f"{', '.join(chemical_symbols[z] for z in self.species)})"))
        if self.dim == 2 and self.layers is not None:
            if s["layers"] > self.layers:
                out.append(("layers", f"{s['layers']} atomic layers; the training structures have at most "
                                      f"{self.layers}"))
            lo, hi = s["height"]
            if lo < self.height[0] - HEIGHT_TOL or hi > self.height[1] + HEIGHT_TOL:
                out.append(("height", f"heights {lo:.2f} .. {hi:.2f} A about the mean plane; training "
                                      f"{self.height[0]:.2f} .. {self.height[1]:.2f} A"))
        d0, d1 = self.density
        unit = "A^2" if self.dim == 2 else "A^3"
        if s["density"] < d0 * (1 - DENSITY_TOL) or s["density"] > d1 * (1 + DENSITY_TOL):
            out.append(("density", f"{s['density']:.4f} atoms/{unit}; training {d0:.4f} .. {d1:.4f}"))
        if s.get("nn_all") is not None and self.nn is not None:
            nn = s["nn_all"]
            fin = np.isfinite(nn)
            outside = np.flatnonzero(~fin | (nn < self.nn[0] - NN_TOL) | (nn > self.nn[1] + NN_TOL))
            if outside.size:
                w = outside[np.argmax(np.abs(np.where(np.isfinite(nn[outside]), nn[outside], 1e9)
                                             - np.mean(self.nn)))]
                out.append(("nn", f"{outside.size} atom(s) with nearest-neighbour distances outside the training "
                                  f"{self.nn[0]:.3f} .. {self.nn[1]:.3f} A (atom {int(w)}: "
                                  f"{nn[w]:.3f} A{'' if np.isfinite(nn[w]) else f', none within {NN_CUTOFF} A'})"))
            m0, m1 = self.mean_nn
            mean = s["mean_nn"]
            if mean is not None and (mean < m0 * (1 - MEAN_NN_TOL) or mean > m1 * (1 + MEAN_NN_TOL)):
                out.append(("strain", f"mean first-shell bond length {s['mean_nn']:.4f} A (overall strain); "
                                      f"training {m0:.4f} .. {m1:.4f} A"))
        return out

    def warn(self, atoms: Any, seen: set[str] | None = None, stacklevel: int = 3) -> list[tuple[str, str]]:
        """:meth:`check`, and a :class:`DomainWarning` for each kind of problem not already in ``seen``."""
        problems = self.check(atoms)
        for kind, msg in problems:
            if seen is None or kind not in seen:
                warnings.warn(DomainWarning(f"outside the model's training domain: {msg}; the prediction is an "
                                            "extrapolation"), stacklevel=stacklevel)
                if seen is not None:
                    seen.add(kind)
        return problems


class HasDomain:
    """``domain`` and ``check_domain`` of a model that keeps its training domain in ``meta["domain"]`` (the image
    and the atom-centred models alike)."""

    meta: dict[str, Any]

    @property
    def domain(self) -> Domain | None:
        """The :class:`Domain` recorded at training (None for models saved without one)."""
        d = self.meta.get("domain")
        return None if d is None else Domain.from_dict(d)

    def check_domain(self, atoms: Any) -> list[tuple[str, str]]:
        """``(kind, message)`` for each way ``atoms`` lies outside the training domain ([] inside or without a
        recorded domain); raises InputError for overlapping atoms and atoms far from the sheet."""
        dom = self.domain
        return [] if dom is None else dom.check(atoms)

