"""``ednn gen``: generate and label datasets, label existing ones, sample Ising configurations, convert formats.

Every argument is checked before any file is created; a bad one ends in one
``ednn gen: error: ...`` line that says what to change.

Examples
--------
::

    ednn gen graphene --n 500 --labeller tersoff -o data/graphene.h5 --seed 0
    ednn gen mixed --n 2000 --size 8,200 -o data/mixed.h5          # rerun to resume
    ednn gen defect --n 100 --set md_fraction=0.2 -o data/defect.h5
    ednn gen graphene --n 50 --labeller none -o data/raw.h5          # structures only
    ednn gen label data/raw.h5 -o data/raw_tersoff.h5 --labeller tersoff   # label them (resumable)
    ednn gen ising --L 8 --temperatures 1.5:3.5:21 --n-per-T 200 -o data/ising8.h5
    ednn gen aluminium --n 8 --set size=2 --set temperature=933 --labeller-opt temperature=298 -o data/al32.h5
    ednn gen convert OUTCAR data/vasp.h5        # or x.extxyz / x.db -> .h5, .h5 -> .extxyz / .h5
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..atoms import bulk, structures
from ..atoms.ising import sample_configs
from ..atoms.labellers import Labeller, get_labeller
from ..atoms.labellers.base import checkpoints_beside
from ..data import Dataset, DatasetWriter, convert, label_dataset, write_image_dataset
from ..errors import BackendError, ConfigError, EdnnError, InputError

SPECIAL = ("ising", "convert", "label", "aluminium")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ednn gen``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("Examples\n--------\n::\n", 1)[-1]
    parser.add_argument(
        "kind",
        help=f"structure kind ({', '.join(structures.KINDS)}: see ednn.atoms.structures), "
        "'aluminium' (fcc Al snapshots for LDOS labels; --set size=, temperature=), "
        "'label' (label an existing dataset), 'ising', or 'convert'",
    )
    parser.add_argument("paths", nargs="*", help="for 'convert': SRC DST; for 'label': IN.h5")
    parser.add_argument("-o", "--out", help="output HDF5 file (e.g. data/graphene.h5)")
    parser.add_argument("--n", type=int, default=100, help="number of structures (total, incl. finished ones)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (>= 0); record i depends only on (seed, i)")
    parser.add_argument("--labeller", default=None,
                        help="tersoff (default; tersoff-ilp for the bilayer kind), tersoff-ilp, rebo, lcbop, xtb, "
                        "gpaw, gpaw-ldos (DFT with the LDOS and density; default for aluminium), "
                        "or none (structures only; defects stay unrelaxed)")
    parser.add_argument(
        "--labeller-opt", action="append", default=[], metavar="KEY=VALUE", help="labeller setting (repeatable)"
    )
    parser.add_argument("--size", help="atom-count range of the cells, 'LO,HI' (default: the builder's)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="extra option of ednn.atoms.structures.generate, value parsed as JSON (repeatable): "
        + ", ".join(k for k in structures.GENERATE_OPTIONS if k not in ("calc", "n_atoms")),
    )
    parser.add_argument("--restart", action="store_true", help="discard an existing file and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = parser.add_argument_group("ising")
    g.add_argument("--L", type=int, default=8, help="lattice size L (L x L spins)")
    g.add_argument(
        "--temperatures", default="1.5:3.5:21",
        help="'lo:hi:count' (inclusive linspace) or comma-separated values (J = k_B = 1)",
    )
    g.add_argument("--n-per-T", type=int, default=100, help="configurations per temperature")
    g.add_argument("--algorithm", default="wolff", choices=["wolff", "metropolis"], help="sampler")
    g.add_argument("--sweeps", type=int, default=2, help="sweeps between stored configurations of a chain")
    g.add_argument("--equil", type=int, default=None, help="equilibration sweeps (default: sampler's)")


def _kv(items: list[str], what: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict; values parsed as JSON, else kept as strings."""
    out: dict[str, Any] = {}
    for it in items:
        if "=" not in it or not it.split("=", 1)[0].strip():
            raise ConfigError(f"{what} {it!r} must look like KEY=VALUE (e.g. {what} a=2.46)")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v  # a plain word; the option's check says whether a string is allowed
    return out


def _temperatures(spec: str) -> np.ndarray:
    try:
        if ":" in spec:
            lo, hi, cnt = spec.split(":")
            return np.round(np.linspace(float(lo), float(hi), int(cnt)), 6)
        return np.array([float(x) for x in spec.split(",") if x.strip()])
    except ValueError as e:
        raise ConfigError(f"--temperatures {spec!r}: give 'lo:hi:count' or 'T1,T2,...' ({e})") from e


def _size(spec: str | None) -> tuple[int, int] | None:
    if spec is None:
        return None
    try:
        parts = [int(x) for x in spec.replace("-", ",").split(",")]
    except ValueError as e:
        raise ConfigError(f"--size {spec!r}: give the atom-count range as LO,HI (e.g. 8,200)") from e
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not 0 < parts[0] <= parts[1]:
        raise ConfigError(f"--size {spec!r}: need 0 < LO <= HI")
    return parts[0], parts[1]


def _jsonable(d: dict) -> dict:
    """The JSON-serialisable entries of ``d`` (NumPy values as plain ones); objects are not data."""
    out = {}
    for k, v in d.items():
        try:
            json.dumps(v, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
        except (TypeError, ValueError):
            continue
        out[k] = v.tolist() if hasattr(v, "tolist") else v
    return out


def _labeller(name: str, opts: list[str]) -> Labeller | None:
    """The labeller named on the command line, set up now so that bad settings fail before any file exists."""
    if name.lower() == "none":
        if opts:
            raise ConfigError("--labeller-opt given with --labeller none; drop it or name a labeller")
        return None
    lab = get_labeller(name, **_kv(opts, "--labeller-opt"))
    lab.prepare()
    return lab


def _label_one(labeller: Labeller, atoms: Any, where: str) -> dict[str, Any]:
    """Label ``atoms``; a failure names the record (``where``) and keeps the chain."""
    try:
        return labeller.label(atoms)
    except EdnnError as e:
        raise type(e)(f"labelling {where} ({len(atoms)} atoms) failed: {e}") from e
    except Exception as e:  # noqa: BLE001 - a labeller backend may raise anything; the chain keeps it
        raise BackendError(f"labelling {where} ({len(atoms)} atoms) failed: {type(e).__name__}: {e}") from e


def _bar(args: argparse.Namespace, total: int, initial: int, desc: str):
    if args.no_progress:
        return None
    from tqdm import tqdm  # noqa: PLC0415 - only with a progress bar

    return tqdm(total=total, initial=initial, desc=desc, unit="struct", file=sys.stderr)


def run_convert(args: argparse.Namespace) -> int:
    """``ednn gen convert SRC DST``."""
    if len(args.paths) != 2:
        raise InputError("usage: ednn gen convert SRC DST (e.g. OUTCAR data/vasp.h5 or data/x.h5 x.extxyz)")
    t0 = time.time()
    dst = convert(args.paths[0], args.paths[1])
    print(f"wrote {dst} in {time.time() - t0:.1f} s", file=sys.stderr)
    return 0


def run_label(args: argparse.Namespace) -> int:
    """``ednn gen label IN.h5 -o OUT.h5 --labeller NAME``: label an existing dataset, resumably."""
    if len(args.paths) != 1 or not args.out:
        raise InputError("usage: ednn gen label IN.h5 -o OUT.h5 [--labeller tersoff] (OUT gets the labels)")
    with Dataset(args.paths[0]) as ds:  # a missing or broken input fails here, before OUT exists
        n = len(ds)
    labeller = _labeller(args.labeller or "tersoff", args.labeller_opt)
    if labeller is None:
        raise ConfigError("ednn gen label needs a labeller; --labeller none labels nothing")
    bars: list[Any] = []

    def progress(i: int) -> None:  # the bar starts at the first new record (after a resume: not at 0)
        if not bars:
            bars.append(_bar(args, n, i, f"label {args.paths[0]}"))
        if bars[0] is not None:
            bars[0].update(1)

    t0 = time.time()
    try:
        res = label_dataset(args.paths[0], args.out, labeller, resume=not args.restart, on_record=progress)
    finally:
        if bars and bars[0] is not None:
            bars[0].close()
    print(f"{args.out}: {res['n_records']} records labelled with {labeller.name} "
          f"({res['new']} new in {time.time() - t0:.1f} s)", file=sys.stderr)
    return 0


def run_ising(args: argparse.Namespace) -> int:
    """``ednn gen ising``: sample spin configurations and write an image dataset."""
    if not args.out:
        raise InputError("give the output file with -o/--out (e.g. -o data/ising8.h5)")
    temps = _temperatures(args.temperatures)
    t0 = time.time()
    r = sample_configs(
        args.L, temps, args.n_per_T, seed=args.seed, algorithm=args.algorithm, n_sweeps=args.sweeps,
        n_equil=args.equil, progress=not args.no_progress,
    )
    meta = {
        "model": "ising",
        "energy": "E = -J sum_<ij> s_i s_j, periodic, each bond once",
        "J": 1.0,
        "L": args.L,
        "temperatures": temps.tolist(),
        "n_per_T": args.n_per_T,
        "algorithm": args.algorithm,
        "n_sweeps": args.sweeps,
        "seed": args.seed,
        "units": {"energy": "J", "temperature": "J/k_B"},
    }
    write_image_dataset(
        args.out, r["spins"], r["energy"], meta,
        columns={"temperature": r["temperature"], "magnetization": r["magnetization"]},
    )
    print(f"wrote {len(r['energy'])} {args.L}x{args.L} configurations to {args.out} "
          f"in {time.time() - t0:.1f} s", file=sys.stderr)
    return 0


def _generate_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--set``/``--size`` options of :func:`~ednn.atoms.structures.generate`, checked."""
    kw = _kv(args.set, "--set")
    valid = sorted(k for k in structures.GENERATE_OPTIONS if k != "calc")
    for key, flag in (("n", "--n"), ("seed", "--seed"), ("start", "(resuming is automatic)"), ("kind", "KIND"),
                      ("calc", "--labeller")):
        if key in kw:
            raise ConfigError(f"--set {key}=...: not an option here; use {flag}. Options for --set: {valid}")
    unknown = sorted(set(kw) - set(valid))
    if unknown:
        raise ConfigError(f"--set {', '.join(unknown)}: unknown option(s) of generate(); valid options are {valid}")
    size = _size(args.size)
    if size is not None:
        if "n_atoms" in kw:
            raise ConfigError("give the atom-count range once: --size LO,HI or --set n_atoms=[LO,HI]")
        kw["n_atoms"] = size
    return kw


def run_structures(args: argparse.Namespace) -> int:
    """``ednn gen KIND``: build, label and append structures, resumably."""
    if args.kind not in structures.KINDS:
        raise ConfigError(
            f"unknown structure kind {args.kind!r}; valid kinds are {list(structures.KINDS)} plus {list(SPECIAL)}"
        )
    if not args.out:
        raise InputError(f"give the output file with -o/--out (e.g. -o data/{args.kind}.h5)")
    if args.n < 1:
        raise InputError(f"--n must be >= 1, got {args.n}")
    kw = _generate_options(args)
    if args.labeller is None:  # bilayers need the interlayer potential; everything else the plain Tersoff
        args.labeller = "tersoff-ilp" if args.kind == "bilayer" else "tersoff"
    labeller = _labeller(args.labeller, args.labeller_opt)
    # the labeller relaxes defects and drives MD: the same relaxation whatever md_fraction is
    structures.check_generate_args(args.kind, args.n, args.seed, **kw, calc=labeller)
    gen_meta = {"kind": args.kind, "seed": args.seed, "kwargs": _jsonable(kw),
                "defects_relaxed": labeller is not None and kw.get("relax_defects", True)}
    meta = {"generator": gen_meta, "labeller": None if labeller is None else labeller.metadata(),
            **_energy_grid(labeller)}
    return _write_records(args, meta, labeller, lambda start: structures.generate(
        args.kind, args.n, args.seed, start=start, calc=labeller, **kw))


def _energy_grid(labeller: Labeller | None) -> dict[str, Any]:
    """``{"energy_grid": ...}`` for the metadata of a dataset whose labeller makes an LDOS, else ``{}``."""
    settings = getattr(labeller, "settings", None) or {}
    if settings.get("energy_grid") and not settings.get("density_only"):
        return {"energy_grid": settings["energy_grid"]}
    return {}


def _write_records(args: argparse.Namespace, meta: dict[str, Any], labeller: Labeller | None,
                   make: Callable[[int], Iterator[Any]]) -> int:
    """Label the structures ``make(start)`` yields and append them to ``args.out``, resumably, with a progress bar.

    A labeller's per-voxel targets and per-record info (``label()["targets"]``,
    ``["info"]``) go into the record with the structure's own info; each
    record's info also gets ``label_seconds``.
    """
    checkpoints_beside(labeller, args.out)  # a long SCF resumes mid-record after a kill
    with DatasetWriter(args.out, metadata=meta, resume=not args.restart) as w:
        start = w.n_records
        if start >= args.n:
            print(f"{args.out} already holds {start} >= {args.n} records; nothing to do", file=sys.stderr)
            return 0
        bar = _bar(args, args.n, start, f"gen {args.kind}")
        t0 = time.time()
        for i, atoms in enumerate(make(start), start):
            lab: dict[str, Any] = {}
            info = _jsonable(atoms.info)
            if labeller is not None:
                t1 = time.perf_counter()
                lab = _label_one(labeller, atoms, f"record {i} ({args.kind})")
                if lab.get("stress") is None:
                    info["stress_absent"] = lab.get("stress_absent")
                info.update(lab.get("info") or {})
                info["label_seconds"] = round(time.perf_counter() - t1, 3)
            w.append(atoms, energy=lab.get("energy"), forces=lab.get("forces"), stress=lab.get("stress"),
                     targets=lab.get("targets"), info=info or None)
            if labeller is not None:
                labeller.committed(atoms)
            if bar is not None:
                bar.update(1)
                if labeller is not None:
                    bar.set_postfix_str(f"last {info['label_seconds']:.1f} s/record")
        if bar is not None:
            bar.close()
        n_done = w.n_records
    print(f"{args.out}: {n_done} records ({n_done - start} new in {time.time() - t0:.1f} s)", file=sys.stderr)
    return 0


ALUMINIUM_OPTIONS = ("size", "temperature", "a", "steps", "timestep")


def run_aluminium(args: argparse.Namespace) -> int:
    """``ednn gen aluminium``: fcc Al snapshots from EMT MD, labelled (default ``gpaw-ldos``), resumably."""
    if not args.out:
        raise InputError("give the output file with -o/--out (e.g. -o data/al32_298K.h5)")
    if args.n < 1:
        raise InputError(f"--n must be >= 1, got {args.n}")
    if args.size is not None:
        raise ConfigError("--size is for sheets; give the aluminium cell with --set size=2 (4 * size^3 atoms)")
    kw = _kv(args.set, "--set")
    unknown = sorted(set(kw) - set(ALUMINIUM_OPTIONS))
    if unknown:
        raise ConfigError(f"--set {', '.join(unknown)}: unknown option(s) of aluminium_snapshots; valid options "
                          f"are {list(ALUMINIUM_OPTIONS)} (e.g. --set size=2 --set temperature=933)")
    list(bulk.aluminium_snapshots(0, seed=args.seed, **kw))  # checks the options before any file exists
    labeller = _labeller(args.labeller or "gpaw-ldos", args.labeller_opt)
    meta = {"generator": {"kind": "aluminium", "seed": args.seed, "kwargs": _jsonable(kw)},
            "labeller": None if labeller is None else labeller.metadata(), **_energy_grid(labeller)}
    return _write_records(args, meta, labeller,
                          lambda start: bulk.aluminium_snapshots(args.n, seed=args.seed, start=start, **kw))


def run(args: argparse.Namespace) -> int:
    """Dispatch ``ednn gen``."""
    if args.seed < 0:
        raise ConfigError(f"--seed {args.seed}: seeds are integers >= 0")
    if args.kind == "convert":
        return run_convert(args)
    if args.kind == "label":
        return run_label(args)
    if args.paths:
        raise InputError(f"unexpected extra arguments {args.paths}; only 'convert' and 'label' take paths")
    if args.kind == "ising":
        return run_ising(args)
    if args.kind == "aluminium":
        return run_aluminium(args)
    return run_structures(args)
