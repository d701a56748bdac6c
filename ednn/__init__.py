"""ednn: extensive deep neural networks for atomistic systems.

Atoms are rasterized into Gaussian density images (:mod:`ednn.raster`), cut
into focus/context tiles (:mod:`ednn.tiling`), and a weight-shared CNN sums tile
outputs into extensive properties such as the total energy.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .artifact import load  # noqa: F401
from .errors import (  # noqa: F401
    BackendError,
    ConfigError,
    DatasetError,
    EdnnError,
    GridError,
    InputError,
    ModelError,
    SpeciesError,
)
from .grid import GridSpec  # noqa: F401
from .raster import image_shape, pixel_volume, prepare, rasterize, rasterize_strips, rasterize_tf  # noqa: F401
from .tiling import TileLayout, layout_for, tile, untile  # noqa: F401
from .train import train  # noqa: F401  (function; submodule via `from ednn.train import fit`)
