"""The command line: --version, help texts, ``ednn config --show``, ``ednn train`` overrides and run-folder
protection, ``ednn evaluate`` with non-finite forces and vector figures, ``make help``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from ednn.cli import VERBS, build_parser, main
from ednn.cli.config import EXAMPLE_CONFIG
from ednn.config import DEFAULTS, load_config

ROOT = Path(__file__).resolve().parents[1]

#: a tiny, fast training configuration (flat toy sheets: no height channels)
TINY_CFG = {
    "seed": 0,
    "grid": {"spacing": 2.46 / 5, "sigma": 0.45, "heights": 0},
    "model": {"layers": 2, "filters": 8, "kernel": 3, "readout": [8]},
    "data": {"val_fraction": 0.25, "test_fraction": 0.0},
    "train": {"epochs": 2, "batch_size": 4, "learning_rate": 5e-3, "progress": False},
}


def toy_structures(n: int, seed: int = 0):
    """``n`` flat B/C/N sheets (2x2 to 3x3 graphene cells, 15 A vacuum), toy pair energies and random forces."""
    from ase.build import graphene
    from ase.neighborlist import neighbor_list

    rng = np.random.default_rng(seed)
    structs, E, F = [], [], []
    for i in range(n):
        at = graphene(formula="C2", a=2.46, vacuum=None).repeat((2 + i % 2, 2 + (i // 2) % 2, 1))
        at.cell[2] = [0, 0, 15.0]
        at.pbc = (True, True, False)
        at.numbers = rng.choice([5, 6, 7], size=len(at))
        at.positions[:, :2] += rng.normal(scale=0.05, size=(len(at), 2))
        _, _, d = neighbor_list("ijd", at, 2.2)
        structs.append(at)
        E.append(0.5 * np.sum((1.42 / d) ** 6 - 2 * (1.42 / d) ** 3) - 7.0 * len(at))
        F.append(rng.normal(size=(len(at), 3)))
    return structs, np.array(E), F


def write_dataset(path: str | os.PathLike, n: int = 8, seed: int = 0) -> str:
    """A labelled HDF5 dataset of :func:`toy_structures` (energies and forces)."""
    from ednn.data import DatasetWriter

    structs, E, F = toy_structures(n, seed)
    with DatasetWriter(str(path), metadata={"labeller": {"name": "toy"}}) as w:
        for a, e, f in zip(structs, E, F, strict=True):
            w.append(a, energy=float(e), forces=f)
    return str(path)


def write_config(path: Path, data: str, **train) -> str:
    cfg = json.loads(json.dumps(TINY_CFG))
    cfg["data"]["train"] = data
    cfg["train"].update(train)
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny model trained through ``ednn train`` (run folder, dataset, config path)."""
    d = tmp_path_factory.mktemp("cli")
    data = write_dataset(d / "toy.h5")
    cfg = write_config(d / "tiny.yaml", data)
    assert main(["train", cfg, "--out", str(d / "run")]) == 0
    return d / "run", data, cfg


def _help_section(text: str, start: str, end: str) -> str:
    """The indented block after the heading paragraph that starts with ``start``, up to ``end``."""
    block = text.split(start, 1)[1].split("\n\n", 1)[1].split(end, 1)[0]
    return textwrap.dedent(block)


# ------------------------------------------------------------------ no training
def test_version_and_top_help(capsys):
    import ednn

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"ednn {ednn.__version__}"
    assert main([]) == 0  # no verb: the help
    assert "usage: ednn" in capsys.readouterr().out


def test_top_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for verb, (_, help_) in VERBS.items():
        assert re.search(rf"^\s+{verb}\s+{re.escape(help_[:20])}", out, re.M), verb
    assert "--version" in out
    with pytest.raises(SystemExit) as e:
        main(["nosuchverb"])
    assert e.value.code == 2
    assert "unknown verb 'nosuchverb'" in capsys.readouterr().err


def test_train_help_shows_every_default_and_a_valid_example(tmp_path):
    text = build_parser("train").format_help()
    shown = yaml.safe_load(_help_section(text, "configuration (", "\nexample:"))
    assert shown == json.loads(json.dumps(DEFAULTS))  # every section and key, with its default
    assert set(shown) == {"out", "seed", "data", "grid", "model", "atoms", "train"}
    example = _help_section(text, "\nexample:", "`ednn config")
    assert example.strip() == textwrap.dedent(EXAMPLE_CONFIG).strip()
    p = tmp_path / "example.yaml"
    p.write_text(EXAMPLE_CONFIG)
    cfg = load_config(p)  # the example is a valid config (3e-3 is a number)
    assert cfg["train"]["learning_rate"] == 0.003 and cfg["train"]["epochs"] == 200 and cfg["out"] == "runs/bnc"
    assert cfg["model"]["filters"] == 32 and cfg["grid"]["spacing"] == 0.62375


def test_config_show_prints_the_resolved_config(tmp_path, capsys):
    p = tmp_path / "c.yaml"
    p.write_text("out: runs/x\ntrain: {epochs: 7, learning_rate: 1e-3}\nmodel: {layers: 3}\n")
    assert main(["config", "--show", str(p)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == json.loads(json.dumps(load_config(p)))
    assert shown["train"]["epochs"] == 7 and shown["train"]["learning_rate"] == 0.001
    assert shown["model"]["layers"] == 3 and shown["train"]["batch_size"] == DEFAULTS["train"]["batch_size"]
    assert main(["config", "--show", str(p), "--format", "json", "--epochs", "3", "--out", "elsewhere"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["train"]["epochs"] == 3 and shown["out"] == "elsewhere" and shown["model"]["layers"] == 3
    assert main(["config", "--show"]) == 0  # the defaults
    assert yaml.safe_load(capsys.readouterr().out) == json.loads(json.dumps(load_config(None)))
    # errors: nothing to show, a bad override, a bad file, a missing file -- all exit 2 with the reason
    assert main(["config"]) == 2
    assert "--show CONFIG" in capsys.readouterr().err
    assert main(["config", "--show", str(p), "--epochs", "0"]) == 2
    assert "train.epochs must be >= 1, got 0" in capsys.readouterr().err
    p.write_text("train: {epoch: 7}\n")
    assert main(["config", "--show", str(p)]) == 2
    assert "train.epoch" in capsys.readouterr().err
    assert main(["config", "--show", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_makefile_help_lists_every_target():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    text = (ROOT / "Makefile").read_text()
    targets = re.findall(r"^([A-Za-z0-9_-]+):(?!=)", text, re.M)
    undocumented = [t for t in targets if not re.search(rf"^{re.escape(t)}:.*## \S", text, re.M)]
    assert not undocumented, f"Makefile targets without a '## description': {undocumented}"
    phony = set(re.search(r"^\.PHONY:(.*)$", text, re.M).group(1).split())
    assert set(targets) == phony
    out = subprocess.run(["make", "-s", "-C", str(ROOT), "help"], capture_output=True, text=True, check=True).stdout
    listed = re.findall(r"^  make (\S+)\s+\S", out, re.M)
    assert sorted(listed) == sorted(targets) and len(listed) == len(targets) >= 14


# ------------------------------------------------------------- with training
def test_train_overrides_and_run_folder_protection(tiny_run, tmp_path, capsys):
    run, data, _ = tiny_run
    # the tiny run: 2 epochs from the file
    assert len(json.load(open(run / "log.json"))) == 2
    assert (run / "learning_curve.png").exists() and (run / "model" / "config.json").exists()
    # --epochs replaces the file's value before validation: a file with an invalid epochs is fine with --epochs 1
    bad = write_config(tmp_path / "bad.yaml", data, epochs=0)
    assert main(["train", bad]) == 2
    assert "train.epochs must be >= 1, got 0" in capsys.readouterr().err
    out = tmp_path / "run2"
    assert main(["train", bad, "--epochs", "1", "--out", str(out), "--format", "svg"]) == 0
    assert len(json.load(open(out / "log.json"))) == 1
    assert json.load(open(out / "config.json"))["train"]["epochs"] == 1
    assert (out / "learning_curve.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    capsys.readouterr()
    # a command-line value is validated like a file value
    assert main(["train", bad, "--epochs", "0", "--out", str(tmp_path / "run3")]) == 2
    assert "train.epochs must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "run3").exists()
    # plain `ednn train` refuses to overwrite a run folder that holds a run
    mtime = os.path.getmtime(out / "checkpoint.npz")
    assert main(["train", bad, "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out} already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert os.path.getmtime(out / "checkpoint.npz") == mtime
    with pytest.raises(SystemExit) as e:  # --resume and --overwrite exclude each other
        main(["train", bad, "--resume", "--overwrite"])
    assert e.value.code == 2
    capsys.readouterr()
    # --overwrite starts afresh (1 epoch, not resumed from the 1-epoch run)
    assert main(["train", bad, "--epochs", "1", "--out", str(out), "--overwrite"]) == 0
    assert [h["epoch"] for h in json.load(open(out / "log.json"))] == [1]
    assert os.path.getmtime(out / "checkpoint.npz") > mtime


def test_evaluate_counts_nonfinite_forces_and_writes_vector_figures(tiny_run, tmp_path, capsys):
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    import ednn
    from ednn.workflows.evaluate import evaluate

    run, _, _ = tiny_run
    model = ednn.load(str(run / "model"))
    structs, E, F = toy_structures(6, seed=5)
    F[2][1, 0] = np.nan  # the labeller failed on structure 2
    for a, e, f in zip(structs, E, F, strict=True):
        a.calc = SinglePointCalculator(a, energy=float(e), forces=f)
    xyz = str(tmp_path / "nan.extxyz")
    ase.io.write(xyz, structs, format="extxyz")
    with pytest.warns(UserWarning, match=r"forces of 1 of 6 structures .* contain NaN or inf \(records \[2\]\)"):
        m = evaluate(str(run / "model"), xyz, str(tmp_path / "ev"), fmt="pdf")
    ok = [0, 1, 3, 4, 5]
    df = np.concatenate([(p - F[i]).ravel() for p, i in zip(model.predict_forces([structs[i] for i in ok]), ok)])
    assert m["forces"]["n_structures"] == 5 and m["forces"]["n_structures_nonfinite"] == 1
    assert m["forces"]["nonfinite_records"] == [2] and m["forces"]["n_structures_without_forces"] == 0
    assert m["forces"]["n_components"] == df.size
    assert m["forces"]["mae_ev_per_a"] == pytest.approx(np.abs(df).mean(), rel=1e-6)
    n = np.array([len(a) for a in structs])
    assert m["mae_mev_per_atom"] == pytest.approx(1000 * np.mean(np.abs(model.predict_energies(structs) - E) / n),
                                                  rel=1e-6)
    assert (tmp_path / "ev" / "parity.pdf").read_bytes()[:5] == b"%PDF-"
    assert (tmp_path / "ev" / "learning_curve.pdf").read_bytes()[:5] == b"%PDF-"
    # the same through the CLI: the count is in the printed metrics, and an unknown format is refused
    with pytest.warns(UserWarning, match="NaN or inf"):
        assert main(["evaluate", str(run / "model"), xyz, "--out", str(tmp_path / "ev2")]) == 0
    assert json.loads(capsys.readouterr().out)["forces"]["n_structures_nonfinite"] == 1
    assert (tmp_path / "ev2" / "parity.png").exists()
    with pytest.raises(SystemExit):
        main(["evaluate", str(run / "model"), xyz, "--format", "jpg"])


def test_evaluate_hdf5_nonfinite_forces(tiny_run, tmp_path):
    import h5py

    from ednn.workflows.evaluate import dataset_forces, evaluate

    run, data, _ = tiny_run
    path = tmp_path / "nan.h5"
    shutil.copy(data, path)
    with h5py.File(path, "r+") as f:
        off = f["offsets"][:]
        f["forces"][off[3]] = np.nan  # first atom of record 3
    ref = dataset_forces(str(path))
    assert ref.nonfinite == [3] and ref.missing == [] and ref.usable == [0, 1, 2, 4, 5, 6, 7]
    with pytest.warns(UserWarning, match=r"records \[3\]"):
        m = evaluate(str(run / "model"), str(path), str(tmp_path / "ev"))
    assert m["forces"]["n_structures"] == 7 and m["forces"]["nonfinite_records"] == [3]
    # a dataset without forces: no force metrics, no warning
    from ednn.data import DatasetWriter

    structs, E, _ = toy_structures(3)
    with DatasetWriter(str(tmp_path / "nof.h5"), metadata={"labeller": {"name": "toy"}}) as w:
        for a, e in zip(structs, E, strict=True):
            w.append(a, energy=float(e))
    assert dataset_forces(str(tmp_path / "nof.h5")).missing == [0, 1, 2]
    assert "forces" not in evaluate(str(run / "model"), str(tmp_path / "nof.h5"), str(tmp_path / "ev3"))
