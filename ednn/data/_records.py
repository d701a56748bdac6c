"""One record of an atoms dataset: validation of a labelled structure and its journal file."""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError, InputError
from ..properties import ENERGY, FORCES, STRESS
from ._io import TARGET_NAME_RE, to_json


def voigt(stress: Any) -> np.ndarray:
    """A stress as the Voigt vector ``(xx, yy, zz, yz, xz, xy)``; accepts (6,) or (3, 3)."""
    s = np.asarray(stress, dtype=np.float64)
    if s.shape == (3, 3):
        s = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    if s.shape != (6,):
        raise InputError(f"stress must have shape (6,) (Voigt) or (3, 3), got {s.shape}")
    return s


def make_record(
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
        rec[ENERGY.key] = np.float64(e)
    if forces is not None:
        f = np.asarray(forces, dtype=np.float64)
        if f.shape != (n, 3):
            raise InputError(f"forces must have shape ({n}, 3) for {n} atoms, got {f.shape}")
        if not np.all(np.isfinite(f)):
            raise DatasetError("forces contain NaN or inf: the labeller failed on this structure")
        rec[FORCES.key] = f
    if stress is not None:
        s = voigt(stress)
        if not np.all(np.isfinite(s)):
            raise DatasetError("stress contains NaN or inf: the labeller failed on this structure")
        rec[STRESS.key] = s
    for name, value in (targets or {}).items():
        if not isinstance(name, str) or not TARGET_NAME_RE.match(name):
            raise InputError(f"target name {name!r} must match {TARGET_NAME_RE.pattern}")
        a = np.asarray(value)
        if a.dtype.kind not in "biuf":
            raise InputError(f"target {name!r} must be numeric, got dtype {a.dtype}")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise DatasetError(f"target {name!r} contains NaN or inf; NaN labels are not stored")
        rec["target__" + name] = a
    if info:
        rec["info"] = np.array(to_json(info, "info"))
    return rec


def signature(rec: dict[str, Any]) -> dict[str, Any]:
    """Which optional fields a record carries (must be the same for every record)."""
    return {
        "energy": "energy" in rec,
        "forces": "forces" in rec,
        "stress": "stress" in rec,
        "targets": sorted(k[8:] for k in rec if k.startswith("target__")),
    }


def rec_to_bytes(rec: dict[str, Any]) -> bytes:
    """A record as the bytes of an uncompressed ``.npz`` (the journal file format)."""
    buf = io.BytesIO()
    np.savez(buf, **rec)
    return buf.getvalue()


def read_journal_record(path: Path) -> dict[str, Any]:
    """Read one journal file back into a record dict."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DatasetError(
            f"journal record {path} is unreadable ({e}); it was written atomically, so the disk "
            "or another program damaged it: delete it and rerun the generator to redo that record"
        ) from e
