"""Training configuration: one schema for every section, validated, defaults filled in.

Sections (every key optional)::

    out: runs/model          # run folder: checkpoint, logs, split.json, model/
    seed: 0
    data:   {train, val, val_fraction, test_fraction, split_seed, max_structures, targets}
    grid:   {species, spacing, sigma, cutoff, mode, dim, focus, context, min_vacuum, heights}
    model:  {head, layers, filters, kernel, activation, readout, residual, vacuum_zero,
             input_scale, metric_channels, pair_features, energy, fields}
    train:  {epochs, batch_size, optimizer, learning_rate, ..., force_weight, field_weight}

:data:`DEFAULTS` holds every key's default (the grid's come from
:data:`ednn.image.grid.GRID_DEFAULTS`, shared with :class:`~ednn.image.grid.GridSpec`).
Unknown keys, wrong types and out-of-range numbers raise
:class:`ednn.errors.ConfigError` naming the key, what is allowed and the value
given. :func:`load_config` reads a JSON/YAML file (YAML numbers such as ``3e-3``
are numbers) or takes a dict and returns the complete, normalized configuration.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from typing import Any

from .errors import ConfigError
from .image.grid import GRID_DEFAULTS
from .properties import ENERGY, get_property

__all__ = ["DEFAULTS", "SCHEMA", "DEFAULT_MODEL", "HEADS", "ACTIVATIONS", "load_config", "normalize_config",
           "normalize_model_config", "dump_config", "config_diff", "receptive_radius", "resolve_representation",
           "REPRESENTATIONS", "IMAGE_ONLY"]

_NUM = (int, float)
_OPT_STR = (str, type(None))
_OPT_INT = (int, type(None))
_OPT_NUM = (int, float, type(None))

HEADS = ("density", "dense")
REPRESENTATIONS = ("atoms", "image")
#: keys that only the voxel-image CNN uses: giving any of them makes model.representation "auto" the image
IMAGE_ONLY = {
    "model": ("head", "layers", "filters", "kernel", "activation", "readout", "residual", "vacuum_zero",
              "input_scale", "metric_channels", "pair_features", "upsample", "field_scale", "shift_average",
              "cell_average", "symmetrize_fields"),
    "grid": ("spacing", "sigma", "cutoff", "mode", "focus", "context", "min_vacuum", "heights"),
    "train": ("epochs", "batch_size", "optimizer", "learning_rate", "weight_decay", "schedule", "min_lr_fraction",
              "decay_rate", "warmup_epochs", "plateau_patience", "plateau_factor", "patience", "restore_best",
              "clip_norm", "loss", "huber_delta", "force_weight", "field_weight", "field_integral_weight",
              "field_moment_weight", "field_band_weight", "field_density_weight", "field_relative_floor",
              "lr_scaling", "max_time_s", "bucket", "augment"),
}
ACTIVATIONS = ("swish", "silu", "tanh", "softplus", "gelu", "elu", "relu", "shifted_softplus")

# A range is (low, high, low_inclusive, high_inclusive); None for an open side. Numbers only.
_Range = tuple[float | None, float | None, bool, bool] | None
_POS = (0.0, None, False, False)  # > 0
_NONNEG = (0.0, None, True, False)  # >= 0
_ONE_UP = (1, None, True, False)  # >= 1
_FRAC = (0.0, 1.0, True, False)  # [0, 1)
_UNIT = (0.0, 1.0, True, True)  # [0, 1]
_OPEN_UNIT = (0.0, 1.0, False, False)  # (0, 1)

#: key -> (default, allowed types, allowed values or None, numeric range or None), per section
SCHEMA: dict[str, dict[str, tuple[Any, tuple[type, ...], tuple | None, _Range]]] = {
    "data": {
        "train": (None, (str, list, type(None)), None, None),  # a dataset path, or a list of them (concatenated)
        "val": (None, (str, list, type(None)), None, None),
        "val_fraction": (0.1, _NUM, None, _FRAC),
        # the test split (data.split_indices): held out of training and validation; the README's test set
        "test_fraction": (0.1, _NUM, None, _FRAC),
        "split_seed": (0, (int,), None, _NONNEG),
        "max_structures": (None, _OPT_INT, None, _ONE_UP),
        # labels to train on: "energy" and/or per-voxel targets (datasets' targets/<name>)
        "targets": (["energy"], (list,), None, None),
    },
    "grid": {
        "species": (None, (list, type(None)), None, None),  # None: the elements found in the training data
        "spacing": (GRID_DEFAULTS["spacing"], _NUM, None, _POS),
        "sigma": (GRID_DEFAULTS["sigma"], _NUM, None, _POS),
        "cutoff": (GRID_DEFAULTS["cutoff"], _NUM, None, _POS),
        "mode": (GRID_DEFAULTS["mode"], (str,), ("species", "z"), None),
        "dim": (GRID_DEFAULTS["dim"], (int,), (2, 3), None),
        "focus": (GRID_DEFAULTS["focus"], (int,), None, _ONE_UP),
        "context": (None, _OPT_INT, None, _ONE_UP),  # None: the network's receptive radius
        "min_vacuum": (GRID_DEFAULTS["min_vacuum"], _NUM, None, _NONNEG),
        # height-moment channels (see GridSpec); None: 1 for 2D grids (sheets move out of plane), 0 for 3D
        "heights": (None, _OPT_INT, (None, 0, 1, 2, 3, 4), None),
    },
    "model": {
        # "atoms": atom-centred density projections + linear readout (ednn.predict.atomic), exactly invariant;
        # "image": the voxel-image CNN (the only one for per-voxel targets); "auto": see resolve_representation
        "representation": ("auto", (str,), ("auto",) + REPRESENTATIONS, None),
        "head": ("density", (str,), HEADS, None),
        "layers": (5, (int,), None, _ONE_UP),  # conv layers (receptive radius 5 px = 3.1 A at the default grid)
        "filters": (32, (int, list), None, None),  # int or one int per conv layer
        "kernel": (3, (int,), None, _ONE_UP),  # odd
        "activation": ("swish", (str,), ACTIVATIONS, None),
        "readout": ([32], (list,), None, None),  # 1x1 conv (density head) or dense (dense head) hidden widths
        "residual": (True, (bool,), None, None),  # residual connections between equal-width conv layers
        "vacuum_zero": (True, (bool,), None, None),  # subtract the output on an empty tile: vacuum gives zero
        "input_scale": (3.0, _NUM, None, _POS),  # inputs (about 1 at an atom centre) times this
        "metric_channels": (False, (bool, type(None)), None, None),  # pixel-metric input channels; None: auto
        "pair_features": (False, (bool,), None, None),  # products x_i * x_j of input channels as inputs
        "energy": (True, (bool,), None, None),  # the extensive energy output (channel 0)
        "fields": ({}, (dict,), None, None),  # per-voxel outputs: name -> channels (set from data.targets)
        "upsample": (1, (int,), None, _ONE_UP),  # fields on a grid this many times finer than the image, per axis
        # label scale of per-voxel fields: "channel" the RMS of each channel, "field" one RMS over all channels
        # (an LDOS: channels near the band bottom are ~0, and per-channel scaling would magnify their noise)
        "field_scale": ("channel", (str,), ("channel", "field"), None),
        # energies (and forces, stress) averaged over shift_average^d uniform sub-pixel translations of all
        # atoms: translation invariance to any tolerance at shift_average^d times the cost (1: off)
        "shift_average": (1, (int,), None, _ONE_UP),
        # 2D grids: energies averaged over every reduced basis of the cell's lattice (ednn.image.describe.
        # reduced_bases): exactly invariant to the choice of basis; train with train.augment: reduced
        "cell_average": (False, (bool,), None, None),
        # per-voxel fields averaged over the rotations and mirrors that map the cell's grid onto itself
        # (ednn.image.symmetry; 48 for a cube): exactly equivariant under them, at that many times the cost
        "symmetrize_fields": (False, (bool,), None, None),
    },
    # the atom-centred model (model.representation "atoms"; ednn.nn.atomic), fitted in closed form
    "atoms": {
        "cutoff": (4.0, _NUM, None, _POS),  # A: neighbours seen by each atom
        "n_radial": (8, (int,), None, _ONE_UP),  # radial functions per neighbour species
        "l_max": (6, (int,), None, _NONNEG),  # highest angular order (powers of cos(theta_jik))
        "r_min": (0.8, _NUM, None, _POS),  # A: first radial centre
        "radial_width": (0.8, _NUM, None, _POS),  # A: width of the radial Gaussians (experiments/atomic_basis.py)
        # weight of a force row (eV/A) against a per-atom energy row (eV/atom); 0: energies only
        "force_weight": (0.0, _NUM, None, _NONNEG),
        "force_rows": (4, (int,), None, _ONE_UP),  # random force projections per structure when force_weight > 0
        # one readout for every centre species (S times fewer weights; the per-element constants stay per species):
        # better on validation, held-out and size transfer in experiments/atomic_basis.py
        "shared_weights": (True, (bool,), None, None),
        # fit on a bootstrap resample (drawn with the run's seed) of the training split: the members of
        # `ednn train --ensemble K` (which sets it) then differ, and their spread is the uncertainty
        "bootstrap": (False, (bool,), None, None),
        # A: `ednn train --ensemble K` spreads the members' cutoffs evenly over [cutoff, cutoff + spread], so that
        # they also differ in how far they see: members that see further disagree on structures with neighbours
        # the training data never had there (a second layer 3.1-3.9 A away is flagged at >= 785x the held-out
        # median std, against 1.6x for bootstrap alone: experiments/uncertainty.py); 0: bootstrap only
        "ensemble_cutoff_spread": (1.0, _NUM, None, _NONNEG),
    },
    "train": {
        "epochs": (60, (int,), None, _ONE_UP),
        "batch_size": (8, (int,), None, _ONE_UP),
        "optimizer": ("adam", (str,), ("adam", "adamw", "sgd"), None),
        "learning_rate": (3e-3, _NUM, None, _POS),
        "weight_decay": (0.0, _NUM, None, _NONNEG),
        "schedule": ("cosine", (str,), ("constant", "cosine", "exponential", "plateau"), None),
        "min_lr_fraction": (0.02, _NUM, None, _UNIT),
        "decay_rate": (0.95, _NUM, None, (0.0, 1.0, False, True)),
        "warmup_epochs": (0, (int,), None, _NONNEG),
        "plateau_patience": (5, (int,), None, _ONE_UP),
        "plateau_factor": (0.5, _NUM, None, _OPEN_UNIT),
        "patience": (0, (int,), None, _NONNEG),  # early stopping; 0: never
        "restore_best": (True, (bool,), None, None),
        "clip_norm": (None, _OPT_NUM, None, _POS),
        "loss": ("mse", (str,), ("mse", "mae", "huber"), None),
        "huber_delta": (0.5, _NUM, None, _POS),
        # weight of the force term (mean squared force error / mean squared reference force); 0: energies only
        "force_weight": (0.0, _NUM, None, _NONNEG),
        # weight of each per-voxel field term (mean squared error in units of the field's scale)
        "field_weight": (1.0, _NUM, None, _NONNEG),
        # weight of the squared error of each field's cell mean accumulated over its channels (network units,
        # divided by the channels): for an LDOS the number of states below each energy per volume, which sets
        # the Fermi level. The per-voxel MSE barely sees a uniform 1 % bias, which moves an Al Fermi level by
        # ~100 meV and its band energy by ~150 meV/atom
        "field_integral_weight": (0.0, _NUM, None, _NONNEG),
        # LDOS only, at the labels' electronic temperature and the median training Fermi level mu: weight of
        # the squared errors of each structure's mean density and mean band energy relative to mu
        # (int (E - mu) f LDOS dE), both over the training data's mean electron density (the band energy
        # per electron, in eV). These are the two numbers the band energy at a conserved electron count
        # hangs on (to first order), so they are weighted directly instead of through every energy's
        # cumulative DOS
        "field_moment_weight": (0.0, _NUM, None, _NONNEG),
        # LDOS only: the band-energy half of field_moment_weight on its own; None: field_moment_weight. The
        # band moment of an error is ~4x its electron moment (eV per electron), so one weight for both makes
        # the band term dominate as it grows (1000 for both stalled training: experiments/README.md)
        "field_band_weight": (None, _OPT_NUM, None, _NONNEG),
        # LDOS only: weight of the mean squared density error of each voxel over the mean electron density
        "field_density_weight": (0.0, _NUM, None, _NONNEG),
        # per-voxel field term as a relative error: each voxel's error over max(|label|, floor), both in network
        # units (the label over the field's scale, its training RMS), instead of the plain squared error, which
        # barely sees the voxels a density MAPE counts most (a sheet's tails at 1-10 % of its maximum). The
        # floor keeps the vacuum's near-zero labels from dominating. None: the plain squared error
        "field_relative_floor": (None, _OPT_NUM, None, _POS),
        "lr_scaling": ("none", (str,), ("none", "linear", "sqrt"), None),
        "backend": ("auto", (str,), ("auto", "serial", "horovod"), None),
        "progress": (True, (bool,), None, None),
        "max_time_s": (None, _OPT_NUM, None, _POS),
        "threads": (None, _OPT_INT, None, _ONE_UP),
        "bucket": (8, (int,), None, _ONE_UP),
        # every epoch, each training structure in a random equivalent description (ednn.image.describe):
        # "translate" a random origin, "cell" also a random basis of its lattice; "symmetry" a random rotation
        # or mirror that maps the cell's grid onto itself (ednn.image.symmetry; per-voxel labels and forces
        # mapped with it, so it serves field models too); "none" the data as given
        "augment": ("none", (str,), ("none", "translate", "cell", "reduced", "symmetry"), None),
        "deterministic": (True, (bool,), None, None),
    },
}
TOP: dict[str, tuple[Any, tuple[type, ...], tuple | None, _Range]] = {
    "out": ("runs/model", (str,), None, None),
    "seed": (0, (int,), None, _NONNEG),
}
SECTIONS = tuple(SCHEMA)

DEFAULTS: dict[str, Any] = {k: v[0] for k, v in TOP.items()}
DEFAULTS.update({s: {k: copy.deepcopy(v[0]) for k, v in keys.items()} for s, keys in SCHEMA.items()})
#: Default architecture (chosen by measurement, see README "Training").
DEFAULT_MODEL: dict[str, Any] = DEFAULTS["model"]


def _range_text(r: _Range) -> str:
    lo, hi, li, hi_inc = r
    parts = []
    if lo is not None:
        parts.append(f"{'>=' if li else '>'} {lo:g}")
    if hi is not None:
        parts.append(f"{'<=' if hi_inc else '<'} {hi:g}")
    return " and ".join(parts)


def _check(where: str, value: Any, types: tuple[type, ...], allowed: tuple | None, rng: _Range = None) -> Any:
    ok = not (isinstance(value, bool) and bool not in types) and isinstance(value, types)
    if not ok:
        names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise ConfigError(f"{where} must be {names}, got {type(value).__name__} {value!r}")
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{where} must be one of {list(allowed)}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        if rng is not None:
            lo, hi, li, hi_inc = rng
            bad = (lo is not None and (value < lo or (value == lo and not li))) or (
                hi is not None and (value > hi or (value == hi and not hi_inc)))
            if bad:
                raise ConfigError(f"{where} must be {_range_text(rng)}, got {value!r}")
        if float in types and isinstance(value, int):
            value = float(value)
    return value


def _section(sec: str, given: Any) -> dict[str, Any]:
    keys = SCHEMA[sec]
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise ConfigError(f"config section {sec!r} must be a mapping, got {type(given).__name__}")
    bad = sorted(set(given) - set(keys))
    if bad:
        raise ConfigError(f"unknown key(s) {[f'{sec}.{b}' for b in bad]}; valid keys in {sec!r} are {sorted(keys)}")
    out = {}
    for k, (default, types, allowed, rng) in keys.items():
        out[k] = _check(f"{sec}.{k}", given[k], types, allowed, rng) if k in given else copy.deepcopy(default)
    return out


def normalize_model_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Validate the ``model`` section (an architecture dict) and fill in defaults.

    Raises
    ------
    ConfigError
        Naming the offending key and the valid options.
    """
    out = _section("model", copy.deepcopy(cfg) if cfg else {})
    if out["kernel"] % 2 == 0:
        raise ConfigError(f"model.kernel must be a positive odd integer, got {out['kernel']}")
    f = out["filters"]
    if isinstance(f, list):
        if len(f) != out["layers"] or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in f):
            raise ConfigError(
                f"model.filters as a list needs one positive int per conv layer ({out['layers']}), got {f}"
            )
    elif f < 1:
        raise ConfigError(f"model.filters must be positive, got {f}")
    if not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in out["readout"]):
        raise ConfigError(f"model.readout must be a list of positive ints, got {out['readout']}")
    fields = {}
    for name, ch in out["fields"].items():
        prop = get_property(name)  # ConfigError-like PropertyError for unknown names
        if prop.kind != "voxel":
            raise ConfigError(f"model.fields.{name}: {name!r} is a per-{prop.kind} property, not a per-voxel field")
        if isinstance(ch, bool) or not isinstance(ch, int) or ch < 1:
            raise ConfigError(f"model.fields.{name} must be a positive number of channels, got {ch!r}")
        fields[str(name)] = int(ch)
    out["fields"] = fields
    if not out["energy"] and not fields:
        raise ConfigError("model has no outputs: set model.energy: true or name per-voxel fields in model.fields")
    if fields and out["head"] == "dense":
        raise ConfigError("per-voxel fields need the density head (model.head: density); the dense head gives "
                          "one number per tile")
    return out


def receptive_radius(model_config: dict[str, Any]) -> int:
    """Receptive radius in pixels of the conv trunk (``layers * (kernel // 2)``)."""
    cfg = normalize_model_config(model_config)
    return int(cfg["layers"] * (cfg["kernel"] // 2))


def normalize_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """Validate a configuration dict and fill in defaults (returns a new dict)."""
    cfg = copy.deepcopy(cfg) if cfg is not None else {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"a configuration must be a mapping of sections, got {type(cfg).__name__}")
    valid_top = sorted(list(TOP) + list(SECTIONS))
    unknown = sorted(set(cfg) - set(valid_top))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; valid top-level keys are {valid_top}")
    out: dict[str, Any] = {}
    for k, (default, types, allowed, rng) in TOP.items():
        out[k] = _check(k, cfg[k], types, allowed, rng) if k in cfg else default
    for sec in SECTIONS:
        if sec == "model":
            given = cfg.get("model") or {}
            if not isinstance(given, dict):
                raise ConfigError(f"config section 'model' must be a mapping, got {type(given).__name__}")
            out["model"] = normalize_model_config(given)
        else:
            out[sec] = _section(sec, cfg.get(sec))
    t, d, g = out["train"], out["data"], out["grid"]
    if d["val_fraction"] + d["test_fraction"] >= 1:
        raise ConfigError(f"data.val_fraction + data.test_fraction = {d['val_fraction'] + d['test_fraction']:g} "
                          "leaves no training data; make the sum < 1")
    for key in ("train", "val"):
        v = d[key]
        if isinstance(v, list):
            if not v or not all(isinstance(x, str) and x for x in v):
                raise ConfigError(f"data.{key} must be a dataset path or a non-empty list of paths, got {v!r}")
            d[key] = v[0] if len(v) == 1 else list(v)
    targets = d["targets"]
    if not targets or not all(isinstance(x, str) for x in targets) or len(set(targets)) != len(targets):
        raise ConfigError(f"data.targets must be a non-empty list of distinct names, e.g. ['energy'], got {targets}")
    for name in targets:
        prop = get_property(name)
        if name != ENERGY.key and prop.kind != "voxel":
            raise ConfigError(f"data.targets: {name!r} is a per-{prop.kind} property; train on 'energy' "
                              "(forces through train.force_weight) and per-voxel targets")
    out["model"]["energy"] = ENERGY.key in targets  # the energy output exists when the energy is a target
    out["model"]["representation"] = resolve_representation(cfg, out["model"]["representation"], targets)
    if out["model"]["upsample"] > 1 and targets == [ENERGY.key]:
        raise ConfigError(f"model.upsample = {out['model']['upsample']} refines per-voxel fields, but data.targets "
                          "names none; leave it at 1 or add a per-voxel target (e.g. ldos) to data.targets")
    if g["species"] is not None and not g["species"]:
        raise ConfigError("grid.species is empty; list the elements, e.g. ['B', 'C', 'N'], or leave it out")
    if t["force_weight"] > 0 and out["model"]["head"] == "dense":
        raise ConfigError("train.force_weight > 0 needs the density head (model.head: density); the dense head "
                          "has a fixed tile layout per cell")
    if t["force_weight"] > 0 and ENERGY.key not in targets:
        raise ConfigError("train.force_weight > 0 needs 'energy' in data.targets (forces are -dE/dpositions)")
    return out


def resolve_representation(given: dict[str, Any], representation: str, targets: list[str]) -> str:
    """``model.representation`` of a config as given (before defaults): "auto" becomes "atoms" for energy
    targets unless the config sets a key only the image CNN uses (:data:`IMAGE_ONLY`), "image" otherwise;
    ConfigError for "atoms" with per-voxel targets or image-only keys."""
    def set_keys(sec: str, keys, differ: bool) -> list[str]:  # keys given (differ: and not at their default)
        sub = given.get(sec) or {}
        return [f"{sec}.{k}" for k in keys if k in sub and not (differ and sub[k] == SCHEMA[sec][k][0])]

    voxel = [t for t in targets if t != ENERGY.key]
    if representation == "auto":
        image_keys = [k for sec, keys in IMAGE_ONLY.items() for k in set_keys(sec, keys, False)]
        return "image" if voxel or image_keys else "atoms"
    # an explicit choice (also a normalized config, which lists every key): only values off their defaults clash
    image_keys = [k for sec, keys in IMAGE_ONLY.items() for k in set_keys(sec, keys, True)]
    if representation == "atoms":
        if voxel:
            raise ConfigError(f"model.representation 'atoms' predicts energies only; the per-voxel target(s) {voxel} "
                              "need model.representation 'image'")
        if image_keys:
            raise ConfigError(f"model.representation 'atoms' does not use {image_keys} (voxel-image settings); "
                              "remove them, or set model.representation 'image'")
    elif set_keys("atoms", SCHEMA["atoms"], True):
        raise ConfigError(f"{set_keys('atoms', SCHEMA['atoms'], True)} set the atom-centred model, but "
                          "model.representation is 'image'; remove it or set model.representation 'atoms'")
    return representation


class _Loader:
    """A YAML SafeLoader that reads ``3e-3`` as a number (YAML 1.1 asks for ``3.0e-3``)."""

    _cls = None

    @classmethod
    def get(cls):
        if cls._cls is None:
            import yaml

            class Loader(yaml.SafeLoader):
                pass

            Loader.add_implicit_resolver(
                "tag:yaml.org,2002:float",
                re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
                list("-+0123456789."),
            )
            cls._cls = Loader
        return cls._cls


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw mapping in a JSON/YAML config file (not yet validated)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConfigError(f"config file {path!r} does not exist")
    with open(path) as fh:
        text = fh.read()
    try:
        if path.endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.load(text, Loader=_Loader.get())  # noqa: S506 (a SafeLoader subclass)
    except Exception as e:  # noqa: BLE001 (json and yaml raise several types)
        raise ConfigError(f"cannot parse config file {path!r}: {e}") from e
    return {} if data is None else data


def load_config(source: str | os.PathLike | dict[str, Any] | None,
                overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Read a JSON/YAML config file (or take a dict), apply ``overrides`` and normalize.

    Parameters
    ----------
    source : path or dict or None
    overrides : dict, optional
        ``{"train": {"epochs": 3}, "out": "runs/x"}``: applied to the raw
        configuration before validation, so they are checked like file values.

    Raises
    ------
    ConfigError
        Missing/unreadable file, a parse error, unknown keys, wrong types, out-of-range values.
    """
    if source is None or isinstance(source, dict):
        raw = copy.deepcopy(source) if source else {}
    else:
        raw = read_config_file(source)
    if not isinstance(raw, dict):
        raise ConfigError(f"a configuration must be a mapping of sections, got {type(raw).__name__}")
    for k, v in (overrides or {}).items():
        if isinstance(v, dict):
            sec = raw.get(k)
            sec = raw[k] = {} if sec is None else sec  # "train:" with nothing under it is an empty section
            if not isinstance(sec, dict):
                raise ConfigError(f"config section {k!r} must be a mapping, got {type(sec).__name__}")
            sec.update(v)
        else:
            raw[k] = v
    return normalize_config(raw)


def config_diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two (normalized) configurations."""
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        key = f"{prefix}{k}"
        if isinstance(va, dict) and isinstance(vb, dict) and k != "fields":
            out += config_diff(va, vb, key + ".")
        elif va != vb:
            out.append(key)
    return out


def dump_config(cfg: dict[str, Any], path: str) -> None:
    """Write a configuration as JSON (atomically)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(cfg, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
