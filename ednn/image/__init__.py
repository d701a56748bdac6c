"""Structures -> images: the grid contract (:class:`GridSpec`), rasterizers (NumPy
reference and differentiable TensorFlow), and focus/context tiling."""

from .grid import GridSpec, species_from  # noqa: F401
from .raster import image_shape, pixel_volume, prepare, rasterize, rasterize_strips  # noqa: F401
from .raster_tf import rasterize_tf  # noqa: F401
from .tiling import TileLayout, layout_for, tile, untile  # noqa: F401
