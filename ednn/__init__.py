"""ednn: extensive deep neural networks for atomistic systems.

Atoms are rasterized into Gaussian density images (:mod:`ednn.image.raster`), cut
into focus/context tiles (:mod:`ednn.image.tiling`), and a weight-shared CNN sums tile
outputs into extensive properties such as the total energy, or predicts per-voxel fields
(LDOS, density). For the total energy the default model is atom-centred
(:mod:`ednn.nn.atomic`, :class:`ednn.predict.atomic.AtomicModel`): the same species densities
projected around each atom on rotation-invariant functions, exactly invariant and extensive.
"""

from __future__ import annotations

from ._version import __version__  # noqa: F401
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
from .image.grid import GridSpec  # noqa: F401
from .image.raster import (  # noqa: F401
    image_shape,
    pixel_volume,
    prepare,
    rasterize,
    rasterize_strips,
)
from .image.raster_tf import rasterize_tf  # noqa: F401
from .image.tiling import TileLayout, layout_for, tile, untile  # noqa: F401
from .predict.atomic import AtomicModel  # noqa: F401
from .predict.model import EnergyModel, load  # noqa: F401

_LAZY = ("atoms", "data", "train", "workflows", "parallel", "properties", "config", "plots")


def __getattr__(name: str):
    """Subpackages on first use (``ednn.train.train(cfg)`` after ``import ednn``), so ``import ednn`` stays fast."""
    if name in _LAZY:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'ednn' has no attribute {name!r}")
