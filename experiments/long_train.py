"""Long training run on the default Tersoff dataset (issue 5, must-show 3b).

Trains the ednn energy model with :func:`ednn.train.train` on the ``make
data`` training set for a wall-clock budget (default 75 min), in the
background, and reports

* held-out MAE (a test split never seen in training or early stopping),
  target <= 5 meV/atom;
* size-transfer MAE on the ``make data`` set of 1000-5000-atom cells,
  target <= 10 meV/atom;
* beside each: the label spread (std of per-atom energies after the
  per-element references fitted on the training split are removed) and the
  composition-only baseline's MAE (those references alone);
* the learning curve (``runs/long_train/log.json`` -> PNG).

Intermediate results are written every ``--eval-every`` minutes (current
weights), so a run stopped at any moment leaves a valid JSON/PNG; the final
evaluation uses the best-validation weights. ``--resume`` continues a killed
run from its last epoch checkpoint (``ednn.train`` resume).

Usage::

    nice -n 10 python experiments/long_train.py [--config experiments/long_train.yaml]
        [--minutes 75] [--resume] [--eval-only]

Writes ``experiments/results/long_train.json`` and
``experiments/results/long_train.png`` (learning curve + parity plots).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
DEFAULT_CONFIG = os.path.join(HERE, "long_train.yaml")


def _atomic_json(obj: Any, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1)
    os.replace(tmp, path)


def _numbers(s: Any) -> np.ndarray:
    return np.asarray(s.numbers if hasattr(s, "numbers") else s[1])


def composition(structures: list, species: tuple[int, ...]) -> np.ndarray:
    """(S, K) atom counts per species."""
    lut = {z: i for i, z in enumerate(species)}
    c = np.zeros((len(structures), len(species)))
    for i, s in enumerate(structures):
        for z, k in zip(*np.unique(_numbers(s), return_counts=True)):
            if int(z) not in lut:
                raise SystemExit(f"species Z={int(z)} of a test structure is not among the training species {species}")
            c[i, lut[int(z)]] = k
    return c


def label_stats(counts: np.ndarray, energies: np.ndarray, refs: np.ndarray) -> dict[str, float]:
    """Spread of per-atom residual energies and the composition-only baseline's errors (meV/atom)."""
    n = counts.sum(1)
    resid = (energies - counts @ refs) / n
    return {
        "label_spread_mev": float(1000 * np.std(resid)),
        "baseline_mae_mev": float(1000 * np.mean(np.abs(resid))),
        "baseline_rmse_mev": float(1000 * np.sqrt(np.mean(resid**2))),
        "n": int(len(n)),
        "atoms_min": int(n.min()),
        "atoms_max": int(n.max()),
        "atoms_mean": float(n.mean()),
    }


def errors(pred: np.ndarray, energies: np.ndarray, n_atoms: np.ndarray) -> dict[str, float]:
    e = (pred - energies) / n_atoms
    return {
        "mae_mev": float(1000 * np.mean(np.abs(e))),
        "rmse_mev": float(1000 * np.sqrt(np.mean(e**2))),
        "max_mev": float(1000 * np.max(np.abs(e))),
        "median_mev": float(1000 * np.median(np.abs(e))),
    }


class Evaluator:
    """Evaluates the model on the test and size-transfer sets and writes results.

    Used as an :class:`ednn.train.Callback` during training (every
    ``every_s`` seconds, current weights) and once at the end.
    """

    def __init__(self, args: argparse.Namespace, cfg: dict[str, Any], structures: list, energies: np.ndarray,
                 test_idx: np.ndarray, train_idx: np.ndarray, transfer: tuple[list, np.ndarray] | None):
        self.args, self.cfg = args, cfg
        self.structures, self.energies = structures, energies
        self.test_idx, self.train_idx = test_idx, train_idx
        self.transfer = transfer
        self.every_s = 60.0 * args.eval_every
        self.t_last = time.time()
        self.t0 = time.time()
        self.sets: dict[str, Any] = {}
        self.trainer = None
        self.snapshots: list[dict[str, Any]] = []
        self.result: dict[str, Any] = {}
        self.note: dict[str, Any] = {}
        self.schedule_epochs = None
        self.t_train = time.time()

    # ednn.train callback protocol ------------------------------------------------
    def on_train_begin(self, logs=None):
        self.t_last = time.time()
        self.t_train = time.time()

    def _adapt_schedule(self) -> None:
        """Fit the cosine schedule into the wall-clock budget.

        ``train.epochs`` is set high and ``max_time_s`` stops the run; after
        every epoch the schedule length (the ``epochs`` the LR schedule reads)
        becomes ``epochs done + remaining time / recent epoch time`` so that
        the learning rate reaches its floor when the budget runs out.
        """
        tr = self.trainer
        hist = tr.history
        times = [h["time_s"] for h in hist[1:]] or [h["time_s"] for h in hist]
        if not times:
            return
        per = float(np.mean(times[-5:]))
        remaining = self.t_train + 60.0 * self.args.minutes - time.time()
        tr.cfg["epochs"] = int(max(len(hist) + 1, len(hist) + remaining / max(per, 1e-3)))
        self.schedule_epochs = tr.cfg["epochs"]

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_batch_end(self, step, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        if self.args.adapt_schedule:
            self._adapt_schedule()
        if time.time() - self.t_last >= self.every_s:
            self.evaluate(self.trainer.model, final=False, epoch=epoch + 1)
            self.t_last = time.time()

    def on_train_end(self, logs=None):
        pass

    def get_state(self):
        return {}

    def set_state(self, state):
        pass

    # ---------------------------------------------------------------------------
    def _set(self, model, name: str):
        from ednn.train import structures_to_set

        if name not in self.sets:
            t0 = time.time()
            if name == "test":
                st = [self.structures[i] for i in self.test_idx]
                self.sets[name] = structures_to_set(model, st, self.energies[self.test_idx])
            else:
                self.sets[name] = structures_to_set(model, self.transfer[0], self.transfer[1])
            print(f"[long_train] rasterized {name} set ({len(self.sets[name])}) in {time.time() - t0:.1f} s",
                  file=sys.stderr, flush=True)
        return self.sets[name]

    def evaluate(self, model, final: bool, epoch: int | None = None) -> dict[str, Any]:
        species = model.grid.species
        tr_counts = composition([self.structures[i] for i in self.train_idx], species)
        from ednn.predict.model import fit_references

        refs, _ = fit_references(tr_counts, self.energies[self.train_idx])
        out: dict[str, Any] = {"epoch": epoch, "elapsed_min": (time.time() - self.t0) / 60}
        parity = {}
        names = ["test"] + (["transfer"] if self.transfer is not None else [])
        for name in names:
            ts = self._set(model, name)
            pred = model.predict_sets(ts, batch_size=8)
            out[name] = errors(pred, ts.energies, ts.n_atoms)
            out[name].update(label_stats(ts.counts, ts.energies, refs))
            out[name]["ratio_baseline_over_model"] = out[name]["baseline_mae_mev"] / max(out[name]["mae_mev"], 1e-12)
            parity[name] = (ts.energies / ts.n_atoms, pred / ts.n_atoms)
        out["train_label_stats"] = label_stats(tr_counts, self.energies[self.train_idx], refs)
        if not final:
            self.snapshots.append(out)
        self.write(model, out, parity, final)
        msg = " | ".join(f"{k} MAE {out[k]['mae_mev']:.2f} meV/atom (baseline {out[k]['baseline_mae_mev']:.1f})"
                         for k in names)
        print(f"[long_train] {'final' if final else f'epoch {epoch}'}: {msg}", file=sys.stderr, flush=True)
        return out

    def write(self, model, latest: dict[str, Any], parity: dict, final: bool) -> None:
        run = self.cfg["out"]
        hist = []
        lp = os.path.join(run, "log.json")
        if os.path.exists(lp):
            with open(lp) as fh:
                hist = json.load(fh)
        res = {
            "experiment": "long_train",
            "data": self.note,
            "status": "final" if final else "in progress",
            "targets_mev": {"test_mae": 5.0, "transfer_mae": 10.0},
            "latest": latest,
            "snapshots": self.snapshots,
            "learning_curve": [{k: h.get(k) for k in ("epoch", "mae_mev", "val_mae_mev", "lr", "time_s")} for h in hist],
            "best_val_mae_mev": min((h.get("val_mae_mev", np.inf) for h in hist), default=None),
            "epochs_done": len(hist),
            "schedule_epochs": self.schedule_epochs,
            "config": self.cfg,
            "n_train": int(len(self.train_idx)),
            "n_test": int(len(self.test_idx)),
            "n_transfer": int(len(self.transfer[1])) if self.transfer is not None else 0,
            "n_params": int(model.network.count_params()),
            "grid": model.grid.to_dict() if hasattr(model.grid, "to_dict") else str(model.grid),
            "host": platform.node(),
            "cpu_count": os.cpu_count(),
        }
        if final:
            t = latest.get("test", {})
            x = latest.get("transfer", {})
            res["passed"] = {"test_mae_le_5": bool(t.get("mae_mev", np.inf) <= 5.0),
                             "transfer_mae_le_10": bool(x.get("mae_mev", np.inf) <= 10.0)}
        os.makedirs(RESULTS, exist_ok=True)
        _atomic_json(res, os.path.join(RESULTS, self.args.name + ".json"))
        try:
            plot(res, parity, os.path.join(RESULTS, self.args.name + ".png"))
        except Exception as e:  # noqa: BLE001  (a plotting problem must not kill a long run)
            print(f"[long_train] plot failed: {e}", file=sys.stderr)


def plot(res: dict[str, Any], parity: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ednn.plots import save_fig

    fig, ax = plt.subplots(1, 1 + len(parity), figsize=(4.6 * (1 + len(parity)), 4))
    lc = res["learning_curve"]
    if lc:
        ep = [h["epoch"] for h in lc]
        ax[0].plot(ep, [h["mae_mev"] for h in lc], label="train MAE")
        ax[0].plot(ep, [h["val_mae_mev"] for h in lc], label="validation MAE")
    for s in res["snapshots"]:
        for name, mk in (("test", "o"), ("transfer", "s")):
            if name in s and s["epoch"]:
                ax[0].plot([s["epoch"]], [s[name]["mae_mev"]], mk, color="k" if name == "test" else "r", ms=4)
    ax[0].axhline(5, color="k", ls="--", lw=0.7, label="target test 5")
    ax[0].axhline(10, color="r", ls="--", lw=0.7, label="target transfer 10")
    ax[0].set_yscale("log")
    ax[0].set_xlabel("epoch")
    ax[0].set_ylabel("MAE (meV/atom)")
    ax[0].legend(fontsize=7)
    ax[0].set_title("learning curve (o test, s transfer snapshots)", fontsize=9)
    for a, (name, (t, p)) in zip(ax[1:], parity.items()):
        d = res["latest"][name]
        a.scatter(t, p, s=5, alpha=0.6)
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        a.plot([lo, hi], [lo, hi], "k-", lw=0.5)
        a.set_xlabel("Tersoff E / atom (eV)")
        a.set_ylabel("ednn E / atom (eV)")
        a.set_title(f"{name}: MAE {d['mae_mev']:.2f} meV/atom, baseline {d['baseline_mae_mev']:.1f}, "
                    f"spread {d['label_spread_mev']:.1f}\n{d['n']} cells, {d['atoms_min']}-{d['atoms_max']} atoms",
                    fontsize=8)
    fig.tight_layout()
    save_fig(fig, path, dpi=100)


def build_fallback_data(folder: str, n_train: int, n_transfer: int) -> tuple[str, str]:
    """Build a dataset like ``make data`` with the library (used only when ``data/`` is absent).

    ``mixed`` structures (graphene, h-BN, BCN alloys, heterostructures,
    defects) of 8-200 atoms, and size-transfer cells of 1000-5000 atoms, all
    labelled with the default LAMMPS Tersoff labeller.
    """
    from ednn.atoms.labellers import get_labeller
    from ednn.atoms.structures import generate
    from ednn.data import DatasetWriter

    os.makedirs(folder, exist_ok=True)
    lab = get_labeller("tersoff")
    paths = []
    for name, n, seed, rng in (("train", n_train, 0, (8, 200)), ("transfer", n_transfer, 2, (1000, 5000))):
        path = os.path.join(folder, f"{name}.h5")
        paths.append(path)
        if os.path.exists(path):
            continue
        t0 = time.time()
        with DatasetWriter(path + ".building.h5", metadata={"labeller": {"name": "tersoff"}}, resume=False) as w:
            for a in generate("mixed", n, seed=seed, n_atoms=rng):
                w.append(a, energy=float(lab.label(a)["energy"]))
        os.replace(path + ".building.h5", path)
        print(f"[long_train] built {path} ({n} cells) in {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    return paths[0], paths[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="ednn training config (YAML/JSON)")
    p.add_argument("--train", default=None, help="override data.train (default: from the config)")
    p.add_argument("--transfer", default=os.path.join(ROOT, "data", "transfer.h5"),
                   help="size-transfer dataset (1000-5000-atom cells from `make data`)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="held-out test share of the training file")
    p.add_argument("--minutes", type=float, default=75.0, help="training wall-clock budget")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs (cosine schedule length)")
    p.add_argument("--fixed-schedule", dest="adapt_schedule", action="store_false",
                   help="keep train.epochs as the schedule length (default: fit the schedule into --minutes)")
    p.add_argument("--eval-every", type=float, default=10.0, help="minutes between intermediate evaluations")
    p.add_argument("--max-transfer", type=int, default=None, help="evaluate on at most this many transfer cells")
    p.add_argument("--out", default=None, help="run folder (default: from the config)")
    p.add_argument("--name", default="long_train", help="results file stem")
    p.add_argument("--fallback-n", type=int, nargs=2, default=[3000, 40],
                   help="train/transfer cells to build if the `make data` files are missing")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--eval-only", action="store_true", help="evaluate the saved model of the run")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, ROOT)
    from ednn.config import load_config
    from ednn.data import split_indices
    from ednn.train import load_forces, load_structures, train

    cfg = load_config(args.config)
    if args.train:
        cfg["data"]["train"] = args.train
    if args.out:
        cfg["out"] = args.out
    if args.epochs:
        cfg["train"]["epochs"] = args.epochs
    elif args.adapt_schedule:
        cfg["train"]["epochs"] = 100000  # the time budget stops the run; the schedule adapts
    cfg["train"]["max_time_s"] = 60.0 * args.minutes
    cfg["data"]["test_fraction"] = args.test_fraction  # training holds out the test split (ednn.data.split_indices)
    if cfg["data"].get("val"):
        raise SystemExit("long_train splits validation and test from data.train; remove data.val from the config")
    if not os.path.isabs(cfg["data"]["train"]):
        cfg["data"]["train"] = os.path.join(ROOT, cfg["data"]["train"])
    if not os.path.isabs(cfg["out"]):
        cfg["out"] = os.path.join(ROOT, cfg["out"])

    data_source = "make data"
    if not os.path.exists(cfg["data"]["train"]):
        print(f"[long_train] {cfg['data']['train']} is missing (run `make data`); building a fallback dataset",
              file=sys.stderr, flush=True)
        cfg["data"]["train"], args.transfer = build_fallback_data(os.path.join(cfg["out"], "data"), *args.fallback_n)
        data_source = f"fallback built by long_train.py: mixed {args.fallback_n[0]} cells (8-200 atoms), " \
                      f"{args.fallback_n[1]} transfer cells (1000-5000 atoms)"
    cfg_note = {"data_source": data_source, "train_file": cfg["data"]["train"], "transfer_file": args.transfer}
    t0 = time.time()
    structures, energies = load_structures(cfg["data"]["train"])
    # the one split rule, as training applies it to the same file: the test split is never trained or validated on
    d = cfg["data"]
    n_split = min(len(structures), d["max_structures"]) if d.get("max_structures") else len(structures)
    tr_idx, va_idx, test_idx = split_indices(n_split, d["val_fraction"], d["test_fraction"], d["split_seed"])
    train_idx = np.sort(np.concatenate([tr_idx, va_idx]))  # what training sees (train + validation)
    transfer = None
    if args.transfer and os.path.exists(args.transfer):
        ts, te = load_structures(args.transfer)
        if args.max_transfer:
            ts, te = ts[: args.max_transfer], te[: args.max_transfer]
        transfer = (ts, te)
    else:
        print(f"[long_train] no size-transfer set at {args.transfer}; reporting the test split only", file=sys.stderr)
    print(f"[long_train] {len(structures)} structures ({len(train_idx)} train+val, {len(test_idx)} test), "
          f"{0 if transfer is None else len(transfer[1])} transfer cells; loaded in {time.time() - t0:.1f} s",
          file=sys.stderr, flush=True)
    ev = Evaluator(args, cfg, structures, energies, test_idx, train_idx, transfer)
    ev.note = cfg_note
    if args.eval_only:
        import ednn

        model = ednn.load(os.path.join(cfg["out"], "model"))
    else:
        forces = load_forces(cfg["data"]["train"]) if cfg["train"]["force_weight"] > 0 else None
        model = train(cfg, resume=args.resume, structures=structures, energies=energies, callbacks=[ev],
                      forces=forces)  # all records: training splits them by the same rule (runs/.../split.json)
    ev.evaluate(model, final=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
