"""Training: data -> cached network inputs -> GradientTape loop with callbacks.

The loop is written for data parallelism through :mod:`ednn.parallel` only:

* every rank computes the same per-epoch permutation (from ``(seed, epoch)``),
  groups it into *global* batches (bucketed by image size to limit padding),
  and keeps its strided share of each (``backend.shard``);
* the gradient step is an explicit ``tf.GradientTape`` inside ``tf.function``
  with ``backend.allreduce_gradients``;
* variables are broadcast from the chief after building (and after resuming);
* validation metrics are global sums and counts (``backend.allreduce_sum``);
* only the chief writes checkpoints, logs and the model.

Every output of the model is trained in the same step: the energy (loss on
per-atom errors after the reference/scale transform), per-voxel fields (mean
squared error in units of each field's scale, weighted by
``train.field_weight``), and forces (``train.force_weight``, per-structure
double backpropagation).

Resume: the chief writes ``out/checkpoint.npz`` atomically after every epoch
(weights, optimizer variables, best weights, callback states, history, label
transforms). ``resume=True`` restores it and continues with the next epoch;
since the data order depends only on ``(seed, epoch)`` and training has no
other randomness, the resumed run ends exactly where an uninterrupted one does.
"""

from __future__ import annotations

import io
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import normalize_config
from ..errors import ConfigError, DatasetError
from ..parallel import get_backend
from ..predict.model import EnergyModel
from .callbacks import Callback, EarlyStopping, Logger, LRSchedule, ProgressBar
from .sets import TrainSet, images_to_set
from .trainer import Trainer

__all__ = ["fit", "train_images", "get_run_backend", "seed_everything"]

#: fewer validation records than this: early stopping and best-weight restoring act on noise (a warning)
MIN_VAL_RECORDS = 5


def get_run_backend(name: str):
    """The parallel backend of a run (``auto``: Horovod under a Horovod launcher, else serial), GPU pinned."""
    backend = get_backend(name)
    backend.pin_gpu()  # GPU local_rank on this rank (no-op without GPUs)
    return backend


def fit(model: EnergyModel, train_set: TrainSet, val_set: TrainSet | None = None,
        train_config: dict[str, Any] | None = None, seed: int = 0, out: str | None = None,
        resume: bool = False, callbacks: Sequence[Callback] | None = None, backend=None,
        fit_refs: bool = True) -> list[dict[str, Any]]:
    """Train ``model`` in place on cached sets; returns the history (one dict per epoch).

    Parameters
    ----------
    model : EnergyModel
    train_set, val_set : TrainSet
    train_config : dict
        The ``train`` section of a config (defaults filled in).
    seed : int
        Data order (and, via :func:`train`, weight initialization).
    out : str, optional
        Run folder for ``checkpoint.npz``, ``log.csv``, ``log.json`` (chief only).
    resume : bool
        Continue from ``out/checkpoint.npz`` if it exists.
    """
    import tensorflow as tf

    cfg = normalize_config({"train": dict(train_config or {})})["train"]
    backend = backend or get_run_backend(cfg["backend"])
    backend.local_batch_size(cfg["batch_size"])  # ConfigError unless the global batch splits evenly over ranks
    if len(train_set) == 0:
        raise DatasetError("the training set is empty")
    augment = cfg.get("augment", "none")
    if augment != "none":
        if model.grid is None:
            raise ConfigError(f"train.augment: {augment} needs a grid model (image-mode data has no atoms to "
                              "redescribe)")
        if augment != "symmetry" and model.head != "density":
            raise ConfigError(f"train.augment: {augment} needs the density head (new descriptions change the image "
                              "size, which dense-head tiles cannot follow); augment: symmetry keeps it")
        if augment != "symmetry" and train_set.fields:
            raise ConfigError(f"train.augment: {augment} with per-voxel targets: their labels lie on the given "
                              "cell's grid; train them with augment: symmetry (the cell's own rotations and "
                              "mirrors, labels mapped with them) or none")
        if train_set.structures is None:
            raise ConfigError("train.augment needs a training set built from structures (structures_to_set)")
    if model.energy_output is not None and not train_set.has_energy:
        raise DatasetError("the model predicts an energy but the training set has none; label the dataset or "
                           "train on per-voxel targets only (data.targets without 'energy')")
    if fit_refs:  # the label transforms: reference energies and scale, per-voxel field scales
        if model.energy_output is not None:
            model.energy_output.fit(train_set.counts, train_set.energies, train_set.n_atoms)
        for k, f in model.fields.items():
            f.fit(train_set.fields[k], model.model_config["field_scale"])
        if model.fields and not model.model_config["vacuum_zero"]:
            # start from the training-mean field (the bias of the linear output layer); with vacuum_zero the
            # output on empty space is subtracted, so a constant offset would cancel and fields start at 0
            from ..nn.network import output_layer  # noqa: PLC0415

            layer = output_layer(model.network)
            kernel, bias = layer.get_weights()
            for k, f in model.fields.items():
                bias[f.start : f.stop] = f.mean_network(train_set.fields[k])
            layer.set_weights([kernel, bias])
    if cfg["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    tr = Trainer(model, cfg, seed, backend, out)
    use_forces = tr.force_weight > 0
    if use_forces:
        if not train_set.has_forces:
            raise DatasetError("train.force_weight > 0 but the training set has no forces; build it with "
                               "structures_to_set(..., forces=...) or set train.force_weight to 0")
        if model.head == "dense":
            raise ConfigError("training on forces needs the density head (model.head: density)")
        rms = math.sqrt(float(np.mean(np.concatenate([f.ravel() for f in train_set.forces]) ** 2)))
        tr.force_scale = rms if rms > 1e-6 else 1.0
    backend.broadcast_variables(list(model.network.variables) + list(tr.optimizer.variables))
    cbs: list[Callback] = [LRSchedule(cfg, tr.base_lr), EarlyStopping(cfg["patience"])]
    chief = backend.is_chief
    if chief and val_set is not None and len(val_set) < MIN_VAL_RECORDS and (cfg["patience"] > 0
                                                                            or cfg["restore_best"]):
        import warnings  # noqa: PLC0415

        warnings.warn(f"the validation split has {len(val_set)} record(s): its loss is too noisy to stop on or to "
                      f"pick weights by (train.patience {cfg['patience']}, train.restore_best "
                      f"{cfg['restore_best']}); give at least {MIN_VAL_RECORDS} validation records "
                      "(data.val_fraction or data.val), or set train.patience: 0 and train.restore_best: false "
                      "to train for the whole budget", UserWarning, stacklevel=2)
    if chief and cfg["progress"]:
        cbs.append(ProgressBar())
    if out and chief:
        os.makedirs(out, exist_ok=True)
        cbs += [Logger(out)]
    cbs += list(callbacks or [])
    tr.callbacks = cbs
    for cb in cbs:
        cb.trainer = tr
    start = 0
    ck = os.path.join(out, "checkpoint.npz") if out else None
    # The chief reads the checkpoint and broadcasts its bytes: all ranks resume from the same
    # state even without a shared file system or while a file is being replaced.
    blob = None
    if resume and not ck:
        raise ConfigError("resume=True needs the run folder (out=...) that holds checkpoint.npz")
    if resume and chief:
        if not os.path.exists(ck):
            raise ConfigError(f"cannot resume: {ck} does not exist (no epoch of this run has finished); "
                              "start the run without --resume")
        with open(ck, "rb") as fh:
            blob = fh.read()
    if resume and ck:
        blob = backend.broadcast_object(blob)
    if blob is not None:
        start = tr.load_checkpoint(io.BytesIO(blob))
        backend.broadcast_variables(list(model.network.variables) + list(tr.optimizer.variables))
        if chief and cfg["progress"]:
            print(f"resumed from {ck} at epoch {start + 1}", file=sys.stderr)
        if tr.history and tr.history[-1].get("stopped"):
            start = tr.epochs
    targets = (model.energy_output.to_network(train_set.energies, train_set.counts)
               if model.energy_output is not None else np.zeros(len(train_set)))
    tr.steps_per_epoch = len(tr.epoch_batches(train_set, 0))
    for cb in cbs:
        cb.on_train_begin()
    t_start = time.time()
    for epoch in range(start, tr.epochs):
        t0 = time.time()
        for cb in cbs:
            cb.on_epoch_begin(epoch)
        if augment != "none":  # the structures in new equivalent descriptions, the same on every rank
            train_set.redescribe(model, epoch, seed, augment)
        tot_loss = tot_abs = 0.0
        cnt = 0
        tr.force_abs = tr.force_count = 0.0
        has_e = model.energy_output is not None
        for s, idx in enumerate(tr.epoch_batches(train_set, epoch)):
            if use_forces:
                loss, abs_sum, k = tr.run_force_step(train_set, idx)
            else:
                loss, abs_sum, _, k = tr.run_step(train_set, idx, targets)
            tot_loss += loss * k
            tot_abs += abs_sum
            cnt += k
            batch_logs = {"loss": loss}
            if has_e:
                batch_logs["mae_mev"] = 1000 * model.scale * tot_abs / max(cnt, 1)
            for cb in cbs:
                cb.on_batch_end(s, batch_logs)
        sums = np.asarray(backend.allreduce_sum(np.array([tot_loss, tot_abs, cnt], dtype=np.float64)))
        logs: dict[str, Any] = {"epoch": epoch + 1, "loss": float(sums[0] / sums[2])}
        if has_e:
            logs["mae_mev"] = float(1000 * model.scale * sums[1] / sums[2])
        logs["lr"] = float(tr.optimizer.learning_rate.numpy())
        if use_forces:
            f = np.asarray(backend.allreduce_sum(np.array([tr.force_abs, tr.force_count])), dtype=np.float64)
            logs["force_mae_mev_a"] = float(1000 * f[0] / max(f[1], 1.0))
        if val_set is not None and len(val_set):
            logs.update(tr.evaluate(val_set))
            if use_forces and val_set.has_forces:
                f_abs, f_sq, f_n = tr.evaluate_forces(val_set)
                logs["val_force_mae_mev_a"] = float(1000 * f_abs / max(f_n, 1.0))
                logs["val_loss"] += tr.force_weight * float(f_sq / max(f_n, 1.0))  # the training objective
        logs["time_s"] = time.time() - t0
        v = logs.get("val_loss", logs["loss"])
        if v < tr.best_val:
            tr.best_val = v
            tr.best_weights = [w.copy() for w in model.network.get_weights()]
        if cfg["max_time_s"] is not None and time.time() - t_start + logs["time_s"] > cfg["max_time_s"]:
            tr.stop_training = True  # the next epoch would overrun the time budget
        tr.history.append(logs)
        for cb in cbs:
            cb.on_epoch_end(epoch, logs)
        if backend.size > 1:  # every rank stops together (time budgets differ slightly between ranks)
            tr.stop_training = bool(np.asarray(backend.allreduce_sum(np.array([float(tr.stop_training)])))[0] > 0)
        logs["stopped"] = bool(tr.stop_training)
        if out and chief:
            tr.save_checkpoint(ck, epoch)
        if tr.stop_training:
            break
    if cfg["restore_best"] and tr.best_weights is not None:
        model.network.set_weights(tr.best_weights)
    for cb in cbs:
        cb.on_train_end()
    backend.barrier()
    return tr.history


def train_images(images: Sequence[np.ndarray], energies: Sequence[float],
                 val_images: Sequence[np.ndarray] | None = None, val_energies: Sequence[float] | None = None,
                 model: dict[str, Any] | None = None, train: dict[str, Any] | None = None, seed: int = 0,
                 out: str | None = None) -> tuple[EnergyModel, list[dict[str, Any]]]:
    """Train an image-mode model on periodic images, e.g. Ising spins of shape (8, 8, 1).

    Returns the trained :class:`~ednn.predict.model.EnergyModel` (use
    ``predict_image_energies``) and the history.
    """
    seed_everything(seed)
    im0 = np.asarray(images[0])
    m = EnergyModel.create(model, grid=None, in_channels=im0.shape[-1], dim=im0.ndim - 1, seed=seed)
    ts = images_to_set(m, images, energies)
    vs = images_to_set(m, val_images, val_energies) if val_images is not None else None
    hist = fit(m, ts, vs, train, seed=seed, out=out)
    return m, hist


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (Keras) random numbers."""
    import keras

    keras.utils.set_random_seed(int(seed))
