"""Model folders: what a trained model is on disk.

A model is one folder::

    model/
      config.json          # format, ednn version, units, grid contract, architecture,
                           # reference energies (eV per species), scale (eV), metadata
      model.weights.h5     # Keras weights of the network

(or the same two files in a ``.zip``). The folder is written to a temporary
sibling and renamed into place, so a killed save never leaves a half model.
:func:`load` (exported as ``ednn.load``) returns an
:class:`~ednn.predict.model.EnergyModel`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from typing import Any

import numpy as np

from ..errors import ModelError
from ..image.grid import GridSpec

__all__ = ["save_model", "load", "FORMAT"]

FORMAT = "ednn-model-1"
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
    from .. import __version__

    species = list(model.grid.symbols) if model.grid is not None else ["pixel"]
    return {
        "format": FORMAT,
        "ednn_version": __version__,
        "units": {"energy": "eV", "length": "Angstrom"},
        "grid": model.grid.to_dict() if model.grid is not None else None,
        "image_mode": model.grid is None,
        "in_channels": model.in_channels,
        "dim": model.dim,
        "model": model.model_config,
        "receptive_radius": model.radius,
        "reference_energies": {s: float(e) for s, e in zip(species, model.refs)},
        "scale": model.scale,
        "meta": _jsonable(model.meta),
    }


def save_model(model, path: str) -> str:
    """Save ``model`` to the folder ``path`` (or a zip if ``path`` ends with ``.zip``); returns the path."""
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(parent, exist_ok=True)
    tmpdir = tempfile.mkdtemp(prefix=".ednn-save-", dir=parent)
    try:
        model.network.save_weights(os.path.join(tmpdir, WEIGHTS))
        with open(os.path.join(tmpdir, CONFIG), "w") as fh:
            json.dump(model_config_dict(model), fh, indent=2)
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
                shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmpdir and os.path.exists(tmpdir):
            shutil.rmtree(tmpdir, ignore_errors=True)
    return path


def load(path: str):
    """Load a model folder (or zip) written by :func:`save_model`.

    Returns
    -------
    EnergyModel
        With ``predict_energy(atoms)``, ``predict_energies``, ``energy_map``
        and ``calculator()``.
    """
    from .model import EnergyModel, build_network

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
            raise ModelError(f"{cfg_path} is not valid JSON ({e}); the model folder is corrupt") from None
        if cfg.get("format") != FORMAT:
            raise ModelError(f"{cfg_path} has format {cfg.get('format')!r}; this ednn reads {FORMAT!r}")
        grid = GridSpec.from_dict(cfg["grid"]) if cfg["grid"] is not None else None
        tile_size = grid.tile_size if grid is not None else None
        net = build_network(cfg["model"], cfg["in_channels"], cfg["dim"], tile_size=tile_size)
        try:
            net.save_weights  # noqa: B018
            net.load_weights(w_path)
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"cannot load weights {w_path}: {e}") from None
        refs = list(cfg["reference_energies"].values())
        return EnergyModel(net, cfg["model"], grid, refs, cfg["scale"], cfg["in_channels"], cfg["dim"],
                           meta=cfg.get("meta", {}))
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
