"""The weight-shared tile network (Keras), any number of output channels.

One convolutional trunk (valid padding everywhere), then a head:

``"density"`` (default)
    Fully convolutional. A periodic image of ``n_1 x ... x n_d`` pixels,
    wrap-padded by the receptive radius ``r`` on every side, maps to
    ``n_1 x ... x n_d x n_out`` per-pixel outputs: channel 0 the energy
    density (when the model has an energy), then the per-voxel fields. Works
    for any image size and equals the tile-by-tile result exactly whenever
    the tile context is ``>= r``.
``"dense"``
    The EDNN paper's head: the conv trunk on a ``focus + 2 context`` tile,
    then dense layers -> one scalar per tile (energy only).

The last layer is linear. With ``vacuum_zero`` the output on an empty image is
subtracted, so vacuum has exactly zero energy density and zero fields.
"""

from __future__ import annotations

import math
from typing import Any

from ..config import normalize_model_config
from ..errors import GridError, ModelError
from ..image.pipeline import n_metric

__all__ = ["build_network", "n_outputs", "output_layer"]


def n_outputs(model_config: dict[str, Any], dim: int) -> int:
    """Output channels per pixel: 1 for the energy density (if any) plus every field's channels, times
    ``upsample**dim`` sub-voxels for fields finer than the image."""
    cfg = normalize_model_config(model_config)
    return int(cfg["energy"]) + sum(cfg["fields"].values()) * int(cfg["upsample"]) ** int(dim)


def output_layer(net):
    """The last (linear, 1x1) layer of a density-head network, inside the vacuum wrapper if there is one."""
    for layer in net.layers:
        if layer.name == "density":
            return layer
        trunk = getattr(layer, "trunk", None)
        if trunk is not None:
            return output_layer(trunk)
    raise ValueError("the network has no 'density' output layer (a dense-head network?)")


def _activation(name: str):
    import tensorflow as tf

    if name == "shifted_softplus":
        return lambda x: tf.nn.softplus(x) - math.log(2.0)
    return {"silu": "swish"}.get(name, name)


def build_network(model_config: dict[str, Any] | None, in_channels: int, dim: int = 2,
                  tile_size: int | None = None, seed: int | None = None):
    """Build the per-tile network.

    Parameters
    ----------
    model_config : dict
        The ``model`` section (see :data:`ednn.config.DEFAULT_MODEL`).
    in_channels : int
        Image channels (from :class:`ednn.image.pipeline.InputPipeline`).
    dim : {2, 3}
    tile_size : int, optional
        Required by the dense head (input tiles are ``tile_size^d``).
    seed : int, optional
        Seed of the weight initializers (reproducible networks).

    Returns
    -------
    keras.Model
        Density head: ``(B, n_1 + 2r, ..., C) -> (B, n_1, ..., n_out)``.
        Dense head: ``(B, t, ..., C) -> (B, 1)``.
    """
    import keras

    cfg = normalize_model_config(model_config)
    if dim not in (2, 3):
        raise GridError(f"dim must be 2 or 3, got {dim}")
    conv = keras.layers.Conv2D if dim == 2 else keras.layers.Conv3D
    act = _activation(cfg["activation"])
    filters = cfg["filters"] if isinstance(cfg["filters"], list) else [cfg["filters"]] * cfg["layers"]
    k = cfg["kernel"]
    h = k // 2
    n_out = n_outputs(cfg, dim)
    seeds = iter(range(10_000)) if seed is None else iter(range(seed * 1000, seed * 1000 + 1000))

    def init():
        s = next(seeds)
        return keras.initializers.GlorotUniform(seed=None if seed is None else s)

    if cfg["head"] == "dense":
        if tile_size is None:
            raise ModelError("the dense head needs tile_size (focus + 2 * context)")
        spatial = (tile_size,) * dim
    else:
        spatial = (None,) * dim
    inp = keras.Input(spatial + (in_channels,), name="image")
    x = keras.layers.Rescaling(float(cfg["input_scale"]), name="input_scale")(inp)
    if cfg["pair_features"]:
        x = _PairFeatures(name="pair_features")(x)
    for i, f in enumerate(filters):
        y = conv(f, k, padding="valid", activation=act, kernel_initializer=init(), name=f"conv{i}")(x)
        if cfg["residual"] and i > 0 and filters[i - 1] == f and h > 0:
            crop = [(h, h)] * dim
            c = (keras.layers.Cropping2D if dim == 2 else keras.layers.Cropping3D)(crop, name=f"crop{i}")(x)
            y = keras.layers.Add(name=f"res{i}")([y, c])
        x = y
    if cfg["head"] == "density":
        for j, u in enumerate(cfg["readout"]):
            x = conv(u, 1, activation=act, kernel_initializer=init(), name=f"readout{j}")(x)
        x = conv(n_out, 1, activation=None, kernel_initializer=init(), name="density")(x)  # linear
    else:
        x = keras.layers.Flatten(name="flatten")(x)
        for j, u in enumerate(cfg["readout"]):
            x = keras.layers.Dense(u, activation=act, kernel_initializer=init(), name=f"dense{j}")(x)
        x = keras.layers.Dense(1, activation=None, kernel_initializer=init(), name="energy")(x)  # linear
    trunk = keras.Model(inp, x, name=f"ednn_{cfg['head']}_trunk")
    if not cfg["vacuum_zero"]:
        return trunk
    r = cfg["layers"] * h
    probe = (tile_size,) * dim if cfg["head"] == "dense" else (2 * r + 1,) * dim
    inp2 = keras.Input(spatial + (in_channels,), name="image")
    n_const = n_metric(dim) if cfg["metric_channels"] else 0
    out = _VacuumZero(trunk, probe + (in_channels,), n_const, name="vacuum_zero")(inp2)
    return keras.Model(inp2, out, name=f"ednn_{cfg['head']}")


def _layers():
    """The custom layers (defined on first use so that importing ednn does not import Keras)."""
    import keras
    from keras import ops

    class PairFeatures(keras.layers.Layer):
        """Append the products ``x_i * x_j`` (i <= j) of the channels: overlaps of neighbouring atoms' Gaussians."""

        def call(self, x):
            C = x.shape[-1]
            prods = [x[..., i : i + 1] * x[..., j : j + 1] for i in range(C) for j in range(i, C)]
            return ops.concatenate([x] + prods, axis=-1)

        def compute_output_shape(self, input_shape):
            C = input_shape[-1]
            return tuple(input_shape[:-1]) + (C + C * (C + 1) // 2,)

    class VacuumZero(keras.layers.Layer):
        """``trunk(x) - trunk(0)``: the output on an empty tile is subtracted, so vacuum gives zero."""

        def __init__(self, trunk, probe_shape, n_const=0, **kw):
            super().__init__(**kw)
            self.trunk = trunk
            self.probe_shape = tuple(probe_shape)
            self.n_const = int(n_const)

        def call(self, x):
            y = self.trunk(x)
            if self.n_const:
                # empty space with this image's pixel metric (constant channels, one probe per image)
                d = len(self.probe_shape) - 1
                C = self.probe_shape[-1]
                const = x[(slice(None),) + (slice(0, 1),) * d + (slice(C - self.n_const, C),)]
                zeros = ops.repeat(ops.zeros_like(const[..., :1]), C - self.n_const, axis=-1)
                pix = ops.concatenate([zeros, const], axis=-1)
                for ax in range(1, d + 1):
                    pix = ops.repeat(pix, self.probe_shape[ax - 1], axis=ax)
                z = self.trunk(pix)  # (B, 1, ..., n_out) or (B, 1)
                if len(y.shape) > 2:
                    return y - ops.reshape(z, (-1,) + (1,) * (len(y.shape) - 2) + (y.shape[-1],))
                return y - ops.reshape(z, (-1, 1))
            z = self.trunk(ops.zeros((1,) + self.probe_shape, dtype=x.dtype))
            if len(y.shape) > 2:
                return y - ops.reshape(z, (1,) * (len(y.shape) - 1) + (y.shape[-1],))
            return y - z

        def compute_output_shape(self, input_shape):
            return self.trunk.compute_output_shape(input_shape)

    return PairFeatures, VacuumZero


def _PairFeatures(name):  # noqa: N802
    return _layers()[0](name=name)


def _VacuumZero(trunk, probe_shape, n_const, name):  # noqa: N802
    return _layers()[1](trunk, probe_shape, n_const, name=name)
