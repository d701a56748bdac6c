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

Resume: the chief writes ``out/checkpoint.npz`` atomically after every epoch
(weights, optimizer variables, best weights, callback states, history).
``resume=True`` restores it and continues with the next epoch; since the data
order depends only on ``(seed, epoch)`` and training has no other randomness,
the resumed run ends exactly where an uninterrupted one does.

Two entry points: :func:`train` (config dict/file -> trained model folder) and
:func:`fit` (an :class:`~ednn.predict.model.EnergyModel` plus :class:`TrainSet`\\ s,
e.g. built from raw images with :func:`images_to_set` for the Ising model).
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..config import load_config, normalize_config
from ..errors import ConfigError, DatasetError, InputError
from ..image.grid import GridSpec
from ..predict.model import EnergyModel, fit_references, make_batch

__all__ = [
    "TrainSet",
    "structures_to_set",
    "images_to_set",
    "fit",
    "train",
    "train_images",
    "Callback",
    "ProgressBar",
    "Logger",
    "Checkpoint",
    "EarlyStopping",
    "LRSchedule",
    "load_structures",
    "load_forces",
    "make_grid",
]


# ---------------------------------------------------------------- data sets
class TrainSet:
    """Cached network inputs and labels of a set of structures (or images).

    Attributes
    ----------
    inputs : list of (array, float)
        Network input (wrap-padded image or tiles) and pixel weight per sample.
    energies : (S,) float64
        Total energies (eV).
    counts : (S, K) float64
        Atoms per species (image mode: pixels).
    n_atoms : (S,) float64
    sizes : (S,) int
        Input pixels (for bucketing).
    forces : list of (N, 3) float32 arrays, optional
        Reference forces (eV/A), for training on forces.
    force_inputs : list of (positions, dict), optional
        Positions (N, 3) and :meth:`EnergyModel.energy_tf_inputs` per sample:
        what the differentiable energy needs (with ``forces``).
    """

    def __init__(self, inputs, energies, counts, n_atoms, forces=None, force_inputs=None):
        self.inputs = list(inputs)
        self.energies = np.asarray(energies, dtype=np.float64)
        self.counts = np.asarray(counts, dtype=np.float64)
        self.n_atoms = np.asarray(n_atoms, dtype=np.float64)
        self.forces = None if forces is None else list(forces)
        self.force_inputs = None if force_inputs is None else list(force_inputs)
        if (self.forces is None) != (self.force_inputs is None):
            raise InputError("forces and force_inputs go together (use structures_to_set(..., forces=...))")
        if self.forces is not None and not (len(self.forces) == len(self.force_inputs) == len(self.inputs)):
            raise InputError("forces, force_inputs and inputs differ in length")
        self.sizes = np.array([int(np.prod(x.shape[:-1])) * (len(x) if x.ndim > 3 else 1) for x, _ in self.inputs])
        if not (len(self.inputs) == len(self.energies) == len(self.counts) == len(self.n_atoms)):
            raise InputError("inputs, energies, counts and n_atoms differ in length")
        if not np.all(np.isfinite(self.energies)):
            raise DatasetError("energies contain NaN or inf; clean the dataset")

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def has_forces(self) -> bool:
        return self.forces is not None

    def subset(self, idx: Sequence[int]) -> TrainSet:
        idx = np.asarray(idx, dtype=int)
        f = None if self.forces is None else [self.forces[i] for i in idx]
        fi = None if self.force_inputs is None else [self.force_inputs[i] for i in idx]
        return TrainSet([self.inputs[i] for i in idx], self.energies[idx], self.counts[idx], self.n_atoms[idx], f, fi)


def structures_to_set(model: EnergyModel, structures: Sequence[Any], energies: Sequence[float] | None = None,
                      progress: bool = False, desc: str = "rasterize", forces: Sequence[Any] | None = None) -> TrainSet:
    """Rasterize (and tile) structures once, for training or evaluation.

    Parameters
    ----------
    model : EnergyModel
        Supplies the grid and head.
    structures : sequence of ase.Atoms (or (positions, numbers, cell, pbc))
    energies : sequence of float, optional
        Total energies; default ``atoms.get_potential_energy()``.
    forces : sequence of (N, 3) arrays, optional
        Reference forces (eV/A), to train on forces as well; the set then also
        keeps what the differentiable energy needs per structure.
    """
    if energies is None:
        try:
            energies = [a.get_potential_energy() for a in structures]
        except Exception as e:  # noqa: BLE001
            raise DatasetError(f"structures carry no energies ({e}); give energies= or a labelled dataset") from None
    inputs, counts, n = [], [], []
    it = structures
    if progress:
        from tqdm import tqdm

        it = tqdm(structures, desc=desc, leave=False, file=sys.stderr)
    for a in it:
        img, w = model.image(a)
        inputs.append(model.network_input(img, w))
        counts.append(model.counts(_numbers_holder(a)))
        n.append(len(_numbers_holder(a).numbers))
    if forces is None:
        return TrainSet(inputs, energies, counts, n)
    if len(forces) != len(structures):
        raise InputError(f"{len(structures)} structures but {len(forces)} force arrays")
    f_list, f_inputs = [], []
    for i, (a, f) in enumerate(zip(structures, forces, strict=True)):
        pos = np.asarray(a.positions if hasattr(a, "positions") else a[0], dtype=np.float32)
        f = None if f is None else np.asarray(f, dtype=np.float32)
        if f is None or f.shape != pos.shape or not np.all(np.isfinite(f)):
            raise DatasetError(f"structure {i}: forces missing, of shape {None if f is None else f.shape} instead of "
                               f"{pos.shape}, or not finite; training on forces needs them for every structure")
        f_list.append(f)
        f_inputs.append((pos, model.energy_tf_inputs(a)))
    return TrainSet(inputs, energies, counts, n, f_list, f_inputs)


class _Nums:
    def __init__(self, numbers):
        self.numbers = np.asarray(numbers)


def _numbers_holder(a: Any):
    if hasattr(a, "numbers"):
        return a
    return _Nums(a[1])


def images_to_set(model: EnergyModel, images: Sequence[np.ndarray], energies: Sequence[float]) -> TrainSet:
    """Training samples from periodic images (image mode: e.g. Ising spins, shape (n, n, 1)).

    The "composition" of an image is its pixel count, so the fitted reference
    is an energy per pixel.
    """
    imgs = [np.asarray(im, dtype=np.float32) for im in images]
    if len(imgs) != len(energies):
        raise InputError(f"{len(imgs)} images but {len(energies)} energies")
    inputs = [model.network_input(im, 1.0) for im in imgs]
    npix = np.array([float(np.prod(im.shape[: model.dim])) for im in imgs])
    return TrainSet(inputs, energies, npix[:, None], npix)


def load_structures(path: str, need_energy: bool = True) -> tuple[list[Any], np.ndarray | None]:
    """Structures and energies from an HDF5 dataset (ednn.data) or any file ase.io reads."""
    if not os.path.exists(path):
        raise DatasetError(f"dataset file {path!r} does not exist; build it first (e.g. `make data` or `ednn gen`)")
    if path.endswith((".h5", ".hdf5")):
        try:
            from ..data import Dataset
        except ImportError as e:  # pragma: no cover
            raise DatasetError(f"cannot read HDF5 datasets: {e}") from None
        ds = Dataset(path)
        if need_energy and not getattr(ds, "has_energy", True):
            raise DatasetError(f"dataset {path!r} has no energies; label it first (ednn gen ... --labeller tersoff)")
        structs = [(ds.positions(i), ds.numbers(i), ds.cell(i), ds.pbc(i)) for i in range(len(ds))]
        E = np.asarray(ds.energies, dtype=np.float64) if getattr(ds, "has_energy", True) else None
        return structs, E
    import ase.io

    try:
        atoms = ase.io.read(path, index=":")
    except Exception as e:  # noqa: BLE001
        raise DatasetError(f"cannot read {path!r}: {e}") from None
    E = None
    try:
        E = np.array([a.get_potential_energy() for a in atoms])
    except Exception:  # noqa: BLE001
        if need_energy:
            raise DatasetError(f"structures in {path!r} carry no energies; label them first") from None
    return atoms, E


def load_forces(path: str) -> list[np.ndarray]:
    """Reference forces (eV/A) of every structure of a dataset, in the order of :func:`load_structures`."""
    if path.endswith((".h5", ".hdf5")):
        from ..data import Dataset

        with Dataset(path) as ds:
            out = [ds.forces(i) for i in range(len(ds))]
    else:
        import ase.io

        out = []
        for a in ase.io.read(path, index=":"):
            try:
                out.append(a.get_forces())
            except Exception:  # noqa: BLE001
                out.append(None)
    missing = [i for i, f in enumerate(out) if f is None]
    if missing:
        raise DatasetError(f"{len(missing)} structures in {path!r} have no forces (first: {missing[0]}); "
                           "train.force_weight > 0 needs forces for every structure (or set it to 0)")
    return out


# ------------------------------------------------------------------ backend
def _get_backend(name: str):
    try:
        from ..parallel import get_backend

        backend = get_backend(name)
        backend.pin_gpu()  # GPU local_rank on this rank (no-op without GPUs)
        return backend
    except ImportError:
        from ..parallel.serial import SerialBackend

        return SerialBackend()


# ---------------------------------------------------------------- callbacks
class Callback:
    """Keras-style training callback. ``self.trainer`` is set before training."""

    trainer: _Trainer

    def on_train_begin(self, logs: dict | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_batch_end(self, step: int, logs: dict | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...
    def on_train_end(self, logs: dict | None = None) -> None: ...

    def get_state(self) -> dict:
        return {}

    def set_state(self, state: dict) -> None: ...


class LRSchedule(Callback):
    """Sets the learning rate at the start of every epoch (constant/cosine/exponential/plateau + warm-up)."""

    def __init__(self, cfg: dict[str, Any], base_lr: float):
        self.cfg, self.base = cfg, base_lr
        self.factor = 1.0  # plateau state
        self.best = math.inf
        self.wait = 0
        self.elapsed = 0.0  # training seconds before this (resumed) segment
        self.t0 = time.time()

    def progress(self, epoch: int) -> float:
        """Fraction of training done: epochs, or elapsed time when ``max_time_s`` is set (whichever is larger)."""
        p = epoch / max(1, self.cfg["epochs"])
        T = self.cfg["max_time_s"]
        if T:
            p = max(p, (self.elapsed + time.time() - self.t0) / T)
        return min(p, 1.0)

    def on_train_begin(self, logs=None):
        self.t0 = time.time()

    def lr(self, epoch: int) -> float:
        c = self.cfg
        if c["schedule"] == "cosine":
            fmin = c["min_lr_fraction"]
            f = fmin + (1 - fmin) * 0.5 * (1 + math.cos(math.pi * self.progress(epoch)))
        elif c["schedule"] == "exponential":
            f = c["decay_rate"] ** epoch
        elif c["schedule"] == "plateau":
            f = self.factor
        else:
            f = 1.0
        if c["warmup_epochs"] > 0 and epoch < c["warmup_epochs"]:
            f *= (epoch + 1) / (c["warmup_epochs"] + 1)
        return self.base * f

    def on_epoch_begin(self, epoch, logs=None):
        lr = self.lr(epoch)
        b = self.trainer.backend
        if b.size > 1:  # time-based schedules must not differ between ranks
            lr = b.broadcast_object(lr, root=0)
        self.trainer.optimizer.learning_rate.assign(lr)

    def on_epoch_end(self, epoch, logs=None):
        if self.cfg["schedule"] != "plateau":
            return
        v = logs.get("val_loss", logs["loss"])
        if v < self.best - 1e-12:
            self.best, self.wait = v, 0
        else:
            self.wait += 1
            if self.wait >= self.cfg["plateau_patience"]:
                self.factor *= self.cfg["plateau_factor"]
                self.wait = 0

    def get_state(self):
        return {"factor": self.factor, "best": self.best, "wait": self.wait,
                "elapsed": self.elapsed + time.time() - self.t0}

    def set_state(self, s):
        self.factor, self.best, self.wait = s["factor"], s["best"], s["wait"]
        self.elapsed = s.get("elapsed", 0.0)


class EarlyStopping(Callback):
    """Stop when the validation loss has not improved for ``patience`` epochs (0: never)."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = math.inf
        self.wait = 0

    def on_epoch_end(self, epoch, logs=None):
        if self.patience <= 0:
            return
        v = logs.get("val_loss", logs["loss"])
        if v < self.best:
            self.best, self.wait = v, 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.trainer.stop_training = True

    def get_state(self):
        return {"best": self.best, "wait": self.wait}

    def set_state(self, s):
        self.best, self.wait = s["best"], s["wait"]


class ProgressBar(Callback):
    """tqdm bar over steps within an epoch, and one summary line per epoch (chief only)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        from tqdm import tqdm

        t = self.trainer
        self.bar = tqdm(total=t.steps_per_epoch, desc=f"epoch {epoch + 1}/{t.epochs}", leave=False,
                        file=self.stream, dynamic_ncols=True, mininterval=1.0)

    def on_batch_end(self, step, logs=None):
        if self.bar is not None:
            self.bar.update(1)
            if logs and step % 10 == 0:
                self.bar.set_postfix(mae=f"{logs['mae_mev']:.1f} meV/at")

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.close()
        msg = (f"epoch {epoch + 1:4d}/{self.trainer.epochs}  loss {logs['loss']:.4g}  "
               f"train MAE {logs['mae_mev']:.2f}")
        if "val_mae_mev" in logs:
            msg += f"  val MAE {logs['val_mae_mev']:.2f}  val RMSE {logs['val_rmse_mev']:.2f}"
        msg += " meV/atom"
        if "force_mae_mev_a" in logs:
            msg += f"  force MAE {logs['force_mae_mev_a']:.0f}"
            if "val_force_mae_mev_a" in logs:
                msg += f" (val {logs['val_force_mae_mev_a']:.0f})"
            msg += " meV/A"
        msg += f"  lr {logs['lr']:.2e}  {logs['time_s']:.1f} s"
        print(msg, file=self.stream, flush=True)


class Logger(Callback):
    """Writes ``log.csv`` and ``log.json`` (the whole history) atomically after every epoch."""

    def __init__(self, out: str):
        self.out = out

    def on_epoch_end(self, epoch, logs=None):
        hist = self.trainer.history
        keys = list(hist[0].keys()) if hist else []
        buf = io.StringIO()
        buf.write(",".join(keys) + "\n")
        for row in hist:
            buf.write(",".join(f"{row.get(k, '')}" for k in keys) + "\n")
        _atomic_write_text(os.path.join(self.out, "log.csv"), buf.getvalue())
        _atomic_write_text(os.path.join(self.out, "log.json"), json.dumps(hist, indent=1))


class Checkpoint(Callback):
    """Atomic ``checkpoint.npz`` after every epoch (weights, optimizer, best weights, states)."""

    def __init__(self, out: str):
        self.path = os.path.join(out, "checkpoint.npz")

    def on_epoch_end(self, epoch, logs=None):
        self.trainer.save_checkpoint(self.path, epoch)


def _atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# ------------------------------------------------------------------ trainer
class _Trainer:
    def __init__(self, model: EnergyModel, cfg: dict[str, Any], seed: int, backend, out: str | None):
        import keras
        import tensorflow as tf

        self.model, self.cfg, self.seed, self.backend, self.out = model, cfg, seed, backend, out
        self.net = model.network
        self.epochs = cfg["epochs"]
        self.stop_training = False
        self.history: list[dict[str, Any]] = []
        self.best_val = math.inf
        self.best_weights = None
        lr = backend.scale_lr(cfg["learning_rate"], cfg["lr_scaling"])
        self.base_lr = lr
        if cfg["optimizer"] == "adam":
            opt = keras.optimizers.Adam(lr)
        elif cfg["optimizer"] == "adamw":
            opt = keras.optimizers.AdamW(lr, weight_decay=cfg["weight_decay"])
        else:
            opt = keras.optimizers.SGD(lr, momentum=0.9)
        self.optimizer = opt
        opt.build(self.net.trainable_variables)
        self.step_fn = self._make_step(tf)
        self.force_weight = float(cfg["force_weight"])
        self.force_scale = 1.0  # RMS reference force component (eV/A), set by fit()
        self._force_fn = None
        self.force_abs = self.force_count = 0.0  # epoch accumulators of |F_pred - F| (eV/A)

    def _make_step(self, tf):
        net, opt, backend, cfg = self.net, self.optimizer, self.backend, self.cfg
        d = self.model.dim
        head = self.model.head
        x_spec = tf.TensorSpec([None] * (d + 1) + [self.model.in_channels], tf.float32)
        m_spec = tf.TensorSpec([None] * (d + 1 if head == "density" else 1), tf.float32)
        clip = cfg["clip_norm"]
        loss_kind, delta = cfg["loss"], cfg["huber_delta"]

        @tf.function(input_signature=[x_spec, m_spec, tf.TensorSpec([None], tf.int32),
                                      tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.float32)])
        def step(x, mask, seg, y, n):
            with tf.GradientTape() as tape:
                out = net(x, training=True)
                e = tf.reshape(out, tf.shape(mask)) * mask
                per_row = tf.reduce_sum(tf.reshape(e, [tf.shape(e)[0], -1]), axis=1)
                pred = tf.math.unsorted_segment_sum(per_row, seg, tf.shape(y)[0])
                err = (pred - y) / n
                if loss_kind == "mse":
                    loss = tf.reduce_mean(tf.square(err))
                elif loss_kind == "mae":
                    loss = tf.reduce_mean(tf.abs(err))
                else:
                    a = tf.abs(err)
                    loss = tf.reduce_mean(tf.where(a < delta, 0.5 * a * a, delta * (a - 0.5 * delta)))
            grads = tape.gradient(loss, net.trainable_variables)
            grads = backend.allreduce_gradients(grads)
            if clip:
                grads, _ = tf.clip_by_global_norm(grads, clip)
            opt.apply(grads, net.trainable_variables)
            return loss, tf.reduce_sum(tf.abs(err))

        return step

    # forces ----------------------------------------------------------------
    def _force_inputs(self, ts: TrainSet, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        """Positions and differentiable-energy inputs of sample ``i`` with the current references and scale."""
        pos, inp = ts.force_inputs[i]
        inp = dict(inp)
        inp["reference"] = np.float64(ts.counts[i] @ self.model.refs)
        inp["scale"] = np.float64(self.model.scale)
        return pos, inp

    def _make_force_fn(self, inputs: dict[str, Any]):
        """Per structure: loss, its weight gradients, |energy error| and |force errors| (one trace for all sizes)."""
        import tensorflow as tf

        from ..predict.calculator import input_signature

        model, net = self.model, self.net
        w_f = self.force_weight
        loss_kind, delta = self.cfg["loss"], self.cfg["huber_delta"]

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32), input_signature(inputs),
                                      tf.TensorSpec([], tf.float64), tf.TensorSpec([None, 3], tf.float32),
                                      tf.TensorSpec([], tf.float64), tf.TensorSpec([], tf.float32)])
        def fn(pos, inp, energy, forces, n_atoms, force_scale):
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    inner.watch(pos)
                    e = model.energy_tf_core(pos, inp)
                df = -inner.gradient(e, pos) - forces
                err = tf.cast((e - energy) / (n_atoms * tf.cast(inp["scale"], tf.float64)), tf.float32)
                a = tf.abs(err)
                if loss_kind == "mse":
                    le = err * err
                elif loss_kind == "mae":
                    le = a
                else:
                    le = tf.where(a < delta, 0.5 * a * a, delta * (a - 0.5 * delta))
                loss = le + w_f * tf.reduce_mean(tf.square(df / force_scale))
            grads = outer.gradient(loss, net.trainable_variables)
            return loss, grads, a, tf.reduce_sum(tf.abs(df)), tf.size(df)

        return fn

    def force_terms(self, ts: TrainSet, i: int):
        import tensorflow as tf

        pos, inp = self._force_inputs(ts, i)
        if self._force_fn is None:
            self._force_fn = self._make_force_fn(inp)
        return self._force_fn(tf.constant(pos), inp, tf.constant(ts.energies[i], tf.float64),
                              tf.constant(ts.forces[i]), tf.constant(ts.n_atoms[i], tf.float64),
                              tf.constant(self.force_scale, tf.float32))

    def run_force_step(self, ts: TrainSet, idx: np.ndarray):
        """One step on energies and forces: per-structure gradients averaged over the batch."""
        import tensorflow as tf

        acc = None
        loss_sum = abs_sum = 0.0
        for i in idx:
            loss, grads, a, f_abs, f_n = self.force_terms(ts, int(i))
            acc = list(grads) if acc is None else [x + g for x, g in zip(acc, grads, strict=True)]
            loss_sum += float(loss)
            abs_sum += float(a)
            self.force_abs += float(f_abs)
            self.force_count += float(f_n)
        grads = [g / len(idx) for g in acc]
        grads = self.backend.allreduce_gradients(grads)
        if self.cfg["clip_norm"]:
            grads, _ = tf.clip_by_global_norm(grads, self.cfg["clip_norm"])
        self.optimizer.apply(grads, self.net.trainable_variables)
        return loss_sum / len(idx), abs_sum, len(idx)

    def evaluate_forces(self, ts: TrainSet) -> tuple[float, float, float]:
        """Global sums over this rank's share: (|F_pred - F|, (F_pred - F)^2 / force_scale^2, components)."""
        import tensorflow as tf

        from ..predict.calculator import generic_gradient_function

        sums = np.zeros(3)
        for i in range(self.backend.rank, len(ts), self.backend.size):
            pos, inp = self._force_inputs(ts, i)
            fn = generic_gradient_function(self.model, inp)
            df = -fn(tf.constant(pos), inp)[1].numpy() - ts.forces[i]
            sums += [np.abs(df).sum(), np.square(df / self.force_scale).sum(), df.size]
        return tuple(np.asarray(self.backend.allreduce_sum(sums), dtype=np.float64))

    # batches ---------------------------------------------------------------
    def epoch_batches(self, ts: TrainSet, epoch: int) -> list[np.ndarray]:
        """This rank's index arrays, one per step; the same number of steps on all ranks."""
        try:
            from ..parallel.base import epoch_permutation
        except ImportError:  # pragma: no cover
            def epoch_permutation(n, seed, epoch):
                return np.random.default_rng([int(seed), int(epoch)]).permutation(int(n))
        B = self.cfg["batch_size"]
        perm = epoch_permutation(len(ts), self.seed, epoch)
        W = B * self.cfg["bucket"]
        globals_: list[np.ndarray] = []
        for w0 in range(0, len(perm), W):
            win = perm[w0 : w0 + W]
            win = win[np.argsort(ts.sizes[win], kind="stable")]
            globals_ += [win[i : i + B] for i in range(0, len(win), B)]
        # shuffle the batch order (same on every rank)
        rng = np.random.default_rng([int(self.seed), int(epoch), 1])
        order = rng.permutation(len(globals_))
        return [self.backend.shard(globals_[i]) for i in order]

    def run_step(self, ts: TrainSet, idx: np.ndarray, targets: np.ndarray):
        import tensorflow as tf

        b = make_batch([ts.inputs[i] for i in idx], self.model.head, self.model.radius)
        loss, abs_sum = self.step_fn(tf.constant(b.x), tf.constant(b.mask), tf.constant(b.seg),
                                     tf.constant(targets[idx].astype(np.float32)),
                                     tf.constant(ts.n_atoms[idx].astype(np.float32)))
        return float(loss), float(abs_sum), len(idx)

    def evaluate(self, ts: TrainSet, batch_size: int = 32) -> dict[str, float]:
        """Global validation metrics (meV/atom), exact over ranks."""
        idx = np.arange(len(ts))[self.backend.rank :: self.backend.size]  # no duplicates: exact sums
        sub = ts.subset(idx) if len(idx) else None
        pred = self.model.predict_sets(sub, batch_size) if sub is not None else np.zeros(0)
        err = (pred - (sub.energies if sub is not None else np.zeros(0))) / (sub.n_atoms if sub is not None else 1.0)
        sums = np.array([np.abs(err).sum(), (err**2).sum(), len(err)], dtype=np.float64)
        sums = np.asarray(self.backend.allreduce_sum(sums), dtype=np.float64)
        n = max(sums[2], 1.0)
        mae, mse = sums[0] / n, sums[1] / n
        s = self.model.scale
        return {"val_loss": float(mse / s**2) if self.cfg["loss"] == "mse" else float(mae / s),
                "val_mae_mev": 1000 * mae, "val_rmse_mev": 1000 * math.sqrt(mse)}

    # checkpoints -------------------------------------------------------------
    def save_checkpoint(self, path: str, epoch: int, callbacks: Sequence[Callback] | None = None) -> None:
        if not self.backend.is_chief:
            return
        arrays = {}
        for i, w in enumerate(self.net.get_weights()):
            arrays[f"w{i}"] = w
        for i, v in enumerate(self.optimizer.variables):
            arrays[f"o{i}"] = np.asarray(v.numpy())
        if self.best_weights is not None:
            for i, w in enumerate(self.best_weights):
                arrays[f"b{i}"] = w
        state = {
            "epoch": epoch,
            "history": self.history,
            "best_val": self.best_val,
            "callbacks": [cb.get_state() for cb in (callbacks or self.callbacks)],
            "refs": self.model.refs.tolist(),
            "scale": self.model.scale,
            "seed": self.seed,
        }
        arrays["state"] = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
        tmp = f"{path}.tmp{os.getpid()}.npz"
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def load_checkpoint(self, path: str) -> int:
        with np.load(path) as z:
            state = json.loads(bytes(z["state"]).decode())
            nw = len(self.net.get_weights())
            self.net.set_weights([z[f"w{i}"] for i in range(nw)])
            for i, v in enumerate(self.optimizer.variables):
                v.assign(z[f"o{i}"])
            if "b0" in z:
                self.best_weights = [z[f"b{i}"] for i in range(nw)]
        self.history = state["history"]
        self.best_val = state["best_val"]
        for cb, s in zip(self.callbacks, state["callbacks"]):
            cb.set_state(s)
        self.model.refs = np.asarray(state["refs"])
        self.model.scale = float(state["scale"])
        return int(state["epoch"]) + 1


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
    backend = backend or _get_backend(cfg["backend"])
    backend.local_batch_size(cfg["batch_size"])  # ConfigError unless the global batch splits evenly over ranks
    if len(train_set) == 0:
        raise DatasetError("the training set is empty")
    if fit_refs:
        model.refs, model.scale = fit_references(train_set.counts, train_set.energies, train_set.n_atoms)
    if cfg["deterministic"]:
        try:
            tf.config.experimental.enable_op_determinism()
        except Exception:  # noqa: BLE001
            pass
    tr = _Trainer(model, cfg, seed, backend, out)
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
    if resume and ck and chief and os.path.exists(ck):
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
    targets = (train_set.energies - train_set.counts @ model.refs) / model.scale
    tr.steps_per_epoch = len(tr.epoch_batches(train_set, 0))
    for cb in cbs:
        cb.on_train_begin()
    t_start = time.time()
    for epoch in range(start, tr.epochs):
        t0 = time.time()
        for cb in cbs:
            cb.on_epoch_begin(epoch)
        tot_loss = tot_abs = 0.0
        cnt = 0
        tr.force_abs = tr.force_count = 0.0
        for s, idx in enumerate(tr.epoch_batches(train_set, epoch)):
            if use_forces:
                loss, abs_sum, k = tr.run_force_step(train_set, idx)
            else:
                loss, abs_sum, k = tr.run_step(train_set, idx, targets)
            tot_loss += loss * k
            tot_abs += abs_sum
            cnt += k
            for cb in cbs:
                cb.on_batch_end(s, {"loss": loss, "mae_mev": 1000 * model.scale * tot_abs / max(cnt, 1)})
        sums = np.asarray(backend.allreduce_sum(np.array([tot_loss, tot_abs, cnt], dtype=np.float64)))
        logs: dict[str, Any] = {"epoch": epoch + 1, "loss": float(sums[0] / sums[2]),
                                "mae_mev": float(1000 * model.scale * sums[1] / sums[2]),
                                "lr": float(tr.optimizer.learning_rate.numpy())}
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
    _seed_everything(seed)
    im0 = np.asarray(images[0])
    m = EnergyModel.create(model, grid=None, in_channels=im0.shape[-1], dim=im0.ndim - 1, seed=seed)
    ts = images_to_set(m, images, energies)
    vs = images_to_set(m, val_images, val_energies) if val_images is not None else None
    hist = fit(m, ts, vs, train, seed=seed, out=out)
    return m, hist


def _seed_everything(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(int(seed))


def _set_threads(n: int | None) -> None:
    if not n:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass


def make_grid(cfg: dict[str, Any], structures: Sequence[Any], model_cfg: dict[str, Any]) -> GridSpec:
    """The grid of a run: config values, species from the data if not given, context = receptive radius."""
    from ..image.grid import species_from
    from ..predict.model import receptive_radius

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


def _split(n: int, val: float, test: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.permutation(n)
    nv, nt = int(round(val * n)), int(round(test * n))
    return p[nv + nt :], p[:nv], p[nv : nv + nt]


def train(config: str | dict[str, Any] | None = None, resume: bool = False, structures=None, energies=None,
          callbacks: Sequence[Callback] | None = None, forces=None) -> EnergyModel:
    """Train a model from a config (dict or JSON/YAML path) and save it to ``<out>/model``.

    Parameters
    ----------
    config : dict or path
        See :mod:`ednn.config`. ``data.train`` names the dataset unless
        ``structures`` (a list of ase.Atoms with energies) is given.
    resume : bool
        Continue the run in ``out`` from its last checkpoint.
    forces : sequence of (N, 3) arrays, optional
        With ``structures`` and ``train.force_weight > 0``: reference forces
        (default ``atoms.get_forces()``; from the dataset otherwise).

    Returns
    -------
    EnergyModel
        The trained model (also saved to ``<out>/model``).
    """
    cfg = load_config(config)
    t = cfg["train"]
    _set_threads(t["threads"])
    backend = _get_backend(t["backend"])
    _seed_everything(cfg["seed"])
    out = cfg["out"]
    d = cfg["data"]
    use_forces = t["force_weight"] > 0
    if structures is None:
        if not d["train"]:
            raise ConfigError("data.train is not set: give the path of a labelled dataset (HDF5 or extxyz)")
        structures, energies = load_structures(d["train"])
        if use_forces:
            forces = load_forces(d["train"])
    else:
        if energies is None:
            energies = np.array([a.get_potential_energy() for a in structures])
        if use_forces and forces is None:
            try:
                forces = [a.get_forces() for a in structures]
            except Exception as e:  # noqa: BLE001
                raise DatasetError(f"train.force_weight > 0 but the structures carry no forces ({e}); "
                                   "give forces= or set train.force_weight to 0") from None
    energies = np.asarray(energies, dtype=np.float64)
    if not use_forces:
        forces = None
    if d["max_structures"]:
        structures, energies = structures[: d["max_structures"]], energies[: d["max_structures"]]
        forces = None if forces is None else forces[: d["max_structures"]]
    vs_F = None
    if d["val"]:
        vs_structs, vs_E = load_structures(d["val"])
        vs_F = load_forces(d["val"]) if use_forces else None
        tr_idx = np.arange(len(structures))
        te_idx = np.zeros(0, int)
    else:
        tr_idx, va_idx, te_idx = _split(len(structures), d["val_fraction"], d["test_fraction"], d["split_seed"])
        vs_structs, vs_E = [structures[i] for i in va_idx], energies[va_idx]
        vs_F = None if forces is None else [forces[i] for i in va_idx]
    grid = make_grid(cfg["grid"], structures, cfg["model"])
    model = EnergyModel.create(cfg["model"], grid, seed=cfg["seed"])
    prog = t["progress"] and backend.is_chief
    ts = structures_to_set(model, [structures[i] for i in tr_idx], energies[tr_idx], progress=prog, desc="rasterize train",
                           forces=None if forces is None else [forces[i] for i in tr_idx])
    vs = structures_to_set(model, vs_structs, vs_E, progress=prog, desc="rasterize val", forces=vs_F) \
        if len(vs_structs) else None
    if backend.is_chief:
        os.makedirs(out, exist_ok=True)
        from ..config import dump_config

        dump_config(cfg, os.path.join(out, "config.json"))
        np.savez(os.path.join(out, "split.npz"), train=tr_idx, test=te_idx)
    fit(model, ts, vs, t, seed=cfg["seed"], out=out, resume=resume, callbacks=callbacks, backend=backend)
    model.meta.update({"train_config": cfg, "n_train": len(ts), "n_val": len(vs) if vs else 0})
    if backend.is_chief:
        model.save(os.path.join(out, "model"))
    backend.barrier()
    return model
