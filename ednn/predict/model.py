"""The extensive energy model: a weight-shared CNN summed over the image.

Two heads share one convolutional trunk (valid padding everywhere):

``"density"`` (default)
    Fully convolutional. A periodic image of ``n_1 x ... x n_d`` pixels,
    wrap-padded by the receptive radius ``r`` on every side, maps to an
    ``n_1 x ... x n_d`` energy-density image; the energy is its sum (times the
    pixel weight, see below). Works for any image size, gives local energy maps
    for free, and equals the tile-by-tile result exactly whenever the tile
    context is ``>= r``.
``"dense"``
    The EDNN paper's head: the conv trunk on a ``focus + 2 context`` tile, then
    dense layers -> one scalar per tile; the energy is the sum over tiles.
    Needs image sizes that are whole multiples of ``focus``.

The last layer is linear (outputs may be negative). Energies are modelled as

``E = sum_i e_ref[Z_i] + scale * sum_pixels w * net(image)``

with per-element reference energies ``e_ref`` fitted by least squares on the
training set and ``scale`` the std of the per-atom residual energies. ``w`` is
the pixel area (volume) divided by the Gaussian's area ``(2 pi sigma^2)^(d/2)``
(:func:`gaussian_unit`), so the pixel sum is an integral and strained cells
with slightly different effective pixels are treated consistently; the input
image is the density times the same unit. For image-mode models (no grid, e.g. the Ising model)
``w = 1`` and the "composition" is the pixel count.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, GridError, InputError, ModelError
from ..image.grid import GridSpec

__all__ = [
    "DEFAULT_MODEL",
    "ACTIVATIONS",
    "HEADS",
    "normalize_model_config",
    "receptive_radius",
    "build_network",
    "fit_references",
    "Batch",
    "make_batch",
    "EnergyModel",
]

HEADS = ("density", "dense")
STREAM_PIXELS = 1 << 20  # structures with more pixels are predicted strip by strip
ACTIVATIONS = ("swish", "silu", "tanh", "softplus", "gelu", "elu", "relu", "shifted_softplus")

#: Default architecture (chosen by measurement, see README "Training").
DEFAULT_MODEL: dict[str, Any] = {
    "head": "density",
    "layers": 5,  # conv layers in the trunk (receptive radius 5 px = 3.1 A at the default grid)
    "filters": 32,  # int or list (one per conv layer)
    "kernel": 3,  # odd kernel size
    "activation": "swish",
    "readout": [32],  # 1x1 conv (density head) or dense (dense head) hidden layers
    "residual": True,  # residual connections between equal-width conv layers (cropped)
    "vacuum_zero": True,  # subtract the output on an empty tile: vacuum has exactly zero energy
    "input_scale": 3.0,  # inputs (about 1 at an atom centre) are multiplied by this: starts the net nonlinear
    "metric_channels": False,  # pixel-metric input channels (grid models only); see metric_features()
    "pair_features": False,  # add the products x_i * x_j of input channels (bond overlaps) as inputs
}


def _model_types() -> dict[str, tuple[type, ...]]:
    return {
        "head": (str,),
        "layers": (int,),
        "filters": (int, list),
        "kernel": (int,),
        "activation": (str,),
        "readout": (list,),
        "residual": (bool,),
        "vacuum_zero": (bool,),
        "input_scale": (float, int),
        "pair_features": (bool,),
        "metric_channels": (bool, type(None)),
    }


def normalize_model_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Validate an architecture dict and fill in defaults.

    Raises
    ------
    ConfigError
        Naming the offending key and the valid options.
    """
    cfg = dict(cfg or {})
    types = _model_types()
    unknown = sorted(set(cfg) - set(types))
    if unknown:
        raise ConfigError(f"unknown model key(s) {unknown}; valid keys are {sorted(types)}")
    out = copy.deepcopy(DEFAULT_MODEL)
    for k, v in cfg.items():
        ok = isinstance(v, types[k]) and not (isinstance(v, bool) and bool not in types[k])
        if not ok:
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types[k])
            raise ConfigError(f"model.{k} must be {names}, got {type(v).__name__} {v!r}")
        out[k] = copy.deepcopy(v)
    out["input_scale"] = float(out["input_scale"])
    if not out["input_scale"] > 0:
        raise ConfigError(f"model.input_scale must be > 0, got {out['input_scale']}")
    if out["head"] not in HEADS:
        raise ConfigError(f"model.head must be one of {list(HEADS)}, got {out['head']!r}")
    if out["activation"] not in ACTIVATIONS:
        raise ConfigError(f"model.activation must be one of {list(ACTIVATIONS)}, got {out['activation']!r}")
    if out["layers"] < 1:
        raise ConfigError(f"model.layers must be >= 1, got {out['layers']}")
    if out["kernel"] < 1 or out["kernel"] % 2 == 0:
        raise ConfigError(f"model.kernel must be a positive odd integer, got {out['kernel']}")
    f = out["filters"]
    if isinstance(f, list):
        if len(f) != out["layers"] or not all(isinstance(x, int) and x > 0 for x in f):
            raise ConfigError(
                f"model.filters as a list needs one positive int per conv layer ({out['layers']}), got {f}"
            )
    elif f < 1:
        raise ConfigError(f"model.filters must be positive, got {f}")
    if not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in out["readout"]):
        raise ConfigError(f"model.readout must be a list of positive ints, got {out['readout']}")
    return out


def receptive_radius(model_config: dict[str, Any]) -> int:
    """Receptive radius in pixels of the conv trunk (``layers * (kernel // 2)``)."""
    cfg = normalize_model_config(model_config)
    return int(cfg["layers"] * (cfg["kernel"] // 2))


def _activation(name: str):
    import tensorflow as tf

    if name == "shifted_softplus":
        return lambda x: tf.nn.softplus(x) - math.log(2.0)
    return {"silu": "swish"}.get(name, name)


def build_network(
    model_config: dict[str, Any] | None,
    in_channels: int,
    dim: int = 2,
    tile_size: int | None = None,
    seed: int | None = None,
):
    """Build the per-tile network.

    Parameters
    ----------
    model_config : dict
        Architecture (see :data:`DEFAULT_MODEL`); missing keys take defaults.
    in_channels : int
        Image channels (species, or 1 for mode "z" / Ising spins).
    dim : {2, 3}
        Spatial dimensionality.
    tile_size : int, optional
        Required by the dense head (input tiles are ``tile_size^d``).
    seed : int, optional
        Seed of the weight initializers (reproducible networks).

    Returns
    -------
    keras.Model
        Density head: ``(B, n_1 + 2r, ..., C) -> (B, n_1, ..., 1)`` for any
        spatial size (r = receptive radius). Dense head:
        ``(B, t, ..., C) -> (B, 1)``.
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
        x = _pair_layer()(name="pair_features")(x)
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
        x = conv(1, 1, activation=None, kernel_initializer=init(), name="density")(x)  # linear
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


def _pair_layer():
    import keras

    class PairFeatures(keras.layers.Layer):
        """Append the products ``x_i * x_j`` (i <= j) of the channels: overlaps of neighbouring atoms' Gaussians."""

        def call(self, x):
            from keras import ops

            C = x.shape[-1]
            prods = [x[..., i : i + 1] * x[..., j : j + 1] for i in range(C) for j in range(i, C)]
            return ops.concatenate([x] + prods, axis=-1)

        def compute_output_shape(self, input_shape):
            C = input_shape[-1]
            return tuple(input_shape[:-1]) + (C + C * (C + 1) // 2,)

    return PairFeatures


def _vacuum_zero_layer():
    import keras

    class VacuumZero(keras.layers.Layer):
        """``trunk(x) - trunk(0)``: the output on an empty tile is subtracted, so vacuum has zero energy."""

        def __init__(self, trunk, probe_shape, n_const=0, **kw):
            super().__init__(**kw)
            self.trunk = trunk
            self.probe_shape = tuple(probe_shape)
            self.n_const = int(n_const)

        def call(self, x):
            from keras import ops

            y = self.trunk(x)
            if self.n_const:
                # empty space with this image's pixel metric (constant channels, one probe per image)
                d = len(self.probe_shape) - 1
                C = self.probe_shape[-1]
                const = x[(slice(None),) + (slice(0, 1),) * d + (slice(C - self.n_const, C),)]
                zeros = ops.zeros_like(const[..., :1])
                zeros = ops.repeat(zeros, C - self.n_const, axis=-1)
                pix = ops.concatenate([zeros, const], axis=-1)
                for ax in range(1, d + 1):
                    pix = ops.repeat(pix, self.probe_shape[ax - 1], axis=ax)
                z = self.trunk(pix)
                return y - ops.reshape(z, (-1,) + (1,) * (len(y.shape) - 1))
            z = self.trunk(ops.zeros((1,) + self.probe_shape, dtype=x.dtype))
            return y - ops.reshape(z, (1,) * (len(y.shape) - 1) + (1,)) if len(y.shape) > 2 else y - z

        def compute_output_shape(self, input_shape):
            return self.trunk.compute_output_shape(input_shape)

    return VacuumZero


def _VacuumZero(trunk, probe_shape, n_const, name):  # noqa: N802
    return _vacuum_zero_layer()(trunk, probe_shape, n_const, name=name)


def n_metric(dim: int) -> int:
    """Number of pixel-metric channels (3 in 2D, 6 in 3D)."""
    return 3 if dim == 2 else 6


def metric_features(lattice: np.ndarray, shape: Sequence[int], spacing: float) -> np.ndarray:
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
    return np.asarray(feats, dtype=np.float32)


def gaussian_unit(grid: GridSpec) -> float:
    """``(2 pi sigma^2)^(d/2)``: the area (volume) of one atom's Gaussian.

    Network inputs are densities times this unit (1 at an isolated atom's
    centre), and the pixel weight is the pixel area (volume) divided by it, so
    neither depends on the pixel spacing.
    """
    return float((2.0 * math.pi * grid.sigma**2) ** (grid.dim / 2.0))


# ----------------------------------------------------------------- references
def fit_references(counts: np.ndarray, energies: np.ndarray, n_atoms: np.ndarray | None = None):
    """Per-element reference energies (least squares) and the per-atom scale.

    Parameters
    ----------
    counts : (S, K) array
        Number of atoms of each species (or pixels, in image mode) per structure.
    energies : (S,) array
        Total energies.
    n_atoms : (S,) array, optional
        Atoms per structure (defaults to ``counts.sum(1)``).

    Returns
    -------
    refs : (K,) array
        Reference energy per species (0 for species absent from the data).
    scale : float
        Std of the per-atom residual energy (1 if it is zero).
    """
    counts = np.asarray(counts, dtype=np.float64)
    energies = np.asarray(energies, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != energies.shape[0] or counts.shape[0] == 0:
        raise InputError(f"counts {counts.shape} and energies {energies.shape} do not match")
    n = counts.sum(1) if n_atoms is None else np.asarray(n_atoms, dtype=np.float64)
    present = counts.sum(0) > 0
    refs = np.zeros(counts.shape[1])
    # least squares on per-atom energies (each structure weighted equally per atom)
    A = counts[:, present] / n[:, None]
    b = energies / n
    sol, *_ = np.linalg.lstsq(A, b, rcond=None)
    refs[present] = sol
    resid = (energies - counts @ refs) / n
    scale = float(np.std(resid))
    if not np.isfinite(scale) or scale < 1e-12:
        scale = 1.0
    return refs, scale


# --------------------------------------------------------------------- batches
class Batch:
    """Network inputs of several structures, ready for one forward pass.

    Attributes
    ----------
    x : float32 array (B', ..., C)
        Wrap-padded images (density head; zero-padded at the far end to a
        common shape) or tiles (dense head).
    mask : float32 array (B', ...)
        Pixel weight ``w`` on real output pixels, 0 on padding.
    seg : int32 array (B',)
        Structure index (within the batch) of each row of ``x``.
    n : int
        Number of structures.
    """

    def __init__(self, x: np.ndarray, mask: np.ndarray, seg: np.ndarray, n: int):
        self.x, self.mask, self.seg, self.n = x, mask, seg, n


def make_batch(samples: Sequence[tuple[np.ndarray, float]], head: str, radius: int, layout=None) -> Batch:
    """Assemble a batch from ``(network_input, pixel_weight)`` samples.

    For the density head each input is a wrap-padded image of spatial shape
    ``n_i + 2 r``; images of different shapes are zero-padded at the far end
    and their extra outputs masked out (valid convolutions never mix the
    padding into real outputs). For the dense head each input is a stack of
    tiles ``(T_i, t, ..., C)``.
    """
    if head == "dense":
        x = np.concatenate([s[0] for s in samples], axis=0)
        seg = np.concatenate([np.full(len(s[0]), i, np.int32) for i, s in enumerate(samples)])
        mask = np.concatenate([np.full(len(s[0]), s[1], np.float32) for s in samples])
        return Batch(x.astype(np.float32, copy=False), mask, seg, len(samples))
    shapes = np.array([s[0].shape[:-1] for s in samples])
    big = tuple(int(v) for v in shapes.max(0))
    C = samples[0][0].shape[-1]
    B = len(samples)
    x = np.zeros((B,) + big + (C,), dtype=np.float32)
    out_shape = tuple(b - 2 * radius for b in big)
    mask = np.zeros((B,) + out_shape, dtype=np.float32)
    for i, (img, w) in enumerate(samples):
        x[(i,) + tuple(slice(0, s) for s in img.shape[:-1])] = img
        mask[(i,) + tuple(slice(0, s - 2 * radius) for s in img.shape[:-1])] = w
    return Batch(x, mask, np.arange(B, dtype=np.int32), B)


def _wrap_pad(img: np.ndarray, r: int) -> np.ndarray:
    if r == 0:
        return img
    d = img.ndim - 1
    n = img.shape[:d]
    if any(r > s for s in n):
        # np.pad wrap handles r > n by repeating, which is the periodic image
        pass
    return np.pad(img, [(r, r)] * d + [(0, 0)], mode="wrap")


# ----------------------------------------------------------------- the model
class EnergyModel:
    """A trained (or freshly built) extensive energy model.

    Parameters
    ----------
    network : keras.Model
        From :func:`build_network`.
    model_config : dict
        Architecture (normalized).
    grid : GridSpec or None
        The grid contract; ``None`` for image-mode models (inputs are images).
    refs : (K,) array
        Reference energy per species (per grid species; image mode: per pixel).
    scale : float
        Energy scale of the network output (eV).
    in_channels : int
        Channels of the input images.
    dim : int
        Spatial dimensionality.
    """

    def __init__(
        self,
        network,
        model_config: dict[str, Any],
        grid: GridSpec | None,
        refs: Sequence[float] | None = None,
        scale: float = 1.0,
        in_channels: int | None = None,
        dim: int | None = None,
        meta: dict[str, Any] | None = None,
    ):
        self.network = network
        self.model_config = normalize_model_config(model_config)
        self.grid = grid
        self.dim = int(dim if dim is not None else (grid.dim if grid else 2))
        self.in_channels = int(in_channels if in_channels is not None else (grid.n_channels if grid else 1))
        self.metric = bool(self.model_config["metric_channels"])
        K = len(grid.species) if grid is not None else 1
        self.refs = np.zeros(K) if refs is None else np.asarray(refs, dtype=np.float64)
        if self.refs.shape != (K,):
            raise ModelError(f"reference energies have shape {self.refs.shape}, expected ({K},)")
        self.scale = float(scale)
        self.radius = receptive_radius(self.model_config)
        self.meta = dict(meta or {})
        if grid is not None and self.head == "density" and grid.context < self.radius:
            raise ModelError(
                f"grid context {grid.context} is smaller than the network's receptive radius {self.radius}; "
                "tiles would not reproduce whole-image outputs"
            )

    # ------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        model_config: dict[str, Any] | None = None,
        grid: GridSpec | None = None,
        in_channels: int | None = None,
        dim: int | None = None,
        seed: int | None = None,
    ) -> EnergyModel:
        """Build a fresh (untrained) model; the grid's context is set to the receptive radius if smaller."""
        cfg = normalize_model_config(model_config)
        r = receptive_radius(cfg)
        if cfg["metric_channels"] is None:  # "auto": on for grid models
            cfg["metric_channels"] = grid is not None
        if cfg["metric_channels"] and grid is None:
            raise ModelError("metric_channels needs a grid; image-mode models take images as they are")
        if grid is not None:
            if cfg["head"] == "density" and grid.context < r:
                grid = grid.replace(context=r)
            dim = grid.dim
            in_channels = grid.n_channels + (n_metric(grid.dim) if cfg["metric_channels"] else 0)
        dim = dim or 2
        in_channels = in_channels or 1
        tile_size = None
        if cfg["head"] == "dense":
            if grid is None:
                raise ModelError("the dense head needs a grid (focus/context); use head='density' for image mode")
            if grid.context < r:
                raise ModelError(f"dense head: grid context {grid.context} < receptive radius {r}")
            tile_size = grid.tile_size
        net = build_network(cfg, in_channels, dim, tile_size=tile_size, seed=seed)
        return cls(net, cfg, grid, None, 1.0, in_channels, dim)

    @property
    def head(self) -> str:
        return self.model_config["head"]

    @property
    def species(self) -> tuple[int, ...]:
        return self.grid.species if self.grid is not None else ()

    # ----------------------------------------------------------- preprocessing
    def image(self, atoms: Any) -> tuple[np.ndarray, float]:
        """Network image of a structure and its pixel weight ``w``.

        Atoms are rasterized with the model's grid and multiplied by
        :func:`gaussian_unit` (about 1 at an atom's centre).
        """
        from ..image.raster import pixel_volume, prepare, rasterize_strips

        if self.grid is None:
            raise ModelError("this model works on images (no grid); call predict_image_energies")
        p = prepare(atoms, self.grid)
        g = self.grid
        unit = gaussian_unit(g)
        C = g.n_channels
        img = np.empty(p.shape + (self.in_channels,), dtype=np.float32)
        for r0, strip in rasterize_strips(None, g, prepared=p, dtype=np.float64):
            img[r0 : r0 + strip.shape[0], ..., :C] = strip * unit
        if self.metric:
            img[..., C:] = metric_features(p.lattice, p.shape, g.spacing)
        return img, pixel_volume(p, g) / unit

    def counts(self, atoms: Any) -> np.ndarray:
        """Atoms of each grid species in ``atoms``."""
        lut = {z: i for i, z in enumerate(self.grid.species)}
        c = np.zeros(len(lut))
        numbers = atoms.numbers if hasattr(atoms, "numbers") else atoms[1]
        for z in np.asarray(numbers).tolist():
            c[lut[z]] += 1
        return c

    def network_input(self, image: np.ndarray, weight: float) -> tuple[np.ndarray, float]:
        """Per-structure network input: wrap-padded image (density) or tiles (dense)."""
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != self.dim + 1 or image.shape[-1] != self.in_channels:
            raise InputError(
                f"image has shape {image.shape}; this model expects {self.dim} spatial axes and "
                f"{self.in_channels} channel(s), e.g. {(8,) * self.dim + (self.in_channels,)}"
            )
        if self.head == "dense":
            from ..image.tiling import layout_for, tile

            lay = layout_for(image.shape[:-1], self.grid.focus, self.grid.context)
            lay.require_exact("the dense head")
            tiles, _ = tile(image, self.grid.focus, self.grid.context)
            return tiles, weight
        return _wrap_pad(image, self.radius), weight

    # -------------------------------------------------------------- prediction
    def _net_sums(self, inputs: Sequence[tuple[np.ndarray, float]], batch_size: int = 16) -> np.ndarray:
        """Network part (scaled units) of the energy of each input, summed in float64."""
        out = np.zeros(len(inputs))
        order = np.argsort([int(np.prod(x.shape[:-1])) for x, _ in inputs], kind="stable")
        for b0 in range(0, len(order), batch_size):
            idx = order[b0 : b0 + batch_size]
            batch = make_batch([inputs[i] for i in idx], self.head, self.radius)
            y = np.asarray(self._forward(batch.x), dtype=np.float64)
            y = y.reshape((y.shape[0],) + batch.mask.shape[1:]) * batch.mask
            per_row = y.reshape(y.shape[0], -1).sum(1)
            out[idx] = np.bincount(batch.seg, weights=per_row, minlength=batch.n)
        return out

    def _forward(self, x: np.ndarray):
        import tensorflow as tf

        if not hasattr(self, "_fwd"):
            spec = tf.TensorSpec([None] * (self.dim + 1) + [self.in_channels], tf.float32)
            self._fwd = tf.function(lambda t: self.network(t, training=False), input_signature=[spec])
        return self._fwd(tf.constant(x)).numpy()

    def predict_energies(self, structures: Iterable[Any], batch_size: int = 16) -> np.ndarray:
        """Total energies (eV) of several structures."""
        structures = list(structures)
        if not structures:
            return np.zeros(0)
        out = np.zeros(len(structures))
        small: list[int] = []
        for i, a in enumerate(structures):
            if self.grid is not None and self.head == "density" and math.prod(_pixels(a, self.grid)) > STREAM_PIXELS:
                from .stream import stream_energy

                out[i] = stream_energy(self, a)  # huge sheet: strips, flat memory
            else:
                small.append(i)
        inputs, refs = [], np.zeros(len(small))
        for k, i in enumerate(small):
            img, w = self.image(structures[i])
            inputs.append(self.network_input(img, w))
            refs[k] = self.counts(structures[i]) @ self.refs
        if small:
            out[small] = refs + self.scale * self._net_sums(inputs, batch_size)
        return out

    def predict_energy(self, atoms: Any) -> float:
        """Total energy (eV) of one structure of any size (streams huge sheets)."""
        return float(self.predict_energies([atoms])[0])

    def predict_sets(self, ts, batch_size: int = 32) -> np.ndarray:
        """Energies (eV) of a cached :class:`ednn.train.TrainSet` (inputs already rasterized)."""
        return ts.counts @ self.refs + self.scale * self._net_sums(ts.inputs, batch_size)

    def predict_image_energies(self, images: Iterable[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Energies of periodic images (image mode, or pre-rasterized network images with w=1)."""
        images = list(images)
        inputs = [self.network_input(np.asarray(im, dtype=np.float32), 1.0) for im in images]
        n_pix = np.array([float(np.prod(np.shape(im)[: self.dim])) for im in images])
        ref = n_pix * self.refs[0] if self.grid is None else 0.0
        return ref + self.scale * self._net_sums(inputs, batch_size)

    def energy_map(self, atoms: Any, include_reference: bool = True) -> np.ndarray:
        """Per-pixel energies (eV) of a structure, shape ``(n_1, ..., n_d)``.

        Density head: the network's energy density times the pixel weight and
        scale; with ``include_reference`` the reference energies are spread
        over the pixels in proportion to each species' density, so the map
        sums to the total energy (up to the Gaussian truncation, ~1e-5).
        Dense head: each tile's energy spread uniformly over its focus.
        """
        img, w = self.image(atoms) if self.grid is not None else (np.asarray(atoms, np.float32), 1.0)
        x, _ = self.network_input(img, w)
        if self.head == "density":
            y = self._forward(x[None])[0, ..., 0].astype(np.float64) * w * self.scale
        else:
            from ..image.tiling import layout_for, untile

            lay = layout_for(img.shape[:-1], self.grid.focus, self.grid.context)
            t = self._forward(x)[:, 0].astype(np.float64) * w * self.scale / self.grid.focus**self.dim
            per = np.broadcast_to(t.reshape((-1,) + (1,) * self.dim + (1,)), (len(t),) + (lay.focus,) * self.dim + (1,))
            y = untile(per, lay)[..., 0]
        if include_reference:
            if self.grid is not None and self.grid.mode == "species":
                dens = img[..., : self.grid.n_density_channels].astype(np.float64)
                tot = dens.reshape(-1, dens.shape[-1]).sum(0)
                cnt = self.counts(atoms)
                with np.errstate(invalid="ignore", divide="ignore"):
                    per_unit = np.where(tot > 0, cnt * self.refs / tot, 0.0)
                y = y + dens @ per_unit
            elif self.grid is None:
                y = y + self.refs[0]
            else:
                ref = self.counts(atoms) @ self.refs
                dens = img[..., 0].astype(np.float64)
                y = y + ref * dens / dens.sum()
        return y

    def tile_energies(self, atoms: Any) -> np.ndarray:
        """Energy (eV) of each focus tile, shape = tile grid (references included)."""
        m = self.energy_map(atoms)
        f = self.grid.focus
        grid = [-(-n // f) for n in m.shape]  # ceil: a partial last tile holds the remaining pixels
        mm = np.pad(m, [(0, g * f - n) for g, n in zip(grid, m.shape)])
        shp = []
        for g in grid:
            shp += [g, f]
        return mm.reshape(shp).sum(axis=tuple(range(1, 2 * self.dim, 2)))

    def predict_forces(self, structures: Iterable[Any]) -> list[np.ndarray]:
        """Forces ``-dE/dpositions`` (eV/A), one (N, 3) array per structure, through the compiled gradient.

        Structures are ase.Atoms or ``(positions, numbers, cell, pbc)`` tuples.
        """
        calc = self.calculator()
        return [-calc.gradient(a) for a in structures]

    def calculator(self, **kw):
        """An ASE calculator (energy, forces, per-pixel energies)."""
        from .calculator import EDNNCalculator

        return EDNNCalculator(self, **kw)

    def save(self, path: str) -> str:
        """Write the model folder (see :mod:`ednn.predict.artifact`)."""
        from .artifact import save_model

        return save_model(self, path)

    # ------------------------------------------------------------ differentiable
    def energy_tf_inputs(self, atoms: Any) -> dict[str, Any]:
        """What :meth:`energy_tf_core` needs besides the positions (NumPy arrays and scalars).

        Depends on the cell, the species and the grid only, so one compiled
        function serves every structure (see :class:`ednn.predict.calculator.EDNNCalculator`).
        """
        from ..image.raster import pixel_volume, prepare, raster_tf_inputs

        g = self.grid
        p = prepare(atoms, g)
        out: dict[str, Any] = dict(raster_tf_inputs(p, g))
        out["pixel_weight"] = np.float64(pixel_volume(p, g) / gaussian_unit(g))
        out["reference"] = np.float64(self.counts(atoms) @ self.refs)
        out["scale"] = np.float64(self.scale)
        if self.metric:
            out["metric"] = metric_features(p.lattice, p.shape, g.spacing).astype(np.float32)
        if self.head != "dense":
            for ax, n in enumerate(p.shape):
                out[f"pad{ax}"] = (np.arange(-self.radius, n + self.radius) % n).astype(np.int64)
        return out

    def energy_tf_core(self, positions, inputs: dict[str, Any]):
        """Energy (float64 TF scalar) from positions (N, 3) and :meth:`energy_tf_inputs`.

        Differentiable with respect to ``positions``. With the density head all
        shapes may be dynamic (tensors of any size inside a ``tf.function``);
        the dense head needs the static image shape (use :meth:`energy_tf`).
        """
        import tensorflow as tf

        from ..image.raster import rasterize_tf_core

        g = self.grid
        img = rasterize_tf_core(positions, inputs, g, dtype=tf.float32) * gaussian_unit(g)
        if self.metric:
            mf = tf.cast(inputs["metric"], tf.float32)
            shape = tf.concat([tf.shape(img)[:-1], tf.shape(mf)], axis=0)
            img = tf.concat([img, tf.broadcast_to(mf, shape)], axis=-1)
        if self.head == "dense":
            from ..image.tiling import layout_for, tile_tf

            lay = layout_for(tuple(int(n) for n in np.asarray(inputs["n"])), g.focus, g.context)
            lay.require_exact("the dense head")
            x = tile_tf(img, lay)
        else:
            for ax in range(self.dim):
                img = tf.gather(img, inputs[f"pad{ax}"], axis=ax)  # periodic wrap by `radius` pixels
            x = img[None]
        y = self.network(x, training=False)
        w = tf.cast(inputs["pixel_weight"], tf.float64)
        scale = tf.cast(inputs["scale"], tf.float64)  # an input, so a traced function never keeps an old scale
        return tf.reduce_sum(tf.cast(y, tf.float64)) * w * scale + tf.cast(inputs["reference"], tf.float64)

    def energy_tf(self, atoms: Any, positions):
        """Energy as a TF scalar, differentiable with respect to ``positions`` (N, 3)."""
        return self.energy_tf_core(positions, self.energy_tf_inputs(atoms))


def _pixels(atoms: Any, grid: GridSpec) -> tuple[int, ...]:
    from ..image.raster import _structure_arrays

    _, _, cell, _ = _structure_arrays(atoms)
    return grid.pixels_along(np.linalg.norm(cell[: grid.dim, : grid.dim] if grid.dim == 2 else cell, axis=1))
