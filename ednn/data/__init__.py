"""Datasets on disk: the HDF5 schema, a kill-safe writer, lazy readers, conversions and
the one split rule (:func:`split_indices`).

Modules: :mod:`.writer` (:class:`DatasetWriter`, journal and consolidation),
:mod:`.reader` (:class:`Dataset`, :class:`ImageDataset`, :func:`open_dataset`),
:mod:`.convert` (whole-file writes, extxyz, :func:`convert`), :mod:`.label`
(:func:`label_dataset`) and :mod:`.split` (:func:`split_indices`).

Schema (``schema_version`` 1)
-----------------------------
One HDF5 file per dataset. Root attributes:

``format``          ``"ednn-dataset"``
``kind``            ``"atoms"`` (structures) or ``"image"`` (e.g. Ising spins)
``schema_version``  integer, currently 1
``n_records``       number of records
``metadata``        JSON string: labeller (``{"name", "settings"}``), units
                    (``{"energy": "eV", "length": "Angstrom"}``), ednn version,
                    creation time, plus any user keys

Atoms datasets (``kind = "atoms"``), ``n`` records with ``Ntot`` atoms in all.
Per-atom arrays are concatenated without padding; record ``i`` owns rows
``offsets[i]:offsets[i+1]``:

==================  ===============  =========  ==================================
dataset             shape            dtype      notes
==================  ===============  =========  ==================================
``offsets``         (n+1,)           int64      ``offsets[0] = 0``, ``offsets[n] = Ntot``
``n_atoms``         (n,)             int64      ``diff(offsets)``
``numbers``         (Ntot,)          int32      atomic numbers
``positions``       (Ntot, 3)        float64    Angstrom, Cartesian
``cell``            (n, 3, 3)        float64    Angstrom, rows are cell vectors
``pbc``             (n, 3)           bool
``energy``          (n,)             float64    eV, optional (all records or none)
``forces``          (Ntot, 3)        float64    eV/Angstrom, optional
``stress``          (n, 6)           float64    eV/Angstrom^3, Voigt xx yy zz yz xz xy, optional
``info``            (n,)             str        JSON per record, optional
``targets/<name>/`` group                       per-voxel (or any per-record array) target:
  ``data``          (sum of sizes,)  any        values of all records, flattened, concatenated
  ``offsets``       (n+1,)           int64      record ``i`` owns ``data[offsets[i]:offsets[i+1]]``
  ``shape``         (n, ndim)        int64      original shape of record ``i``
==================  ===============  =========  ==================================

Image datasets (``kind = "image"``): ``images`` (n, H, W[, C]) of one fixed shape
per file (stored in its own dtype, e.g. int8 spins), ``energy`` (n,) and
optional per-record scalar columns ``columns/<name>`` (n,). See
:func:`write_image_dataset` and :class:`ImageDataset`.

How a writer survives ``kill -9`` is described in :mod:`ednn.data.writer`.
"""

from ._io import SCHEMA_VERSION
from .convert import convert, read_structures, write_dataset, write_extxyz, write_image_dataset
from .label import label_dataset
from .reader import Dataset, ImageDataset, open_dataset
from .split import split_indices
from .writer import DatasetWriter

__all__ = [
    "DatasetWriter",
    "Dataset",
    "ImageDataset",
    "open_dataset",
    "write_dataset",
    "read_structures",
    "write_image_dataset",
    "write_extxyz",
    "convert",
    "label_dataset",
    "split_indices",
    "SCHEMA_VERSION",
]
