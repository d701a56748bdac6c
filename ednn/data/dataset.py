"""HDF5 datasets of labelled structures (and of images), kill-safe and lazily read.

Schema (``schema_version`` 1)
-----------------------------
One HDF5 file per dataset. Root attributes:

``format``          ``"ednn-dataset"``
``kind``            ``"atoms"`` (structures) or ``"image"`` (e.g. Ising spins)
``schema_version``  integer, currently 1
``n_records``       number of records
``metadata``        JSON string: labeller name and settings, units
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

Kill safety
-----------
:class:`DatasetWriter` never modifies the consolidated HDF5 file in place:

1. every finished record is journaled to its own small ``.npz`` file in the
   sidecar directory ``<path>.journal/``: written to a temporary name,
   fsync'ed, then ``os.replace``'d to ``rec_<index>.npz`` (atomic);
2. every ``every`` records / ``interval`` seconds, and at ``close()``, the
   old HDF5 file plus the journal are consolidated into a NEW HDF5 file
   (``<path>.journal/consolidate.h5.tmp``), fsync'ed and ``os.replace``'d
   over ``<path>``; only then are the consolidated journal files deleted;
3. on (re)open, journal files already contained in ``<path>`` are deleted,
   the remaining ones (which must continue the record numbering without
   gaps) are consolidated first, and leftover temporary files are removed.

A SIGKILL at any moment therefore leaves ``<path>`` either as the previous or
the next consolidated state (never a partial file) and every record whose
``append`` returned is either in ``<path>`` or in the journal. A reader opening
``<path>`` while a writer runs sees the last consolidated state. A
``flock`` on ``<path>.journal/lock`` keeps two writers apart.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import io
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError, InputError

SCHEMA_VERSION = 1
FORMAT = "ednn-dataset"
UNITS = {"energy": "eV", "length": "Angstrom", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3"}
_REC_RE = re.compile(r"^rec_(\d{9})\.npz$")
_TARGET_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")

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
    "split_indices",
    "SCHEMA_VERSION",
]


# --------------------------------------------------------------------------- helpers
def _h5py():
    import h5py

    return h5py


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"object of type {type(o).__name__} is not JSON serialisable")


def _to_json(obj: Any, what: str) -> str:
    try:
        return json.dumps(obj, default=_json_default, sort_keys=True, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise InputError(f"{what} must be JSON-serialisable (numbers, strings, lists, dicts): {e}") from e


def _normalise_json(obj: Any, what: str) -> Any:
    return json.loads(_to_json(obj, what))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def _ednn_version() -> str:
    try:
        from .. import __version__

        return str(__version__)
    except Exception:  # pragma: no cover
        return "unknown"


def _voigt(stress: Any) -> np.ndarray:
    s = np.asarray(stress, dtype=np.float64)
    if s.shape == (3, 3):
        s = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    if s.shape != (6,):
        raise InputError(f"stress must have shape (6,) (Voigt) or (3, 3), got {s.shape}")
    return s


def split_indices(
    n: int, val: float = 0.1, test: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic random train/validation/test split of ``range(n)``.

    Parameters
    ----------
    n : int
        Number of records.
    val, test : float
        Fractions in [0, 1) for validation and test; ``round(frac * n)`` records each.
    seed : int
        Seed of the permutation; the same seed gives the same split.

    Returns
    -------
    train, val, test : np.ndarray
        Sorted int64 index arrays, disjoint, covering ``range(n)``.
    """
    for name, f in (("val", val), ("test", test)):
        if not (0.0 <= float(f) < 1.0):
            raise InputError(f"split fraction {name}={f} must be in [0, 1)")
    if val + test >= 1.0 and n > 0:
        raise InputError(f"val + test = {val + test} leaves no training data; make it < 1")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test * n))
    n_val = int(round(val * n))
    te = np.sort(perm[:n_test])
    va = np.sort(perm[n_test : n_test + n_val])
    tr = np.sort(perm[n_test + n_val :])
    return tr.astype(np.int64), va.astype(np.int64), te.astype(np.int64)


# --------------------------------------------------------------------------- records
def _make_record(
    atoms: Any,
    energy: float | None,
    forces: Any,
    stress: Any,
    targets: dict[str, Any] | None,
    info: dict | None,
) -> dict[str, Any]:
    """Validate one record and return its arrays (keys as in the journal files)."""
    try:
        numbers = np.asarray(atoms.get_atomic_numbers(), dtype=np.int32)
        positions = np.asarray(atoms.get_positions(), dtype=np.float64)
        cell = np.asarray(atoms.get_cell()[:], dtype=np.float64)
        pbc = np.asarray(atoms.get_pbc(), dtype=bool)
    except AttributeError as e:
        raise InputError(f"append() needs an ase.Atoms object, got {type(atoms).__name__}") from e
    n = len(numbers)
    if n == 0:
        raise InputError("a record must contain at least one atom")
    if not np.all(np.isfinite(positions)):
        raise InputError("atomic positions contain NaN or inf; fix the structure builder")
    if np.any(numbers <= 0) or np.any(numbers > 118):
        raise InputError(f"atomic numbers must be in 1..118, got {sorted(set(numbers.tolist()))}")
    rec: dict[str, Any] = {"numbers": numbers, "positions": positions, "cell": cell, "pbc": pbc}
    if energy is not None:
        e = float(np.asarray(energy, dtype=np.float64).reshape(()))
        if not math.isfinite(e):
            raise DatasetError(
                f"energy is {e}: the labeller failed on this structure; skip or fix it, NaN labels are not stored"
            )
        rec["energy"] = np.float64(e)
    if forces is not None:
        f = np.asarray(forces, dtype=np.float64)
        if f.shape != (n, 3):
            raise InputError(f"forces must have shape ({n}, 3) for {n} atoms, got {f.shape}")
        if not np.all(np.isfinite(f)):
            raise DatasetError("forces contain NaN or inf: the labeller failed on this structure")
        rec["forces"] = f
    if stress is not None:
        s = _voigt(stress)
        if not np.all(np.isfinite(s)):
            raise DatasetError("stress contains NaN or inf: the labeller failed on this structure")
        rec["stress"] = s
    for name, value in (targets or {}).items():
        if not isinstance(name, str) or not _TARGET_NAME_RE.match(name):
            raise InputError(f"target name {name!r} must match {_TARGET_NAME_RE.pattern}")
        a = np.asarray(value)
        if a.dtype.kind not in "biuf":
            raise InputError(f"target {name!r} must be numeric, got dtype {a.dtype}")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise DatasetError(f"target {name!r} contains NaN or inf; NaN labels are not stored")
        rec["target__" + name] = a
    if info:
        rec["info"] = np.array(_to_json(info, "info"))
    return rec


def _signature(rec: dict[str, Any]) -> dict[str, Any]:
    """Which optional fields a record carries (must be the same for every record)."""
    return {
        "energy": "energy" in rec,
        "forces": "forces" in rec,
        "stress": "stress" in rec,
        "targets": sorted(k[8:] for k in rec if k.startswith("target__")),
    }


def _rec_to_bytes(rec: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **rec)
    return buf.getvalue()


def _read_journal_record(path: Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:
        raise DatasetError(
            f"journal record {path} is unreadable ({e}); it was written atomically, so the disk "
            "or another program damaged it: delete it and rerun the generator to redo that record"
        ) from e


# --------------------------------------------------------------------------- writing HDF5
def _file_signature(f) -> dict[str, Any]:
    return {
        "energy": "energy" in f,
        "forces": "forces" in f,
        "stress": "stress" in f,
        "targets": sorted(f["targets"].keys()) if "targets" in f else [],
    }


def _copy_rows(src, dst, start: int = 0, block: int = 1 << 20) -> None:
    """Copy ``src`` (h5 dataset) into ``dst[start:start+len(src)]`` in blocks."""
    n = src.shape[0]
    rows = max(1, block // max(1, int(np.prod(src.shape[1:])) if src.ndim > 1 else 1))
    for a in range(0, n, rows):
        b = min(n, a + rows)
        dst[start + a : start + b] = src[a:b]


def _consolidate(path: Path, tmp: Path, records: list[dict[str, Any]], metadata_json: str) -> int:
    """Write old file ``path`` (if any) + ``records`` into ``tmp``, fsync, replace ``path``.

    Returns the number of records in the new file.
    """
    h5py = _h5py()
    old = h5py.File(path, "r") if path.exists() else None
    try:
        n_old = int(old.attrs["n_records"]) if old is not None else 0
        if old is not None and n_old > 0:
            sig = _file_signature(old)
        elif records:
            sig = _signature(records[0])
        else:
            sig = {"energy": False, "forces": False, "stress": False, "targets": []}
        for k, r in enumerate(records):
            if _signature(r) != sig:
                raise DatasetError(
                    f"record {n_old + k} carries fields {_signature(r)} but the dataset has {sig}; "
                    "every record must have the same labels (energy/forces/stress/targets)"
                )
        n_new = n_old + len(records)
        old_off = old["offsets"][:] if old is not None else np.zeros(1, np.int64)
        counts = np.array([len(r["numbers"]) for r in records], dtype=np.int64)
        offsets = np.concatenate([old_off, old_off[-1] + np.cumsum(counts)]).astype(np.int64)
        ntot = int(offsets[-1])
        ntot_old = int(old_off[-1])
        if tmp.exists():
            tmp.unlink()
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["kind"] = "atoms"
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["n_records"] = n_new
            f.attrs["metadata"] = metadata_json
            f.create_dataset("offsets", data=offsets)
            f.create_dataset("n_atoms", data=np.diff(offsets))

            def stacked(name: str, shape_tail: tuple, dtype, per_atom: bool, key: str | None = None):
                key = key or name
                total = ntot if per_atom else n_new
                d = f.create_dataset(name, shape=(total, *shape_tail), dtype=dtype)
                start = ntot_old if per_atom else n_old
                if old is not None and n_old > 0:
                    _copy_rows(old[name], d)
                if records:
                    d[start:] = np.concatenate(
                        [np.asarray(r[key], dtype=dtype).reshape(-1, *shape_tail) for r in records]
                    )

            stacked("numbers", (), np.int32, True)
            stacked("positions", (3,), np.float64, True)
            stacked("cell", (3, 3), np.float64, False)
            stacked("pbc", (3,), bool, False)
            if sig["energy"]:
                stacked("energy", (), np.float64, False)
            if sig["forces"]:
                stacked("forces", (3,), np.float64, True)
            if sig["stress"]:
                stacked("stress", (6,), np.float64, False)
            has_info = (old is not None and "info" in old) or any("info" in r for r in records)
            if has_info:
                strs = h5py.string_dtype()
                d = f.create_dataset("info", shape=(n_new,), dtype=strs)
                if old is not None and n_old > 0:
                    d[:n_old] = old["info"][:] if "info" in old else ["{}"] * n_old
                if records:
                    d[n_old:] = [str(r["info"]) if "info" in r else "{}" for r in records]
            for name in sig["targets"]:
                g = f.create_group(f"targets/{name}")
                key = "target__" + name
                if old is not None and n_old > 0:
                    og = old["targets"][name]
                    dtype = og["data"].dtype
                    ndim = og["shape"].shape[1]
                    o_off = og["offsets"][:]
                    o_shape = og["shape"][:]
                else:
                    dtype = records[0][key].dtype
                    ndim = records[0][key].ndim
                    o_off = np.zeros(1, np.int64)
                    o_shape = np.zeros((0, ndim), np.int64)
                shapes = []
                for k, r in enumerate(records):
                    if r[key].ndim != ndim:
                        raise DatasetError(
                            f"target {name!r} of record {n_old + k} has {r[key].ndim} dimensions, "
                            f"earlier records have {ndim}; keep one layout per target"
                        )
                    shapes.append(r[key].shape)
                sizes = np.array([int(np.prod(s)) for s in shapes], dtype=np.int64)
                t_off = np.concatenate([o_off, o_off[-1] + np.cumsum(sizes)]).astype(np.int64)
                t_shape = np.concatenate([o_shape, np.array(shapes, np.int64).reshape(-1, ndim)])
                g.create_dataset("offsets", data=t_off)
                g.create_dataset("shape", data=t_shape.astype(np.int64))
                d = g.create_dataset("data", shape=(int(t_off[-1]),), dtype=dtype)
                if old is not None and n_old > 0:
                    _copy_rows(old["targets"][name]["data"], d)
                if records:
                    d[int(o_off[-1]) :] = np.concatenate(
                        [np.asarray(r[key], dtype=dtype).ravel() for r in records]
                    )
    finally:
        if old is not None:
            old.close()
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return n_new


# --------------------------------------------------------------------------- writer
class DatasetWriter:
    """Append labelled structures to an HDF5 dataset, kill-safe and resumable.

    Parameters
    ----------
    path : str or Path
        The dataset file (``.h5``). A sidecar directory ``<path>.journal/``
        exists while the writer is open or after it was killed.
    metadata : dict, optional
        JSON-serialisable user metadata (e.g. ``{"labeller": {"name": ...,
        "settings": {...}}, "kind": "graphene", "seed": 0}``). Stored with
        ``units``, ``ednn_version``, ``created`` and ``schema_version``. When
        resuming, the given keys must equal the stored ones.
    resume : bool
        True (default): continue an existing dataset (``n_records`` tells how
        many records are finished). False: delete any existing file and journal
        and start over.
    every : int
        Consolidate the journal into the HDF5 file at least every ``every``
        records (the interval grows with the file so that rewriting stays
        linear overall).
    interval : float
        ... and at most ``interval`` seconds after the last consolidation.
    fsync : bool
        fsync each journal record (durable against power loss, not only kill -9).

    Notes
    -----
    Generation must be deterministic per record index for resume to be exact:
    after a restart, produce record ``writer.n_records`` next.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        metadata: dict | None = None,
        resume: bool = True,
        every: int = 256,
        interval: float = 60.0,
        fsync: bool = True,
    ) -> None:
        self.path = Path(path)
        self.journal = Path(str(self.path) + ".journal")
        self.every = max(1, int(every))
        self.interval = float(interval)
        self.fsync = bool(fsync)
        self._lock_fh = None
        self._closed = False
        user_meta = _normalise_json(dict(metadata or {}), "metadata")
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.journal.mkdir(exist_ok=True)
        self._lock()
        try:
            if not resume:
                if self.path.exists():
                    self.path.unlink()
                for p in self.journal.iterdir():
                    if p.name != "lock":
                        p.unlink()
            self._cleanup_tmp()
            if self.path.exists():
                stored = _read_root(self.path)
                if stored["kind"] != "atoms":
                    raise DatasetError(f"{self.path} is an {stored['kind']!r} dataset, not a structure dataset")
                meta = stored["metadata"]
                diff = {k: (meta.get(k), v) for k, v in user_meta.items() if meta.get(k) != v}
                if diff:
                    raise DatasetError(
                        f"cannot resume {self.path}: it was made with different metadata {diff} "
                        "(stored, given); write to another path or pass resume=False to start over"
                    )
                self._meta = meta
                self._n_h5 = stored["n_records"]
            else:
                self._meta = {
                    **user_meta,
                    "units": dict(UNITS),
                    "ednn_version": _ednn_version(),
                    "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                    "schema_version": SCHEMA_VERSION,
                }
                self._n_h5 = 0
            self._meta_json = _to_json(self._meta, "metadata")
            self._pending = self._scan_journal()
            self._sig: dict[str, Any] | None = None
            if self._n_h5 > 0:
                with _h5py().File(self.path, "r") as f:
                    self._sig = _file_signature(f)
            # bring the file up to date with the journal (or create it, empty)
            self._consolidate()
        except BaseException:
            self._unlock()
            raise

    # -- locking / journal bookkeeping
    def _lock(self) -> None:
        fh = open(self.journal / "lock", "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            fh.close()
            raise DatasetError(
                f"{self.path} is being written by another process (lock {self.journal / 'lock'} held); "
                "wait for it to finish or write to another path"
            ) from e
        self._lock_fh = fh

    def _unlock(self) -> None:
        if self._lock_fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def _cleanup_tmp(self) -> None:
        for p in self.journal.iterdir():
            if p.name.endswith(".tmp"):
                p.unlink()

    def _scan_journal(self) -> list[int]:
        idx = []
        for p in self.journal.iterdir():
            m = _REC_RE.match(p.name)
            if m:
                idx.append(int(m.group(1)))
        idx.sort()
        pending = []
        for i in idx:
            if i < self._n_h5:  # consolidated already; the kill came before its deletion
                (self.journal / f"rec_{i:09d}.npz").unlink()
            else:
                pending.append(i)
        expected = list(range(self._n_h5, self._n_h5 + len(pending)))
        if pending != expected:
            raise DatasetError(
                f"journal {self.journal} has records {pending[:5]}... but the file holds {self._n_h5} "
                f"records, so records are missing in between; the journal was edited by hand. Remove "
                f"the journal files from rec_{self._n_h5:09d}.npz on and rerun the generator"
            )
        return pending

    def _rec_path(self, i: int) -> Path:
        return self.journal / f"rec_{i:09d}.npz"

    def _consolidate(self) -> None:
        self._last = time.monotonic()
        if not self._pending and self.path.exists():
            return
        records = [_read_journal_record(self._rec_path(i)) for i in self._pending]
        self._n_h5 = _consolidate(self.path, self.journal / "consolidate.h5.tmp", records, self._meta_json)
        for i in self._pending:
            self._rec_path(i).unlink()
        self._pending = []
        self._last = time.monotonic()

    # -- public API
    @property
    def n_records(self) -> int:
        """Number of finished records (consolidated + journaled)."""
        return self._n_h5 + len(self._pending)

    @property
    def metadata(self) -> dict:
        """The dataset's metadata (stored keys included)."""
        return dict(self._meta)

    def append(
        self,
        atoms: Any,
        energy: float | None = None,
        forces: Any = None,
        stress: Any = None,
        targets: dict[str, np.ndarray] | None = None,
        info: dict | None = None,
    ) -> int:
        """Journal one finished record; return its index.

        Parameters
        ----------
        atoms : ase.Atoms
            The structure (numbers, positions, cell, pbc are stored).
        energy : float, optional
            Total energy in eV. Every record must carry the same fields.
        forces : array (n_atoms, 3), optional
            Forces in eV/Angstrom.
        stress : array (6,) or (3, 3), optional
            Stress in eV/Angstrom^3 (stored in Voigt order).
        targets : dict of str to array, optional
            Per-voxel (or other per-record array) targets, any shape per record.
        info : dict, optional
            JSON-serialisable per-record information.
        """
        if self._closed:
            raise DatasetError(f"DatasetWriter for {self.path} is closed")
        rec = _make_record(atoms, energy, forces, stress, targets, info)
        sig = _signature(rec)
        if self._sig is None and self._pending:
            self._sig = _signature(_read_journal_record(self._rec_path(self._pending[0])))
        if self._sig is not None and sig != self._sig:
            raise DatasetError(
                f"record {self.n_records} carries fields {sig} but earlier records have {self._sig}; "
                "every record of a dataset must carry the same labels"
            )
        self._sig = sig
        i = self.n_records
        _atomic_write_bytes(self._rec_path(i), _rec_to_bytes(rec), fsync=self.fsync)
        if self.fsync and not self._pending:
            _fsync_dir(self.journal)
        self._pending.append(i)
        due = len(self._pending) >= max(self.every, self._n_h5 // 4)
        late = time.monotonic() - self._last >= self.interval
        if due or late:
            self.flush()
        return i

    def flush(self) -> None:
        """Consolidate the journal into the HDF5 file now."""
        if self._pending:
            self._consolidate()

    def close(self) -> None:
        """Consolidate everything, remove the journal directory and release the lock."""
        if self._closed:
            return
        try:
            self.flush()
            self._closed = True
            for p in self.journal.iterdir():
                if p.name != "lock":
                    p.unlink()
            shutil.rmtree(self.journal, ignore_errors=True)
        finally:
            self._closed = True
            self._unlock()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # keep the journal: finished records stay, the file stays valid
            with contextlib.suppress(Exception):
                self.flush()
            self._closed = True
            self._unlock()

    def __len__(self) -> int:
        return self.n_records


# --------------------------------------------------------------------------- reading
def _open_h5(path: Path):
    h5py = _h5py()
    if not path.exists():
        journal = Path(str(path) + ".journal")
        hint = (
            f"; a journal {journal} exists: rerun the generator (or open a DatasetWriter on it) to consolidate"
            if journal.exists()
            else "; check the path or generate it with `ednn gen`"
        )
        raise DatasetError(f"dataset {path} does not exist{hint}")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(
            f"{path} is not a readable HDF5 file (truncated or corrupt: {e}); regenerate it with "
            "`ednn gen` (a killed ednn writer never leaves such a file; copy/transfer errors do)"
        ) from e


def _read_root(path: Path) -> dict[str, Any]:
    with _open_h5(path) as f:
        return _check_root(f, path)


def _check_root(f, path: Path) -> dict[str, Any]:
    a = f.attrs
    if a.get("format") != FORMAT:
        raise DatasetError(
            f"{path} is an HDF5 file but not an ednn dataset (attribute format={a.get('format')!r}); "
            "convert it with `ednn gen convert SRC DST` or ednn.data.convert"
        )
    ver = int(a.get("schema_version", -1))
    if ver != SCHEMA_VERSION:
        raise DatasetError(
            f"{path} has schema version {ver}, this ednn reads {SCHEMA_VERSION}; upgrade ednn or regenerate"
        )
    try:
        meta = json.loads(a["metadata"])
        n = int(a["n_records"])
        kind = str(a["kind"])
    except (KeyError, ValueError) as e:
        raise DatasetError(f"{path}: root attribute missing or malformed ({e}); regenerate the file") from e
    return {"metadata": meta, "n_records": n, "kind": kind}


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
        self._f = _open_h5(self.path)
        try:
            root = _check_root(self._f, self.path)
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
            raise DatasetError(f"{self.path} has no energies (unlabelled); label it with `ednn gen --labeller ...`")
        return self._energy.copy()

    def numbers(self, i: int) -> np.ndarray:
        """Atomic numbers of record ``i``."""
        return self._f["numbers"][self._rows(i)].astype(np.int64)

    def positions(self, i: int) -> np.ndarray:
        """Cartesian positions (Angstrom) of record ``i``."""
        return self._f["positions"][self._rows(i)]

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

    def target(self, name: str, i: int) -> np.ndarray:
        """Per-record array target ``name`` of record ``i`` in its stored shape."""
        if name not in self._targets:
            raise DatasetError(f"{self.path} has no target {name!r}; it has {self._targets}")
        i = self._idx(i)
        g = self._f["targets"][name]
        a, b = g["offsets"][i : i + 2]
        return g["data"][int(a) : int(b)].reshape(tuple(g["shape"][i]))

    def __getitem__(self, i: int):
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

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

    def __iter__(self) -> Iterator:
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


def write_image_dataset(
    path: str | os.PathLike,
    images: Any,
    energies: Any = None,
    metadata: dict | None = None,
    columns: dict[str, Any] | None = None,
) -> Path:
    """Write an image dataset atomically (tmp file + fsync + ``os.replace``).

    Parameters
    ----------
    path : str or Path
        Output ``.h5`` file (replaced if it exists).
    images : array (n, H, W) or (n, H, W, C)
        Images of one shape, stored in their dtype (use int8 for spins).
    energies : array (n,), optional
        Energies (finite).
    metadata : dict, optional
        JSON-serialisable metadata (model, units, sampler settings...).
    columns : dict of str to array (n,), optional
        Per-record scalars such as ``temperature``.
    """
    path = Path(path)
    imgs = np.asarray(images)
    if imgs.ndim not in (3, 4) or imgs.shape[0] == 0:
        raise InputError(f"images must be a non-empty array (n, H, W) or (n, H, W, C), got shape {imgs.shape}")
    if imgs.dtype.kind not in "biuf":
        raise InputError(f"images must be numeric, got dtype {imgs.dtype}")
    n = imgs.shape[0]
    if imgs.dtype.kind == "f" and not np.all(np.isfinite(imgs)):
        raise DatasetError("images contain NaN/inf")
    e = None
    if energies is not None:
        e = np.asarray(energies, dtype=np.float64)
        if e.shape != (n,):
            raise InputError(f"energies must have shape ({n},), got {e.shape}")
        if not np.all(np.isfinite(e)):
            raise DatasetError("energies contain NaN/inf; NaN labels are not stored")
    cols = {}
    for k, v in (columns or {}).items():
        a = np.asarray(v)
        if a.shape != (n,) or a.dtype.kind not in "biuf":
            raise InputError(f"column {k!r} must be a numeric array of shape ({n},), got {a.shape} {a.dtype}")
        if not _TARGET_NAME_RE.match(k):
            raise InputError(f"column name {k!r} must match {_TARGET_NAME_RE.pattern}")
        cols[k] = a
    meta = {
        **_normalise_json(dict(metadata or {}), "metadata"),
        "ednn_version": _ednn_version(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "schema_version": SCHEMA_VERSION,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    h5py = _h5py()
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["kind"] = "image"
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["n_records"] = n
            f.attrs["metadata"] = _to_json(meta, "metadata")
            f.create_dataset("images", data=imgs)
            if e is not None:
                f.create_dataset("energy", data=e)
            for k, a in cols.items():
                f.create_dataset(f"columns/{k}", data=a)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def open_dataset(path: str | os.PathLike) -> Dataset | ImageDataset:
    """Open ``path`` as :class:`Dataset` or :class:`ImageDataset` according to its kind."""
    root = _read_root(Path(path))
    return ImageDataset(path) if root["kind"] == "image" else Dataset(path)


# --------------------------------------------------------------------------- convenience
def _calc_labels(atoms: Any) -> dict[str, Any]:
    """Energy/forces/stress stored on ``atoms.calc`` (None where absent)."""
    out: dict[str, Any] = {"energy": None, "forces": None, "stress": None}
    calc = getattr(atoms, "calc", None)
    if calc is None:
        return out
    res = getattr(calc, "results", {}) or {}
    for k in out:
        if k in res and res[k] is not None:
            out[k] = np.asarray(res[k])
    if out["energy"] is None and "free_energy" in res:
        out["energy"] = np.asarray(res["free_energy"])
    return out


def _jsonable_info(info: dict) -> dict:
    out = {}
    for k, v in info.items():
        try:
            out[k] = _normalise_json(v, "info")
        except InputError:
            continue  # non-JSON entries (e.g. objects) are not stored
    return out


def write_dataset(
    path: str | os.PathLike,
    structures: Iterable[Any],
    metadata: dict | None = None,
) -> Path:
    """Write labelled structures (labels from ``atoms.calc.results``) to a new dataset.

    Any existing file at ``path`` is replaced. Energy, forces and stress are
    taken where the calculator holds them (all structures must agree on which);
    JSON-serialisable ``atoms.info`` entries are stored as per-record info.
    """
    with DatasetWriter(path, metadata=metadata, resume=False, every=1 << 30, interval=math.inf) as w:
        for atoms in structures:
            lab = _calc_labels(atoms)
            w.append(atoms, info=_jsonable_info(atoms.info) or None, **lab)
    return Path(path)


def read_structures(path: str | os.PathLike, indices: Sequence[int] | None = None) -> list:
    """All (or the given) records of an atoms dataset as ase.Atoms with SinglePointCalculators."""
    with Dataset(path) as ds:
        idx = range(len(ds)) if indices is None else indices
        return [ds[i] for i in idx]


def _fmt(x: float) -> str:
    return repr(float(x))


def write_extxyz(path: str | os.PathLike, structures: Sequence[Any]) -> Path:
    """Write structures to extended XYZ with full float precision (atomic replace).

    ASE's writer rounds positions to 8 decimals; this one writes ``repr``
    floats so that a round trip through extxyz reproduces values bit for bit.
    Energy, forces and stress (3x3) are written from ``atoms.calc.results``.
    """
    path = Path(path)
    lines: list[str] = []
    for atoms in structures:
        lab = _calc_labels(atoms)
        n = len(atoms)
        cell = np.asarray(atoms.get_cell()[:], dtype=np.float64)
        props = "species:S:1:pos:R:3" + (":forces:R:3" if lab["forces"] is not None else "")
        kv = [
            'Lattice="' + " ".join(_fmt(v) for v in cell.ravel()) + '"',
            f"Properties={props}",
        ]
        if lab["energy"] is not None:
            kv.append(f"energy={_fmt(lab['energy'])}")
        if lab["stress"] is not None:
            s = _voigt(lab["stress"])
            full = np.array([[s[0], s[5], s[4]], [s[5], s[1], s[3]], [s[4], s[3], s[2]]])
            kv.append('stress="' + " ".join(_fmt(v) for v in full.ravel()) + '"')
        for k, v in _jsonable_info(atoms.info).items():
            if isinstance(v, bool):
                kv.append(f"{k}={'T' if v else 'F'}")
            elif isinstance(v, int | float):
                kv.append(f"{k}={_fmt(v) if isinstance(v, float) else v}")
            elif isinstance(v, str) and re.match(r"^[A-Za-z0-9_.+-]+$", v):
                kv.append(f"{k}={v}")
        kv.append('pbc="' + " ".join("T" if p else "F" for p in atoms.get_pbc()) + '"')
        lines.append(str(n))
        lines.append(" ".join(kv))
        pos = atoms.get_positions()
        syms = atoms.get_chemical_symbols()
        for a in range(n):
            row = [syms[a], *(_fmt(v) for v in pos[a])]
            if lab["forces"] is not None:
                row += [_fmt(v) for v in lab["forces"][a]]
            lines.append(" ".join(row))
    _atomic_write_bytes(path, ("\n".join(lines) + "\n").encode(), fsync=True)
    return path


def _is_h5(path: Path) -> bool:
    if path.suffix.lower() in (".h5", ".hdf5", ".hdf"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def convert(src: str | os.PathLike, dst: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Convert between formats: anything ase.io reads -> HDF5, HDF5 -> extxyz (or any ase format).

    Parameters
    ----------
    src : path
        extxyz, ASE database (``.db``), VASP OUTCAR, QE output, ... (anything
        ``ase.io.read(src, index=":")`` reads), or an ednn ``.h5`` dataset.
    dst : path
        ``.h5``/``.hdf5`` for an ednn dataset; otherwise written with
        :func:`write_extxyz` for ``.xyz``/``.extxyz`` and ``ase.io.write`` else.
    metadata : dict, optional
        Extra metadata for an HDF5 destination (the source path is recorded).
    """
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise InputError(f"conversion source {src} does not exist")
    if _is_h5(src):
        images = read_structures(src)
    else:
        import ase.io

        try:
            images = ase.io.read(str(src), index=":")
        except Exception as e:
            raise InputError(
                f"ase.io cannot read {src} ({type(e).__name__}: {e}); give a format ase.io reads "
                "(extxyz, .db, OUTCAR, QE output, ...)"
            ) from e
        if not isinstance(images, list):
            images = [images]
    if not images:
        raise InputError(f"{src} contains no structures")
    if dst.suffix.lower() in (".h5", ".hdf5", ".hdf"):
        meta = {"source": str(src), **(metadata or {})}
        if _is_h5(src):
            with Dataset(src) as ds:
                meta = {**ds.metadata, **meta}
            for k in ("created", "ednn_version", "schema_version", "units"):
                meta.pop(k, None)
        write_dataset(dst, images, metadata=meta)
    elif dst.suffix.lower() in (".xyz", ".extxyz"):
        write_extxyz(dst, images)
    else:
        import ase.io

        ase.io.write(str(dst), images)
    return dst
