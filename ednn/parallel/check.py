"""Self-check of data-parallel training: a tiny, fully deterministic run.

Trains a small image-mode EDNN on periodic 2D Ising configurations (exact
nearest-neighbour energies, no files needed) through :func:`ednn.train.fit`
with the backend chosen from the launch, and writes what a test needs to
compare runs::

    out/weights_rank{r}.npz   final network weights of every rank
    out/history.json          per-epoch logs (chief)
    out/checkpoint.npz, log.*  written by the training loop (chief)

Serial and parallel runs with the same global batch and seed must end with
the same weights; all ranks must end with identical weights::

    python -m ednn.parallel.check --out runs/check_serial --backend serial
    horovodrun -np 2 -H localhost:2 --gloo python -m ednn.parallel.check --out runs/check_hvd

``--die-rank R --die-step K`` makes rank ``R`` exit abruptly (``os._exit``,
or ``SIGKILL`` with ``--die-signal``) after its ``K``-th optimizer step, to
check that the whole job then fails instead of hanging. ``--bench`` prints
samples per second of the training steps.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import numpy as np

from ..atoms.ising import ising_energy
from ..predict.model import EnergyModel
from ..train import Callback, fit, images_to_set
from . import get_backend


def ising_data(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random periodic spin images (size x size x 1) and their exact Ising energies (J = 1)."""
    rng = np.random.default_rng(seed)
    # a spread of magnetisations so that energies vary widely
    p = rng.uniform(0.1, 0.9, size=n)
    spins = np.where(rng.random((n, size, size)) < p[:, None, None], 1.0, -1.0).astype(np.float32)
    energies = np.array([float(ising_energy(s)) for s in spins])
    return spins[..., None], energies


def _atomic_savez(path: str, **arrays) -> None:
    tmp = f"{path}.tmp{os.getpid()}.npz"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Run the check; returns the process exit code."""
    ap = argparse.ArgumentParser(prog="python -m ednn.parallel.check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--backend", default="auto", choices=("auto", "serial", "horovod"))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=48)
    ap.add_argument("--n-val", type=int, default=7)
    ap.add_argument("--image", type=int, default=8, help="image side (pixels)")
    ap.add_argument("--batch", type=int, default=8, help="GLOBAL batch size")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--lr-scaling", default="none", choices=("none", "linear", "sqrt"))
    ap.add_argument("--warmup-epochs", type=int, default=0)
    ap.add_argument("--optimizer", default="adam", choices=("adam", "adamw", "sgd"))
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--filters", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="TF intra-op threads per rank")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--die-rank", type=int, default=None)
    ap.add_argument("--die-step", type=int, default=2)
    ap.add_argument("--die-signal", action="store_true", help="die by SIGKILL instead of os._exit(17)")
    ap.add_argument("--bench", action="store_true", help="print training samples/s (JSON line, chief)")
    a = ap.parse_args(argv)

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(a.threads)  # before TensorFlow starts: cannot fail here
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    backend = get_backend(a.backend)
    backend.pin_gpu()
    keras.utils.set_random_seed(a.seed)
    x, e = ising_data(a.n_train + a.n_val, a.image, seed=1234)
    model = EnergyModel.create({"layers": a.layers, "filters": a.filters, "readout": [a.filters]},
                               grid=None, in_channels=1, dim=2, seed=a.seed)
    ts = images_to_set(model, list(x[: a.n_train]), e[: a.n_train])
    vs = images_to_set(model, list(x[a.n_train:]), e[a.n_train:]) if a.n_val else None
    cfg = {"epochs": a.epochs, "batch_size": a.batch, "learning_rate": a.lr, "optimizer": a.optimizer,
           "lr_scaling": a.lr_scaling, "warmup_epochs": a.warmup_epochs, "schedule": "constant",
           "restore_best": False, "progress": False, "bucket": 1, "backend": a.backend,
           "deterministic": True}

    class Hooks(Callback):
        def __init__(self):
            self.steps = 0
            self.t0 = None
            self.samples = 0
            self.times: list[float] = []

            self.cpu0 = 0.0
            self.cpu: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()
            self.cpu0 = time.process_time()

        def on_batch_end(self, step, logs=None):
            self.steps += 1
            if a.die_rank is not None and backend.rank == a.die_rank and self.steps == a.die_step:
                print(f"rank {backend.rank}: simulated crash after step {self.steps} "
                      f"at t={time.time():.3f}", file=sys.stderr, flush=True)
                if a.die_signal:
                    os.kill(os.getpid(), signal.SIGKILL)
                os._exit(17)

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.t0)
            if a.bench:  # CPU seconds of all ranks together (collective: every rank calls it)
                self.cpu.append(float(backend.allreduce_sum(time.process_time() - self.cpu0)))

    hooks = Hooks()
    os.makedirs(a.out, exist_ok=True)
    hist = fit(model, ts, vs, cfg, seed=a.seed, out=a.out, resume=a.resume, callbacks=[hooks],
               backend=backend)
    w = model.network.get_weights()
    _atomic_savez(os.path.join(a.out, f"weights_rank{backend.rank}.npz"),
                  **{f"w{i}": v for i, v in enumerate(w)})
    if backend.is_chief:
        with open(os.path.join(a.out, "history.json.tmp"), "w") as fh:
            info = {"size": backend.size, "backend": backend.name, "history": hist}
            if backend.name == "horovod":  # which controller carried the collectives (Gloo or MPI)
                hvd = backend._hvd
                info["controller"] = "mpi" if hvd.mpi_enabled() else "gloo" if hvd.gloo_enabled() else "?"
            json.dump(info, fh, indent=1)
        os.replace(os.path.join(a.out, "history.json.tmp"), os.path.join(a.out, "history.json"))
    if a.bench and backend.is_chief and len(hooks.times) > 1:
        # first epoch includes tracing; report the rest
        steady = hooks.times[1:]
        n_samples = len(ts) * len(steady)
        print(json.dumps({"ranks": backend.size, "samples_per_s": n_samples / sum(steady),
                          "samples_per_cpu_s": n_samples / sum(hooks.cpu[1:]),
                          "epoch_s": steady, "epoch_cpu_s": hooks.cpu[1:]}), flush=True)
    backend.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
