"""Label (or relabel) an existing atoms dataset: ``ednn gen label IN.h5 -o OUT.h5 --labeller tersoff``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..atoms.labellers.base import checkpoints_beside
from ..errors import BackendError, DatasetError, EdnnError, InputError
from .convert import carried_metadata, record_error
from .reader import Dataset
from .writer import DatasetWriter

__all__ = ["label_dataset"]


class _Labeller(Protocol):
    """What :func:`label_dataset` needs of a labeller (see :mod:`ednn.atoms.labellers`)."""

    name: str
    settings: dict[str, Any]

    def label(self, atoms: Any) -> dict[str, Any]: ...  # noqa: D102


def label_dataset(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    labeller: _Labeller,
    resume: bool = True,
    fsync: bool = True,
    on_record: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Label every record of ``src`` with ``labeller`` into the new dataset ``dst``, resumably.

    ``dst`` gets the structures, per-record info and targets of ``src``, the
    labeller's energy, forces and stress, and the metadata of ``src`` with
    ``labeller = {"name", "settings"}`` and ``labelled_from = {"path", "labeller"}``
    (the source's labeller, if it had one). Per-voxel targets and per-record
    info that the labeller returns (``label()["targets"]``, ``label()["info"]``,
    e.g. the LDOS and density of ``gpaw-ldos``) are added to the record's own
    (a target of the same name replaces the source's). The writer is the kill-safe
    :class:`~ednn.data.DatasetWriter`: kill it and rerun, and the records
    already labelled in ``dst`` are kept. A stress the labeller reports as absent
    (``label()["stress"] is None``) is recorded as such, with its reason, in the
    record's ``info["stress_absent"]``.

    Parameters
    ----------
    src : str or Path
        An atoms dataset (labelled or not).
    dst : str or Path
        Output ``.h5`` (must differ from ``src``).
    labeller : Labeller
        Anything with ``name``, ``settings`` and ``label(atoms) -> {"energy", "forces", "stress"}``;
        its ``prepare()``, if any, is called first.
    resume : bool
        Continue ``dst`` if it exists (True) or start it afresh (False).
    fsync : bool
        fsync each journaled record.
    on_record : callable, optional
        Called with the index of each record when it is finished (progress bars).

    Returns
    -------
    dict
        ``{"n_records": ..., "new": ...}``.
    """
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise InputError(f"label {src} into a new file, not into itself (e.g. -o {src.stem}_labelled.h5)")
    for attr in ("name", "settings", "label"):
        if not hasattr(labeller, attr):
            raise InputError(f"label_dataset needs a labeller with .{attr} (see ednn.atoms.labellers.get_labeller)")
    checkpoints_beside(labeller, dst)  # a long SCF resumes mid-record after a kill
    committed = getattr(labeller, "committed", None)
    prepare = getattr(labeller, "prepare", None)
    if callable(prepare):  # set up first: engines add e.g. their version to the settings stored below
        prepare()
    with Dataset(src) as ds:
        if len(ds) == 0:
            raise InputError(f"{src} holds no records; nothing to label")
        old = ds.metadata
        meta = {
            **carried_metadata(old),
            "labeller": {"name": str(labeller.name), "settings": dict(labeller.settings)},
            "labelled_from": {"path": os.path.abspath(src), "labeller": old.get("labeller")},
        }
        settings = dict(labeller.settings)
        if settings.get("energy_grid") and not settings.get("density_only"):  # the LDOS window of every record
            meta["energy_grid"] = settings["energy_grid"]
        with DatasetWriter(dst, metadata=meta, resume=resume, fsync=fsync) as w:
            start = w.n_records
            if start > len(ds):
                raise DatasetError(f"{dst} holds {start} records but {src} only {len(ds)}; they do not belong together")
            for i in range(start, len(ds)):
                atoms = ds[i]
                atoms.calc = None
                info = ds.info(i)
                try:
                    lab = labeller.label(atoms)
                except EdnnError as e:
                    raise record_error(e, f"labelling record {i} of {src} ({len(atoms)} atoms)") from e
                except Exception as e:  # noqa: BLE001 - a labeller backend may raise anything; chained
                    raise BackendError(
                        f"labelling record {i} of {src} ({len(atoms)} atoms) failed: {type(e).__name__}: {e}"
                    ) from e
                if lab.get("stress") is None and lab.get("stress_absent"):
                    info["stress_absent"] = str(lab["stress_absent"])
                info.update(lab.get("info") or {})
                targets = {t: ds.target(t, i) for t in ds.target_names}
                targets.update(lab.get("targets") or {})
                targets = targets or None
                try:
                    w.append(atoms, energy=lab.get("energy"), forces=lab.get("forces"), stress=lab.get("stress"),
                             targets=targets, info=info or None)
                except EdnnError as e:
                    raise record_error(e, f"record {i} of {src}") from e
                if callable(committed):
                    committed(atoms)
                if on_record is not None:
                    on_record(i)
            n = w.n_records
    return {"n_records": n, "new": n - start}
