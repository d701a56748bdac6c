"""Low-level pieces shared by the dataset writer, readers and converters.

Constants of the schema, JSON (de)serialisation of metadata, atomic file
writes (temporary name + fsync + ``os.replace``) and the checks of a file's
root attributes.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._version import __version__
from ..errors import DatasetError, InputError
from ..properties import ENERGY, FORCES, STRESS

SCHEMA_VERSION = 1
FORMAT = "ednn-dataset"
#: units of the labels a dataset stores, from the property registry (ednn.properties)
UNITS = {"length": "Angstrom", **{p.key: p.unit for p in (ENERGY, FORCES, STRESS)}}
REC_RE = re.compile(r"^rec_(\d{9})\.npz$")
TARGET_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")
#: metadata keys every file gets afresh when written (never copied from a source file)
STAMP_KEYS = ("created", "ednn_version", "schema_version", "units")
# errno values of filesystems that cannot fsync a directory (the rename itself is still atomic)
_NO_DIR_FSYNC = {errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EISDIR, errno.EACCES}


def json_default(o: Any) -> Any:
    """``json.dumps`` fallback: NumPy scalars and arrays, paths."""
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


def to_json(obj: Any, what: str) -> str:
    """Serialise ``obj`` (sorted keys); InputError naming ``what`` if it cannot be."""
    try:
        return json.dumps(obj, default=json_default, sort_keys=True, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise InputError(f"{what} must be JSON-serialisable (numbers, strings, lists, dicts): {e}") from e


def normalise_json(obj: Any, what: str) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists, NumPy values plain ones)."""
    return json.loads(to_json(obj, what))


def stamp(metadata: dict, units: bool = True) -> dict:
    """User metadata plus ``units`` (atoms datasets), ``ednn_version``, ``created``, ``schema_version``.

    With ``units=False`` (image datasets, whose units the user states) a given ``units`` key is kept.
    """
    drop = STAMP_KEYS if units else tuple(k for k in STAMP_KEYS if k != "units")
    meta = {k: v for k, v in metadata.items() if k not in drop}
    if units:
        meta["units"] = dict(UNITS)
    meta["ednn_version"] = str(__version__)
    meta["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    meta["schema_version"] = SCHEMA_VERSION
    return meta


def fsync_dir(path: Path) -> None:
    """fsync a directory so that a rename inside it is durable (where the filesystem allows it)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError as e:
        if e.errno in _NO_DIR_FSYNC:  # platforms without directory descriptors
            return
        raise
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """fsync a closed file's contents."""
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def atomic_write_bytes(path: Path, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` through ``<path>.tmp`` and ``os.replace`` (never a partial file)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def open_h5(path: Path) -> h5py.File:
    """Open an existing HDF5 file for reading; DatasetError saying what to do otherwise."""
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


def check_root(f: h5py.File, path: Path) -> dict[str, Any]:
    """Root attributes of an open dataset file: ``{"metadata", "n_records", "kind"}``."""
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


def read_root(path: Path) -> dict[str, Any]:
    """Root attributes of the dataset file ``path`` (see :func:`check_root`)."""
    with open_h5(path) as f:
        return check_root(f, path)
