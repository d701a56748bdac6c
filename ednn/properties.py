"""Named properties: every target's key, unit, shape kind and reduction, in one place.

Datasets, labellers, training, metrics, model files and the CLI refer to a
property by its key and look up what it is here::

    >>> from ednn.properties import get_property
    >>> get_property("energy")
    Property(key='energy', unit='eV', kind='structure', reduce='sum', ...)

Kinds:

``structure``
    One value (or a small fixed array, e.g. stress) per structure.
``atom``
    One row per atom (forces, per-atom energies).
``voxel``
    A field on the structure's grid, shape ``(n_1, ..., n_d, channels)`` (the
    electron density, the LDOS on an energy grid, ...). A per-voxel target must be
    sampled on the model's grid (see :class:`ednn.image.grid.GridSpec`).

``reduce`` says how a per-voxel or per-atom quantity adds up to a per-structure
one: ``"sum"`` for extensive quantities (the energy is the sum over pixels of
an energy density times the pixel weight), ``None`` where no reduction is
meaningful. Units are ASE's: eV and Angstrom.

New per-voxel targets are added with :func:`register` (a model file stores the
definitions of the fields it predicts, so loading it registers them again).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from .errors import ConfigError

__all__ = ["Property", "ENERGY", "FREE_ENERGY", "FORCES", "STRESS", "ENERGIES", "DENSITY", "LDOS",
           "register", "get_property", "registered", "KINDS"]

KINDS = ("structure", "atom", "voxel")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


@dataclasses.dataclass(frozen=True)
class Property:
    """What a target is.

    Attributes
    ----------
    key : str
        Name used in datasets (``energy``, ``forces``, ``targets/<key>``), configs and results.
    unit : str
        Physical unit (ASE conventions).
    kind : {"structure", "atom", "voxel"}
        Shape kind (see the module docstring).
    reduce : {"sum", None}
        How per-voxel / per-atom values add up to the structure's value.
    doc : str
        One line for users.
    """

    key: str
    unit: str
    kind: str
    reduce: str | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.key):
            raise ConfigError(f"property name {self.key!r} must start with a letter and use letters, digits and _")
        if self.kind not in KINDS:
            raise ConfigError(f"property {self.key!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.reduce not in (None, "sum"):
            raise ConfigError(f"property {self.key!r}: reduce must be 'sum' or None, got {self.reduce!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


ENERGY = Property("energy", "eV", "structure", "sum", "total (potential) energy; a sum over the image")
FREE_ENERGY = Property("free_energy", "eV", "structure", "sum", "free energy (equals the energy for ednn models)")
FORCES = Property("forces", "eV/Angstrom", "atom", None, "-dE/dpositions")
STRESS = Property("stress", "eV/Angstrom^3", "structure", None, "(1/V) dE/d(strain), Voigt order xx yy zz yz xz xy")
ENERGIES = Property("energies", "eV", "atom", "sum", "per-atom energies from the energy map (Voronoi rule)")
DENSITY = Property("density", "1/Angstrom^3", "voxel", "sum", "electron density on the grid")
LDOS = Property("ldos", "1/(eV Angstrom^3)", "voxel", "sum", "local density of states on an energy grid")

_REGISTRY: dict[str, Property] = {p.key: p for p in (ENERGY, FREE_ENERGY, FORCES, STRESS, ENERGIES, DENSITY, LDOS)}


def register(prop: Property) -> Property:
    """Add a property (e.g. a new per-voxel target); re-registering the same definition is a no-op."""
    old = _REGISTRY.get(prop.key)
    if old is not None and old != prop:
        raise ConfigError(f"property {prop.key!r} is already registered as {old}; choose another name")
    _REGISTRY[prop.key] = prop
    return prop


def get_property(key: str) -> Property:
    """The registered property ``key``; a clear error naming the known ones otherwise."""
    try:
        return _REGISTRY[key]
    except (KeyError, TypeError) as e:
        raise ConfigError(
            f"unknown property {key!r}; known: {sorted(_REGISTRY)}. A new per-voxel target is added with "
            "ednn.properties.register(Property(name, unit, 'voxel'))"
        ) from e


def registered() -> dict[str, Property]:
    """All registered properties by key (a copy)."""
    return dict(_REGISTRY)
