"""Builders of 2D B/C/N structures: sheets, alloys, heterostructures, defects, disorder.

The user-facing facade (``from ednn.atoms import structures as st``) of

* :mod:`ednn.atoms.build`: :func:`graphene`, :func:`hbn`, :func:`honeycomb`,
  :func:`bcn_alloy`, :func:`heterostructure`, :func:`bilayer`,
  :func:`supercell_size` and the conventions shared by all of them (sheets in
  the xy plane, ``pbc = (True, True, False)``, third cell vector ``(0, 0, 20)``
  Angstrom with the sheet at z = 10, primitive hexagonal or 4-atom rectangular
  cells, every random function taking a Generator or a seed);
* :mod:`ednn.atoms.defects`: :func:`vacancy`, :func:`divacancy`,
  :func:`stone_wales`, :func:`nanopore`, :func:`coordination`;
* :mod:`ednn.atoms.disorder`: :func:`strain`, :func:`rattle`,
  :func:`md_snapshots`, :func:`min_distance`;
* :mod:`ednn.atoms.generate`: :func:`generate` (record ``i`` drawn from
  ``np.random.default_rng([seed, i, kind_id])`` only, so a resumed generation
  reproduces the records it skipped) and :func:`check_generate_args`;
* :mod:`ednn.atoms.large`: :func:`paper_sheet`, huge rattled sheets of graphene
  with h-BN domains, pores and vacancies in linear time and lean memory (35.2
  million atoms in about 1.2 GiB), as an Atoms or as plain arrays (:class:`LargeSheet`).

Lattice constants: :data:`A_GRAPHENE` and :data:`A_HBN` are the relaxed values
of the default labeller (Tersoff, BNC.tersoff: 2.492 and 2.498 Angstrom);
:data:`A_BNC` (their mean, 2.495) is used for mixed B/C/N sheets and by the
reference datasets for every kind, so that one pixel spacing fits all cells.
"""

from __future__ import annotations

from . import build as _build
from . import defects as _defects
from . import disorder as _disorder
from . import generate as _generate
from . import large as _large
from .build import *  # noqa: F403
from .defects import *  # noqa: F403
from .disorder import *  # noqa: F403
from .generate import *  # noqa: F403
from .large import *  # noqa: F403

__all__ = [*_build.__all__, *_defects.__all__, *_disorder.__all__, *_generate.__all__, *_large.__all__]
