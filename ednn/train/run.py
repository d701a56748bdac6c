"""``train(config)``: a whole training run from a configuration to a saved model folder.

The run folder (``out``) holds ``config.json`` (the resolved configuration,
written once when the run starts and never overwritten), ``split.json`` (the
train/validation/test indices of :func:`ednn.data.split_indices`),
``checkpoint.npz``, ``log.csv``, ``log.json`` and ``model/``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import config_diff, dump_config, load_config, receptive_radius
from ..data import split_indices
from ..errors import ConfigError, DatasetError
from ..image.grid import GridSpec, species_from
from ..predict.model import EnergyModel
from ..properties import DENSITY, ENERGY, LDOS
from .callbacks import Callback, _atomic_write_text
from .loop import fit, get_run_backend, seed_everything
from .sets import _numbers_holder, load_forces, load_structures, load_targets, structures_to_set

__all__ = ["train", "make_grid", "RESUMABLE_CHANGES"]

#: config keys that may differ between a run and its resumption (they do not change what is trained)
RESUMABLE_CHANGES = frozenset({"train.progress", "train.threads", "train.backend"})
_DERIVED = frozenset({"model.fields", "model.energy"})  # set by train() from data.targets


def make_grid(cfg: dict[str, Any], structures: Sequence[Any], model_cfg: dict[str, Any]) -> GridSpec:
    """The grid of a run: config values, species from the data if not given, context = receptive radius."""
    g = dict(cfg)
    sp = g.pop("species")
    if sp is None:
        sp = species_from([_numbers_holder(s) for s in structures])
    r = receptive_radius(model_cfg)
    ctx = g.pop("context")
    if ctx is None:
        ctx = max(r, 1)
    if ctx < r:
        raise ConfigError(f"grid.context={ctx} is smaller than the model's receptive radius {r} (layers * (kernel // 2))")
    if g.get("heights") is None:  # one height channel block for sheets; a 3D grid resolves z itself
        g["heights"] = 1 if g.get("dim", 2) == 2 else 0
    return GridSpec(species=tuple(sp), context=ctx, **g)


def _train_atoms(cfg, structures, energies, forces, pick, tr_idx, va_idx, te_idx, n, val_src, backend):
    """The atom-centred model (``model.representation: atoms``): a closed-form fit, saved to ``<out>/model``.

    Deterministic: every rank of a Horovod run fits the same model (about a minute for 2,500 sheets); the chief
    writes the run folder. Forces are fitted when ``atoms.force_weight > 0`` (they must be in the data).
    """
    from ..nn.atomic import AtomicBasis  # noqa: PLC0415
    from ..predict.atomic import fit_atomic  # noqa: PLC0415
    from ..predict.domain import Domain  # noqa: PLC0415

    a, d, out = cfg["atoms"], cfg["data"], cfg["out"]
    sp = cfg["grid"]["species"]
    if sp is None:
        sp = species_from([_numbers_holder(s) for s in structures])
    else:
        from ..image.grid import GridSpec  # noqa: PLC0415 (the grid's species parser: symbols or numbers)

        sp = GridSpec(species=tuple(sp)).species
    basis = AtomicBasis(species=tuple(sp), cutoff=a["cutoff"], n_radial=a["n_radial"], l_max=a["l_max"],
                        r_min=a["r_min"], radial_width=a["radial_width"])
    if val_src:
        v_structs, v_E = load_structures(val_src)
        v_F = load_forces(val_src) if forces is not None else None
    else:
        if not len(va_idx):
            raise ConfigError("the atom-centred fit chooses its ridge strength on a validation split: set "
                              "data.val_fraction > 0 or data.val")
        v_structs, v_E, v_F = pick(structures, va_idx), energies[va_idx], pick(forces, va_idx)
    fit_idx = tr_idx
    if a["bootstrap"]:  # the same number of structures, drawn with replacement
        fit_idx = np.sort(np.random.default_rng(cfg["seed"]).choice(tr_idx, size=len(tr_idx), replace=True))
    model = fit_atomic(pick(structures, fit_idx), energies[fit_idx], v_structs, v_E, basis, forces=pick(forces, fit_idx),
                       val_forces=v_F, force_weight=a["force_weight"], n_force_rows=a["force_rows"],
                       seed=cfg["seed"], progress=cfg["train"]["progress"] and backend.is_chief,
                       shared=a["shared_weights"])
    model.meta.update({"train_config": cfg, "n_train": int(len(tr_idx)), "n_val": len(v_structs),
                       "domain": Domain.from_structures(pick(structures, tr_idx), cfg["grid"]["dim"]).to_dict()})
    if backend.is_chief:
        os.makedirs(out, exist_ok=True)
        dump_config(cfg, os.path.join(out, "config.json"))
        split = {"rule": "ednn.data.split_indices", "n": int(n), "seed": d["split_seed"],
                 "val_fraction": d["val_fraction"], "test_fraction": d["test_fraction"],
                 "val_file": val_src, "train": tr_idx.tolist(), "val": va_idx.tolist(), "test": te_idx.tolist()}
        _atomic_write_text(os.path.join(out, "split.json"), json.dumps(split))
        _atomic_write_text(os.path.join(out, "fit.json"), json.dumps(model.meta["fit"], indent=1))
        model.save(os.path.join(out, "model"))
    backend.barrier()
    return model


def _set_threads(n: int | None) -> None:
    if not n:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError as e:
        warnings.warn(f"train.threads={n} was not applied: TensorFlow had already started in this process ({e}); "
                      "set it in a fresh process (e.g. the CLI) or with TF_NUM_INTRAOP_THREADS", stacklevel=3)


def _check_run_folder(cfg: dict[str, Any], resume: bool, overwrite: bool) -> None:
    """Refuse to resume without a checkpoint or with another config; refuse to overwrite a run by accident."""
    out = cfg["out"]
    ck, saved = os.path.join(out, "checkpoint.npz"), os.path.join(out, "config.json")
    if resume:
        if not os.path.exists(ck):
            raise ConfigError(f"cannot resume: {ck} does not exist (no epoch of this run has finished); "
                              "start the run without --resume")
        if os.path.exists(saved):
            with open(saved) as fh:
                old = json.load(fh)
            diff = [k for k in config_diff(old, cfg) if k not in RESUMABLE_CHANGES | _DERIVED]
            if diff:
                raise ConfigError(f"cannot resume {out}: the config differs from the run's {saved} in {diff}; "
                                  "resume with the run's own config, or start a new run (another out)")
        return
    if not overwrite and (os.path.exists(ck) or os.path.exists(os.path.join(out, "model"))):
        raise ConfigError(f"{out} already holds a run (checkpoint.npz or model/); continue it with resume "
                          "(ednn train --resume), choose another out, or pass overwrite=True (--overwrite)")
    if overwrite:  # start afresh: no file of the earlier run may pass for this one's (e.g. an image run's log)
        for name in _RUN_FILES:
            try:
                os.remove(os.path.join(out, name))
            except FileNotFoundError:
                pass  # absent, or another rank removed it first: either way it is gone


#: files a run writes beside model/ (removed when a run starts over with overwrite)
_RUN_FILES = ("checkpoint.npz", "log.csv", "log.json", "fit.json", "learning_curve.png", "learning_curve.pdf",
              "learning_curve.svg")


def _voxel_channels(target: np.ndarray, dim: int, name: str) -> int:
    a = np.asarray(target)
    if a.ndim == dim:
        return 1
    if a.ndim == dim + 1:
        return int(a.shape[-1])
    raise DatasetError(f"per-voxel target {name!r} has {a.ndim} axes; a {dim}D grid needs ({dim} spatial axes) "
                       "or (spatial axes, channels)")


def train(config: str | dict[str, Any] | None = None, resume: bool = False, structures=None, energies=None,
          callbacks: Sequence[Callback] | None = None, forces=None, fields: dict[str, Sequence[np.ndarray]] | None = None,
          overwrite: bool = False) -> EnergyModel:
    """Train a model from a config (dict or JSON/YAML path) and save it to ``<out>/model``.

    Parameters
    ----------
    config : dict or path
        See :mod:`ednn.config`. ``data.train`` names the dataset unless
        ``structures`` (a list of ase.Atoms with energies) is given;
        ``data.targets`` names the labels to learn (``energy`` and per-voxel
        targets stored as ``targets/<name>``).
    resume : bool
        Continue the run in ``out`` from its last checkpoint (the config must
        be the run's own; there must be a checkpoint).
    forces : sequence of (N, 3) arrays, optional
        With ``structures`` and ``train.force_weight > 0``: reference forces
        (default ``atoms.get_forces()``; from the dataset otherwise).
    fields : dict of str to sequence of arrays, optional
        With ``structures``: per-voxel labels of ``data.targets``, one array per structure.
    overwrite : bool
        Start afresh in an ``out`` that already holds a run.

    Returns
    -------
    EnergyModel
        The trained model (also saved to ``<out>/model``).
    """
    cfg = load_config(config)
    if resume and cfg["model"]["representation"] == "atoms":
        raise ConfigError("the atom-centred model is fitted in one closed-form step with no checkpoints to resume "
                          "from; run it again without --resume (the fit is deterministic)")
    _check_run_folder(cfg, resume, overwrite)
    t, d = cfg["train"], cfg["data"]
    _set_threads(t["threads"])
    backend = get_run_backend(t["backend"])
    seed_everything(cfg["seed"])
    out = cfg["out"]
    use_energy = ENERGY.key in d["targets"]
    voxel = [k for k in d["targets"] if k != ENERGY.key]
    atoms_model = cfg["model"]["representation"] == "atoms"
    use_forces = (cfg["atoms"]["force_weight"] if atoms_model else t["force_weight"]) > 0
    structures_from_files = structures is None
    if structures is None:
        if not d["train"]:
            raise ConfigError("data.train is not set: give the path of a labelled dataset (HDF5 or extxyz)")
        structures, energies = load_structures(d["train"], need_energy=use_energy)
        forces = load_forces(d["train"]) if use_forces else None
        fields = load_targets(d["train"], voxel) if voxel else {}
    else:
        if energies is None and use_energy:
            energies = np.array([a.get_potential_energy() for a in structures])
        if use_forces and forces is None:
            try:
                forces = [a.get_forces() for a in structures]
            except Exception as e:  # noqa: BLE001 (ASE raises several types when there is no calculator)
                raise DatasetError(f"train.force_weight > 0 but the structures carry no forces ({e}); "
                                   "give forces= or set train.force_weight to 0") from e
        fields = dict(fields or {})
        missing = [k for k in voxel if k not in fields]
        if missing:
            raise DatasetError(f"data.targets names the per-voxel target(s) {missing}, but fields= has "
                               f"{sorted(fields)}; give their labels")
        fields = {k: fields[k] for k in voxel}
    energies = np.asarray(energies, dtype=np.float64) if use_energy else None
    forces = forces if use_forces else None
    n = len(structures)
    if d["max_structures"]:
        n = min(n, d["max_structures"])
    cap = np.arange(n)
    if d["val"]:
        tr_idx, va_idx, te_idx = cap, np.zeros(0, int), np.zeros(0, int)
        val_src = d["val"]
    else:
        tr_idx, va_idx, te_idx = split_indices(n, d["val_fraction"], d["test_fraction"], d["split_seed"])
        val_src = None

    def pick(seq, idx):
        return None if seq is None else [seq[i] for i in idx]

    if cfg["model"]["representation"] == "atoms":
        return _train_atoms(cfg, structures, energies, forces, pick, tr_idx, va_idx, te_idx, n, val_src, backend)
    model_cfg = dict(cfg["model"])
    model_cfg["energy"] = use_energy
    derived = {k: _voxel_channels(fields[k][0], cfg["grid"]["dim"], k) for k in voxel}
    if model_cfg["fields"] and model_cfg["fields"] != derived:
        raise ConfigError(f"model.fields {model_cfg['fields']} does not match the data's per-voxel targets "
                          f"{derived}; leave model.fields out (it is set from data.targets)")
    model_cfg["fields"] = derived
    cfg["model"] = model_cfg
    grid = make_grid(cfg["grid"], structures, model_cfg)
    model = EnergyModel.create(model_cfg, grid, seed=cfg["seed"])
    if d["train"] and structures_from_files and voxel:
        from ..data.ldos import electron_counts_known, ldos_metadata  # noqa: PLC0415

        if LDOS.key in voxel:  # the physics that turns the LDOS into energies
            model.meta["electronic"] = ldos_metadata(d["train"])
        elif DENSITY.key in voxel and electron_counts_known(d["train"]):  # valence counts: conserve electrons
            model.meta["electronic"] = ldos_metadata(d["train"], ldos=False)
    prog = t["progress"] and backend.is_chief
    ts = structures_to_set(model, pick(structures, tr_idx), None if energies is None else energies[tr_idx],
                           progress=prog, desc="rasterize train", forces=pick(forces, tr_idx),
                           fields={k: pick(v, tr_idx) for k, v in fields.items()})
    if val_src:
        v_structs, v_E = load_structures(val_src, need_energy=use_energy)
        vs = structures_to_set(model, v_structs, v_E if use_energy else None, progress=prog, desc="rasterize val",
                               forces=load_forces(val_src) if use_forces else None,
                               fields=load_targets(val_src, voxel) if voxel else None)
    elif len(va_idx):
        vs = structures_to_set(model, pick(structures, va_idx), None if energies is None else energies[va_idx],
                               progress=prog, desc="rasterize val", forces=pick(forces, va_idx),
                               fields={k: pick(v, va_idx) for k, v in fields.items()})
    else:
        vs = None
    if backend.is_chief:
        os.makedirs(out, exist_ok=True)
        if not resume:  # the run's original config and split are never overwritten
            dump_config(cfg, os.path.join(out, "config.json"))
            split = {"rule": "ednn.data.split_indices", "n": int(n), "seed": d["split_seed"],
                     "val_fraction": d["val_fraction"], "test_fraction": d["test_fraction"],
                     "val_file": val_src, "train": tr_idx.tolist(), "val": va_idx.tolist(), "test": te_idx.tolist()}
            _atomic_write_text(os.path.join(out, "split.json"), json.dumps(split))
    fit(model, ts, vs, t, seed=cfg["seed"], out=out, resume=resume, callbacks=callbacks, backend=backend)
    model.meta.update({"train_config": cfg, "n_train": len(ts), "n_val": len(vs) if vs else 0})
    if model.grid is not None and backend.is_chief:  # what the model saw: checked when it predicts
        from ..predict.domain import Domain  # noqa: PLC0415

        model.meta["domain"] = Domain.from_structures(pick(structures, tr_idx), model.dim).to_dict()
    if backend.is_chief:
        model.save(os.path.join(out, "model"))
    backend.barrier()
    return model
