"""The one input pipeline: atoms -> grid image -> channels -> network input.

Every path that feeds a network goes through :class:`InputPipeline`: NumPy
prediction, streaming strip by strip, the differentiable TensorFlow path
(forces and stress) and training. A new kind of input channel is added here
and nowhere else.

Steps:

1. :meth:`InputPipeline.prepare` validates the structure (:func:`ednn.image.raster.prepare`).
2. Density channels (one per species, then the height-moment blocks) from the
   rasterizer, multiplied by :func:`gaussian_unit` so that an isolated atom's
   centre is about 1 whatever the spacing.
3. Optional pixel-metric channels (:func:`metric_features`), constant over the image.
4. Network input: the image wrap-padded by the receptive radius (density head)
   or cut into focus/context tiles (dense head).

The pixel weight ``w`` (pixel area or volume over the Gaussian's) turns a pixel
sum into an integral; it goes with every input.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from .grid import GridSpec
from .raster import Prepared, pixel_volume, prepare, rasterize_strips
from .raster_tf import raster_tf_inputs, rasterize_tf_core
from .tiling import layout_for, tile, tile_tf

__all__ = ["InputPipeline", "gaussian_unit", "metric_features", "metric_features_tf", "n_metric", "wrap_pad"]


def gaussian_unit(grid: GridSpec) -> float:
    """``(2 pi sigma^2)^(d/2)``: the area (volume) of one atom's Gaussian.

    Network inputs are densities times this unit (1 at an isolated atom's
    centre), and the pixel weight is the pixel area (volume) divided by it, so
    neither depends on the pixel spacing.
    """
    return float((2.0 * math.pi * grid.sigma**2) ** (grid.dim / 2.0))


def n_metric(dim: int) -> int:
    """Number of pixel-metric channels (3 in 2D, 6 in 3D)."""
    return 3 if dim == 2 else 6


def metric_features(lattice: np.ndarray, shape: tuple[int, ...], spacing: float, dtype: Any = np.float32) -> np.ndarray:
    """Constant input channels describing the pixel geometry of an image.

    Pixels run along the cell vectors, so a strained (or hexagonal vs
    rectangular) cell gives nearly the same image with differently shaped
    pixels. These channels tell the network the pixel metric
    ``g_ab = (a_a / n_a) . (a_b / n_b) / spacing^2``:
    ``10 (g_aa - 1)`` for each axis and ``5 cos(angle_ab)`` for each pair.
    They are the same on every pixel, so translation invariance and exact
    supercell extensivity are kept.
    """
    v = np.asarray(lattice, dtype=np.float64) / np.asarray(shape, dtype=np.float64)[:, None]
    g = v @ v.T / spacing**2
    d = len(shape)
    feats = [10.0 * (g[i, i] - 1.0) for i in range(d)]
    feats += [5.0 * g[i, j] / np.sqrt(g[i, i] * g[j, j]) for i in range(d) for j in range(i + 1, d)]
    return np.asarray(feats, dtype=dtype)


def metric_features_tf(lattice, n, spacing: float, d: int):
    """:func:`metric_features` on tensors (differentiable with respect to the lattice, for the stress)."""
    import tensorflow as tf

    lat = tf.cast(lattice, tf.float64)  # float64 like the NumPy path, then float32 like the image
    v = lat / tf.cast(n, tf.float64)[:, None]
    g = tf.matmul(v, v, transpose_b=True) / spacing**2
    feats = [10.0 * (g[i, i] - 1.0) for i in range(d)]
    feats += [5.0 * g[i, j] / tf.sqrt(g[i, i] * g[j, j]) for i in range(d) for j in range(i + 1, d)]
    return tf.cast(tf.stack(feats), tf.float32)


def wrap_pad(image: np.ndarray, r: int) -> np.ndarray:
    """Pad the spatial axes of ``(n_1, ..., n_d, C)`` periodically by ``r`` pixels on every side."""
    if r == 0:
        return image
    d = image.ndim - 1
    return np.pad(image, [(r, r)] * d + [(0, 0)], mode="wrap")  # r > n repeats: still the periodic image


class InputPipeline:
    """Atoms -> network input, for one grid, head and receptive radius.

    Parameters
    ----------
    grid : GridSpec
    metric : bool
        Append the pixel-metric channels.
    radius : int
        Receptive radius of the network (wrap padding of the density head).
    head : {"density", "dense"}
    """

    def __init__(self, grid: GridSpec, metric: bool, radius: int, head: str = "density"):
        self.grid, self.metric, self.radius, self.head = grid, bool(metric), int(radius), head
        self.unit = gaussian_unit(grid)
        self.in_channels = grid.n_channels + (n_metric(grid.dim) if metric else 0)

    # ------------------------------------------------------------------ NumPy
    def prepare(self, atoms: Any) -> Prepared:
        """Validated structure (references the structure's arrays, no per-atom copies)."""
        return atoms if isinstance(atoms, Prepared) else prepare(atoms, self.grid)

    def pixel_weight(self, p: Prepared) -> float:
        """Pixel area (volume) over the Gaussian's: network sums times this are integrals."""
        return pixel_volume(p, self.grid) / self.unit

    def strips(self, p: Prepared, rows_per_strip: int | None = None, dtype: Any = np.float32,
               ranges: Sequence[tuple[int, int]] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, channels of rows r0..r0+h)``: the image strip by strip along cell vector 1
        (only the row ``ranges`` given, in their order: :func:`~ednn.image.raster.rasterize_strips`)."""
        g = self.grid
        mf = metric_features(p.lattice, p.shape, g.spacing) if self.metric else None
        for r0, s in rasterize_strips(None, g, rows_per_strip=rows_per_strip, prepared=p, dtype=np.float64,
                                      ranges=ranges):
            s = s * self.unit
            if mf is not None:
                s = np.concatenate([s, np.broadcast_to(mf, s.shape[:-1] + mf.shape)], axis=-1)
            yield r0, s.astype(dtype, copy=False)

    def image(self, atoms: Any) -> tuple[np.ndarray, float]:
        """All input channels of a structure, ``(n_1, ..., n_d, in_channels)`` float32, and its pixel weight."""
        p = self.prepare(atoms)
        img = np.empty(p.shape + (self.in_channels,), dtype=np.float32)
        for r0, s in self.strips(p, dtype=np.float64):
            img[r0 : r0 + s.shape[0]] = s
        return img, self.pixel_weight(p)

    def network_input(self, image: np.ndarray, weight: float) -> tuple[np.ndarray, float]:
        """Wrap-padded image (density head) or tiles (dense head), with the pixel weight."""
        image = np.asarray(image, dtype=np.float32)
        d = self.grid.dim
        if image.ndim != d + 1 or image.shape[-1] != self.in_channels:
            raise InputError(
                f"image has shape {image.shape}; this model expects {d} spatial axes and "
                f"{self.in_channels} channel(s), e.g. {(8,) * d + (self.in_channels,)}"
            )
        if self.head == "dense":
            layout_for(image.shape[:-1], self.grid.focus, self.grid.context).require_exact("the dense head")
            return tile(image, self.grid.focus, self.grid.context)[0], weight
        return wrap_pad(image, self.radius), weight

    # ------------------------------------------------------------- TensorFlow
    def tf_inputs(self, p: Prepared) -> dict[str, Any]:
        """What :meth:`tf_network_input` needs besides the positions (depends on cell, species, grid only)."""
        out: dict[str, Any] = dict(raster_tf_inputs(p, self.grid))
        out["pixel_weight"] = np.float64(self.pixel_weight(p))
        if self.head != "dense":
            for ax, n in enumerate(p.shape):
                out[f"pad{ax}"] = (np.arange(-self.radius, n + self.radius) % n).astype(np.int64)
        return out

    def raster_window(self, positions, inputs: dict[str, Any], window, z_ref):
        """Input channels of image rows ``window = (row0, h)`` from the atoms given (TF, differentiable in
        ``positions`` and ``z_ref``): ``(h, n_2, ..., in_channels)``, not padded (streamed forces)."""
        import tensorflow as tf

        g = self.grid
        img = rasterize_tf_core(positions, inputs, g, dtype=tf.float32, window=window, z_ref=z_ref) * self.unit
        if self.metric:
            mf = metric_features_tf(inputs["lattice"], inputs["n"], g.spacing, g.dim)
            shape = tf.concat([tf.shape(img)[:-1], tf.shape(mf)], axis=0)
            img = tf.concat([img, tf.broadcast_to(mf, shape)], axis=-1)
        return img

    def tf_network_input(self, positions, inputs: dict[str, Any], deform=None):
        """Network input and pixel weight as tensors, differentiable in ``positions`` and ``deform``.

        ``deform`` (d x d, optional): the in-plane (2D) or full (3D) block of a
        homogeneous deformation ``I + strain`` already applied to ``positions``;
        the lattice, the pixel geometry and the pixel weight follow it (stress).
        """
        import tensorflow as tf

        g = self.grid
        img = rasterize_tf_core(positions, inputs, g, dtype=tf.float32, deform=deform) * self.unit
        w = tf.cast(inputs["pixel_weight"], tf.float64)
        if deform is not None:
            w = w * tf.abs(tf.linalg.det(tf.cast(deform, tf.float64)))
        if self.metric:
            lat = tf.cast(inputs["lattice"], tf.float64)
            if deform is not None:
                lat = tf.matmul(lat, tf.cast(deform, tf.float64))
            mf = metric_features_tf(lat, inputs["n"], g.spacing, g.dim)
            shape = tf.concat([tf.shape(img)[:-1], tf.shape(mf)], axis=0)
            img = tf.concat([img, tf.broadcast_to(mf, shape)], axis=-1)
        if self.head == "dense":
            lay = layout_for(tuple(int(n) for n in np.asarray(inputs["n"])), g.focus, g.context)
            lay.require_exact("the dense head")
            return tile_tf(img, lay), w
        for ax in range(g.dim):
            img = tf.gather(img, inputs[f"pad{ax}"], axis=ax)  # periodic wrap by `radius` pixels
        return img[None], w
