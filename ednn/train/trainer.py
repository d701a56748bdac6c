"""The trainer: compiled gradient steps (energies, per-voxel fields, forces), validation, checkpoints."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..nn.batch import make_batch
from ..parallel.base import epoch_permutation
from ..predict.calculator import generic_gradient_function, input_signature
from ..predict.model import EnergyModel
from .callbacks import Callback
from .sets import TrainSet

__all__ = ["Trainer", "ldos_moment_errors"]


def ldos_moment_errors(tf, diff, real, start: int, sub: int, channels: int, w_occ, w_band):
    """The Fermi-weighted moments of a per-voxel LDOS error (the terms of ``field_moment_weight``, ``field_band_weight`` and
    ``field_density_weight``).

    ``diff`` ``(rows, *pixels, net_channels)`` is prediction minus label in network units, zero outside
    ``real`` ``(rows, *pixels, 1)`` (1 on the pixels a row owns; a row is one structure's cell); the LDOS
    owns channels ``start .. start + sub * channels`` (``sub`` fine voxels per pixel). Returns the density error of every fine voxel
    ``(rows, *pixels, sub)`` (``w_occ @``), and per row the mean density and band-energy errors ``(rows,)``
    (``w_band @``) over its owned voxels.
    """
    blk = tf.reshape(diff[..., start : start + sub * channels], tf.concat([tf.shape(diff)[:-1], [sub, channels]], 0))
    dn = tf.reduce_sum(blk * w_occ, axis=-1)
    axes = list(range(1, len(diff.shape)))
    owned = tf.maximum(tf.reduce_sum(real, axis=axes) * sub, 1.0)
    return dn, tf.reduce_sum(dn, axis=axes) / owned, tf.reduce_sum(tf.reduce_sum(blk * w_band, -1), axis=axes) / owned


class Trainer:
    """The state of one training run: network, optimizer, compiled steps, history, best weights."""

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
        self.n_field_channels = sum(f.net_channels for f in model.fields.values())
        self.step_fn = self._make_step(tf)
        self.force_weight = float(cfg["force_weight"])
        self.force_scale = 1.0  # RMS reference force component (eV/A), set by fit()
        self._force_fn = None
        self.force_abs = self.force_count = 0.0  # epoch accumulators of |F_pred - F| (eV/A)

    def _make_step(self, tf):
        """The compiled step: energy loss (``train.loss`` on per-atom errors, network units) plus
        ``field_weight`` times the mean squared per-voxel field error (network units)."""
        net, opt, backend, cfg = self.net, self.optimizer, self.backend, self.cfg
        d = self.model.dim
        head = self.model.head
        has_e = self.model.energy_output is not None
        F, f0 = self.n_field_channels, int(has_e)
        w_field = float(cfg["field_weight"])
        w_int = float(cfg["field_integral_weight"])
        w_mom, w_den = float(cfg["field_moment_weight"]), float(cfg["field_density_weight"])
        w_band = w_mom if cfg["field_band_weight"] is None else float(cfg["field_band_weight"])
        floor = cfg["field_relative_floor"]
        moment = self._ldos_moments(tf) if (w_mom or w_band or w_den) else None
        groups = [(f.start - f0, f.sub_voxels, f.channels) for f in self.model.fields.values()]
        x_spec = tf.TensorSpec([None] * (d + 1) + [self.model.in_channels], tf.float32)
        m_spec = tf.TensorSpec([None] * (d + 1 if head == "density" else 1), tf.float32)
        l_spec = tf.TensorSpec([None] * (d + 1) + [max(F, 1)], tf.float32)
        clip = cfg["clip_norm"]
        loss_kind, delta = cfg["loss"], cfg["huber_delta"]

        @tf.function(input_signature=[x_spec, m_spec, tf.TensorSpec([None], tf.int32),
                                      tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.float32), l_spec])
        def step(x, mask, seg, y, n, lab):
            with tf.GradientTape() as tape:
                out = net(x, training=True)
                loss = tf.constant(0.0)
                abs_e = tf.constant(0.0)
                sq_f = tf.constant(0.0)
                if has_e:
                    e = tf.reshape(out[..., 0], tf.shape(mask)) * mask
                    per_row = tf.reduce_sum(tf.reshape(e, [tf.shape(e)[0], -1]), axis=1)
                    pred = tf.math.unsorted_segment_sum(per_row, seg, tf.shape(y)[0])
                    err = (pred - y) / n
                    a = tf.abs(err)
                    if loss_kind == "mse":
                        loss = tf.reduce_mean(tf.square(err))
                    elif loss_kind == "mae":
                        loss = tf.reduce_mean(a)
                    else:
                        loss = tf.reduce_mean(tf.where(a < delta, 0.5 * a * a, delta * (a - 0.5 * delta)))
                    abs_e = tf.reduce_sum(a)
                if F:
                    real = tf.cast(mask > 0, tf.float32)[..., None]
                    diff = (out[..., f0 : f0 + F] - lab) * real
                    sq_f = tf.reduce_sum(tf.square(diff))
                    sq_w = sq_f if floor is None else tf.reduce_sum(tf.square(diff / tf.maximum(tf.abs(lab), floor)))
                    loss = loss + w_field * sq_w / tf.maximum(tf.reduce_sum(real) * F, 1.0)
                    if w_int:  # cell means accumulated over channels (an LDOS: states below E per volume)
                        axes = list(range(1, d + 1))
                        cell = tf.reduce_sum(diff, axis=axes) / tf.maximum(tf.reduce_sum(real, axis=axes), 1.0)
                        parts = [tf.cumsum(tf.reduce_mean(tf.reshape(cell[:, c0 : c0 + sub * ch], [-1, sub, ch]),
                                                          axis=1), axis=1) / ch for c0, sub, ch in groups]
                        loss = loss + w_int * tf.reduce_mean(tf.square(tf.concat(parts, axis=1)))
                    if moment is not None:  # Fermi-weighted moments of the LDOS error
                        dn, row_n, row_b = ldos_moment_errors(tf, diff, real, *moment)
                        if w_den:
                            loss = loss + w_den * tf.reduce_sum(tf.square(dn)) / tf.maximum(
                                tf.reduce_sum(real) * moment[1], 1.0)
                        if w_mom:
                            loss = loss + w_mom * tf.reduce_mean(tf.square(row_n))
                        if w_band:
                            loss = loss + w_band * tf.reduce_mean(tf.square(row_b))
            grads = tape.gradient(loss, net.trainable_variables)
            grads = backend.allreduce_gradients(grads)
            if clip:
                grads, _ = tf.clip_by_global_norm(grads, clip)
            opt.apply(grads, net.trainable_variables)
            return loss, abs_e, sq_f

        return step

    def _ldos_moments(self, tf) -> tuple:
        """For the LDOS field: ``(start, sub_voxels, channels, w_occ, w_band)`` with ``w_occ @ y`` the voxel's
        density and ``w_band @ y`` its band energy relative to the Fermi level, from network units ``y``, both
        over the training data's mean electron density (so per eV): the terms of ``field_moment_weight`` and
        ``field_density_weight`` at the labels' electronic temperature and the median training Fermi level."""
        from ..electronic import EnergyGrid, band_energy_weights, occupation_weights  # noqa: PLC0415
        from ..errors import ConfigError  # noqa: PLC0415
        from ..properties import LDOS  # noqa: PLC0415

        meta = self.model.meta.get("electronic") or {}
        if LDOS.key not in self.model.fields or meta.get("fermi_level_eV") is None:
            raise ConfigError("train.field_moment_weight, field_band_weight and field_density_weight weight the "
                              "Fermi-weighted moments of an LDOS: they need data.targets: [ldos] on gpaw-ldos datasets (whose "
                              "records carry fermi_level_eV); set them to 0 for other targets")
        grid, mu = EnergyGrid.from_dict(meta["energy_grid"]), float(meta["fermi_level_eV"])
        temp = float(meta["electronic_temperatures_K"][0])
        f = self.model.fields[LDOS.key]
        has_e = int(self.model.energy_output is not None)
        occ = occupation_weights(grid, mu, temp)
        band = band_energy_weights(grid, mu, temp) - mu * occ
        to_rel = f.scale / float(meta["electron_density"])
        return (f.start - has_e, f.sub_voxels, f.channels, tf.constant(occ * to_rel, tf.float32),
                tf.constant(band * to_rel, tf.float32))

    # per-voxel labels -------------------------------------------------------
    def field_labels(self, ts: TrainSet, i: int) -> np.ndarray:
        """Sample ``i``'s per-voxel labels in network units, all fields' channels concatenated."""
        parts = [f.to_network(ts.fields[k][i]) for k, f in self.model.fields.items()]
        return np.concatenate(parts, axis=-1) if parts else None

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
        """One step; returns (loss, sum |per-atom energy error| (network units), sum sq. field error, samples)."""
        import tensorflow as tf

        labels = [self.field_labels(ts, int(i)) for i in idx] if self.n_field_channels else None
        b = make_batch([ts.inputs[i] for i in idx], self.model.head, self.model.radius, labels)
        lab = b.fields if b.fields is not None else np.zeros((1,) * (self.model.dim + 1) + (1,), np.float32)
        loss, abs_sum, sq_f = self.step_fn(tf.constant(b.x), tf.constant(b.mask), tf.constant(b.seg),
                                           tf.constant(targets[idx].astype(np.float32)),
                                           tf.constant(ts.n_atoms[idx].astype(np.float32)), tf.constant(lab))
        return float(loss), float(abs_sum), float(sq_f), len(idx)

    def evaluate(self, ts: TrainSet, batch_size: int = 32) -> dict[str, float]:
        """Global validation metrics, exact over ranks: energies in meV/atom, fields in their units."""
        idx = np.arange(len(ts))[self.backend.rank :: self.backend.size]  # no duplicates: exact sums
        sub = ts.subset(idx)
        logs: dict[str, float] = {"val_loss": 0.0}
        if self.model.energy_output is not None:
            pred = self.model.predict_sets(sub, batch_size) if len(sub) else np.zeros(0)
            err = (pred - sub.energies) / sub.n_atoms if len(sub) else np.zeros(0)
            sums = np.array([np.abs(err).sum(), (err**2).sum(), len(err)], dtype=np.float64)
            sums = np.asarray(self.backend.allreduce_sum(sums), dtype=np.float64)
            n = max(sums[2], 1.0)
            mae, mse = sums[0] / n, sums[1] / n
            s = self.model.scale
            logs.update({"val_loss": float(mse / s**2) if self.cfg["loss"] == "mse" else float(mae / s),
                         "val_mae_mev": 1000 * mae, "val_rmse_mev": 1000 * math.sqrt(mse)})
        if self.n_field_channels:
            f = self._evaluate_fields(sub, batch_size)
            f["val_loss"] += logs["val_loss"]  # the training objective: energy term + field term
            logs.update(f)
        return logs

    def _evaluate_fields(self, sub: TrainSet, batch_size: int) -> dict[str, float]:
        """Per field: RMSE and MAE over all voxels and channels (physical units); adds the loss term."""
        fields = self.model.fields
        floor = self.cfg["field_relative_floor"]
        sums = np.zeros((len(fields), 4))  # sum |err|, sum err^2, the loss term's sum (network units), count
        for b0 in range(0, len(sub), batch_size):
            idx = list(range(b0, min(b0 + batch_size, len(sub))))
            labels = [self.field_labels(sub, i) for i in idx]
            b = make_batch([sub.inputs[i] for i in idx], self.model.head, self.model.radius, labels)
            y = np.asarray(self.model._forward(b.x), dtype=np.float64)
            real = b.mask > 0
            f0 = int(self.model.energy_output is not None)  # labels hold the field channels only
            for j, f in enumerate(fields.values()):
                lab = b.fields[..., f.start - f0 : f.stop - f0][real]
                d_net = y[..., f.start : f.stop][real] - lab
                d = d_net * f.net_scale
                d_w = d_net if floor is None else d_net / np.maximum(np.abs(lab), floor)
                sums[j] += [np.abs(d).sum(), (d * d).sum(), (d_w * d_w).sum(), d.size]
        sums = np.asarray(self.backend.allreduce_sum(sums.ravel()), dtype=np.float64).reshape(sums.shape)
        out: dict[str, float] = {}
        sq_net = cnt = 0.0
        for j, name in enumerate(fields):
            n = max(sums[j, 3], 1.0)
            out[f"val_field_{name}_mae"] = float(sums[j, 0] / n)
            out[f"val_field_{name}_rmse"] = float(math.sqrt(sums[j, 1] / n))
            sq_net += sums[j, 2]
            cnt += sums[j, 3]
        out["val_loss"] = self.cfg["field_weight"] * sq_net / max(cnt, 1.0)
        return out

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
            "outputs": {"energy": None if self.model.energy_output is None else
                        {"refs": self.model.refs.tolist(), "scale": self.model.scale},
                        "fields": {k: f.scale.tolist() for k, f in self.model.fields.items()}},
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
        out = state["outputs"]
        if out["energy"] is not None:
            self.model.refs = np.asarray(out["energy"]["refs"])
            self.model.scale = float(out["energy"]["scale"])
        for k, sc in out["fields"].items():
            self.model.fields[k].scale = np.asarray(sc, dtype=np.float64)
        return int(state["epoch"]) + 1


