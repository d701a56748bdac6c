"""Backend interface: serial backend, sharding rules, launch detection, clear errors."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from ednn.errors import BackendError, ConfigError
from ednn.parallel import (
    SerialBackend,
    detect_launch,
    epoch_permutation,
    get_backend,
    scale_learning_rate,
    shard_indices,
)

LAUNCH_VARS = [
    "HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE",
    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_SIZE", "PMI_SIZE",
    "PMI_RANK", "MPI_LOCALRANKID", "SLURM_STEP_ID", "SLURM_STEPID", "SLURM_STEP_NUM_TASKS",
    "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_JOB_ID",
]


@pytest.fixture
def clean_env(monkeypatch):
    for key in LAUNCH_VARS:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


@pytest.fixture
def no_horovod(monkeypatch):
    """Make `import horovod.tensorflow` fail even where Horovod is installed."""
    monkeypatch.setitem(sys.modules, "horovod", None)
    monkeypatch.setitem(sys.modules, "horovod.tensorflow", None)
    import ednn.parallel as par

    monkeypatch.setattr(par, "_HOROVOD_BACKEND", None)


# ----------------------------------------------------------------- serial

def test_serial_backend_topology_and_identity_collectives(clean_env):
    import tensorflow as tf

    b = get_backend("auto")
    assert isinstance(b, SerialBackend)
    assert (b.rank, b.size, b.local_rank, b.is_chief) == (0, 1, 0, True)
    g = [tf.constant([1.0, 2.0]), None, tf.constant(3.0)]
    out = b.allreduce_gradients(g)
    assert out[1] is None and out[0] is g[0] and out[2] is g[2]
    # numpy / python inputs come back as exact float64 / int64 numpy
    s = b.allreduce_sum(np.float32(0.1))
    assert isinstance(s, np.floating) and s.dtype == np.float64
    assert b.allreduce_sum(7).dtype == np.int64 and b.allreduce_sum(7) == 7
    np.testing.assert_array_equal(b.allreduce_mean(np.array([1, 2])), [1, 2])
    t = tf.constant([4.0])
    assert b.allreduce_sum(t) is t
    v = tf.Variable([1.0, 2.0])
    b.broadcast_variables([v])
    np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])
    assert b.broadcast_object({"epoch": 3}) == {"epoch": 3}
    b.barrier()
    perm = np.array([4, 0, 3, 1, 2])
    np.testing.assert_array_equal(b.shard(perm), perm)
    assert b.local_batch_size(8) == 8
    assert b.scale_lr(1e-3, "linear") == 1e-3 and b.scale_lr(1e-3, "sqrt") == 1e-3
    if not tf.config.list_physical_devices("GPU"):
        assert b.pin_gpu() is None


# ----------------------------------------------------------------- sharding

@pytest.mark.parametrize("size", [2, 3, 4])
def test_strided_shards_rebuild_the_serial_global_batches(size):
    n, b = 24 * size, 3                     # n a multiple of the global batch B = b * size
    perm = epoch_permutation(n, seed=5, epoch=2)
    shards = [shard_indices(perm, r, size) for r in range(size)]
    assert all(len(s) == n // size for s in shards)
    B = b * size
    for j in range(n // B):
        union = np.concatenate([s[j * b:(j + 1) * b] for s in shards])
        assert sorted(union) == sorted(perm[j * B:(j + 1) * B])   # same global batch as serial


def test_shard_pads_by_wrapping_so_all_ranks_take_equal_steps():
    perm = np.arange(10)
    shards = [shard_indices(perm, r, 4) for r in range(4)]
    assert [len(s) for s in shards] == [3, 3, 3, 3]
    allidx = np.concatenate(shards)
    assert set(allidx) == set(range(10))                 # nothing dropped
    assert sorted(allidx) == sorted(list(range(10)) + [0, 1])  # wrap-around padding: 0 and 1 again
    # fewer samples than ranks: wrap several times, every rank still gets one
    assert [shard_indices(np.arange(2), r, 3).tolist() for r in range(3)] == [[0], [1], [0]]
    with pytest.raises(ConfigError):
        shard_indices(np.arange(0), 0, 2)
    with pytest.raises(ConfigError):
        shard_indices(np.arange(4), 2, 2)


def test_epoch_permutation_depends_only_on_seed_and_epoch():
    a = epoch_permutation(50, seed=1, epoch=3)
    np.testing.assert_array_equal(a, epoch_permutation(50, seed=1, epoch=3))
    assert sorted(a) == list(range(50))
    assert not np.array_equal(a, epoch_permutation(50, seed=1, epoch=4))
    assert not np.array_equal(a, epoch_permutation(50, seed=2, epoch=3))


def test_lr_scaling_rules():
    assert scale_learning_rate(0.01, "none", 4) == 0.01
    assert scale_learning_rate(0.01, "linear", 4) == pytest.approx(0.04)
    assert scale_learning_rate(0.01, "sqrt", 4) == pytest.approx(0.02)
    assert scale_learning_rate(0.01, "sqrt", 3) == pytest.approx(0.01 * math.sqrt(3))
    with pytest.raises(ConfigError, match="none"):
        scale_learning_rate(0.01, "quadratic", 2)


def test_local_batch_size_must_divide(clean_env):
    b = SerialBackend()
    with pytest.raises(ConfigError):
        b.local_batch_size(0)

    class Four(SerialBackend):
        size = 4  # type: ignore[assignment]

    assert Four().local_batch_size(8) == 2
    with pytest.raises(ConfigError, match="multiple of the 4 ranks"):
        Four().local_batch_size(6)


# ----------------------------------------------------------------- launch detection

@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, (1, 0, "none")),
        ({"HOROVOD_SIZE": "2", "HOROVOD_RANK": "1", "HOROVOD_LOCAL_RANK": "1"}, (2, 1, "horovodrun")),
        ({"OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_RANK": "3"}, (4, 3, "openmpi")),
        ({"PMI_SIZE": "2", "PMI_RANK": "1"}, (2, 1, "pmi")),
        ({"MV2_COMM_WORLD_SIZE": "8", "MV2_COMM_WORLD_RANK": "5"}, (8, 5, "mvapich")),
        # sbatch -n 4 batch shell: SLURM_NTASKS=4 but no srun step -> one process
        ({"SLURM_JOB_ID": "77", "SLURM_NTASKS": "4"}, (1, 0, "none")),
        # the batch step's pseudo step id is not an srun step either
        ({"SLURM_JOB_ID": "77", "SLURM_NTASKS": "4", "SLURM_STEP_ID": "4294967294"}, (1, 0, "none")),
        ({"SLURM_JOB_ID": "77", "SLURM_NTASKS": "4", "SLURM_STEP_ID": "batch"}, (1, 0, "none")),
        # srun -n1 inside a 4-task allocation -> one process
        ({"SLURM_NTASKS": "4", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "1"}, (1, 0, "slurm")),
        # srun -n4 -> 4 ranks
        ({"SLURM_NTASKS": "4", "SLURM_STEP_ID": "2", "SLURM_STEP_NUM_TASKS": "4",
          "SLURM_PROCID": "2"}, (4, 2, "slurm")),
        # a plain mpirun -n 1
        ({"OMPI_COMM_WORLD_SIZE": "1"}, (1, 0, "openmpi")),
    ],
)
def test_detect_launch(env, expected):
    info = detect_launch(env)
    assert (info.size, info.rank, info.launcher) == expected
    assert info.multi_rank == (expected[0] > 1)


def test_detect_launch_rejects_garbage():
    with pytest.raises(BackendError, match="OMPI_COMM_WORLD_SIZE"):
        detect_launch({"OMPI_COMM_WORLD_SIZE": "many"})


def test_auto_is_serial_in_a_slurm_batch_shell(clean_env):
    clean_env.setenv("SLURM_JOB_ID", "1")
    clean_env.setenv("SLURM_NTASKS", "4")
    assert isinstance(get_backend("auto"), SerialBackend)


@pytest.mark.parametrize(
    "env",
    [
        {"HOROVOD_SIZE": "2", "HOROVOD_RANK": "0"},
        {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"},
        {"PMI_SIZE": "2", "PMI_RANK": "0"},
        {"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "0"},
    ],
)
def test_multi_rank_launch_without_horovod_fails_loudly(clean_env, no_horovod, env):
    for k, v in env.items():
        clean_env.setenv(k, v)
    with pytest.raises(BackendError, match="make horovod") as err:
        get_backend("auto")
    assert "of 2" in str(err.value) and "serially" in str(err.value)


def test_serial_refused_under_multi_rank_launch(clean_env):
    clean_env.setenv("HOROVOD_SIZE", "2")
    clean_env.setenv("HOROVOD_RANK", "1")
    with pytest.raises(BackendError, match="rank 1 of 2"):
        get_backend("serial")


def test_explicit_horovod_without_horovod_says_how_to_install(clean_env, no_horovod):
    with pytest.raises(BackendError, match="make horovod"):
        get_backend("horovod")


def test_unknown_backend_name():
    with pytest.raises(ConfigError, match="auto"):
        get_backend("nccl")
