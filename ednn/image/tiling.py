"""Images -> focus/context tiles (periodic wrap) and back.

A tile is a ``focus`` region plus ``context`` pixels of periodic surroundings
on every side: ``focus + 2 * context`` pixels along each spatial axis. Along an
axis of ``n`` pixels there are ``ceil(n / focus)`` tiles; tile ``t`` focuses on
pixels ``t*focus ... t*focus + focus - 1``.

Rule for sizes that are not a multiple of ``focus``: the last tile's focus
runs past the image; those focus pixels are *padding*. Their content (and all
context) is taken with periodic wrap, and :attr:`TileLayout.mask` marks them
0 so that per-pixel outputs there are ignored. Every image pixel is the focus
of exactly one tile; no pixel is dropped. (A head that reduces a whole tile to
one number cannot ignore padding, so :func:`TileLayout.require_exact` lets
such heads insist on ``n % focus == 0``.)

For a convolutional network with receptive radius ``<= context`` applied with
``valid`` padding, the focus outputs of all tiles are exactly the network's
output on the whole periodic image (with circular padding).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from ..errors import GridError

__all__ = ["TileLayout", "layout_for", "tile", "untile", "tile_tf", "untile_tf", "wrap_pad"]


@dataclasses.dataclass(frozen=True)
class TileLayout:
    """Geometry of a tiling of one image."""

    image_shape: tuple[int, ...]  # spatial shape (n_1, ..., n_d)
    focus: int
    context: int

    @property
    def dim(self) -> int:
        return len(self.image_shape)

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of tiles along each axis."""
        return tuple(math.ceil(n / self.focus) for n in self.image_shape)

    @property
    def n_tiles(self) -> int:
        return int(np.prod(self.grid))

    @property
    def tile_size(self) -> int:
        return self.focus + 2 * self.context

    @property
    def exact(self) -> bool:
        """True when every axis is a whole multiple of the focus (no padding)."""
        return all(n % self.focus == 0 for n in self.image_shape)

    def require_exact(self, what: str = "this head") -> None:
        if not self.exact:
            raise GridError(
                f"{what} needs image sizes that are multiples of focus={self.focus}, got {self.image_shape}; "
                "use the per-pixel head, change the focus, or choose a cell commensurate with the grid"
            )

    def axis_indices(self, axis: int) -> np.ndarray:
        """(tiles along axis, tile_size) image indices along ``axis`` (wrapped)."""
        n, f, c = self.image_shape[axis], self.focus, self.context
        t = np.arange(self.grid[axis])[:, None] * f
        return (t + np.arange(-c, f + c)[None, :]) % n

    @property
    def mask(self) -> np.ndarray:
        """(n_tiles, focus, ..., focus) float32: 1 on real focus pixels, 0 on padding."""
        masks = []
        for axis, n in enumerate(self.image_shape):
            pos = np.arange(self.grid[axis])[:, None] * self.focus + np.arange(self.focus)[None, :]
            masks.append((pos < n).astype(np.float32))
        m = masks[0]
        for axis in range(1, self.dim):
            m = np.multiply.outer(m, masks[axis])
        # m has axes (T0, f, T1, f, ...) -> (T0, T1, ..., f, f, ...)
        d = self.dim
        perm = [2 * i for i in range(d)] + [2 * i + 1 for i in range(d)]
        m = np.transpose(m, perm)
        return m.reshape((self.n_tiles,) + (self.focus,) * d)


def layout_for(image_shape: tuple[int, ...], focus: int, context: int) -> TileLayout:
    """Validate and build the tiling geometry of an image of spatial shape ``image_shape``."""
    shape = tuple(int(n) for n in image_shape)
    for name, v in (("focus", focus), ("context", context)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
            raise GridError(f"{name} must be a positive integer number of pixels, got {v!r}")
    if not shape or any(n <= 0 for n in shape):
        raise GridError(f"image spatial shape must be positive, got {shape}")
    smallest = min(shape)
    if focus > smallest:
        raise GridError(
            f"focus={focus} is larger than the image ({shape} pixels); use focus <= {smallest} "
            "or a larger cell / finer spacing"
        )
    if context > smallest:
        raise GridError(
            f"context={context} is larger than the image ({shape} pixels); use context <= {smallest} "
            "or a larger cell (repeat the structure)"
        )
    return TileLayout(shape, int(focus), int(context))


def _split(image: Any, spatial_dims: int | None) -> tuple[tuple[int, ...], int]:
    shape = tuple(image.shape)
    if spatial_dims is None:
        spatial_dims = len(shape) - 1
    if spatial_dims not in (2, 3) or len(shape) != spatial_dims + 1:
        raise GridError(
            f"expected an image of shape (n1, n2, C) or (n1, n2, n3, C), got {shape}; "
            "add a channel axis with image[..., None]"
        )
    return shape[:spatial_dims], shape[-1]


def tile(image: np.ndarray, focus: int, context: int) -> tuple[np.ndarray, TileLayout]:
    """Cut an image into periodic focus/context tiles.

    Parameters
    ----------
    image : ndarray, shape (n1, n2, C) or (n1, n2, n3, C)
    focus, context : int
        Pixels.

    Returns
    -------
    tiles : ndarray, shape (n_tiles, t, t, C) or (n_tiles, t, t, t, C), t = focus + 2 context
        Tiles in C order over the tile grid.
    layout : TileLayout
    """
    image = np.asarray(image)
    spatial, C = _split(image, None)
    lay = layout_for(spatial, focus, context)
    out = image
    for axis in range(lay.dim):
        # gather along axis -> (..., T_axis, tile, ...); move T axes to the front later
        idx = lay.axis_indices(axis)
        out = np.take(out, idx, axis=2 * axis)  # axes before it: (T0, t0, T1, t1, ...)
    d = lay.dim
    perm = [2 * i for i in range(d)] + [2 * i + 1 for i in range(d)] + [2 * d]
    out = np.transpose(out, perm)
    return np.ascontiguousarray(out.reshape((lay.n_tiles,) + (lay.tile_size,) * d + (C,))), lay


def untile(outputs: np.ndarray, layout: TileLayout) -> np.ndarray:
    """Reassemble per-tile focus outputs into the full image (padding removed).

    Parameters
    ----------
    outputs : ndarray, shape (n_tiles, focus, ..., focus, C)
    layout : TileLayout

    Returns
    -------
    ndarray of shape ``layout.image_shape + (C,)``
    """
    outputs = np.asarray(outputs)
    d, f = layout.dim, layout.focus
    expect = (layout.n_tiles,) + (f,) * d
    if outputs.shape[: d + 1] != expect or outputs.ndim != d + 2:
        raise GridError(f"untile expects outputs of shape {expect + ('C',)}, got {outputs.shape}")
    C = outputs.shape[-1]
    x = outputs.reshape(layout.grid + (f,) * d + (C,))
    perm = []
    for i in range(d):
        perm += [i, d + i]
    x = np.transpose(x, perm + [2 * d])
    x = x.reshape(tuple(g * f for g in layout.grid) + (C,))
    return x[tuple(slice(0, n) for n in layout.image_shape)]


def wrap_pad(image: np.ndarray, context: int) -> np.ndarray:
    """Pad the spatial axes of an image periodically by ``context`` pixels on every side."""
    image = np.asarray(image)
    d = image.ndim - 1
    return np.pad(image, [(context, context)] * d + [(0, 0)], mode="wrap")


# ----------------------------------------------------------------- TensorFlow
def tile_tf(image: Any, layout: TileLayout):
    """TensorFlow version of :func:`tile` (differentiable): image (n..., C) -> tiles."""
    import tensorflow as tf

    d = layout.dim
    out = image
    for axis in range(d):
        out = tf.gather(out, tf.constant(layout.axis_indices(axis)), axis=2 * axis)
    perm = [2 * i for i in range(d)] + [2 * i + 1 for i in range(d)] + [2 * d]
    out = tf.transpose(out, perm)
    C = out.shape[-1] if out.shape[-1] is not None else tf.shape(out)[-1]
    return tf.reshape(out, [layout.n_tiles] + [layout.tile_size] * d + [C])


def untile_tf(outputs: Any, layout: TileLayout):
    """TensorFlow version of :func:`untile`."""
    import tensorflow as tf

    d, f = layout.dim, layout.focus
    C = outputs.shape[-1]
    x = tf.reshape(outputs, list(layout.grid) + [f] * d + [C])
    perm = []
    for i in range(d):
        perm += [i, d + i]
    x = tf.transpose(x, perm + [2 * d])
    x = tf.reshape(x, [g * f for g in layout.grid] + [C])
    return x[tuple(slice(0, n) for n in layout.image_shape)]
