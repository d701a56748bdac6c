"""Model folders: what a trained model is on disk.

A model is one folder::

    model/
      config.json          # format, ednn version, units, grid contract, architecture,
                           # outputs: energy (reference energies per species, scale)
                           # and per-voxel fields (channels, scales, property), metadata
      model.weights.h5     # Keras weights of the network

(or the same two files in a ``.zip``). The folder is written to a temporary
sibling and renamed into place, so a killed save never leaves a half model.
:func:`load` (exported as ``ednn.load``) returns an
:class:`~ednn.predict.model.EnergyModel`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import ModelError

__all__ = ["save_model", "read_model", "model_config_dict", "FORMAT"]

FORMAT = "ednn-model-2"
READABLE = ("ednn-model-1", FORMAT)
WEIGHTS = "model.weights.h5"
CONFIG = "config.json"


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def model_config_dict(model) -> dict[str, Any]:
    """The JSON description of a model (everything but the weights)."""
    species = list(model.grid.symbols) if model.grid is not None else ["pixel"]
    outputs: dict[str, Any] = {"fields": {k: f.to_dict() for k, f in model.fields.items()}}
    units = {"energy": "eV", "length": "Angstrom"}
    if model.energy_output is not None:
        outputs["energy"] = model.energy_output.to_dict(species)
    for k, f in model.fields.items():
        units[k] = f.prop.unit
    return {
        "format": FORMAT,
        "ednn_version": __version__,
        "units": units,
        "grid": model.grid.to_dict() if model.grid is not None else None,
        "image_mode": model.grid is None,
        "in_channels": model.in_channels,
        "dim": model.dim,
        "model": model.model_config,
        "receptive_radius": model.radius,
        "outputs": outputs,
        "meta": _jsonable(model.meta),
    }


def save_model(model, path: str) -> str:
    """Save ``model`` to the folder ``path`` (or a zip if ``path`` ends with ``.zip``); returns the path."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(parent, exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix=".ednn-save-", dir=parent)
    try:
        # an atom-centred model (ednn.predict.atomic) describes and writes itself; image models through Keras
        write_weights = getattr(model, "write_weights", None) or model.network.save_weights
        write_weights(os.path.join(tmpdir, WEIGHTS))
        desc = model.describe() if hasattr(model, "describe") else model_config_dict(model)
        with open(os.path.join(tmpdir, CONFIG), "w") as fh:
            json.dump(desc, fh, indent=2)
        if path.endswith(".zip"):
            tmpzip = os.path.join(tmpdir, "model.zip")
            with zipfile.ZipFile(tmpzip, "w", zipfile.ZIP_DEFLATED) as z:
                z.write(os.path.join(tmpdir, CONFIG), CONFIG)
                z.write(os.path.join(tmpdir, WEIGHTS), WEIGHTS)
            os.replace(tmpzip, path)
        else:
            old = None
            if os.path.exists(path):
                old = path + ".old"
                if os.path.exists(old):
                    shutil.rmtree(old)
                os.replace(path, old)
            os.replace(tmpdir, path)
            tmpdir = None
            if old:
                shutil.rmtree(old)
    finally:
        if tmpdir and os.path.exists(tmpdir):
            shutil.rmtree(tmpdir)
    return path


def corrupt(path: str, why: str) -> ModelError:
    """The error for a model file that cannot be used."""
    return ModelError(f"model {path!r}: {why}; it is not a model this ednn ({__version__}) can read "
                      "(retrain it, or load it with the ednn version that wrote it)")


def _upgrade(cfg: dict[str, Any]) -> dict[str, Any]:
    """A format-1 description (energy only) in the current layout."""
    if cfg.get("format") == "ednn-model-1":
        cfg = dict(cfg)
        cfg["outputs"] = {"energy": {"reference_energies": cfg.pop("reference_energies"),
                                     "scale": cfg.pop("scale"), "channel": 0, "unit": "eV"}, "fields": {}}
    return cfg


@contextlib.contextmanager
def read_model(path: str) -> Iterator[tuple[dict[str, Any], str]]:
    """``(description, weights file)`` of a model folder or zip, valid inside the ``with`` block."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError(f"model {path!r} does not exist; train one with `ednn train CONFIG` first")
    tmp = None
    try:
        if zipfile.is_zipfile(path):
            tmp = tempfile.mkdtemp(prefix=".ednn-load-")
            with zipfile.ZipFile(path) as z:
                z.extractall(tmp)
            folder = tmp
        else:
            folder = path
        cfg_path, w_path = os.path.join(folder, CONFIG), os.path.join(folder, WEIGHTS)
        for p in (cfg_path, w_path):
            if not os.path.exists(p):
                raise ModelError(f"model {path!r} lacks {os.path.basename(p)}; it is not an ednn model folder")
        try:
            with open(cfg_path) as fh:
                cfg = json.load(fh)
        except json.JSONDecodeError as e:
            raise ModelError(f"{cfg_path} is not valid JSON ({e}); the model folder is corrupt") from e
        if cfg.get("format") not in READABLE:
            raise ModelError(f"{cfg_path} has format {cfg.get('format')!r}; this ednn reads {list(READABLE)}")
        yield _upgrade(cfg), w_path
    finally:
        if tmp:
            shutil.rmtree(tmp)
