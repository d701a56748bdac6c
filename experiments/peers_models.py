"""The peer models of ``experiments/peers.py``: SchNetPack's PaiNN (energies and forces) and SOAP + ridge.

Runs in the peers' own environment (``scripts/peers_env.sh`` builds ``.venv-peers``; never ednn's), on the
extended-XYZ files that ``peers.py`` exports (train, val, test, transfer: the same split ednn trains on).
Writes one JSON per model: predicted energies of the test and transfer structures, forces of the
force-evaluation subset, the training and inference times. ``peers.py`` computes the metrics of all models
alike from these.

    .venv-peers/bin/python experiments/peers_models.py painn --data runs/peers/data --minutes 8 --out painn.json
    .venv-peers/bin/python experiments/peers_models.py soap --data runs/peers/data --minutes 8 --out soap.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def read(data: str, name: str):
    from ase.io import read as ase_read

    return ase_read(os.path.join(data, f"{name}.extxyz"), index=":")


def atom_refs(structs, energies, species) -> np.ndarray:
    """Least-squares energy per element (eV) from the training structures' compositions."""
    a = np.array([[np.sum(s.numbers == z) for z in species] for s in structs], float)
    refs, *_ = np.linalg.lstsq(a, np.asarray(energies), rcond=None)
    return refs


def _energies(structs) -> np.ndarray:
    return np.array([s.get_potential_energy() for s in structs])


# ----------------------------------------------------------------------------------------------- PaiNN
def run_painn(args) -> dict:
    import pytorch_lightning as pl
    import schnetpack as spk
    import schnetpack.transform as trn
    import torch
    import torchmetrics
    from schnetpack.data import ASEAtomsData, AtomsDataModule

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    work = os.path.join(args.work, "painn")
    os.makedirs(work, exist_ok=True)
    os.chdir(work)  # SchNetPack's data module leaves a lock file (splitting.lock) in the working directory
    train, val = read(args.data, "train"), read(args.data, "val")
    species = sorted({int(z) for s in train for z in s.numbers})
    refs = atom_refs(train, _energies(train), species)
    atomrefs = np.zeros(100)
    atomrefs[species] = refs
    db_path = os.path.join(work, "train_val.db")
    if os.path.exists(db_path):
        os.remove(db_path)
    db = ASEAtomsData.create(db_path, distance_unit="Ang",
                             property_unit_dict={"energy": "eV", "forces": "eV/Ang"},
                             atomrefs={"energy": atomrefs.tolist()})
    structs = train + val
    db.add_systems([{"energy": np.array([s.get_potential_energy()]), "forces": s.get_forces()} for s in structs],
                   [s.copy() for s in structs])
    split = os.path.join(work, "split.npz")
    np.savez(split, train_idx=np.arange(len(train)), val_idx=np.arange(len(train), len(structs)),
             test_idx=np.array([], dtype=int))
    cutoff = args.cutoff
    dm = AtomsDataModule(db_path, batch_size=args.batch_size, split_file=split, num_workers=0, pin_memory=False,
                         transforms=[trn.MatScipyNeighborList(cutoff=cutoff),
                                     trn.RemoveOffsets("energy", remove_mean=True, remove_atomrefs=True),
                                     trn.CastTo32()])
    dm.prepare_data()
    dm.setup()
    n_basis = args.features
    painn = spk.representation.PaiNN(n_atom_basis=n_basis, n_interactions=3,
                                     radial_basis=spk.nn.GaussianRBF(n_rbf=20, cutoff=cutoff),
                                     cutoff_fn=spk.nn.CosineCutoff(cutoff))
    model = spk.model.NeuralNetworkPotential(
        representation=painn, input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=n_basis, output_key="energy"),
                        spk.atomistic.Forces(energy_key="energy", force_key="forces")],
        postprocessors=[trn.CastTo64(), trn.AddOffsets("energy", add_mean=True, add_atomrefs=True)])
    outputs = [spk.task.ModelOutput(name="energy", loss_fn=torch.nn.MSELoss(), loss_weight=args.energy_weight,
                                    metrics={"MAE": torchmetrics.MeanAbsoluteError()}),
               spk.task.ModelOutput(name="forces", loss_fn=torch.nn.MSELoss(), loss_weight=1 - args.energy_weight,
                                    metrics={"MAE": torchmetrics.MeanAbsoluteError()})]
    task = spk.task.AtomisticTask(model=model, outputs=outputs, optimizer_cls=torch.optim.AdamW,
                                  optimizer_args={"lr": args.lr},
                                  scheduler_cls=spk.train.ReduceLROnPlateau,
                                  scheduler_args={"factor": 0.5, "patience": 2}, scheduler_monitor="val_loss")
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=work, filename="best", monitor="val_loss", save_top_k=1)
    trainer = pl.Trainer(max_epochs=10_000, max_time={"minutes": args.minutes}, accelerator="cpu",
                         default_root_dir=work, callbacks=[ckpt], enable_progress_bar=False, logger=False,
                         num_sanity_val_steps=0)
    t0 = time.time()
    trainer.fit(task, datamodule=dm)
    t_train = time.time() - t0
    if ckpt.best_model_path:  # the weights of the best validation loss
        task.load_state_dict(torch.load(ckpt.best_model_path, map_location="cpu", weights_only=False)["state_dict"])
    net = task.model.eval()
    conv = spk.interfaces.AtomsConverter(neighbor_list=trn.MatScipyNeighborList(cutoff=cutoff), dtype=torch.float32)

    def predict(structs, forces: bool):
        e, f = [], []
        for s in structs:
            out = net(conv(s))
            e.append(float(out["energy"].detach().sum()))
            if forces:
                f.append(out["forces"].detach().numpy().astype(float))
        return np.array(e), f

    res = {"model": "PaiNN (SchNetPack 2.1)", "train_s": t_train, "epochs": int(trainer.current_epoch),
           "settings": {"cutoff_A": cutoff, "features": n_basis, "interactions": 3, "rbf": 20,
                        "energy_weight": args.energy_weight, "lr": args.lr, "batch_size": args.batch_size,
                        "threads": args.threads},
           "n_params": int(sum(p.numel() for p in net.parameters()))}
    return _evaluate(res, args, predict)


# ----------------------------------------------------------------------------------------------- SOAP
def run_soap(args) -> dict:
    from dscribe.descriptors import SOAP
    from sklearn.linear_model import Ridge

    train, val = read(args.data, "train"), read(args.data, "val")
    species = sorted({int(z) for s in train for z in s.numbers})
    t0 = time.time()
    deadline = t0 + 60 * args.minutes
    e_tr, e_va = _energies(train), _energies(val)

    def feats(soap, structs):
        x = np.stack([soap.create(s).sum(axis=0) for s in structs])
        comp = np.array([[np.sum(s.numbers == z) for z in species] for s in structs], float)
        return np.hstack([x, comp])

    best = None
    trials = []
    for r_cut in (4.0, 5.0, 6.0):
        if time.time() > deadline:
            break
        soap = SOAP(species=species, r_cut=r_cut, n_max=6, l_max=4, periodic=True, sparse=False)
        xtr, xva = feats(soap, train), feats(soap, val)
        ntr = np.array([len(s) for s in train], float)[:, None]
        nva = np.array([len(s) for s in val], float)[:, None]
        # per-atom targets and features: the fit weighs small and large cells alike
        mu, sd = (xtr / ntr).mean(axis=0), (xtr / ntr).std(axis=0) + 1e-12
        for alpha in 10.0 ** np.arange(-10, 2):
            reg = Ridge(alpha=alpha).fit((xtr / ntr - mu) / sd, e_tr / ntr[:, 0])
            mae = float(np.mean(np.abs(reg.predict((xva / nva - mu) / sd) - e_va / nva[:, 0])))
            trials.append({"r_cut": r_cut, "alpha": float(alpha), "val_mae_mev": 1000 * mae})
            if best is None or mae < best[0]:
                best = (mae, r_cut, alpha, soap, reg, mu, sd)
    _, r_cut, alpha, soap, reg, mu, sd = best
    t_train = time.time() - t0
    w = reg.coef_ / sd  # energy = n * (w . (x / n) - w . mu + b) = w . x + n * (b - w . mu)
    b = float(reg.intercept_ - w @ mu)

    def predict(structs, forces: bool):
        e, f = [], []
        for s in structs:
            p = soap.create(s)  # (atoms, features)
            comp = np.array([np.sum(s.numbers == z) for z in species], float)
            x = np.concatenate([p.sum(axis=0), comp])
            e.append(float(w @ x + len(s) * b))
            if forces:  # central differences of the model's energy: dscribe 2.1 has no analytical derivatives
                # for periodic cells, and its numerical ones move an atom without its periodic images (they
                # differ from differences of create() by up to 60 %)
                f.append(_fd_forces(s, lambda a: float(w @ np.concatenate(
                    [soap.create(a).sum(axis=0), [np.sum(a.numbers == z) for z in species]]) + len(a) * b)))
        return np.array(e), f

    res = {"model": "SOAP + ridge (dscribe 2.1)", "train_s": t_train,
           "settings": {"r_cut_A": r_cut, "n_max": 6, "l_max": 4, "alpha": alpha, "chosen_on": "validation MAE",
                        "features": int(len(w))}, "trials": trials}
    return _evaluate(res, args, predict)


def _fd_forces(atoms, energy, h: float = 1e-3) -> np.ndarray:
    """-dE/dr by central differences (h in Angstrom) of ``energy(atoms)``."""
    f = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for x in range(3):
            a, m = atoms.copy(), atoms.copy()
            a.positions[i, x] += h
            m.positions[i, x] -= h
            f[i, x] = -(energy(a) - energy(m)) / (2 * h)
    return f


def _evaluate(res: dict, args, predict) -> dict:
    test, transfer = read(args.data, "test"), read(args.data, "transfer")
    forces_idx = json.load(open(os.path.join(args.data, "forces_subset.json")))
    t0 = time.time()
    res["test_energy"] = predict(test, False)[0].tolist()
    t_test = time.time() - t0
    t0 = time.time()
    res["transfer_energy"] = predict(transfer, False)[0].tolist()
    t_tr = time.time() - t0
    sub = [test[i] for i in forces_idx]
    t0 = time.time()
    _, f = predict(sub, True)
    t_f = time.time() - t0
    res["forces"] = [x.tolist() for x in f]
    res["times_s"] = {"test_energy": t_test, "transfer_energy": t_tr, "forces_subset": t_f}
    res["atoms_per_s"] = {"test_energy": sum(map(len, test)) / t_test, "transfer_energy": sum(map(len, transfer)) / t_tr,
                          "energy_and_forces": sum(map(len, sub)) / t_f}
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", choices=["painn", "soap"])
    p.add_argument("--data", required=True, help="folder of peers.py's extended-XYZ files")
    p.add_argument("--work", default=None, help="scratch folder (default: DATA/..)")
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cutoff", type=float, default=4.0)
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--energy-weight", type=float, default=0.1)
    args = p.parse_args(argv)
    args.data, args.out = os.path.abspath(args.data), os.path.abspath(args.out)
    args.work = os.path.abspath(args.work or os.path.dirname(args.data))
    res = run_painn(args) if args.model == "painn" else run_soap(args)
    with open(args.out + ".tmp", "w") as fh:
        json.dump(res, fh)
    os.replace(args.out + ".tmp", args.out)
    print(f"[peers_models] {res['model']}: trained {res['train_s']:.0f} s, wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
