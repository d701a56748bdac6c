"""Training callbacks (Keras-style): learning-rate schedule, early stopping, progress bar, logs."""

from __future__ import annotations

import io
import json
import math
import os
import sys
import time
from typing import Any

__all__ = ["Callback", "LRSchedule", "EarlyStopping", "ProgressBar", "Logger"]


class Callback:
    """Keras-style training callback. ``self.trainer`` is set before training."""

    trainer: Any  # the running trainer (ednn.train.trainer.Trainer), set by fit()

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
            if logs and step % 10 == 0 and "mae_mev" in logs:
                self.bar.set_postfix(mae=f"{logs['mae_mev']:.1f} meV/at")

    def on_epoch_end(self, epoch, logs=None):
        if self.bar is not None:
            self.bar.close()
        msg = f"epoch {epoch + 1:4d}/{self.trainer.epochs}  loss {logs['loss']:.4g}"
        if "mae_mev" in logs:
            msg += f"  train MAE {logs['mae_mev']:.2f}"
            if "val_mae_mev" in logs:
                msg += f"  val MAE {logs['val_mae_mev']:.2f}  val RMSE {logs['val_rmse_mev']:.2f}"
            msg += " meV/atom"
        for k in sorted(logs):
            if k.startswith("val_field_") and k.endswith("_rmse"):
                msg += f"  {k[4:]} {logs[k]:.3g}"
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


def _atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


