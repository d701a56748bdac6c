"""Kill-safe, resumable writer of atoms datasets (:class:`DatasetWriter`).

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
``flock`` on ``<path>.journal/lock`` keeps two writers apart. A writer that
created ``<path>`` and leaves by an exception before any record was finished
removes the empty file and its journal again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import DatasetError
from ._io import (
    FORMAT,
    REC_RE,
    SCHEMA_VERSION,
    atomic_write_bytes,
    fsync_dir,
    fsync_file,
    normalise_json,
    read_root,
    stamp,
    to_json,
)
from ._records import make_record, read_journal_record, rec_to_bytes, signature
from .ldos import check_electronic_targets

__all__ = ["DatasetWriter"]


def _file_signature(f: h5py.File) -> dict[str, Any]:
    """Which optional fields a consolidated file carries."""
    return {
        "energy": "energy" in f,
        "forces": "forces" in f,
        "stress": "stress" in f,
        "targets": sorted(f["targets"].keys()) if "targets" in f else [],
    }


def _copy_rows(src: h5py.Dataset, dst: h5py.Dataset, start: int = 0, block: int = 1 << 20) -> None:
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
    old = h5py.File(path, "r") if path.exists() else None
    try:
        n_old = int(old.attrs["n_records"]) if old is not None else 0
        if old is not None and n_old > 0:
            sig = _file_signature(old)
        elif records:
            sig = signature(records[0])
        else:
            sig = {"energy": False, "forces": False, "stress": False, "targets": []}
        for k, r in enumerate(records):
            if signature(r) != sig:
                raise DatasetError(
                    f"record {n_old + k} carries fields {signature(r)} but the dataset has {sig}; "
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
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)
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
        self._created = False  # True when this writer created the file (see __exit__)
        user_meta = normalise_json(dict(metadata or {}), "metadata")
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        made_journal = not self.journal.exists()
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
                stored = read_root(self.path)
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
                self._meta = stamp(user_meta)
                self._n_h5 = 0
                self._created = True
            self._meta_json = to_json(self._meta, "metadata")
            self._pending = self._scan_journal()
            self._sig: dict[str, Any] | None = None
            if self._n_h5 > 0:
                with h5py.File(self.path, "r") as f:
                    self._sig = _file_signature(f)
            # bring the file up to date with the journal (or create it, empty)
            self._consolidate()
        except BaseException:
            if made_journal and all(p.name == "lock" for p in self.journal.iterdir()):
                shutil.rmtree(self.journal)  # this writer made the sidecar and put nothing in it: leave none
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
            m = REC_RE.match(p.name)
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
        records = [read_journal_record(self._rec_path(i)) for i in self._pending]
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
            ``"ldos"`` and ``"density"`` are checked by
            :func:`ednn.data.ldos.check_electronic_targets` (an LDOS needs the
            dataset's ``metadata["energy_grid"]`` and ``info["energy_grid"]``).
        info : dict, optional
            JSON-serialisable per-record information.
        """
        if self._closed:
            raise DatasetError(f"DatasetWriter for {self.path} is closed")
        rec = make_record(atoms, energy, forces, stress, targets, info)
        if targets and ("ldos" in targets or "density" in targets):
            check_electronic_targets(targets, info, abs(float(atoms.cell.volume)), self._meta.get("energy_grid"))
        sig = signature(rec)
        if self._sig is None and self._pending:
            self._sig = signature(read_journal_record(self._rec_path(self._pending[0])))
        if self._sig is not None and sig != self._sig:
            raise DatasetError(
                f"record {self.n_records} carries fields {sig} but earlier records have {self._sig}; "
                "every record of a dataset must carry the same labels"
            )
        self._sig = sig
        i = self.n_records
        atomic_write_bytes(self._rec_path(i), rec_to_bytes(rec), fsync=self.fsync)
        if self.fsync and not self._pending:
            fsync_dir(self.journal)
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
            return
        # an exception is on its way out: keep the journal (finished records stay, the file stays
        # valid); a failure to consolidate now must not replace that exception, so it rides along
        # as a note and the journal is consolidated on the next open
        try:
            self.flush()
        except Exception as e:  # noqa: BLE001 - reported on the propagating exception
            if isinstance(exc, BaseException):
                exc.add_note(f"ednn: consolidating {self.path} on the way out failed too ({e!r}); "
                             "its journal is kept and consolidated when the writer is opened again")
        self._closed = True
        if self._created and self.n_records == 0:  # nothing finished: leave nothing behind
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
                shutil.rmtree(self.journal)
        self._unlock()

    def __len__(self) -> int:
        return self.n_records


