"""The TensorFlow rasterizer: the same images as :func:`ednn.image.raster.rasterize`,
differentiable with respect to the positions (forces) and a homogeneous deformation of the
cell (stress), with inputs of any size inside one ``tf.function``."""

from __future__ import annotations

from typing import Any

import numpy as np

from .grid import GridSpec
from .raster import Prepared, _norm, _stencil, prepare

__all__ = ["raster_tf_inputs", "rasterize_tf_core", "rasterize_tf"]


def raster_tf_inputs(p: Prepared, spec: GridSpec) -> dict[str, np.ndarray]:
    """Everything :func:`rasterize_tf_core` needs besides the positions, as NumPy arrays.

    They depend on the cell, the species and the grid, not on the positions,
    so a compiled function can take them as inputs of any size (one trace for
    every structure) or hold them as constants (one trace per cell).
    """
    n = np.asarray(p.shape, dtype=np.int64)
    d = p.dim
    off = _stencil(p.lattice, p.shape, spec.radius)
    return {
        "lattice": p.lattice.astype(np.float64),
        "inv_lattice": np.linalg.inv(p.lattice),
        "n": n,
        "offsets": off,
        "offsets_cart": (off / n) @ p.lattice,
        "weights": p.weight() * _norm(spec),
        "channels": p.channel().astype(np.int64),
        "strides": np.array([int(np.prod(p.shape[i + 1 :])) for i in range(d)], dtype=np.int64),
    }


def rasterize_tf_core(positions: Any, inputs: dict[str, Any], spec: GridSpec, dtype: Any = None, deform: Any = None,
                      window: Any = None, z_ref: Any = None):
    """The TF rasterizer on tensors: ``positions`` (N, 3) and :func:`raster_tf_inputs`.

    Works with inputs of any size inside a ``tf.function`` (the image shape is
    ``inputs["n"]``, a tensor). Returns ``(n_1, ..., n_d, channels)``.

    ``window = (row0, h)`` (int64 tensor, optional) gives only the image rows
    ``row0 .. row0 + h - 1`` (mod ``n_1``) along cell vector 1, ``(h, n_2, ...,
    channels)``, from the atoms given (which must include every atom whose
    stencil reaches those rows; ``inputs["weights"]`` and ``["channels"]`` are
    theirs). ``z_ref`` (optional tensor) replaces the mean height of the atoms
    given as the reference plane of the height channels (for a subset of atoms,
    the whole structure's mean).

    ``deform`` (d x d tensor, optional) is the periodic block of a homogeneous
    deformation ``I + strain`` (row-vector convention: ``lattice @ deform``)
    that has already been applied to ``positions``: the lattice and stencil
    follow it, the pixel count does not. Derivatives with respect to it give
    the stress.
    """
    import tensorflow as tf

    dtype = dtype or tf.float32
    pos = tf.convert_to_tensor(positions)
    if pos.dtype != dtype:
        pos = tf.cast(pos, dtype)
    d = spec.dim

    def f(key):
        return tf.cast(inputs[key], dtype)

    def i64(key):
        return tf.cast(inputs[key], tf.int64)

    n_i, n_f = i64("n"), f("n")
    lattice, inv_lattice, offsets_cart = f("lattice"), f("inv_lattice"), f("offsets_cart")
    if deform is not None:
        D = tf.cast(deform, dtype)
        lattice = tf.matmul(lattice, D)
        inv_lattice = tf.matmul(tf.linalg.inv(D), inv_lattice)
        offsets_cart = tf.matmul(offsets_cart, D)
    frac = tf.matmul(pos[:, :d], inv_lattice)
    frac = frac - tf.stop_gradient(tf.floor(frac))
    scaled = frac * n_f
    base = tf.stop_gradient(tf.floor(scaled))
    phi = scaled - base
    # frac - floor(frac) can round to exactly 1.0 in float32: then base = n, which is pixel 0 of the
    # next period with the same phi (wrap it; clipping to n - 1 would put the atom one pixel off)
    base_i = tf.math.floormod(tf.cast(base, tf.int64), n_i)
    phi_cart = tf.matmul(phi / n_f, lattice)  # (N, d)
    diff = offsets_cart[None, :, :] - phi_cart[:, None, :]
    r2 = tf.reduce_sum(diff * diff, axis=-1)  # (N, S)
    mask = tf.cast(r2 <= spec.radius**2, dtype)
    vals = f("weights")[:, None] * tf.exp(-r2 * (0.5 / spec.sigma**2)) * mask
    m = (base_i[:, None, :] + i64("offsets")[None, :, :]) % n_i
    n_img = n_i
    if window is not None:  # rows row0 .. row0 + h - 1 of the image only, local row index m0 - row0 (mod n_1)
        window = tf.cast(window, tf.int64)
        m0 = tf.math.floormod(m[..., 0] - window[0], n_i[0])
        inside = m0 < window[1]
        vals = vals * tf.cast(inside, dtype)
        m = tf.concat([tf.where(inside, m0, tf.zeros_like(m0))[..., None], m[..., 1:]], axis=-1)
        n_img = tf.concat([window[1:2], n_i[1:]], axis=0)
    flat = tf.reduce_sum(m * i64("strides"), axis=-1)
    C = spec.n_channels
    flat = flat * C + i64("channels")[:, None]
    if spec.heights:
        z = pos[:, 2]
        zr = tf.reduce_mean(z) if z_ref is None else tf.cast(z_ref, dtype)
        hz = (z - zr) / spec.sigma  # differentiable: forces get their z components
        hk = tf.ones_like(hz)
        all_vals, all_flat = [vals], [flat]
        for k in range(1, spec.heights + 1):
            hk = hk * hz
            all_vals.append(vals * hk[:, None])
            all_flat.append(flat + k * spec.n_density_channels)
        vals, flat = tf.concat(all_vals, axis=0), tf.concat(all_flat, axis=0)
    img = tf.math.unsorted_segment_sum(tf.reshape(vals, [-1]), tf.reshape(flat, [-1]), tf.reduce_prod(n_img) * C)
    img = tf.reshape(img, tf.concat([n_img, tf.constant([C], tf.int64)], axis=0))
    return tf.ensure_shape(img, [None] * d + [C])  # the channel count is static, for the network's layers


def rasterize_tf(atoms: Any, spec: GridSpec, positions: Any = None, dtype: Any = None):
    """Rasterize with TensorFlow, differentiably with respect to positions.

    Parameters
    ----------
    atoms : ase.Atoms or (positions, numbers, cell, pbc)
        Gives the cell, species and (unless ``positions`` is given) positions.
    spec : GridSpec
    positions : tf.Tensor or tf.Variable, shape (N, 3), optional
        Cartesian positions to differentiate with respect to; defaults to the
        positions of ``atoms``.
    dtype : tf dtype, default float32

    Returns
    -------
    tf.Tensor of shape ``(n_1, ..., n_d, channels)``, equal to
    :func:`rasterize` up to floating-point rounding.
    """
    import tensorflow as tf

    p = prepare(atoms, spec)
    img = rasterize_tf_core(p.positions if positions is None else positions, raster_tf_inputs(p, spec), spec, dtype)
    return tf.ensure_shape(img, list(p.shape) + [spec.n_channels])
