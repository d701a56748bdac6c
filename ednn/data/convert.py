"""Whole-file helpers: write structures or images as a dataset, read them back, convert formats.

Conversions keep what a format can hold: the dataset metadata (labeller and its
settings, generator, any user key) travels through ``.h5 -> .extxyz -> .h5``
(in the first frame's ``ednn_metadata`` key) and ``.h5 -> .h5``; per-record
``info`` entries travel as plain extxyz values or ``_JSON`` strings, which
ASE reads back. A record that cannot be converted is reported with its index.
"""

from __future__ import annotations

import io
import json
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import ase.io
import h5py
import numpy as np
from ase import Atoms

from ..errors import DatasetError, EdnnError, InputError
from ._io import (
    FORMAT,
    SCHEMA_VERSION,
    STAMP_KEYS,
    TARGET_NAME_RE,
    atomic_write_bytes,
    fsync_dir,
    fsync_file,
    normalise_json,
    stamp,
    to_json,
)
from ._records import voigt
from .reader import Dataset
from .writer import DatasetWriter

__all__ = ["write_dataset", "read_structures", "write_image_dataset", "write_extxyz", "convert", "record_error"]

H5_SUFFIXES = (".h5", ".hdf5", ".hdf")
XYZ_SUFFIXES = (".xyz", ".extxyz")
#: first-frame key of an extxyz file that carries the dataset metadata (JSON)
XYZ_METADATA_KEY = "ednn_metadata"
# comment-line keys that extxyz itself uses: an info entry of that name would be misread
_XYZ_RESERVED = {"lattice", "properties", "pbc", "energy", "free_energy", "stress", "forces",
                 XYZ_METADATA_KEY}
_XYZ_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_XYZ_PLAIN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.+;-]*$")
_XYZ_BOOL_WORDS = {"T", "F", "true", "false", "True", "False", "TRUE", "FALSE"}


def record_error(e: EdnnError, where: str) -> EdnnError:
    """The same kind of ednn error as ``e`` with ``where`` (e.g. ``"record 7 of x.h5"``) in front."""
    return type(e)(f"{where}: {e}")


def carried_metadata(metadata: dict) -> dict:
    """The part of a dataset's metadata that a converted or relabelled copy keeps (no stamps)."""
    return {k: v for k, v in metadata.items() if k not in STAMP_KEYS}


# --------------------------------------------------------------------------- structures
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
    """The JSON-serialisable entries of ``atoms.info`` (objects such as calculators are not data)."""
    out = {}
    for k, v in info.items():
        try:
            out[k] = normalise_json(v, "info")
        except InputError:
            continue  # a non-data entry (object); everything that is data is kept
    return out


def write_dataset(
    path: str | os.PathLike,
    structures: Iterable[Any],
    metadata: dict | None = None,
    source: str | None = None,
) -> Path:
    """Write labelled structures (labels from ``atoms.calc.results``) to a new dataset.

    Any existing file at ``path`` is replaced. Energy, forces and stress are
    taken where the calculator holds them (all structures must agree on which);
    JSON-serialisable ``atoms.info`` entries are stored as per-record info.

    Parameters
    ----------
    path : str or Path
        The ``.h5`` file to write.
    structures : iterable of ase.Atoms
        The records, in order.
    metadata : dict, optional
        Dataset metadata (labeller, generator, ...).
    source : str, optional
        Name of where the structures come from, used in error messages
        (``"record 7 of OUTCAR: ..."``).
    """
    with DatasetWriter(path, metadata=metadata, resume=False, every=1 << 30, interval=float("inf")) as w:
        for i, atoms in enumerate(structures):
            lab = _calc_labels(atoms)
            try:
                w.append(atoms, info=_jsonable_info(atoms.info) or None, **lab)
            except EdnnError as e:
                where = f"record {i}" + (f" of {source}" if source else "")
                raise record_error(e, where) from e
    return Path(path)


def read_structures(path: str | os.PathLike, indices: Sequence[int] | None = None) -> list[Atoms]:
    """All (or the given) records of an atoms dataset as ase.Atoms with SinglePointCalculators."""
    with Dataset(path) as ds:
        idx = range(len(ds)) if indices is None else indices
        return [ds[i] for i in idx]


# --------------------------------------------------------------------------- images
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
        if not TARGET_NAME_RE.match(k):
            raise InputError(f"column name {k!r} must match {TARGET_NAME_RE.pattern}")
        cols[k] = a
    meta = stamp(normalise_json(dict(metadata or {}), "metadata"), units=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["kind"] = "image"
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["n_records"] = n
            f.attrs["metadata"] = to_json(meta, "metadata")
            f.create_dataset("images", data=imgs)
            if e is not None:
                f.create_dataset("energy", data=e)
            for k, a in cols.items():
                f.create_dataset(f"columns/{k}", data=a)
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# --------------------------------------------------------------------------- extxyz
def _fmt(x: float) -> str:
    return repr(float(x))


def _xyz_value(key: str, v: Any) -> str:
    """``key=value`` for the extxyz comment line; ASE's reader gives ``v`` back."""
    if isinstance(v, bool):
        return f"{key}={'T' if v else 'F'}"
    if isinstance(v, int):
        return f"{key}={v}"
    if isinstance(v, float):
        return f"{key}={_fmt(v)}"
    if isinstance(v, str) and _XYZ_PLAIN_RE.match(v) and v not in _XYZ_BOOL_WORDS:
        try:
            float(v)
        except ValueError:
            return f"{key}={v}"  # a plain word that ASE leaves a string
    text = "_JSON " + json.dumps(v, sort_keys=True)
    return key + '="' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_extxyz(path: str | os.PathLike, structures: Iterable[Any], metadata: dict | None = None) -> Path:
    """Write structures to extended XYZ with full float precision (atomic replace).

    ASE's writer rounds positions to 8 decimals; this one writes ``repr``
    floats so that a round trip through extxyz reproduces values bit for bit.
    Energy, forces and stress (3x3) are written from ``atoms.calc.results``,
    JSON-serialisable ``atoms.info`` entries as values ASE reads back, and
    ``metadata`` (the dataset's) as JSON in the first frame's ``ednn_metadata`` key.
    """
    path = Path(path)
    lines: list[str] = []
    meta = normalise_json(dict(metadata or {}), "metadata")
    for i, atoms in enumerate(structures):
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
            s = voigt(lab["stress"])
            full = np.array([[s[0], s[5], s[4]], [s[5], s[1], s[3]], [s[4], s[3], s[2]]])
            kv.append('stress="' + " ".join(_fmt(v) for v in full.ravel()) + '"')
        for k, v in _jsonable_info(atoms.info).items():
            if not _XYZ_KEY_RE.match(k) or k.lower() in _XYZ_RESERVED:
                raise InputError(
                    f"record {i}: info key {k!r} cannot be written to extxyz (it must be an identifier and not "
                    f"one of {sorted(_XYZ_RESERVED)}); rename it, or keep the data in .h5"
                )
            kv.append(_xyz_value(k, v))
        if i == 0 and meta:
            kv.append(_xyz_value(XYZ_METADATA_KEY, meta))
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
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode(), fsync=True)
    return path


# --------------------------------------------------------------------------- convert
def _is_h5(path: Path) -> bool:
    if path.suffix.lower() in H5_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            return f.read(8) == b"\x89HDF\r\n\x1a\n"
    except OSError:
        return False


def _read_xyz(src: Path) -> Iterator[Atoms]:
    """Frames of an (ext)xyz file parsed one at a time, so that a bad frame is reported with its index.

    (ASE's reader indexes the whole file first and names no frame when one is malformed.)
    """
    lines = src.read_text().splitlines()
    pos, k = 0, 0
    while pos < len(lines):
        if not lines[pos].strip():  # blank lines between or after frames
            pos += 1
            continue
        try:
            n = int(lines[pos].split()[0])
        except ValueError as e:
            raise InputError(
                f"structure {k} of {src} (line {pos + 1}): expected the atom count, got {lines[pos][:60]!r}; "
                f"fix that frame (structures 0..{k - 1} read fine)"
            ) from e
        frame = lines[pos : pos + 2 + n]
        if len(frame) < 2 + n:
            raise InputError(f"structure {k} of {src} is cut off: {n} atoms announced at line {pos + 1}, the file "
                             f"ends after {len(frame) - 2}; complete or remove it")
        try:
            atoms = ase.io.read(io.StringIO("\n".join(frame) + "\n"), format="extxyz")
        except Exception as e:  # noqa: BLE001 - ase.io raises many types; the chain keeps the original
            raise InputError(
                f"ase.io cannot read structure {k} of {src} (lines {pos + 1}-{pos + 2 + n}; {type(e).__name__}: "
                f"{e}); fix that frame (structures 0..{k - 1} read fine)"
            ) from e
        yield atoms
        pos += 2 + n
        k += 1


def _read_ase(src: Path) -> Iterator[Atoms]:
    """Frames of any file ase.io reads, one at a time; a bad frame is reported with its index."""
    if src.suffix.lower() in XYZ_SUFFIXES:
        yield from _read_xyz(src)
        return
    i = 0
    frames = ase.io.iread(str(src), index=":")
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except Exception as e:  # noqa: BLE001 - ase.io raises many types; the chain keeps the original
            what = f"ase.io cannot read {src}" if i == 0 else f"ase.io cannot read structure {i} of {src}"
            raise InputError(
                f"{what} ({type(e).__name__}: {e}); give a format ase.io reads (extxyz, .db, OUTCAR, QE "
                "output, ...)" + ("" if i == 0 else f", or fix that structure (structures 0..{i - 1} read fine)")
            ) from e
        yield atoms
        i += 1


def _copy_h5(ds: Dataset, dst: Path, metadata: dict) -> None:
    """Copy every record of ``ds`` (labels, targets, info) into a new dataset ``dst``."""
    with DatasetWriter(dst, metadata=metadata, resume=False, every=1 << 30, interval=float("inf")) as w:
        for i in range(len(ds)):
            try:
                atoms = ds[i]
                lab = _calc_labels(atoms)
                targets = {t: ds.target(t, i) for t in ds.target_names} or None
                w.append(atoms, targets=targets, info=ds.info(i) or None, **lab)
            except EdnnError as e:
                raise record_error(e, f"record {i} of {ds.path}") from e


def convert(src: str | os.PathLike, dst: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Convert between formats: anything ase.io reads -> HDF5, HDF5 -> HDF5, extxyz (or any ase format).

    Parameters
    ----------
    src : path
        extxyz, ASE database (``.db``), VASP OUTCAR, QE output, ... (anything
        ``ase.io.iread(src, index=":")`` reads), or an ednn ``.h5`` dataset.
    dst : path
        ``.h5``/``.hdf5`` for an ednn dataset; otherwise written with
        :func:`write_extxyz` for ``.xyz``/``.extxyz`` and ``ase.io.write`` else.
    metadata : dict, optional
        Extra metadata for an HDF5 or extxyz destination. The source's metadata
        (an ednn dataset's, or an extxyz written by ednn) is kept, with
        ``source`` set to ``src``.

    Returns
    -------
    Path
        ``dst``.
    """
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise InputError(f"conversion source {src} does not exist")
    suffix = dst.suffix.lower()
    if _is_h5(src):
        with Dataset(src) as ds:
            if len(ds) == 0:
                raise InputError(f"{src} contains no structures")
            meta = {**carried_metadata(ds.metadata), "source": str(src), **(metadata or {})}
            if suffix in H5_SUFFIXES:
                _copy_h5(ds, dst, meta)
            elif ds.target_names:
                raise InputError(
                    f"{src} holds per-record targets {ds.target_names}, which {suffix or dst.name} cannot hold; "
                    "convert to another .h5 file instead"
                )
            elif suffix in XYZ_SUFFIXES:
                write_extxyz(dst, ds, metadata=meta)
            else:
                _ase_write(dst, list(ds), meta)
        return dst
    images = list(_read_ase(src))
    if not images:
        raise InputError(f"{src} contains no structures")
    file_meta = images[0].info.pop(XYZ_METADATA_KEY, None)
    if file_meta is not None and not isinstance(file_meta, dict):
        raise InputError(f"{src}: the {XYZ_METADATA_KEY} entry of the first frame is not a JSON object; remove it")
    meta = {**carried_metadata(file_meta or {}), "source": str(src), **(metadata or {})}
    if suffix in H5_SUFFIXES:
        write_dataset(dst, images, metadata=meta, source=str(src))
    elif suffix in XYZ_SUFFIXES:
        write_extxyz(dst, images, metadata=meta)
    else:
        _ase_write(dst, images, meta)
    return dst


def _ase_write(dst: Path, images: list[Atoms], meta: dict) -> None:
    lost = sorted(k for k in meta if k != "source")
    if lost:
        warnings.warn(
            f"{dst.suffix or dst.name} files hold no dataset metadata: {lost} are not written to {dst}; "
            "convert to .h5 or .extxyz to keep them",
            stacklevel=3,
        )
    try:
        ase.io.write(str(dst), images)
    except Exception as e:  # noqa: BLE001 - ase.io raises many types; the chain keeps the original
        raise InputError(
            f"ase.io cannot write {dst} ({type(e).__name__}: {e}); use .h5, .extxyz or another format ase.io writes"
        ) from e
