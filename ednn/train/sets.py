"""Training sets: structures (or images) rasterized once into cached network inputs, with their labels."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..data import Dataset
from ..errors import ConfigError, DatasetError, InputError
from ..predict.model import EnergyModel

__all__ = ["TrainSet", "structures_to_set", "images_to_set", "load_structures", "load_forces", "load_targets"]


class TrainSet:
    """Cached network inputs and labels of a set of structures (or images).

    Attributes
    ----------
    inputs : list of (array, float)
        Network input (wrap-padded image or tiles) and pixel weight per sample.
    energies : (S,) float64
        Total energies (eV).
    counts : (S, K) float64
        Atoms per species (image mode: pixels).
    n_atoms : (S,) float64
    sizes : (S,) int
        Input pixels (for bucketing).
    forces : list of (N, 3) float32 arrays, optional
        Reference forces (eV/A), for training on forces.
    force_inputs : list of (positions, dict), optional
        Positions (N, 3) and :meth:`EnergyModel.energy_tf_inputs` per sample:
        what the differentiable energy needs (with ``forces``).
    fields : dict of str to list of arrays, optional
        Per-voxel labels (physical units), one ``(n_1, ..., n_d, channels)``
        array per sample, on the sample's image grid.
    has_energy : bool
        False for sets without energies (per-voxel targets only).
    """

    def __init__(self, inputs, energies, counts, n_atoms, forces=None, force_inputs=None, fields=None):
        self.inputs = list(inputs)
        self.has_energy = energies is not None
        self.energies = np.asarray(energies if energies is not None else np.zeros(len(self.inputs)), dtype=np.float64)
        self.fields = {k: list(v) for k, v in (fields or {}).items()}
        for k, v in self.fields.items():
            if len(v) != len(self.inputs):
                raise InputError(f"{len(v)} labels of field {k!r} for {len(self.inputs)} samples")
        self.counts = np.asarray(counts, dtype=np.float64)
        self.n_atoms = np.asarray(n_atoms, dtype=np.float64)
        self.forces = None if forces is None else list(forces)
        self.force_inputs = None if force_inputs is None else list(force_inputs)
        self.structures: list[Any] | None = None  # set by structures_to_set: what augmentation redescribes
        self._given: tuple | None = None  # (fields, forces) as given, once augment "symmetry" has mapped them
        if (self.forces is None) != (self.force_inputs is None):
            raise InputError("forces and force_inputs go together (use structures_to_set(..., forces=...))")
        if self.forces is not None and not (len(self.forces) == len(self.force_inputs) == len(self.inputs)):
            raise InputError("forces, force_inputs and inputs differ in length")
        self.sizes = np.array([int(np.prod(x.shape[:-1])) * (len(x) if x.ndim > 3 else 1) for x, _ in self.inputs])
        if not (len(self.inputs) == len(self.energies) == len(self.counts) == len(self.n_atoms)):
            raise InputError("inputs, energies, counts and n_atoms differ in length")
        if not np.all(np.isfinite(self.energies)):
            raise DatasetError("energies contain NaN or inf; clean the dataset")

    def __len__(self) -> int:
        return len(self.inputs)

    def redescribe(self, model: EnergyModel, epoch: int, seed: int, mode: str) -> None:
        """Replace every sample's inputs by those of a random equivalent description of its structure
        (:func:`ednn.image.describe.redescribe`; the same on every rank: seeded by seed, epoch and sample)."""
        from ..image.describe import redescribe  # noqa: PLC0415

        if self.structures is None:
            raise ConfigError("augmentation needs the training structures (a set built by structures_to_set)")
        if mode == "symmetry" and self._given is None:  # the labels as given: each epoch maps them afresh
            self._given = ({k: list(v) for k, v in self.fields.items()},
                           None if self.forces is None else list(self.forces))
        for i, a in enumerate(self.structures):
            rng = np.random.default_rng([int(seed), int(epoch), i, 7])
            if mode == "symmetry":
                b = self._symmetry_copy(model, i, rng)
            else:
                b = redescribe(a, rng, mode, model.dim)
            img, w = model.image(b)
            self.inputs[i] = model.network_input(img, w)
            if self.force_inputs is not None:
                self.force_inputs[i] = (np.asarray(b.positions, dtype=np.float32), model.energy_tf_inputs(b))
        self.sizes = np.array([int(np.prod(x.shape[:-1])) * (len(x) if x.ndim > 3 else 1) for x, _ in self.inputs])

    def _symmetry_copy(self, model: EnergyModel, i: int, rng: np.random.Generator) -> Any:
        """Structure ``i`` under a random op of its grid (:mod:`ednn.image.symmetry`), its per-voxel labels and
        forces mapped by the same op."""
        from ..image.symmetry import cell_symmetries, transform_atoms, transform_vectors  # noqa: PLC0415

        a = self.structures[i]
        lattice, ops = cell_symmetries(a, model.grid)
        op = ops[int(rng.integers(len(ops)))]
        fields, forces = self._given
        for k in self.fields:
            self.fields[k][i] = op.apply(fields[k][i])
        if forces is not None:
            self.forces[i] = transform_vectors(forces[i], op, lattice).astype(np.float32)
        return transform_atoms(a, op, lattice)

    @property
    def has_forces(self) -> bool:
        return self.forces is not None

    def subset(self, idx: Sequence[int]) -> TrainSet:
        idx = np.asarray(idx, dtype=int)
        f = None if self.forces is None else [self.forces[i] for i in idx]
        fi = None if self.force_inputs is None else [self.force_inputs[i] for i in idx]
        fields = {k: [v[i] for i in idx] for k, v in self.fields.items()}
        out = TrainSet([self.inputs[i] for i in idx], self.energies[idx] if self.has_energy else None,
                       self.counts[idx], self.n_atoms[idx], f, fi, fields)
        if self.structures is not None:
            out.structures = [self.structures[i] for i in idx]
        return out


def structures_to_set(model: EnergyModel, structures: Sequence[Any], energies: Sequence[float] | None = None,
                      progress: bool = False, desc: str = "rasterize", forces: Sequence[Any] | None = None,
                      fields: dict[str, Sequence[np.ndarray]] | None = None) -> TrainSet:
    """Rasterize (and tile) structures once, for training or evaluation.

    Parameters
    ----------
    model : EnergyModel
        Supplies the grid and head.
    structures : sequence of ase.Atoms (or (positions, numbers, cell, pbc))
    energies : sequence of float, optional
        Total energies; default ``atoms.get_potential_energy()``.
    forces : sequence of (N, 3) arrays, optional
        Reference forces (eV/A), to train on forces as well; the set then also
        keeps what the differentiable energy needs per structure.
    fields : dict of str to sequence of arrays, optional
        Per-voxel labels of the model's fields, one array per structure on the
        structure's image grid (checked against the model's grid).
    """
    if energies is None and model.energy_output is not None:
        try:
            energies = [a.get_potential_energy() for a in structures]
        except Exception as e:  # noqa: BLE001 (ASE raises several types when there is no calculator)
            raise DatasetError(f"structures carry no energies ({e}); give energies= or a labelled dataset") from e
    fields = dict(fields or {})
    missing = sorted(set(model.fields) - set(fields))
    if missing:
        raise DatasetError(f"the model predicts the per-voxel field(s) {missing}, but no labels were given for "
                           "them; give fields={name: arrays} (from a dataset's targets/<name>)")
    for k, v in fields.items():
        if k not in model.fields:
            raise InputError(f"labels for field {k!r}, which the model does not predict (it has "
                             f"{sorted(model.fields)}); add it to data.targets")
        if len(v) != len(structures):
            raise InputError(f"{len(structures)} structures but {len(v)} labels of field {k!r}")
    labels: dict[str, list[np.ndarray]] = {k: [] for k in fields}
    inputs, counts, n = [], [], []
    it = structures
    if progress:
        from tqdm import tqdm

        it = tqdm(structures, desc=desc, leave=False, file=sys.stderr)
    for i, a in enumerate(it):
        img, w = model.image(a)
        inputs.append(model.network_input(img, w))
        counts.append(model.counts(_numbers_holder(a)))
        n.append(len(_numbers_holder(a).numbers))
        for k in fields:
            labels[k].append(model.fields[k].check(fields[k][i], img.shape[:-1], where=f"structure {i}: "))
    if forces is None:
        ts = TrainSet(inputs, energies, counts, n, fields=labels)
        ts.structures = list(structures)
        return ts
    if len(forces) != len(structures):
        raise InputError(f"{len(structures)} structures but {len(forces)} force arrays")
    f_list, f_inputs = [], []
    for i, (a, f) in enumerate(zip(structures, forces, strict=True)):
        pos = np.asarray(a.positions if hasattr(a, "positions") else a[0], dtype=np.float32)
        f = None if f is None else np.asarray(f, dtype=np.float32)
        if f is None or f.shape != pos.shape or not np.all(np.isfinite(f)):
            raise DatasetError(f"structure {i}: forces missing, of shape {None if f is None else f.shape} instead of "
                               f"{pos.shape}, or not finite; training on forces needs them for every structure")
        f_list.append(f)
        f_inputs.append((pos, model.energy_tf_inputs(a)))
    ts = TrainSet(inputs, energies, counts, n, f_list, f_inputs, labels)
    ts.structures = list(structures)
    return ts


class _Nums:
    def __init__(self, numbers):
        self.numbers = np.asarray(numbers)


def _numbers_holder(a: Any):
    if hasattr(a, "numbers"):
        return a
    return _Nums(a[1])


def images_to_set(model: EnergyModel, images: Sequence[np.ndarray], energies: Sequence[float]) -> TrainSet:
    """Training samples from periodic images (image mode: e.g. Ising spins, shape (n, n, 1)).

    The "composition" of an image is its pixel count, so the fitted reference
    is an energy per pixel.
    """
    imgs = [np.asarray(im, dtype=np.float32) for im in images]
    if len(imgs) != len(energies):
        raise InputError(f"{len(imgs)} images but {len(energies)} energies")
    inputs = [model.network_input(im, 1.0) for im in imgs]
    npix = np.array([float(np.prod(im.shape[: model.dim])) for im in imgs])
    return TrainSet(inputs, energies, npix[:, None], npix)


def _concat(paths: Sequence[str], load) -> list:
    return [load(p) for p in paths]


def load_structures(path: str | Sequence[str], need_energy: bool = True) -> tuple[list[Any], np.ndarray | None]:
    """Structures and energies from an HDF5 dataset (ednn.data) or any file ase.io reads (or a list of
    such paths, concatenated in order)."""
    if not isinstance(path, str):
        parts = _concat(path, lambda p: load_structures(p, need_energy))
        if need_energy or all(E is not None for _, E in parts):
            E = np.concatenate([E for _, E in parts])
        else:
            E = None
        return [s for st, _ in parts for s in st], E
    if not os.path.exists(path):
        raise DatasetError(f"dataset file {path!r} does not exist; build it first (e.g. `make data` or `ednn gen`)")
    if path.endswith((".h5", ".hdf5")):
        with Dataset(path) as ds:
            if need_energy and not ds.has_energy:
                raise DatasetError(f"dataset {path!r} has no energies; label it first "
                                   f"(ednn gen label {path} -o LABELLED.h5 --labeller tersoff)")
            structs = [(ds.positions(i), ds.numbers(i), ds.cell(i), ds.pbc(i)) for i in range(len(ds))]
            E = np.asarray(ds.energies, dtype=np.float64) if ds.has_energy else None
        return structs, E
    import ase.io

    try:
        atoms = ase.io.read(path, index=":")
    except Exception as e:  # noqa: BLE001
        raise DatasetError(f"cannot read {path!r}: {e}") from e
    E = None
    try:
        E = np.array([a.get_potential_energy() for a in atoms])
    except Exception as e:  # noqa: BLE001 (ASE raises several types when there is no calculator)
        if need_energy:
            raise DatasetError(f"structures in {path!r} carry no energies; label them first (ednn gen convert "
                               f"{path} X.h5, then ednn gen label X.h5 -o LABELLED.h5 --labeller tersoff)") from e
    return atoms, E


def load_forces(path: str | Sequence[str]) -> list[np.ndarray]:
    """Reference forces (eV/A) of every structure of a dataset, in the order of :func:`load_structures`."""
    if not isinstance(path, str):
        return [f for part in _concat(path, load_forces) for f in part]
    if path.endswith((".h5", ".hdf5")):
        with Dataset(path) as ds:
            out = [ds.forces(i) for i in range(len(ds))]
    else:
        import ase.io

        out = []
        for a in ase.io.read(path, index=":"):
            calc = a.calc
            out.append(calc.results.get("forces") if calc is not None else None)
    missing = [i for i, f in enumerate(out) if f is None]
    if missing:
        raise DatasetError(f"{len(missing)} structures in {path!r} have no forces (first: {missing[0]}); "
                           "train.force_weight > 0 needs forces for every structure (or set it to 0)")
    return out




def load_targets(path: str | Sequence[str], names: Sequence[str]) -> dict[str, list[np.ndarray]]:
    """Per-voxel targets ``names`` of every record of an ednn HDF5 dataset (``targets/<name>``)."""
    if not isinstance(path, str):
        parts = _concat(path, lambda p: load_targets(p, names))
        return {k: [a for part in parts for a in part[k]] for k in names}
    if not path.endswith((".h5", ".hdf5")):
        raise DatasetError(f"per-voxel targets {list(names)} need an ednn HDF5 dataset (targets/<name>); "
                           f"{path!r} is not one (convert it with `ednn gen convert`)")
    with Dataset(path) as ds:
        have = ds.target_names
        missing = [k for k in names if k not in have]
        if missing:
            raise DatasetError(f"dataset {path!r} lacks the requested target(s) {missing}; it has "
                               f"{have or 'no per-voxel targets'} (data.targets names what to train on)")
        return {k: [ds.target(k, i) for i in range(len(ds))] for k in names}
