"""Lazy readers of ednn datasets: :class:`Dataset` (structures), :class:`ImageDataset` (images)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ..errors import DatasetError
from ._io import check_root, open_h5, read_root
from .split import split_indices

__all__ = ["Dataset", "ImageDataset", "open_dataset"]


class _Base:
    """Shared pieces of :class:`Dataset` and :class:`ImageDataset`."""

    path: Path
    _f: Any
    _n: int
    _meta: dict

    def _open(self, path: str | os.PathLike, kind: str, other: str) -> int:
        """Open the file, check its root attributes and kind; return the record count."""
        self.path = Path(path)
        self._f = None
        self._f = open_h5(self.path)
        try:
            root = check_root(self._f, self.path)
            if root["kind"] != kind:
                raise DatasetError(f"{self.path} is an {root['kind']!r} dataset; open it with {other}")
        except BaseException:
            self.close()
            raise
        self._meta = root["metadata"]
        self._n = root["n_records"]
        return self._n

    def __len__(self) -> int:
        return self._n

    @property
    def metadata(self) -> dict:
        """Metadata stored with the dataset (labeller, units, ednn version, ...)."""
        return dict(self._meta)

    def split(self, val: float = 0.1, test: float = 0.1, seed: int = 0):
        """Deterministic ``(train_idx, val_idx, test_idx)``; see :func:`split_indices`."""
        return split_indices(self._n, val, test, seed)

    def close(self) -> None:
        """Close the HDF5 file."""
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover
        with contextlib.suppress(Exception):
            self.close()

    def _need(self, name: str, shape: tuple, what: str) -> Any:
        if name not in self._f:
            raise DatasetError(
                f"{self.path}: required field {name!r} ({what}) is missing; the file is incomplete, regenerate it"
            )
        d = self._f[name]
        if len(shape) != d.ndim or any(s is not None and s != t for s, t in zip(shape, d.shape)):
            want = tuple("*" if s is None else s for s in shape)
            raise DatasetError(
                f"{self.path}: field {name!r} ({what}) has shape {d.shape}, expected {want}; the file is "
                "inconsistent, regenerate it"
            )
        return d

    def _check_energy(self, e: np.ndarray) -> np.ndarray:
        bad = np.flatnonzero(~np.isfinite(e))
        if bad.size:
            raise DatasetError(
                f"{self.path}: {bad.size} energies are NaN/inf (records {bad[:10].tolist()}); "
                "relabel those records or drop them (ednn never stores NaN labels)"
            )
        return e


class Dataset(_Base):
    """Lazy reader of an atoms dataset written by :class:`DatasetWriter`.

    Small per-record arrays (offsets, cells, pbc, energies) are loaded at open
    and validated; per-atom arrays are read on demand.

    Parameters
    ----------
    path : str or Path
        The ``.h5`` file. If a writer is running, the last consolidated state is read.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        n = self._open(path, "atoms", "ImageDataset")
        try:
            off = self._need("offsets", (n + 1,), "per-record atom offsets")[:]
            if off[0] != 0 or np.any(np.diff(off) <= 0):
                raise DatasetError(f"{self.path}: 'offsets' must start at 0 and increase; regenerate the file")
            ntot = int(off[-1])
            self._off = off.astype(np.int64)
            self._need("numbers", (ntot,), "atomic numbers")
            self._need("positions", (ntot, 3), "positions")
            self._cell = self._need("cell", (n, 3, 3), "cells")[:]
            self._pbc = self._need("pbc", (n, 3), "periodic boundary conditions")[:].astype(bool)
            self._energy = None
            if "energy" in self._f:
                self._energy = self._check_energy(self._need("energy", (n,), "energies")[:])
            if "forces" in self._f:
                self._need("forces", (ntot, 3), "forces")
            self._stress = self._need("stress", (n, 6), "stress")[:] if "stress" in self._f else None
            self._info = self._f["info"] if "info" in self._f else None
            self._targets = sorted(self._f["targets"].keys()) if "targets" in self._f else []
            for t in self._targets:
                g = self._f["targets"][t]
                for k in ("data", "offsets", "shape"):
                    if k not in g:
                        raise DatasetError(f"{self.path}: target {t!r} lacks {k!r}; regenerate the file")
                if g["offsets"].shape != (n + 1,) or g["shape"].shape[0] != n:
                    raise DatasetError(f"{self.path}: target {t!r} has {g['offsets'].shape[0] - 1} records, file has {n}")
        except BaseException:
            self.close()
            raise

    # -- per-record arrays
    def _idx(self, i: int) -> int:
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"record {i} out of range for a dataset of {self._n} records")
        return i

    def _rows(self, i: int) -> slice:
        i = self._idx(i)
        return slice(int(self._off[i]), int(self._off[i + 1]))

    @property
    def n_atoms(self) -> np.ndarray:
        """Number of atoms per record, int64 array (n,)."""
        return np.diff(self._off)

    @property
    def has_energy(self) -> bool:
        """Whether the records carry energies."""
        return self._energy is not None

    @property
    def has_forces(self) -> bool:
        """Whether the records carry forces."""
        return "forces" in self._f

    @property
    def has_stress(self) -> bool:
        """Whether the records carry stress."""
        return self._stress is not None

    @property
    def target_names(self) -> list[str]:
        """Names of the per-record array targets."""
        return list(self._targets)

    @property
    def energies(self) -> np.ndarray:
        """Total energies in eV, float64 array (n,), NaN-free."""
        if self._energy is None and self._n == 0:
            return np.zeros(0)
        if self._energy is None:
            raise DatasetError(
                f"{self.path} has no energies (unlabelled); label it with "
                f"`ednn gen label {self.path} -o LABELLED.h5 --labeller tersoff`"
            )
        return self._energy.copy()

    def numbers(self, i: int) -> np.ndarray:
        """Atomic numbers of record ``i``."""
        return self._f["numbers"][self._rows(i)].astype(np.int64)

    def positions(self, i: int) -> np.ndarray:
        """Cartesian positions (Angstrom) of record ``i``."""
        return self._f["positions"][self._rows(i)]

    def structure_arrays(self, i: int, chunk: int = 1 << 20) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(positions, numbers, cell, pbc)`` of record ``i`` in lean arrays, read from disk ``chunk`` atoms at a
        time: float64 positions and uint8 numbers (25 bytes per atom, no int64 copy), for huge structures."""
        rows = self._rows(i)
        n = rows.stop - rows.start
        pos = np.empty((n, 3))
        num = np.empty(n, dtype=np.uint8)
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            self._f["positions"].read_direct(pos, np.s_[rows.start + a : rows.start + b], np.s_[a:b])
            num[a:b] = self._f["numbers"][rows.start + a : rows.start + b]  # 1..118 fit a byte
        return pos, num, self.cell(i), self.pbc(i)

    def cell(self, i: int) -> np.ndarray:
        """Cell (3, 3) of record ``i``, rows are vectors."""
        return self._cell[self._idx(i)].copy()

    def pbc(self, i: int) -> np.ndarray:
        """Periodic boundary flags (3,) of record ``i``."""
        return self._pbc[self._idx(i)].copy()

    def energy(self, i: int) -> float | None:
        """Energy (eV) of record ``i`` or None if unlabelled."""
        return None if self._energy is None else float(self._energy[self._idx(i)])

    def forces(self, i: int) -> np.ndarray | None:
        """Forces (eV/Angstrom) of record ``i`` or None."""
        if "forces" not in self._f:
            return None
        f = self._f["forces"][self._rows(i)]
        if not np.all(np.isfinite(f)):
            raise DatasetError(f"{self.path}: forces of record {self._idx(i)} contain NaN/inf; relabel it")
        return f

    def stress(self, i: int) -> np.ndarray | None:
        """Voigt stress (6,) (eV/Angstrom^3) of record ``i`` or None."""
        return None if self._stress is None else self._stress[self._idx(i)].copy()

    def info(self, i: int) -> dict:
        """Per-record info dict (empty if none was stored)."""
        if self._info is None:
            return {}
        v = self._info[self._idx(i)]
        return json.loads(v.decode() if isinstance(v, bytes) else v)

    def labels(self, i: int) -> dict[str, Any]:
        """Everything stored with record ``i`` besides the structure, as :meth:`DatasetWriter.append`'s keywords
        (energy, forces, stress, info, targets): ``writer.append(ds[i], **ds.labels(i))`` copies the record."""
        return {"energy": self.energy(i), "forces": self.forces(i), "stress": self.stress(i), "info": self.info(i),
                "targets": {k: self.target(k, i) for k in self.target_names}}

    def target(self, name: str, i: int) -> np.ndarray:
        """Per-record array target ``name`` of record ``i`` in its stored shape."""
        if name not in self._targets:
            raise DatasetError(f"{self.path} has no target {name!r}; it has {self._targets}")
        i = self._idx(i)
        g = self._f["targets"][name]
        a, b = g["offsets"][i : i + 2]
        return g["data"][int(a) : int(b)].reshape(tuple(g["shape"][i]))

    def __getitem__(self, i: int) -> Atoms:
        i = self._idx(i)
        atoms = Atoms(
            numbers=self.numbers(i), positions=self.positions(i), cell=self.cell(i), pbc=self.pbc(i)
        )
        results = {}
        if self._energy is not None:
            results["energy"] = float(self._energy[i])
        if self.has_forces:
            results["forces"] = self.forces(i)
        if self._stress is not None:
            results["stress"] = self._stress[i].copy()
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info.update(self.info(i))
        return atoms

    def __iter__(self) -> Iterator[Atoms]:
        for i in range(self._n):
            yield self[i]

    def __repr__(self) -> str:
        return f"Dataset({str(self.path)!r}, n={self._n}, atoms={int(self._off[-1])})"


# --------------------------------------------------------------------------- image datasets
class ImageDataset(_Base):
    """Reader of an image dataset (``kind = "image"``), e.g. Ising spin configurations.

    ``ds[i]`` is image ``i`` (in its stored dtype), ``ds.images`` all images,
    ``ds.energies`` the energies, ``ds.column(name)`` a per-record scalar column.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        n = self._open(path, "image", "Dataset")
        try:
            d = self._f["images"] if "images" in self._f else self._need("images", (n,), "images")
            self._need("images", (n,) + (None,) * (d.ndim - 1), "images")
            if d.ndim not in (3, 4):
                raise DatasetError(f"{self.path}: images must be (n, H, W) or (n, H, W, C), got {d.shape}")
            self._energy = None
            if "energy" in self._f:
                self._energy = self._check_energy(self._need("energy", (n,), "energies")[:])
            self._columns = sorted(self._f["columns"].keys()) if "columns" in self._f else []
            for c in self._columns:
                if self._f["columns"][c].shape[:1] != (n,):
                    raise DatasetError(f"{self.path}: column {c!r} has shape {self._f['columns'][c].shape}, expected ({n},)")
        except BaseException:
            self.close()
            raise

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Shape of one image."""
        return tuple(self._f["images"].shape[1:])

    @property
    def images(self) -> np.ndarray:
        """All images, (n, H, W[, C]) in the stored dtype."""
        return self._f["images"][:]

    @property
    def has_energy(self) -> bool:
        """Whether the records carry energies."""
        return self._energy is not None

    @property
    def energies(self) -> np.ndarray:
        """Energies (n,), NaN-free."""
        if self._energy is None:
            raise DatasetError(f"{self.path} has no energies")
        return self._energy.copy()

    @property
    def column_names(self) -> list[str]:
        """Names of the per-record scalar columns."""
        return list(self._columns)

    def column(self, name: str) -> np.ndarray:
        """Per-record scalar column ``name`` (e.g. ``"temperature"``)."""
        if name not in self._columns:
            raise DatasetError(f"{self.path} has no column {name!r}; it has {self._columns}")
        return self._f["columns"][name][:]

    def __getitem__(self, i: int) -> np.ndarray:
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"record {i} out of range for a dataset of {self._n} records")
        return self._f["images"][i]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self._n):
            yield self[i]

    def __repr__(self) -> str:
        return f"ImageDataset({str(self.path)!r}, n={self._n}, shape={self.image_shape})"


def open_dataset(path: str | os.PathLike) -> Dataset | ImageDataset:
    """Open ``path`` as :class:`Dataset` or :class:`ImageDataset` according to its kind."""
    root = read_root(Path(path))
    return ImageDataset(path) if root["kind"] == "image" else Dataset(path)
