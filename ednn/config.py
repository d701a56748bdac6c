"""Training configuration: one JSON/YAML file, validated, defaults filled in.

Sections (every key optional)::

    out: runs/model          # run folder: checkpoint, logs, model/
    seed: 0
    data:   {train, val, val_fraction, test_fraction, max_structures}
    grid:   {species, spacing, sigma, cutoff, mode, dim, focus, context, min_vacuum, heights}
    model:  {head, layers, filters, kernel, activation, readout, residual}
    train:  {epochs, batch_size, optimizer, learning_rate, ...}

Unknown keys and wrong types raise :class:`ednn.errors.ConfigError` naming the
key and the valid options. :func:`load_config` reads a file or takes a dict
and returns the complete, normalized configuration.
"""

from __future__ import annotations

import copy
import json
import math
import os
from typing import Any

from .errors import ConfigError
from .predict.model import normalize_model_config

__all__ = ["DEFAULTS", "load_config", "normalize_config", "dump_config"]

_NUM = (int, float)
_OPT_STR = (str, type(None))
_OPT_INT = (int, type(None))
_OPT_NUM = (int, float, type(None))

#: (default, allowed types, allowed values or None) per key
SCHEMA: dict[str, dict[str, tuple[Any, tuple[type, ...], tuple | None]]] = {
    "data": {
        "train": (None, _OPT_STR, None),
        "val": (None, _OPT_STR, None),
        "val_fraction": (0.1, _NUM, None),
        "test_fraction": (0.0, _NUM, None),
        "split_seed": (0, (int,), None),
        "max_structures": (None, _OPT_INT, None),
    },
    "grid": {
        "species": (None, (list, type(None)), None),
        "spacing": (0.62375, _NUM, None),  # A_BNC / 4 (structures.A_BNC = 2.495 A): commensurate cells
        "sigma": (0.5, _NUM, None),
        "cutoff": (4.0, _NUM, None),
        "mode": ("species", (str,), ("species", "z")),
        "dim": (2, (int,), (2, 3)),
        "focus": (16, (int,), None),
        "context": (None, _OPT_INT, None),
        "min_vacuum": (5.0, _NUM, None),
        # height-moment channels (see GridSpec); None: 1 for 2D grids (sheets move out of plane), 0 for 3D
        "heights": (None, _OPT_INT, (None, 0, 1, 2, 3, 4)),
    },
    "train": {
        "epochs": (60, (int,), None),
        "batch_size": (8, (int,), None),
        "optimizer": ("adam", (str,), ("adam", "adamw", "sgd")),
        "learning_rate": (3e-3, _NUM, None),
        "weight_decay": (0.0, _NUM, None),
        "schedule": ("cosine", (str,), ("constant", "cosine", "exponential", "plateau")),
        "min_lr_fraction": (0.02, _NUM, None),
        "decay_rate": (0.95, _NUM, None),
        "warmup_epochs": (0, (int,), None),
        "plateau_patience": (5, (int,), None),
        "plateau_factor": (0.5, _NUM, None),
        "patience": (0, (int,), None),
        "restore_best": (True, (bool,), None),
        "clip_norm": (None, _OPT_NUM, None),
        "loss": ("mse", (str,), ("mse", "mae", "huber")),
        "huber_delta": (0.5, _NUM, None),
        # weight of the force term (mean squared force error / mean squared reference force) in the loss;
        # 0: energies only. > 0 needs forces in the data and the density head
        "force_weight": (0.0, _NUM, None),
        "lr_scaling": ("none", (str,), ("none", "linear", "sqrt")),
        "backend": ("auto", (str,), ("auto", "serial", "horovod")),
        "progress": (True, (bool,), None),
        "max_time_s": (None, _OPT_NUM, None),
        "threads": (None, _OPT_INT, None),
        "bucket": (8, (int,), None),
        "deterministic": (True, (bool,), None),
    },
}
TOP: dict[str, tuple[Any, tuple[type, ...], tuple | None]] = {
    "out": ("runs/model", (str,), None),
    "seed": (0, (int,), None),
}
SECTIONS = ("data", "grid", "model", "train")

DEFAULTS: dict[str, Any] = {k: v[0] for k, v in TOP.items()}
DEFAULTS.update({s: {k: v[0] for k, v in keys.items()} for s, keys in SCHEMA.items()})


def _check(where: str, value: Any, types: tuple[type, ...], allowed: tuple | None) -> Any:
    if isinstance(value, bool) and bool not in types:
        ok = False
    else:
        ok = isinstance(value, types)
    if not ok:
        names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise ConfigError(f"{where} must be {names}, got {type(value).__name__} {value!r}")
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{where} must be one of {list(allowed)}, got {value!r}")
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    return value


def normalize_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Validate a configuration dict and fill in defaults (returns a new dict)."""
    cfg = copy.deepcopy(cfg or {})
    if not isinstance(cfg, dict):
        raise ConfigError(f"a configuration must be a mapping of sections, got {type(cfg).__name__}")
    valid_top = sorted(list(TOP) + list(SECTIONS))
    unknown = sorted(set(cfg) - set(valid_top))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; valid top-level keys are {valid_top}")
    out: dict[str, Any] = {}
    for k, (default, types, allowed) in TOP.items():
        out[k] = _check(k, cfg[k], types, allowed) if k in cfg else default
    for sec, keys in SCHEMA.items():
        given = cfg.get(sec) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"config section {sec!r} must be a mapping, got {type(given).__name__}")
        bad = sorted(set(given) - set(keys))
        if bad:
            raise ConfigError(f"unknown key(s) {[f'{sec}.{b}' for b in bad]}; valid keys in {sec!r} are {sorted(keys)}")
        out[sec] = {}
        for k, (default, types, allowed) in keys.items():
            out[sec][k] = _check(f"{sec}.{k}", given[k], types, allowed) if k in given else copy.deepcopy(default)
    model = cfg.get("model") or {}
    if not isinstance(model, dict):
        raise ConfigError(f"config section 'model' must be a mapping, got {type(model).__name__}")
    out["model"] = normalize_model_config(model)
    t, d, g = out["train"], out["data"], out["grid"]
    for k in ("epochs", "batch_size", "bucket"):
        if t[k] < 1:
            raise ConfigError(f"train.{k} must be >= 1, got {t[k]}")
    if t["learning_rate"] <= 0:
        raise ConfigError(f"train.learning_rate must be > 0, got {t['learning_rate']}")
    if not 0 <= t["force_weight"] < math.inf:
        raise ConfigError(f"train.force_weight must be >= 0 (0: energies only), got {t['force_weight']}")
    if t["force_weight"] > 0 and out["model"]["head"] == "dense":
        raise ConfigError("train.force_weight > 0 needs the density head (model.head: density); the dense head "
                          "has a fixed tile layout per cell")
    for k in ("val_fraction", "test_fraction"):
        if not 0 <= d[k] < 1:
            raise ConfigError(f"data.{k} must be in [0, 1), got {d[k]}")
    for k in ("spacing", "sigma", "cutoff"):
        if g[k] <= 0:
            raise ConfigError(f"grid.{k} must be > 0, got {g[k]}")
    return out


def load_config(source: str | os.PathLike | dict[str, Any] | None) -> dict[str, Any]:
    """Read a JSON/YAML config file (or take a dict) and normalize it.

    Raises
    ------
    ConfigError
        Missing/unreadable file, a parse error, unknown keys, wrong types.
    """
    if source is None or isinstance(source, dict):
        return normalize_config(source)
    path = os.fspath(source)
    if not os.path.exists(path):
        raise ConfigError(f"config file {path!r} does not exist")
    with open(path) as fh:
        text = fh.read()
    try:
        if path.endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"cannot parse config file {path!r}: {e}") from None
    return normalize_config(data)


def dump_config(cfg: dict[str, Any], path: str) -> None:
    """Write a configuration as JSON (atomically)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(cfg, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)
