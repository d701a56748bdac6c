"""Verbs ``ednn train | predict | evaluate | demo``: argument parsing around the library.

``ednn train CONFIG [--resume | --overwrite] [--out DIR] [--epochs N] [--format png|pdf|svg]``
    Train from a JSON/YAML config (see :mod:`ednn.config`; ``ednn train
    --help`` lists every key with its default); the run folder holds
    ``checkpoint.npz``, ``log.csv``, ``log.json``, ``learning_curve.png`` and
    the model folder ``model/``. ``--out``/``--epochs`` replace the file's values
    before validation. A folder that already holds a run (a checkpoint or a
    model) is continued with ``--resume``, started afresh with ``--overwrite``,
    and otherwise refused (:func:`ednn.train.train` checks).
``ednn predict MODEL STRUCTURES [-o out.csv] [--map DIR [--map-block PX] [--regions R] [--zoom PX]]``
    Energies (and energy per atom) of structures in any format ase.io reads,
    or an ednn HDF5 dataset. With labels present, also the errors. With
    ``--map``, one huge 2D structure streamed with a progress bar (atoms,
    atoms/s, ETA) and its block energy map and per-region energies written to
    DIR (:func:`ednn.workflows.large.predict_large`).
``ednn evaluate MODEL DATA.h5 [--out DIR] [--format png|pdf|svg]``
    :func:`ednn.workflows.evaluate.evaluate`: MAE / RMSE / max error in
    meV/atom, force errors, parity plot, per-size error table, learning curve;
    ``metrics.json``.
``ednn demo [--out runs/demo] [--quick] [--minutes M] [--format png|pdf|svg]``
    :func:`ednn.workflows.demo.run_demo`: the main job.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from ..errors import ConfigError, InputError
from ..plots import FORMATS
from .config import add_override_arguments, config_help, overrides

__all__ = ["add_arguments", "run"]


def _add_format(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="png",
                        help="figure format: png (300 dpi) or vector pdf/svg (default png)")


def add_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    """Arguments of ``verb`` (train, predict, evaluate, demo)."""
    if verb == "train":
        parser.add_argument("config", help="JSON/YAML config file (keys and defaults below)")
        parser.add_argument("--ensemble", type=int, default=0, metavar="K",
                            help="train K members (seeds seed .. seed+K-1, same data and split) into out/member_k "
                            "and write out/ensemble.json: predictions with an uncertainty (the members' spread); "
                            "atom-centred members are fitted on bootstrap resamples, their cutoffs spread over "
                            "[cutoff, cutoff + atoms.ensemble_cutoff_spread]")
        again = parser.add_mutually_exclusive_group()
        again.add_argument("--resume", action="store_true",
                           help="continue the run in the config's out folder from its checkpoint")
        again.add_argument("--overwrite", action="store_true",
                           help="start afresh in an out folder that already holds a run (a checkpoint or a "
                                "model); without it, such a folder is refused")
        add_override_arguments(parser)
        _add_format(parser)
        parser.epilog = config_help()
    elif verb == "predict":
        parser.add_argument("model", help="model folder (or .zip)")
        parser.add_argument("structures", help="structures: .h5 dataset or any file ase.io reads")
        parser.add_argument("-o", "--output", help="write the CSV here (energy models: index, n_atoms, energy, energy per atom; "
                                                         "LDOS and density models: see --temperature, --conserve-electrons)")
        parser.add_argument("--map", metavar="DIR",
                            help="one huge 2D structure: stream it with a progress bar and write DIR/summary.json, "
                            "energy_map.npy/.png (block energies) and regions.json (per-region energies)")
        parser.add_argument("--map-block", type=int, default=None, metavar="PX",
                            help="with --map: pixels per map block (default: at most 512 blocks per side)")
        parser.add_argument("--regions", type=int, default=4, help="with --map: regions per axis (default 4)")
        parser.add_argument("--force", action="store_true",
                            help="predict structures outside the model's training domain (species, layers, heights, "
                            "density, neighbour distances) instead of stopping; overlapping atoms still stop")
        parser.add_argument("--temperature", type=float, default=None, metavar="K",
                            help="LDOS models: electronic temperature of the derived properties (default: the "
                                 "labels' temperature); density models predict at their labels' only")
        parser.add_argument("--shift-average", type=int, default=None, metavar="K",
                            help="average energies (and forces) over K^d sub-pixel translations: translation "
                                 "invariance at K^d times the cost (default: the model's model.shift_average)")
        parser.add_argument("--symmetrize", action="store_true",
                            help="per-voxel models: average the fields over the rotations and mirrors that map the "
                                 "cell's grid onto itself (48 for a cubic cell; model.symmetrize_fields): exactly "
                                 "equivariant, at that many times the cost")
        parser.add_argument("--energy-model", metavar="MODEL", default=None,
                            help="LDOS models: an energy model of the same DFT labels (zero-width energy E_0); adds "
                                 "the free energy F(T_e) = E_0 + [E_band - TS](T_e) - E_band(0) of the predicted "
                                 "LDOS (frozen-LDOS approximation) to the CSV")
        parser.add_argument("--plots", metavar="DIR", default=None,
                            help="LDOS models: write dos_<i>.<format> and density_<i>.<format> per structure here; "
                                 "density models: density_<i>.<format>")
        parser.add_argument("--conserve-electrons", action="store_true",
                            help="density models: scale each predicted density to the structure's valence electrons "
                                 "(predict_density(..., conserve_electrons=True))")
        parser.add_argument("--cube", metavar="DIR", default=None,
                            help="per-voxel models: write each structure's predicted density to DIR/density_<i>.cube "
                                 "(Gaussian cube, electrons/Bohr^3 as is the convention; VESTA, Ovito, ASE read it)")
        parser.add_argument("--zoom", type=int, default=1024, metavar="PX",
                            help="with --map: side of the full-resolution window at the centre drawn beside the "
                            "map and saved as energy_zoom.npy (default 1024; 0: none)")
        _add_format(parser)
    elif verb == "evaluate":
        parser.add_argument("model", help="model folder (or .zip)")
        parser.add_argument("data", help="labelled dataset (.h5 or extxyz)")
        parser.add_argument("--out", help="folder for metrics.json and figures (default: <model>/../eval_<data>)")
        parser.add_argument("--symmetrize", action="store_true",
                            help="per-voxel models: fields averaged over the cell's grid symmetries "
                                 "(model.symmetrize_fields)")
        _add_format(parser)
    elif verb == "demo":
        parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
        parser.add_argument("--quick", action="store_true", help="tiny version (about a minute), for smoke tests")
        parser.add_argument("--minutes", type=float, default=None, help="training time budget in minutes")
        _add_format(parser)
    else:  # pragma: no cover
        raise ConfigError(f"unknown verb {verb!r}")


def run(args: argparse.Namespace) -> int:
    """Run the verb in ``args.verb``; returns the exit code."""
    verb = args.verb
    if verb == "train":
        return _train(args)
    if verb == "predict":
        return _predict(args)
    if verb == "evaluate":
        from ..workflows.evaluate import evaluate

        out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.model)),
                                       "eval_" + os.path.splitext(os.path.basename(args.data))[0])
        m = evaluate(args.model, args.data, out, fmt=args.format, symmetrize=args.symmetrize)
        print(json.dumps(m, indent=1))
        return 0
    if verb == "demo":
        from ..workflows.demo import run_demo

        return run_demo(args.out, quick=args.quick, minutes=args.minutes, fmt=args.format)
    raise ConfigError(f"unknown verb {verb!r}")  # pragma: no cover


def _train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..parallel import get_backend
    from ..plots import learning_curve
    from ..train import train

    cfg = load_config(args.config, overrides=overrides(args))  # overrides checked like the file's values
    if args.ensemble:
        return _train_ensemble(cfg, args)
    train(cfg, resume=args.resume, overwrite=args.overwrite)  # refuses to start over a run unless --overwrite
    if not get_backend(cfg["train"]["backend"]).is_chief:
        return 0  # under Horovod only rank 0 writes plots and reports
    log = os.path.join(cfg["out"], "log.json")
    if os.path.exists(log):
        learning_curve(log, os.path.join(cfg["out"], f"learning_curve.{args.format}"))
    print(f"model saved to {os.path.join(cfg['out'], 'model')}")
    return 0


def member_cutoff(atoms_cfg: dict, k: int, k_members: int) -> float:
    """Cutoff (A) of member ``k`` of an atom-centred ensemble of ``k_members``: evenly spread over
    ``[cutoff, cutoff + ensemble_cutoff_spread]`` (member 0 keeps the config's cutoff)."""
    return float(atoms_cfg["cutoff"]) + float(atoms_cfg["ensemble_cutoff_spread"]) * k / max(k_members - 1, 1)


def _train_ensemble(cfg: dict, args: argparse.Namespace) -> int:
    """K members in out/member_k (seeds seed .. seed + K - 1, the same data split), then out/ensemble.json.

    A rerun after an interruption keeps the finished members and resumes the unfinished one."""
    import copy

    from ..parallel import get_backend
    from ..predict.ensemble import _write_manifest
    from ..train import train

    k_members = int(args.ensemble)
    if k_members < 2:
        raise InputError(f"--ensemble needs at least 2 members, got {k_members}")
    out = cfg["out"]
    names = []
    for k in range(k_members):
        ck = copy.deepcopy(cfg)
        ck["seed"] = int(cfg["seed"]) + k
        ck["out"] = os.path.join(out, f"member_{k}")
        if ck["model"]["representation"] == "atoms":
            # a closed-form fit: the members differ by their data (bootstrap) and by how far they see (cutoff)
            ck["atoms"]["bootstrap"] = True
            ck["atoms"]["cutoff"] = member_cutoff(cfg["atoms"], k, k_members)
        names.append(f"member_{k}/model")
        done = os.path.exists(os.path.join(ck["out"], "model", "config.json"))
        if done and not args.overwrite:
            print(f"member {k}: finished earlier, kept ({ck['out']})", file=sys.stderr)
            continue
        resume = args.resume or (not args.overwrite and os.path.exists(os.path.join(ck["out"], "checkpoint.npz")))
        seen = f", cutoff {ck['atoms']['cutoff']:.3f} A" if ck["model"]["representation"] == "atoms" else ""
        print(f"member {k} of {k_members}: seed {ck['seed']}{seen} -> {ck['out']}", file=sys.stderr)
        train(ck, resume=resume, overwrite=args.overwrite)
    if get_backend(cfg["train"]["backend"]).is_chief:
        _write_manifest(out, names)
        print(f"ensemble of {k_members} saved to {out} (ednn.load it; predict_energy(atoms, return_std=True))")
    return 0


def _one_structure(path: str):
    """The one structure of ``path``: an ednn .h5 record or an extended-XYZ file read in blocks into lean arrays
    (:func:`ednn.data.large_io.read_large`: no ase.Atoms copy of a huge structure), or what ase.io reads."""
    from ..data.large_io import read_large
    from ..train import load_structures

    if str(path).endswith((".h5", ".hdf5", ".xyz", ".extxyz")):
        return read_large(path)
    structs, _ = load_structures(path, need_energy=False)
    if len(structs) != 1:
        raise InputError(f"--map draws one structure's energy map; {path} holds {len(structs)} "
                         "(write the one you want to its own file)")
    return structs[0]


def _check_domain(model, structs, force: bool) -> None:
    """Stop (InputError) on structures outside the model's training domain unless ``force``; then just say so."""
    outside = []
    for i, s in enumerate(structs):
        for _kind, msg in model.check_domain(s):  # overlapping or detached atoms raise here, forced or not
            outside.append(f"structure {i}: {msg}")
    if not outside:
        return
    listing = "\n  ".join(outside[:10]) + (f"\n  ... and {len(outside) - 10} more" if len(outside) > 10 else "")
    if not force:
        raise InputError(f"outside the model's training domain (its predictions there are extrapolations):\n  "
                         f"{listing}\npass --force to predict anyway")
    print(f"warning: predicting outside the model's training domain (--force):\n  {listing}", file=sys.stderr)


def _predict_map(model, args: argparse.Namespace) -> int:
    from ..parallel import get_backend
    from ..predict.ensemble import Ensemble
    from ..workflows.large import predict_large

    if isinstance(model, Ensemble):
        raise InputError(f"--map streams one model; give one member of the ensemble (e.g. "
                         f"{os.path.join(args.model, 'member_0', 'model')})")
    structure = _one_structure(args.structures)
    _check_domain(model, [structure], args.force)

    backend = get_backend("auto")  # horovodrun -np K ednn predict ... --map: the ranks share the strips
    res = predict_large(model, structure, out=args.map, map_block=args.map_block, regions=args.regions,
                        progress=True, backend=backend, zoom=args.zoom or None)
    if not backend.is_chief:
        return 0
    ranks = f" on {backend.size} ranks" if backend.size > 1 else ""
    print(f"{res['n_atoms']} atoms: {res['energy']:.6f} eV ({res['energy_per_atom']:.6f} eV/atom) in "
          f"{res['seconds']:.1f} s{ranks} ({res['atoms_per_second']:,.0f} atoms/s); map, regions and summary in {args.map}")
    return 0


def _write_csv(lines: list[str], path: str | None) -> None:
    """CSV lines to ``path`` atomically (tmp + rename), or to stdout without a path."""
    text = "\n".join(lines) + "\n"
    if not path:
        sys.stdout.write(text)
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _predict_electronic(model, structs, args: argparse.Namespace) -> int:
    """``ednn predict`` with an LDOS model: per structure the Fermi level, band energy, -TS and electrons at
    an electronic temperature (CSV), and with --plots the DOS and a density slice."""
    from ..plots import density_slice_plot, dos_plot
    from ..workflows.evaluate import _as_atoms

    t_e = args.temperature
    if t_e is None:
        t_e = float(model.meta["electronic"].get("electronic_temperatures_K", [298.0])[0])
    em = None
    if args.energy_model:
        from ..predict.model import load

        em = load(args.energy_model)
    lines = ["index,n_atoms,temperature_K,fermi_level_eV,band_energy_eV,band_energy_per_atom_eV,entropy_term_eV,"
             "n_electrons,negative_fraction" + (",energy_zero_eV,free_energy_change_eV,free_energy_eV,"
                                                "free_energy_per_atom_eV" if em is not None else "")]
    t0 = time.time()
    for i, s in enumerate(structs):
        at = _as_atoms(s)
        es = model.electronic_structure(at, t_e) if em is None else model.free_energy(at, t_e, energy_model=em)
        n = len(at)
        lines.append(f"{i},{n},{t_e:g},{es['fermi_level']:.6f},{es['band_energy']:.6f},{es['band_energy'] / n:.6f},"
                     f"{es['entropy_term']:.6f},{es['n_electrons']:.6f},{es['negative_fraction']:.3g}"
                     + (f",{es['energy_zero']:.6f},{es['free_energy_change']:.6f},{es['free_energy']:.6f},"
                        f"{es['free_energy'] / n:.6f}" if em is not None else ""))
        if args.plots:
            fmt = args.format
            dos_plot(es["energies"], {"ednn": es["dos"]}, os.path.join(args.plots, f"dos_{i}.{fmt}"), n_atoms=n,
                     fermi_level=es["fermi_level"], title=f"structure {i}, T_e = {t_e:g} K")
            density_slice_plot({"ednn": es["density"]}, os.path.join(args.plots, f"density_{i}.{fmt}"),
                               title=f"structure {i}: density, slice z = 0")
        if args.cube:
            _write_cube(args.cube, i, at, es["density"])
    _write_csv(lines, args.output)
    print(f"{len(structs)} structures: LDOS and electronic structure at {t_e:g} K in {time.time() - t0:.2f} s",
          file=sys.stderr)
    return 0


def _write_cube(folder: str, i: int, atoms, density) -> None:
    """``folder/density_<i>.cube``: the density (1/A^3) in electrons/Bohr^3, written atomically."""
    from ase.io.cube import write_cube
    from ase.units import Bohr

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"density_{i}.cube")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        write_cube(fh, atoms, data=np.asarray(density) * Bohr**3)
    os.replace(tmp, path)


def _predict_density(model, structs, args: argparse.Namespace) -> int:
    """``ednn predict`` with a density model: per structure the electrons the predicted density holds (and the
    valence count, where the model knows it) in a CSV; --plots a density slice, --cube the field."""
    from ..plots import density_slice_plot
    from ..predict.electronic import n_electrons_of
    from ..workflows.evaluate import _as_atoms

    known = "valence" in (model.meta.get("electronic") or {})
    lines = ["index,n_atoms,n_electrons,n_electrons_valence,density_max_per_A3"]
    t0 = time.time()
    for i, s in enumerate(structs):
        at = _as_atoms(s)
        rho = model.predict_density(at, args.temperature, conserve_electrons=args.conserve_electrons)
        held = float(rho.sum()) * abs(at.cell.volume) / rho.size
        lines.append(f"{i},{len(at)},{held:.6f},{f'{n_electrons_of(model, at):g}' if known else ''},{rho.max():.6g}")
        if args.plots:
            density_slice_plot({"ednn": rho}, os.path.join(args.plots, f"density_{i}.{args.format}"),
                               title=f"structure {i}: density, slice z = 0")
        if args.cube:
            _write_cube(args.cube, i, at, rho)
    _write_csv(lines, args.output)
    print(f"{len(structs)} structures: density in {time.time() - t0:.2f} s", file=sys.stderr)
    return 0


def _symmetrize(model, path: str) -> None:
    """``--symmetrize``: fields averaged over the grid symmetries, or a clear error for a model without fields."""
    members = getattr(model, "members", [model])
    if not all(getattr(m, "fields", None) for m in members):
        raise InputError(f"--symmetrize averages per-voxel fields; {path} predicts none (leave the option out)")
    for m in members:
        m.symmetrize_fields = True


def _predict(args: argparse.Namespace) -> int:
    from ..predict.model import load
    from ..train import load_structures
    from ..workflows.evaluate import metrics, n_atoms

    model = load(args.model)
    if getattr(getattr(model, "members", [model])[0], "basis", None) is not None:  # the atom-centred model
        for opt, why in (("shift_average", "averages an image model over sub-pixel translations; the atom-centred "
                                           "model is exactly translation invariant"),
                         ("map", "draws the per-pixel energy map of an image model, streamed for huge sheets; the "
                                 "atom-centred model gives per-atom energies (model.atom_energies) and is not "
                                 "streamed yet")):
            if getattr(args, opt) not in (None, False):
                raise InputError(f"--{opt.replace('_', '-')} {why}; leave it out for {args.model}")
    if args.shift_average is not None:
        for m in getattr(model, "members", [model]):
            m.shift_average = args.shift_average
    if args.symmetrize:
        _symmetrize(model, args.model)
    if args.map:
        return _predict_map(model, args)
    structs, E = load_structures(args.structures, need_energy=False)
    _check_domain(model, structs, args.force)
    fields = getattr(model, "fields", {})
    if getattr(model, "energy_output", True) is None and "ldos" in fields:
        return _predict_electronic(model, structs, args)
    if getattr(model, "energy_output", True) is None and "density" in fields:
        return _predict_density(model, structs, args)
    for opt in ("conserve_electrons", "cube"):
        if getattr(args, opt):
            raise InputError(f"--{opt.replace('_', '-')} is for models of the LDOS or the density; {args.model} "
                             "predicts energies: leave it out")
    t0 = time.time()
    from ..predict.ensemble import Ensemble

    std = None
    if isinstance(model, Ensemble):
        pred, std = model.predict_energies(structs, return_std=True)
    else:
        pred = model.predict_energies(structs)
    dt = time.time() - t0
    n = np.array([n_atoms(s) for s in structs])
    lines = ["index,n_atoms,energy_eV,energy_per_atom_eV" + (",energy_std_eV" if std is not None else "")
             + (",reference_eV,error_meV_per_atom" if E is not None else "")]
    for i in range(len(structs)):
        row = f"{i},{n[i]},{pred[i]:.8f},{pred[i] / n[i]:.8f}" + (f",{std[i]:.8f}" if std is not None else "")
        if E is not None:
            row += f",{E[i]:.8f},{1000 * (pred[i] - E[i]) / n[i]:.4f}"
        lines.append(row)
    _write_csv(lines, args.output)
    print(f"{len(structs)} structures, {n.sum()} atoms in {dt:.2f} s", file=sys.stderr)
    if E is not None:
        print(json.dumps(metrics(E, pred, n)), file=sys.stderr)
    return 0
