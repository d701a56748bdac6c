"""Horovod data parallelism, launched for real: `horovodrun -np 2 -H localhost:2 --gloo` on CPU.

Runs in the default `make test` (the Makefile builds Horovod first with `make horovod`);
skipped, with the reason, only where Horovod is not installed.

The training entry is :mod:`ednn.parallel.check`: a tiny, deterministic image-mode
EDNN on periodic Ising configurations trained with :func:`ednn.train.fit`.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.horovod

ROOT = Path(__file__).resolve().parents[1]
HOROVODRUN = Path(sys.executable).parent / "horovodrun"
if not HOROVODRUN.exists():
    HOROVODRUN = Path(shutil.which("horovodrun") or HOROVODRUN)
HAVE_HOROVOD = importlib.util.find_spec("horovod") is not None and HOROVODRUN.exists()
if not HAVE_HOROVOD:
    pytest.skip("Horovod is not installed in this environment: run `make horovod` "
                "(builds the patched 0.28.1 wheel into .venv)", allow_module_level=True)

LR = 3e-3
EPOCHS = 3
# 48 training images, global batch 8 -> 6 steps per epoch; 7 validation images (odd:
# per-rank averages of averages would differ from the global average).
COMMON = ["--epochs", str(EPOCHS), "--n-train", "48", "--n-val", "7", "--batch", "8",
          "--warmup-epochs", "1", "--seed", "3", "--threads", "1"]
# the parallel run scales the LR by sqrt(2); the serial reference gets that LR directly
PARALLEL = COMMON + ["--lr", repr(LR), "--lr-scaling", "sqrt"]
SERIAL = COMMON + ["--lr", repr(LR * math.sqrt(2)), "--lr-scaling", "none"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HOROVOD_", "OMPI_", "PMI_", "PMIX_", "MV2_", "SLURM_"))}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONHASHSEED="0",
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
               PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""))
    return env


def _run(cmd: list[str], timeout: float) -> tuple[int, str, float]:
    """Run in a new session; on timeout kill the whole process group and fail (a hang)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd[:6])} ... hung for more than {timeout} s:\n{out[-3000:]}")
    return proc.returncode, out, time.monotonic() - t0


def _horovod(args: list[str], timeout: float = 240) -> tuple[int, str, float]:
    return _run([str(HOROVODRUN), "-np", "2", "-H", "localhost:2", "--gloo", "--start-timeout", "120",
                 sys.executable, "-m", "ednn.parallel.check"] + args, timeout)


def _weights(path: Path) -> list[np.ndarray]:
    with np.load(path) as z:
        return [z[f"w{i}"] for i in range(len(z.files))]


def _history(out: Path) -> dict:
    return json.loads((out / "history.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("hvd")
    ser, par = base / "serial", base / "parallel"
    rc, log, _ = _run([sys.executable, "-m", "ednn.parallel.check", "--backend", "serial",
                       "--out", str(ser)] + SERIAL, timeout=240)
    assert rc == 0, log[-3000:]
    rc, log, _ = _horovod(["--out", str(par)] + PARALLEL)
    assert rc == 0, log[-3000:]
    return ser, par


def test_two_ranks_identical_and_equal_to_serial(runs):
    assert _history(runs[1])["controller"] == "gloo"  # horovodrun --gloo, even where Horovod also has MPI
    _assert_two_ranks_equal_serial(*runs)


def _assert_two_ranks_equal_serial(ser: Path, par: Path) -> None:
    """Ranks bit-identical, equal to serial, LR scaled once, metrics global, only the chief writes."""
    hs, hp = _history(ser), _history(par)
    assert hs["size"] == 1 and hp["size"] == 2          # really ran on 2 Horovod ranks
    w0, w1 = _weights(par / "weights_rank0.npz"), _weights(par / "weights_rank1.npz")
    ws = _weights(ser / "weights_rank0.npz")
    assert len(w0) == len(w1) == len(ws) > 0
    for a, b in zip(w0, w1):
        assert np.array_equal(a, b)                    # ranks hold bit-identical weights
    for s, p in zip(ws, w0):                           # parallel == serial, same global batch
        scale = float(np.max(np.abs(s)))
        if scale == 0.0:
            assert np.array_equal(s, p)
        else:
            rel = float(np.max(np.abs(s - p))) / scale
            assert rel <= 1e-4, f"parallel differs from serial by {rel:.3g} (relative)"
    # training did something (far beyond the tolerance above)
    assert hp["history"][-1]["loss"] < 0.95 * hp["history"][0]["loss"]
    # LR: sqrt(2) scaling applied exactly once, warm-up halves epoch 1
    lrs, lrp = [r["lr"] for r in hs["history"]], [r["lr"] for r in hp["history"]]
    target = LR * math.sqrt(2)
    np.testing.assert_allclose(lrp, [target / 2, target, target], rtol=1e-6)
    np.testing.assert_allclose(lrp, lrs, rtol=1e-7)
    # global metrics are exact global averages (7 validation images split 4 + 3)
    for rs, rp in zip(hs["history"], hp["history"]):
        for key in ("loss", "mae_mev", "val_mae_mev", "val_rmse_mev"):
            assert rp[key] == pytest.approx(rs[key], rel=1e-5), key
    # only the chief wrote logs/checkpoints (single files, no per-rank copies)
    assert (par / "checkpoint.npz").exists() and (par / "log.csv").exists()
    assert sorted(p.name for p in par.iterdir() if p.name.startswith("log")) == ["log.csv", "log.json"]


MPIRUN = shutil.which("mpirun")
# `make horovod-mpi` builds Horovod with MPI into .venv-mpi, apart from .venv (scripts/mpi_venv.sh says why)
MPI_PYTHON = Path(os.environ.get("EDNN_MPI_PYTHON", ROOT / ".venv-mpi" / "bin" / "python"))


def _mpi_built() -> bool:
    if not MPI_PYTHON.exists():
        return False
    rc = subprocess.run([str(MPI_PYTHON), "-c", "import horovod.tensorflow as h; raise SystemExit(0 if h.mpi_built() "
                         "else 1)"], env=_env(), capture_output=True).returncode
    return rc == 0


@pytest.mark.slow
def test_mpirun_two_ranks_equal_serial(runs, tmp_path):
    """The MPI-built Horovod (``make horovod-mpi``) launched by ``mpirun -np 2``, as on a cluster: the same
    2-rank training as above, equal to serial. test-slow builds it; elsewhere the skip says how."""
    if MPIRUN is None or not _mpi_built():
        pytest.skip(f"needs Open MPI and Horovod built with MPI in {MPI_PYTHON}: run `make horovod-mpi`")
    par = tmp_path / "mpi"
    # as root Open MPI wants both flags; --bind-to none: the ranks' TensorFlow threads are not pinned to one core
    cmd = [MPIRUN, "-np", "2", "--bind-to", "none", "--oversubscribe", "-x", "PYTHONPATH", "-x", "PATH",
           "-x", "TF_CPP_MIN_LOG_LEVEL", "-x", "CUDA_VISIBLE_DEVICES", "-x", "PYTHONHASHSEED"]
    if os.geteuid() == 0:
        cmd += ["--allow-run-as-root"]
    rc, log, _ = _run(cmd + [str(MPI_PYTHON), "-m", "ednn.parallel.check", "--out", str(par)] + PARALLEL, timeout=300)
    assert rc == 0, log[-3000:]
    assert _history(par)["controller"] == "mpi"  # Horovod's MPI controller, not Gloo
    _assert_two_ranks_equal_serial(runs[0], par)


# slow (~60 s: three horovodrun launches; the default suite keeps test_two_ranks_identical_and_equal_to_serial)
@pytest.mark.slow
def test_rank_death_ends_job_fast_and_resume_recovers(runs, tmp_path):
    _, par = runs
    out = tmp_path / "killed"
    # rank 1 SIGKILLs itself after its 8th step (epoch 2; epoch 1's checkpoint exists)
    rc, log, dt = _horovod(["--out", str(out), "--die-rank", "1", "--die-step", "8", "--die-signal"]
                           + PARALLEL, timeout=180)
    assert rc != 0, log[-3000:]
    assert "simulated crash" in log
    crash_t = float(re.search(r"simulated crash after step 8 at t=([0-9.]+)", log).group(1))
    assert time.time() - crash_t < 60, "the job took over a minute to end after the crash"
    assert "exited with non-zero status" in log and "Exit code: 137" in log, log[-3000:]
    assert dt < 180
    assert not (out / "weights_rank0.npz").exists()     # rank 0 did not carry on alone
    with np.load(out / "checkpoint.npz") as z:          # the chief's last checkpoint is intact
        assert json.loads(bytes(z["state"]).decode())["epoch"] == 0
    # resume under Horovod: ends exactly where the uninterrupted parallel run ended
    rc, log, _ = _horovod(["--out", str(out), "--resume"] + PARALLEL)
    assert rc == 0, log[-3000:]
    for a, b, c in zip(_weights(par / "weights_rank0.npz"), _weights(out / "weights_rank0.npz"),
                       _weights(out / "weights_rank1.npz")):
        assert np.array_equal(a, b) and np.array_equal(b, c)
    h = _history(out)["history"]
    assert [r["epoch"] for r in h] == [1, 2, 3]
    # the LR was not scaled a second time on resume
    target = LR * math.sqrt(2)
    np.testing.assert_allclose([r["lr"] for r in h], [target / 2, target, target], rtol=1e-6)


def test_launcher_world_mismatch_is_an_error(tmp_path):
    """`srun -n 2` with a Horovod that cannot join that world must not train as 2 serial jobs."""
    env = _env()
    env.update(SLURM_JOB_ID="1", SLURM_STEP_ID="0", SLURM_STEP_NUM_TASKS="2", SLURM_PROCID="0")
    code = ("from ednn.parallel import get_backend\n"
            "try:\n    get_backend('auto')\nexcept Exception as e:\n"
            "    print(type(e).__name__, e)\n    raise SystemExit(3)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 3, p.stdout + p.stderr[-2000:]
    assert "BackendError" in p.stdout and "started 2 processes" in p.stdout
    assert "horovodrun" in p.stdout                     # says what to do instead


FORCE_SCRIPT = """
import os, sys, numpy as np
from ednn.atoms import structures as st
from ednn.atoms.labellers import get_labeller
from ednn.train import train
backend, out = sys.argv[1], sys.argv[2]
lab = get_labeller("tersoff")
structs = list(st.generate("mixed", 40, seed=0, n_atoms=(8, 24)))
labels = [lab.label(a) for a in structs]
cfg = {"out": out, "seed": 0, "model": {"layers": 2, "filters": 8, "readout": [8]}, "data": {"val_fraction": 0.2},
       "train": {"epochs": 3, "batch_size": 8, "force_weight": 5.0, "progress": False, "backend": backend,
                 "lr_scaling": "none", "threads": 1}}
m = train(cfg, structures=structs, energies=np.array([o["energy"] for o in labels]),
          forces=[o["forces"] for o in labels])
np.savez(os.path.join(out, f"weights_rank{os.environ.get('HOROVOD_RANK', '0')}.npz"),
         **{f"w{i}": w for i, w in enumerate(m.network.get_weights())})
"""


def _script_serial_vs_two_ranks(tmp_path: Path, source: str, keys: tuple[str, ...],
                                args: tuple[str, ...] = ()) -> None:
    """Run a training script (arguments: backend, out folder, ``args``) serially and under horovodrun -np 2: the
    ranks' weights are identical and within 1e-4 of the serial ones, and the per-epoch ``keys`` of log.json
    agree to 1e-4."""
    script = tmp_path / "train_script.py"
    script.write_text(source)
    ser, par = tmp_path / "ser", tmp_path / "par"
    rc, log, _ = _run([sys.executable, str(script), "serial", str(ser), *args], 240)
    assert rc == 0, log[-3000:]
    rc, log, _ = _run([str(HOROVODRUN), "-np", "2", "-H", "localhost:2", "--gloo", "--start-timeout", "120",
                       sys.executable, str(script), "horovod", str(par), *args], 240)
    assert rc == 0, log[-3000:]
    w0, w1 = _weights(par / "weights_rank0.npz"), _weights(par / "weights_rank1.npz")
    ws = _weights(ser / "weights_rank0.npz")
    for a, b in zip(w0, w1, strict=True):
        assert np.array_equal(a, b)
    for s, p in zip(ws, w0, strict=True):  # measured (forces): 1.6e-6 relative
        scale = float(np.max(np.abs(s)))
        assert float(np.max(np.abs(s - p))) <= 1e-4 * max(scale, 1e-12)
    hs, hp = (json.loads((d / "log.json").read_text()) for d in (ser, par))
    for rs, rp in zip(hs, hp, strict=True):
        for key in keys:
            assert rp[key] == pytest.approx(rs[key], rel=1e-4), key


# slow (~55 s; the gradient allreduce of every loss is in the default energy and per-voxel 2-rank tests)
@pytest.mark.slow
def test_force_training_two_ranks_equal_serial(tmp_path):
    """Training on forces (per-structure gradients averaged, then allreduced) is data parallel too."""
    pytest.importorskip("lammps")
    _script_serial_vs_two_ranks(tmp_path, FORCE_SCRIPT, ("loss", "force_mae_mev_a", "val_force_mae_mev_a",
                                                         "val_mae_mev"))


MODEL_SCRIPT = """
import sys
import numpy as np
from ednn.config import DEFAULTS
from ednn.image.grid import GridSpec
from ednn.predict.model import EnergyModel, receptive_radius
g = {k: v for k, v in DEFAULTS["grid"].items() if v is not None}
g["species"] = ("B", "C", "N")
g["context"] = max(receptive_radius({}), 1)
m = EnergyModel.create({}, GridSpec(**g), seed=0)
m.refs = np.array([-6.0, -7.4, -7.0])
m.scale = 0.5
m.save(sys.argv[1])
from ednn.atoms.large import paper_sheet
import ase.io
ase.io.write(sys.argv[2], paper_sheet(12000, seed=1), format="extxyz")
"""


# slow (~40 s; the strips' sum is in tests/test_predict.py serially)
@pytest.mark.slow
def test_streamed_prediction_two_ranks_equal_one(tmp_path):
    """horovodrun -np 2 ednn predict --map: the ranks share the strips; energy to 1e-9, map and regions equal."""
    script = tmp_path / "make_model.py"
    script.write_text(MODEL_SCRIPT)
    model, sheet = tmp_path / "model", tmp_path / "sheet.xyz"
    rc, log, _ = _run([sys.executable, str(script), str(model), str(sheet)], 240)
    assert rc == 0, log[-3000:]
    ednn_cli = [sys.executable, "-m", "ednn.cli", "predict", str(model), str(sheet), "--map-block", "8", "--map"]
    rc, log, _ = _run(ednn_cli + [str(tmp_path / "one")], 240)
    assert rc == 0, log[-3000:]
    rc, log, _ = _run([str(HOROVODRUN), "-np", "2", "-H", "localhost:2", "--gloo", "--start-timeout", "120"]
                      + ednn_cli + [str(tmp_path / "two")], 240)
    assert rc == 0, log[-3000:]
    assert "on 2 ranks" in log
    one, two = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert two["ranks"] == 2 and "ranks" not in one
    assert two["energy"] == pytest.approx(one["energy"], rel=1e-9, abs=0)
    m1, m2 = (np.load(tmp_path / d / "energy_map.npy") for d in ("one", "two"))
    np.testing.assert_allclose(m2, m1, rtol=1e-9, atol=1e-12)
    r1, r2 = (json.loads((tmp_path / d / "regions.json").read_text()) for d in ("one", "two"))
    assert [r["n_atoms"] for r in r1] == [r["n_atoms"] for r in r2]


VOXEL_SCRIPT = """
import os, sys, numpy as np
import ednn
from ase.build import bulk
from ednn.train import train
backend, out = sys.argv[1], sys.argv[2]
fine = ednn.GridSpec(species=("Al",), spacing=4.04 / 12, sigma=0.6, dim=3)
structs, labels = [], []
for i in range(10):  # 8 training structures: 2 steps of 4, 2 per rank
    a = bulk("Al", "fcc", a=4.04, cubic=True)
    a.rattle(0.15, seed=i)
    x = ednn.rasterize(a, spec=fine)[..., :1]               # (12, 12, 12, 1) on the fine grid
    e = np.linspace(-1.0, 2.0, 6)
    structs.append(a)
    labels.append((x * np.exp(-(e - x) ** 2)).astype(np.float32))  # an LDOS-like local functional, 6 channels
cfg = {"out": out, "seed": 0, "data": {"targets": ["ldos"], "val_fraction": 0.2, "test_fraction": 0.0},
       "grid": {"species": ["Al"], "dim": 3, "spacing": 4.04 / 6, "sigma": 0.6, "focus": 3},
       "model": {"layers": 2, "filters": 6, "readout": [8], "upsample": 2, "vacuum_zero": False,
                 "field_scale": "field"},
       "train": {"epochs": 3, "batch_size": 4, "progress": False, "backend": backend, "lr_scaling": "none",
                 "threads": 1, "field_integral_weight": 10.0}}
m = train(cfg, structures=structs, fields={"ldos": labels})
np.savez(os.path.join(out, f"weights_rank{os.environ.get('HOROVOD_RANK', '0')}.npz"),
         **{f"w{i}": w for i, w in enumerate(m.network.get_weights())})
"""


def test_per_voxel_ldos_training_two_ranks_equal_serial(tmp_path):
    """Per-voxel (LDOS-like, upsampled 3D) training, with the cell-integral loss term, is data parallel like the
    energy: 2 ranks hold identical weights, equal to the serial run's, with the same per-epoch losses and field
    errors."""
    _script_serial_vs_two_ranks(tmp_path, VOXEL_SCRIPT, ("loss", "val_loss", "val_field_ldos_rmse"))


LDOS_MOMENT_SCRIPT = """
import os, sys, numpy as np
from ednn.train import train
backend, out, data = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = {"out": out, "seed": 0, "data": {"train": [data], "targets": ["ldos"], "val_fraction": 0.34,
                                       "test_fraction": 0.0},
       "grid": {"species": ["Al"], "dim": 3, "spacing": 4.04 / 6, "sigma": 0.6, "cutoff": 3.0, "focus": 3},
       "model": {"layers": 2, "kernel": 3, "filters": 6, "readout": [8], "upsample": 2, "vacuum_zero": False,
                 "field_scale": "field"},
       "train": {"epochs": 3, "batch_size": 2, "progress": False, "backend": backend, "lr_scaling": "none",
                 "threads": 1, "deterministic": True, "field_integral_weight": 10.0, "field_moment_weight": 30.0,
                 "field_band_weight": 7.0, "field_density_weight": 3.0, "clip_norm": 1.0}}
m = train(cfg)
np.savez(os.path.join(out, f"weights_rank{os.environ.get('HOROVOD_RANK', '0')}.npz"),
         **{f"w{i}": w for i, w in enumerate(m.network.get_weights())})
"""


# slow (~45 s; per-voxel 2-rank training stays in the default suite: test_per_voxel_ldos_training_two_ranks_equal_serial)
@pytest.mark.slow
def test_ldos_moment_training_two_ranks_equal_serial(tmp_path, al_ldos_set):
    """LDOS training on GPAW labels with every physics term of the loss (cumulative DOS, electron and band
    moments, per-voxel density; gradient clipping) is data parallel too: one cell per rank per step, the ranks'
    weights identical and equal to the serial run's."""
    path, _ = al_ldos_set
    _script_serial_vs_two_ranks(tmp_path, LDOS_MOMENT_SCRIPT, ("loss", "val_loss", "val_field_ldos_rmse"),
                                args=(str(path),))
