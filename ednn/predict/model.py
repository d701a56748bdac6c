"""The model a user holds: input pipeline + network + output pieces.

:class:`EnergyModel` (the name is historical: it also predicts per-voxel fields)
joins the one input pipeline (:class:`ednn.image.pipeline.InputPipeline`), the
Keras network (:mod:`ednn.nn.network`) and its outputs (:mod:`ednn.nn.outputs`):

* energy: ``E = sum_i e_ref[Z_i] + scale * w * sum_pixels y_0`` (extensive);
  forces ``-dE/dr`` and stress ``(1/V) dE/d(strain)`` by automatic
  differentiation through the TF rasterizer; an energy map per pixel, energies
  per tile and per atom (Voronoi rule, see :meth:`EnergyModel.atom_energies`);
* per-voxel fields (``model_config["fields"]``): ``scale_c * y_c`` on the image
  grid, predicted on the whole image, tile by tile or streamed strip by strip,
  all equal.

For image-mode models (no grid, e.g. the Ising model) the pixel weight is 1 and
the "composition" is the pixel count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..config import normalize_model_config, receptive_radius
from ..errors import InputError, ModelError, SpeciesError
from ..image.grid import GridSpec
from ..image.pipeline import InputPipeline, gaussian_unit, metric_features, n_metric, wrap_pad
from ..image.raster import _structure_arrays, element_counts
from ..image.tiling import layout_for, tile, untile
from ..nn.batch import make_batch
from ..nn.network import build_network, n_outputs
from ..nn.outputs import EnergyOutput, FieldOutput, build_outputs, fit_references
from .artifact import corrupt, read_model, save_model
from .calculator import EDNNCalculator
from .domain import HasDomain
from .stream import stream_energy, stream_outputs

__all__ = ["EnergyModel", "load", "STREAM_PIXELS", "build_network", "fit_references", "normalize_model_config",
           "receptive_radius", "gaussian_unit", "metric_features", "n_metric"]

STREAM_PIXELS = 1 << 20  # structures with more pixels are predicted strip by strip


class EnergyModel(HasDomain):
    """A trained (or freshly built) ednn model.

    Parameters
    ----------
    network : keras.Model
        From :func:`ednn.nn.network.build_network`.
    model_config : dict
        The ``model`` config section.
    grid : GridSpec or None
        The grid contract; ``None`` for image-mode models (inputs are images).
    refs : (K,) array, optional
        Reference energy per species (image mode: per pixel).
    scale : float
        Energy scale of the network output (eV).
    in_channels, dim : int, optional
        Image mode only (a grid fixes both).
    meta : dict, optional
        Free-form metadata saved with the model.
    outputs : dict, optional
        Saved output transforms (``{"energy": ..., "fields": ...}`` of a model file).
    """

    def __init__(self, network, model_config: dict[str, Any], grid: GridSpec | None,
                 refs: Sequence[float] | None = None, scale: float = 1.0, in_channels: int | None = None,
                 dim: int | None = None, meta: dict[str, Any] | None = None, outputs: dict[str, Any] | None = None):
        self.network = network
        self.model_config = normalize_model_config(model_config)
        self.grid = grid
        self.metric = bool(self.model_config["metric_channels"])
        self.radius = receptive_radius(self.model_config)
        self.meta = dict(meta or {})
        K = len(grid.species) if grid is not None else 1
        d = grid.dim if grid is not None else int(dim or 2)
        self.energy_output, self.fields = build_outputs(self.model_config, K, outputs, d)
        if refs is not None:
            if self.energy_output is None:
                raise ModelError("reference energies given for a model without an energy output (model.energy is "
                                 "false); leave refs out or add 'energy' to data.targets")
            self.refs, self.scale = refs, scale
        self.n_out = n_outputs(self.model_config, d)
        if grid is not None:
            self.pipeline: InputPipeline | None = InputPipeline(grid, self.metric, self.radius, self.head)
            self.dim, self.in_channels = grid.dim, self.pipeline.in_channels
            if in_channels is not None and int(in_channels) != self.in_channels:
                raise ModelError(f"the grid and metric channels give {self.in_channels} input channels, "
                                 f"not {in_channels}; the model file does not match this ednn")
        else:
            self.pipeline = None
            self.dim, self.in_channels = int(dim or 2), int(in_channels or 1)
        if grid is not None and self.head == "density" and grid.context < self.radius:
            raise ModelError(
                f"grid context {grid.context} is smaller than the network's receptive radius {self.radius}; "
                "tiles would not reproduce whole-image outputs"
            )

    # ------------------------------------------------------------ construction
    @classmethod
    def create(cls, model_config: dict[str, Any] | None = None, grid: GridSpec | None = None,
               in_channels: int | None = None, dim: int | None = None, seed: int | None = None) -> EnergyModel:
        """Build a fresh (untrained) model; the grid's context is set to the receptive radius if smaller."""
        cfg = normalize_model_config(model_config)
        r = receptive_radius(cfg)
        if cfg["metric_channels"] is None:  # "auto": on for grid models
            cfg["metric_channels"] = grid is not None
        if cfg["metric_channels"] and grid is None:
            raise ModelError("metric_channels needs a grid; image-mode models take images as they are")
        tile_size = None
        if grid is not None:
            if cfg["head"] == "density" and grid.context < r:
                grid = grid.replace(context=r)
            dim = grid.dim
            in_channels = grid.n_channels + (n_metric(grid.dim) if cfg["metric_channels"] else 0)
            if cfg["head"] == "dense":
                if grid.context < r:
                    raise ModelError(f"dense head: grid context {grid.context} < receptive radius {r}")
                tile_size = grid.tile_size
        elif cfg["head"] == "dense":
            raise ModelError("the dense head needs a grid (focus/context); use head='density' for image mode")
        net = build_network(cfg, in_channels or 1, dim or 2, tile_size=tile_size, seed=seed)
        return cls(net, cfg, grid, None, 1.0, None if grid else in_channels, None if grid else dim)

    @property
    def head(self) -> str:
        return self.model_config["head"]

    @property
    def species(self) -> tuple[int, ...]:
        return self.grid.species if self.grid is not None else ()

    def _energy(self) -> EnergyOutput:
        if self.energy_output is None:
            raise ModelError(f"this model predicts the per-voxel field(s) {sorted(self.fields)} and no energy; "
                             "use predict_field")
        return self.energy_output

    @property
    def refs(self) -> np.ndarray:
        """Reference energy per species (eV)."""
        return self._energy().refs

    @refs.setter
    def refs(self, value) -> None:
        v = np.asarray(value, dtype=np.float64)
        K = len(self.grid.species) if self.grid is not None else 1
        if v.shape != (K,):
            raise ModelError(f"reference energies have shape {v.shape}, expected ({K},)")
        self._energy().refs = v

    @property
    def scale(self) -> float:
        """Energy scale of the network output (eV)."""
        return self._energy().scale

    @scale.setter
    def scale(self, value: float) -> None:
        self._energy().scale = float(value)

    # ----------------------------------------------------------- preprocessing
    def _pipeline(self) -> InputPipeline:
        if self.pipeline is None:
            raise ModelError("this model works on images (no grid); call predict_image_energies")
        return self.pipeline

    def image(self, atoms: Any) -> tuple[np.ndarray, float]:
        """All input channels of a structure and its pixel weight ``w`` (see :class:`InputPipeline`)."""
        return self._pipeline().image(atoms)

    def counts(self, atoms: Any) -> np.ndarray:
        """Atoms of each grid species in ``atoms``."""
        numbers = np.asarray(atoms.numbers if hasattr(atoms, "numbers") else atoms[1])
        per_z = element_counts(numbers)  # O(N) in chunks, no per-atom Python objects
        species = list(self.grid.species)
        other = np.flatnonzero(per_z)
        unknown = sorted(set(other.tolist()) - set(species))
        if unknown:
            raise SpeciesError(f"atomic number(s) {unknown} are not among the model's species (Z = {species}); "
                               "this model cannot predict structures containing them")
        return per_z[species].astype(np.float64)

    def network_input(self, image: np.ndarray, weight: float) -> tuple[np.ndarray, float]:
        """Per-structure network input: wrap-padded image (density) or tiles (dense)."""
        if self.pipeline is not None:
            return self.pipeline.network_input(image, weight)
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != self.dim + 1 or image.shape[-1] != self.in_channels:
            raise InputError(
                f"image has shape {image.shape}; this model expects {self.dim} spatial axes and "
                f"{self.in_channels} channel(s), e.g. {(8,) * self.dim + (self.in_channels,)}"
            )
        return wrap_pad(image, self.radius), weight

    # -------------------------------------------------------------- prediction
    def _forward(self, x: np.ndarray) -> np.ndarray:
        """All output channels of the network on a batch of inputs."""
        import tensorflow as tf

        if not hasattr(self, "_fwd"):
            spec = tf.TensorSpec([None] * (self.dim + 1) + [self.in_channels], tf.float32)
            self._fwd = tf.function(lambda t: self.network(t, training=False), input_signature=[spec])
        return self._fwd(tf.constant(x)).numpy()

    def _net_sums(self, inputs: Sequence[tuple[np.ndarray, float]], batch_size: int = 16) -> np.ndarray:
        """``w * sum_pixels y_0`` of each input (network units), summed in float64."""
        c = self._energy().channel
        out = np.zeros(len(inputs))
        order = np.argsort([int(np.prod(x.shape[:-1])) for x, _ in inputs], kind="stable")
        for b0 in range(0, len(order), batch_size):
            idx = order[b0 : b0 + batch_size]
            batch = make_batch([inputs[i] for i in idx], self.head, self.radius)
            y = np.asarray(self._forward(batch.x)[..., c], dtype=np.float64)
            y = y.reshape((y.shape[0],) + batch.mask.shape[1:]) * batch.mask
            out[idx] = np.bincount(batch.seg, weights=y.reshape(y.shape[0], -1).sum(1), minlength=batch.n)
        return out

    def _huge(self, atoms: Any) -> bool:
        return self.grid is not None and self.head == "density" and math.prod(_pixels(atoms, self.grid)) > STREAM_PIXELS

    @property
    def shift_average(self) -> int:
        """Sub-pixel translations averaged per axis (``model.shift_average``; 1: none).

        With ``K > 1`` the energy is the mean over the ``K^d`` translations of all atoms by
        ``(i_1/K) p_1 + ... + (i_d/K) p_d`` (``p_k``: the pixel step along cell vector ``k``). The network's
        energy is a smooth periodic function of a sub-pixel translation, so this uniform quadrature of its
        mean over one pixel converges exponentially in ``K``: continuous translations then change the
        energy by a tolerance set by ``K`` (``experiments/shift_average.py``), each term stays exactly
        extensive, and forces and stress are the means of the shifted copies' (exact gradients). Energies
        only: maps, per-atom energies and per-voxel fields are those of the unshifted structure.
        """
        return int(self.model_config.get("shift_average", 1))

    @shift_average.setter
    def shift_average(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise InputError(f"shift_average must be an integer >= 1 (sub-pixel shifts per axis), got {k!r}")
        if k > 1 and self.grid is None:
            raise ModelError("shift_average needs a grid model: image-mode models see pixels, not atoms")
        self.model_config["shift_average"] = int(k)

    @property
    def cell_average(self) -> bool:
        """Energies averaged over every reduced basis of the cell's lattice (``model.cell_average``, 2D grids).

        The set (:func:`ednn.image.describe.reduced_bases`: 2 bases for an oblique lattice up to 12 for a
        hexagonal one) depends on the lattice only, so the averaged energy is exactly the same whichever
        basis, 60/120-degree convention or order of the vectors describes the cell. Forces and stress are the
        means over the descriptions (the atoms keep their order). Train such a model with
        ``train.augment: reduced`` so that it has seen these descriptions.
        """
        return bool(self.model_config.get("cell_average", False))

    @cell_average.setter
    def cell_average(self, on: bool) -> None:
        if not isinstance(on, bool | np.bool_):
            raise InputError(f"cell_average must be True or False, got {on!r}")
        if on and (self.grid is None or self.dim != 2):
            raise ModelError("cell_average needs a 2D grid model (sheets: in-plane lattices)")
        self.model_config["cell_average"] = bool(on)

    @property
    def symmetrize_fields(self) -> bool:
        """Per-voxel fields averaged over the grid symmetries of the cell (``model.symmetrize_fields``).

        The ops (:func:`ednn.image.symmetry.grid_symmetries`: the axis permutations and reversals that keep
        the cell's metric and grid, 48 for a cubic cell) are rotations and mirrors of space that the cell
        admits; the field is ``mean_g g^-1 f(g atoms)``, so a structure and its rotated or mirrored copy get
        exactly mapped fields, at that many predictions' cost. Train such a model with
        ``train.augment: symmetry`` so that each term is already close to the mean.
        """
        return bool(self.model_config.get("symmetrize_fields", False))

    @symmetrize_fields.setter
    def symmetrize_fields(self, on: bool) -> None:
        if not isinstance(on, bool | np.bool_):
            raise InputError(f"symmetrize_fields must be True or False, got {on!r}")
        if on and self.grid is None:
            raise ModelError("symmetrize_fields needs a grid model: image-mode models see pixels, not atoms")
        self.model_config["symmetrize_fields"] = bool(on)

    def descriptions(self, atoms: Any) -> list[Any]:
        """The equivalent descriptions of ``atoms`` whose energies the model averages (:attr:`cell_average`
        bases, each at :attr:`shift_average` sub-pixel translations); ``[atoms]`` when both are off."""
        base = [atoms]
        if self.cell_average:
            from ..image.describe import in_basis, reduced_bases  # noqa: PLC0415

            _, _, cell, _ = _structure_arrays(atoms)
            base = [in_basis(atoms, P) for P in reduced_bases(cell)]
        return [shifted(b, s) for b in base for s in self.shifts(b)]

    def shifts(self, atoms: Any) -> np.ndarray:
        """The ``(K^d, 3)`` Cartesian translations (Angstrom) that :attr:`shift_average` averages over."""
        k = self.shift_average
        if k == 1 or self.grid is None:
            return np.zeros((1, 3))
        _, _, cell, _ = _structure_arrays(atoms)
        n = _pixels(atoms, self.grid)
        steps = np.asarray(cell, dtype=np.float64)[: self.dim] / (np.asarray(n, dtype=np.float64)[:, None] * k)
        idx = np.stack(np.meshgrid(*([np.arange(k)] * self.dim), indexing="ij"), -1).reshape(-1, self.dim)
        return idx @ steps

    def predict_energies(self, structures: Iterable[Any], batch_size: int = 16) -> np.ndarray:
        """Total energies (eV) of several structures (huge ones are streamed with flat memory; averaged over
        sub-pixel translations when :attr:`shift_average` > 1)."""
        structures = list(structures)
        if (self.shift_average == 1 and not self.cell_average) or not structures:
            return self._predict_energies(structures, batch_size)
        out = np.empty(len(structures))
        i = 0
        while i < len(structures):  # a few hundred descriptions at a time: bounded memory
            descs: list[list[Any]] = []
            while i + len(descs) < len(structures) and sum(map(len, descs)) < 256:
                descs.append(self.descriptions(structures[i + len(descs)]))
            e = self._predict_energies([d for ds in descs for d in ds], batch_size)
            out[i : i + len(descs)] = [p.mean() for p in np.split(e, np.cumsum([len(d) for d in descs])[:-1])]
            i += len(descs)
        return out

    def _predict_energies(self, structures: list[Any], batch_size: int = 16) -> np.ndarray:
        out = np.zeros(len(structures))
        small = []
        for i, a in enumerate(structures):
            if self._huge(a):
                out[i] = stream_energy(self, a)
            else:
                small.append(i)
        if small:
            inputs = [self.network_input(*self.image(structures[i])) for i in small]
            counts = np.array([self.counts(structures[i]) for i in small])
            out[small] = self._energy().from_network(self._net_sums(inputs, batch_size), counts)
        return out

    def predict_energy(self, atoms: Any, return_std: bool = False) -> float:
        """Total energy (eV) of one structure of any size (``return_std`` needs an ensemble)."""
        if return_std:
            raise ModelError("one model has no spread to give an uncertainty: train an ensemble "
                             "(`ednn train CONFIG --ensemble 4`) and ednn.load its folder")
        return float(self.predict_energies([atoms])[0])

    def predict_sets(self, ts, batch_size: int = 32) -> np.ndarray:
        """Energies (eV) of a cached :class:`ednn.train.TrainSet` (inputs already rasterized)."""
        return self._energy().from_network(self._net_sums(ts.inputs, batch_size), ts.counts)

    def predict_image_energies(self, images: Iterable[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """Energies of periodic images (image mode, or pre-rasterized network images with w=1)."""
        images = list(images)
        inputs = [self.network_input(np.asarray(im, dtype=np.float32), 1.0) for im in images]
        n_pix = np.array([[float(np.prod(np.shape(im)[: self.dim]))] for im in images])
        e = self._energy()
        if self.grid is None:
            return e.from_network(self._net_sums(inputs, batch_size), n_pix)
        return e.scale * self._net_sums(inputs, batch_size)

    def outputs_whole(self, atoms: Any) -> tuple[np.ndarray, np.ndarray, float]:
        """``(image, all network output channels (n..., n_out), w)`` of one structure on the whole image."""
        if self.grid is None:
            img, w = np.asarray(atoms, np.float32), 1.0
        else:
            img, w = self.image(atoms)
        if self.head == "dense":
            raise ModelError("per-pixel outputs need the density head")
        x, _ = self.network_input(img, w)
        return img, np.asarray(self._forward(x[None])[0], dtype=np.float64), w

    def energy_map(self, atoms: Any, include_reference: bool = True) -> np.ndarray:
        """Per-pixel energies (eV) of a structure, shape ``(n_1, ..., n_d)``.

        Density head: the network's energy density times the pixel weight and
        scale; with ``include_reference`` the reference energies are spread
        over the pixels in proportion to each species' density, so the map
        sums to the total energy (up to the Gaussian truncation, ~1e-5).
        Dense head: each tile's energy spread uniformly over its focus.
        """
        e = self._energy()
        if self.head == "density":
            img, y, w = self.outputs_whole(atoms)
            y = y[..., e.channel] * w * e.scale
        else:
            img, w = self.image(atoms)
            x, _ = self.network_input(img, w)
            lay = layout_for(img.shape[:-1], self.grid.focus, self.grid.context)
            t = self._forward(x)[:, 0].astype(np.float64) * w * e.scale / self.grid.focus**self.dim
            per = np.broadcast_to(t.reshape((-1,) + (1,) * self.dim + (1,)), (len(t),) + (lay.focus,) * self.dim + (1,))
            y = untile(per, lay)[..., 0]
        if not include_reference:
            return y
        if self.grid is None:
            return y + e.refs[0]
        cnt = self.counts(atoms)
        if self.grid.mode == "species":
            dens = img[..., : self.grid.n_density_channels].astype(np.float64)
            tot = dens.reshape(-1, dens.shape[-1]).sum(0)
            per_unit = np.divide(cnt * e.refs, tot, out=np.zeros_like(tot), where=tot > 0)
            return y + dens @ per_unit
        dens = img[..., 0].astype(np.float64)
        return y + (cnt @ e.refs) * dens / dens.sum()

    def tile_energies(self, atoms: Any) -> np.ndarray:
        """Energy (eV) of each focus tile, shape = tile grid (references included)."""
        m = self.energy_map(atoms)
        f = self.grid.focus
        grid = [-(-n // f) for n in m.shape]  # ceil: a partial last tile holds the remaining pixels
        mm = np.pad(m, [(0, g * f - n) for g, n in zip(grid, m.shape, strict=True)])
        shp = []
        for g in grid:
            shp += [g, f]
        return mm.reshape(shp).sum(axis=tuple(range(1, 2 * self.dim, 2)))

    def atom_energies(self, atoms: Any) -> np.ndarray:
        """Per-atom energies (eV) whose sum is the total energy.

        Rule (Voronoi): each pixel's network energy goes to the atom nearest to
        the pixel centre (periodic, in the plane of the sheet for 2D grids;
        ties to the lower index); every atom also gets its element's reference
        energy. Pixels far from all atoms carry no energy with ``vacuum_zero``.
        """
        from scipy.spatial import cKDTree

        e = self._energy()
        m = self.energy_map(atoms, include_reference=False)
        pos, numbers, _, _ = _structure_arrays(atoms)
        p = self._pipeline().prepare(atoms)
        d = self.dim
        axes = [np.arange(n) / n for n in p.shape]
        frac = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, d)
        pix = frac @ p.lattice
        shifts = np.stack(np.meshgrid(*[[-1, 0, 1]] * d, indexing="ij"), axis=-1).reshape(-1, d) @ p.lattice
        xyz = np.asarray(pos[:, :d], dtype=np.float64)
        images = (xyz[None, :, :] + shifts[:, None, :]).reshape(-1, d)
        _, idx = cKDTree(images).query(pix)
        owner = np.asarray(idx) % len(xyz)
        out = np.bincount(owner, weights=m.reshape(-1), minlength=len(xyz))
        lut = {z: i for i, z in enumerate(self.grid.species)}
        return out + e.refs[[lut[int(z)] for z in numbers]]

    # ------------------------------------------------------------- per voxel
    def _field(self, name: str | None) -> FieldOutput:
        if not self.fields:
            raise ModelError("this model predicts no per-voxel field (model.fields is empty); train one with "
                             "data.targets: [..., <field name>]")
        if name is None:
            if len(self.fields) > 1:
                raise InputError(f"this model predicts several fields {sorted(self.fields)}; name one")
            name = next(iter(self.fields))
        if name not in self.fields:
            raise InputError(f"this model predicts the fields {sorted(self.fields)}, not {name!r}")
        return self.fields[name]

    def predict_field(self, atoms: Any, name: str | None = None, method: str = "auto") -> np.ndarray:
        """A per-voxel field on the model's grid, shape ``(n_1, ..., n_d, channels)`` (physical units);
        with ``model.upsample`` f the field grid is f times finer: ``(f n_1, ..., f n_d, channels)``.

        ``method``: ``"whole"`` (the wrap-padded image at once), ``"tiles"``
        (focus/context tiles, then reassembled), ``"stream"`` (strips, flat
        memory), or ``"auto"`` (stream above :data:`STREAM_PIXELS` pixels).
        All give the same field up to float rounding. With :attr:`symmetrize_fields` the field is averaged
        over the cell's grid symmetries.
        """
        f = self._field(name)
        if self.symmetrize_fields and self.grid is not None:
            from ..image.symmetry import cell_symmetries, transform_atoms  # noqa: PLC0415

            lattice, ops = cell_symmetries(atoms, self.grid)
            total = self._field_once(f, atoms, method)  # ops[0] is the identity
            for op in ops[1:]:
                total += op.inverse().apply(self._field_once(f, transform_atoms(atoms, op, lattice), method))
            return total / len(ops)
        return self._field_once(f, atoms, method)

    def _field_once(self, f: FieldOutput, atoms: Any, method: str) -> np.ndarray:
        if method == "auto":
            method = "stream" if self._huge(atoms) else "whole"
        if method == "whole":
            y = self.outputs_whole(atoms)[1]
        elif method == "stream":
            y = stream_outputs(self, atoms)
        elif method == "tiles":
            y = self._tiled_outputs(atoms)
        else:
            raise InputError(f"method must be 'auto', 'whole', 'tiles' or 'stream', got {method!r}")
        return f.from_network(y)

    def predict_ldos(self, atoms: Any, method: str = "auto") -> np.ndarray:
        """The LDOS ``(N1, N2, N3, n_E)`` in 1/(eV A^3) (:func:`ednn.predict.electronic.predict_ldos`)."""
        from .electronic import predict_ldos  # noqa: PLC0415

        return predict_ldos(self, atoms, method)

    def predict_density(self, atoms: Any, temperature: float | None = None,
                        conserve_electrons: bool = False) -> np.ndarray:
        """The electron density (1/A^3): an LDOS model's at electronic temperature ``temperature`` (K), a
        density model's field, with ``conserve_electrons`` scaled to the structure's valence electrons
        (:func:`ednn.predict.electronic.predict_density`)."""
        from .electronic import predict_density  # noqa: PLC0415

        return predict_density(self, atoms, temperature, conserve_electrons=conserve_electrons)

    def electronic_structure(self, atoms: Any, temperature: float, ldos: np.ndarray | None = None) -> dict[str, Any]:
        """DOS, Fermi level, band energy, -TS, electrons and density at ``temperature`` (K) from the
        predicted LDOS, or from ``ldos`` if given (an earlier ``predict_ldos`` of the same structure:
        several temperatures without predicting again; :func:`ednn.predict.electronic.electronic_structure`)."""
        from .electronic import electronic_structure  # noqa: PLC0415

        return electronic_structure(self, atoms, temperature, ldos=ldos)

    def free_energy(self, atoms: Any, temperature: float, energy_model: EnergyModel | None = None) -> dict[str, Any]:
        """Free energy at electronic temperature ``temperature`` (K): ``E_0`` (this model's energy head, or
        ``energy_model``) plus the frozen-LDOS change ``[E_band - TS](T) - E_band(0)`` from this model's
        LDOS (:func:`ednn.predict.electronic.free_energy`: ``free_energy``, ``energy_zero``, ``free_energy_change``
        in eV and the electronic structure at ``temperature``)."""
        from .electronic import free_energy  # noqa: PLC0415

        return free_energy(self, atoms, temperature, energy_model=energy_model)

    def _tiled_outputs(self, atoms: Any) -> np.ndarray:
        g = self.grid
        img, _ = self.image(atoms)
        tiles, lay = tile(img, g.focus, g.context)
        y = np.concatenate([self._forward(tiles[i : i + 64]) for i in range(0, len(tiles), 64)], axis=0)
        c = g.context - self.radius  # valid convolutions leave focus + 2 (context - r) pixels per axis
        y = y[(slice(None),) + (slice(c, c + g.focus),) * self.dim]
        return untile(y, lay).astype(np.float64)

    # -------------------------------------------------------------- gradients
    def predict_forces(self, structures: Iterable[Any]) -> list[np.ndarray]:
        """Forces ``-dE/dpositions`` (eV/A), one (N, 3) array per structure, through the compiled gradient."""
        calc = self.calculator()
        return [-calc.gradients(a)[1] for a in structures]

    def calculator(self, **kw) -> EDNNCalculator:
        """An ASE calculator: energy, free_energy, forces, stress, per-atom energies (and maps)."""
        return EDNNCalculator(self, **kw)

    def save(self, path: str) -> str:
        """Write the model folder or ``.zip`` (see :mod:`ednn.predict.artifact`)."""
        return save_model(self, path)

    def energy_tf_inputs(self, atoms: Any) -> dict[str, Any]:
        """What :meth:`energy_tf_core` needs besides the positions (NumPy arrays and scalars).

        Depends on the cell, the species and the grid only, so one compiled
        function serves every structure (see :class:`ednn.predict.calculator.EDNNCalculator`).
        """
        pl = self._pipeline()
        out = pl.tf_inputs(pl.prepare(atoms))
        out["reference"] = np.float64(self.counts(atoms) @ self.refs)
        out["scale"] = np.float64(self.scale)
        return out

    def energy_tf_core(self, positions, inputs: dict[str, Any], strain=None):
        """Energy (float64 TF scalar) from positions (N, 3) and :meth:`energy_tf_inputs`.

        Differentiable with respect to ``positions`` and, if given, ``strain``
        (3 x 3): the structure is deformed by ``I + strain`` (positions and
        cell, ``r -> r (I + strain)``), so ``dE/dstrain / V`` is the stress.
        For 2D grids the out-of-plane shears (xz, yz) are left out: a sheet
        stays in its plane, so those stress components are zero.
        With the density head all shapes may be dynamic.
        """
        import tensorflow as tf

        pos = tf.convert_to_tensor(positions, tf.float32)
        deform = None
        if strain is not None:
            strain = tf.cast(strain, tf.float32)
            if self.dim == 2:  # a sheet stays in the xy plane: out-of-plane shears (xz, yz) would tilt it
                strain = strain * tf.constant([[1, 1, 0], [1, 1, 0], [0, 0, 1]], tf.float32)
            F = tf.eye(3, dtype=tf.float32) + strain
            pos = tf.matmul(pos, F)
            deform = F[: self.dim, : self.dim]
        x, w = self._pipeline().tf_network_input(pos, inputs, deform)
        y = self.network(x, training=False)[..., self._energy().channel]
        scale = tf.cast(inputs["scale"], tf.float64)  # an input, so a traced function never keeps an old scale
        return tf.reduce_sum(tf.cast(y, tf.float64)) * w * scale + tf.cast(inputs["reference"], tf.float64)

    def energy_tf(self, atoms: Any, positions):
        """Energy as a TF scalar, differentiable with respect to ``positions`` (N, 3)."""
        return self.energy_tf_core(positions, self.energy_tf_inputs(atoms))


def shifted(atoms: Any, shift: np.ndarray) -> Any:
    """``atoms`` (ase.Atoms or a ``(positions, numbers, cell, pbc)`` tuple) with every atom moved by ``shift``."""
    if np.all(shift == 0):
        return atoms
    if hasattr(atoms, "get_positions"):
        b = atoms.copy()
        b.positions += shift
        return b
    pos, numbers, cell, pbc = atoms
    return (np.asarray(pos, dtype=np.float64) + shift, numbers, cell, pbc)


def _pixels(atoms: Any, grid: GridSpec) -> tuple[int, ...]:
    _, _, cell, _ = _structure_arrays(atoms)
    return grid.pixels_along(np.linalg.norm(cell[: grid.dim, : grid.dim] if grid.dim == 2 else cell, axis=1))


def load(path: str) -> EnergyModel:
    """Load a model folder (or zip) written by :meth:`EnergyModel.save`, or an ensemble folder.

    Returns
    -------
    EnergyModel or ednn.predict.ensemble.Ensemble
        With ``predict_energy(atoms)``, ``predict_field``, ``energy_map``,
        ``atom_energies`` and ``calculator()``; an ensemble folder
        (``ensemble.json``, from ``ednn train --ensemble K``) gives an
        :class:`~ednn.predict.ensemble.Ensemble` (``predict_energy(atoms,
        return_std=True)``, ``calculator()`` with ``energy_std``).
    """
    from .ensemble import is_ensemble, load_ensemble  # noqa: PLC0415

    if is_ensemble(str(path)):  # a folder written by `ednn train --ensemble K`
        return load_ensemble(str(path))
    with read_model(path) as (cfg, weights):
        if cfg.get("representation") == "atoms":  # an atom-centred model (ednn.predict.atomic)
            from .atomic import AtomicModel  # noqa: PLC0415

            return AtomicModel.from_files(cfg, weights, str(path))
        grid = GridSpec.from_dict(cfg["grid"]) if cfg["grid"] is not None else None
        tile_size = grid.tile_size if grid is not None else None
        try:
            model_cfg = normalize_model_config(cfg["model"])
        except Exception as e:
            raise corrupt(path, f"its model section is invalid ({e})") from e
        net = build_network(model_cfg, cfg["in_channels"], cfg["dim"], tile_size=tile_size)
        try:
            net.load_weights(weights)
        except Exception as e:  # noqa: BLE001 (Keras raises several types for a bad file)
            raise corrupt(path, f"its weights cannot be loaded ({e})") from e
        return EnergyModel(net, model_cfg, grid, None, 1.0, cfg["in_channels"], cfg["dim"],
                           meta=cfg.get("meta", {}), outputs=cfg["outputs"])
