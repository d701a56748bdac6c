"""The grid contract: how structures become images.

A :class:`GridSpec` is chosen once (at training time), saved with the model and
reused for prediction so that inference rasterizes exactly as training did.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from ase.data import atomic_numbers, chemical_symbols

from ..errors import GridError

MODES = ("species", "z")

#: The one set of grid defaults: :class:`GridSpec`'s fields and the ``grid`` section of a
#: training config (:data:`ednn.config.DEFAULTS`) both take them from here. The spacing is
#: a quarter of the B/C/N lattice constant (2.495 A), so B/C/N supercells are commensurate.
GRID_DEFAULTS: dict[str, Any] = {
    "species": (5, 6, 7),
    "spacing": 0.62375,
    "sigma": 0.5,
    "dim": 2,
    "cutoff": 4.0,
    "mode": "species",
    "focus": 16,
    "context": 8,
    "min_vacuum": 5.0,
    "heights": 0,
}


def _as_atomic_number(s: int | str) -> int:
    if isinstance(s, str):
        if s not in atomic_numbers:
            raise GridError(f"unknown element symbol {s!r} in species list; use symbols like 'C' or atomic numbers like 6")
        return int(atomic_numbers[s])
    z = int(s)
    if not 1 <= z < len(chemical_symbols):
        raise GridError(f"atomic number {s!r} in species list is out of range 1..{len(chemical_symbols) - 1}")
    return z


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """Parameters of the rasterization and tiling, immutable and serializable.

    Parameters
    ----------
    species : sequence of int or str
        Elements the grid knows, e.g. ``("B", "C", "N")``. In ``mode="species"``
        each gets its own channel, in that order.
    spacing : float
        Target pixel size in Angstrom. The number of pixels along a cell vector
        of length ``L`` is ``round(L / spacing)``; the effective pixel size is
        ``L / n``. Choose cell lengths that are whole multiples of the spacing
        for exact supercell images.
    sigma : float
        Standard deviation of the Gaussian of each atom, in Angstrom.
    dim : {2, 3}
        2: in-plane image of a 2D material (cell vectors 1 and 2 periodic and
        in the xy plane, vacuum along z). 3: voxel grid of a 3D periodic cell.
    cutoff : float
        Gaussians are truncated at ``cutoff * sigma``.
    mode : {"species", "z"}
        ``"species"``: one channel per species. ``"z"``: one channel, each
        Gaussian weighted by the atomic number (the EDNN paper's mode).
    focus, context : int
        Tile geometry in pixels: each tile is a ``focus`` region plus
        ``context`` pixels of periodic surroundings on every side.
    min_vacuum : float
        For ``dim=2`` with a periodic third cell vector: the least vacuum
        (Angstrom) between periodic images along z.
    heights : int
        ``dim=2`` only: number of height moments added as channels. With
        ``heights=k`` the image has, after the density channels, ``k`` more
        blocks of the same channels in which each Gaussian is weighted by
        ``(h / sigma)^j`` (``j = 1..k``), where ``h = z - mean(z)`` is the
        atom's height above the mean plane of the structure. A flat 2D image
        cannot see buckling or out-of-plane thermal motion; these channels can.
    """

    species: tuple[int, ...] = GRID_DEFAULTS["species"]
    spacing: float = GRID_DEFAULTS["spacing"]
    sigma: float = GRID_DEFAULTS["sigma"]
    dim: int = GRID_DEFAULTS["dim"]
    cutoff: float = GRID_DEFAULTS["cutoff"]
    mode: str = GRID_DEFAULTS["mode"]
    focus: int = GRID_DEFAULTS["focus"]
    context: int = GRID_DEFAULTS["context"]
    min_vacuum: float = GRID_DEFAULTS["min_vacuum"]
    heights: int = GRID_DEFAULTS["heights"]

    def __post_init__(self) -> None:
        sp = self.species
        if isinstance(sp, (str, int)):
            sp = (sp,)
        zs = tuple(_as_atomic_number(s) for s in sp)
        if not zs:
            raise GridError("species list is empty; give the elements of your structures, e.g. species=('B', 'C', 'N')")
        if len(set(zs)) != len(zs):
            raise GridError(f"species list {zs} has duplicates; list each element once")
        object.__setattr__(self, "species", zs)
        for name in ("spacing", "sigma", "cutoff"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise GridError(f"{name} must be a positive finite number (Angstrom for spacing/sigma, sigmas for cutoff), got {v!r}")
            object.__setattr__(self, name, float(v))
        if self.dim not in (2, 3):
            raise GridError(f"dim must be 2 (2D materials) or 3 (bulk), got {self.dim!r}")
        if self.mode not in MODES:
            raise GridError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("focus", "context"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise GridError(f"{name} must be a positive integer number of pixels, got {v!r}")
        if not isinstance(self.heights, int) or isinstance(self.heights, bool) or not 0 <= self.heights <= 4:
            raise GridError(f"heights must be an integer 0..4 (height moments as channels), got {self.heights!r}")
        if self.heights and self.dim != 2:
            raise GridError("height channels (heights > 0) are for 2D grids only; a 3D grid already resolves z")
        if not math.isfinite(self.min_vacuum) or self.min_vacuum < 0:
            raise GridError(f"min_vacuum must be >= 0 Angstrom, got {self.min_vacuum!r}")

    # ------------------------------------------------------------------ helpers
    @property
    def n_density_channels(self) -> int:
        """Channels of plain density (one per species, or one in mode "z")."""
        return len(self.species) if self.mode == "species" else 1

    @property
    def n_channels(self) -> int:
        """All channels: the density channels, then ``heights`` blocks of height-weighted ones."""
        return self.n_density_channels * (1 + self.heights)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(chemical_symbols[z] for z in self.species)

    @property
    def radius(self) -> float:
        """Truncation radius of one Gaussian in Angstrom."""
        return self.cutoff * self.sigma

    @property
    def tile_size(self) -> int:
        return self.focus + 2 * self.context

    def pixels_along(self, lengths: Iterable[float]) -> tuple[int, ...]:
        """Number of pixels along cell vectors of the given lengths."""
        out = []
        for i, L in enumerate(lengths):
            n = int(round(float(L) / self.spacing))
            if n < 1:
                raise GridError(
                    f"cell vector {i + 1} ({L:.4g} A) is shorter than one pixel ({self.spacing} A); "
                    "use a smaller spacing or a larger cell"
                )
            out.append(n)
        return tuple(out)

    def replace(self, **changes: Any) -> GridSpec:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------ serialization
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["species"] = list(self.symbols)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GridSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise GridError(f"unknown grid field(s) {unknown}; known fields are {sorted(known)}")
        d = dict(d)
        if "species" in d:
            d["species"] = tuple(d["species"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, s: str) -> GridSpec:
        return cls.from_dict(json.loads(s))


def species_from(structures: Sequence[Any]) -> tuple[int, ...]:
    """Sorted tuple of the atomic numbers present in some ``ase.Atoms``."""
    zs: set[int] = set()
    for a in structures:
        zs.update(int(z) for z in a.numbers)
    return tuple(sorted(zs))
