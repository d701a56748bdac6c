"""Detect how this process was launched: alone, or as one rank of many.

Launchers announce the world size through environment variables. We read
them here, in one place, so that a multi-rank launch is never mistaken for a
serial run (every rank would then train its own copy and overwrite the same
files) and a SLURM batch shell or ``srun -n1`` is never mistaken for a
multi-rank launch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import BackendError

# Step ids SLURM gives to the batch script and the "extern" step; those are
# not srun steps launched by the user.
_SLURM_PSEUDO_STEPS = {"batch", "extern", "interactive", "4294967292", "4294967293",
                       "4294967294", "4294967295"}


@dataclass(frozen=True)
class LaunchInfo:
    """World size and this process' place in it, as announced by the launcher.

    Attributes
    ----------
    size : int
        Number of processes launched together (1 for a plain run).
    rank : int
        Global rank of this process (0 when unknown).
    local_rank : int
        Rank among the processes on this node (0 when unknown).
    launcher : str
        ``"horovodrun"``, ``"openmpi"``, ``"pmi"``, ``"mvapich"``, ``"slurm"`` or ``"none"``.
    """

    size: int = 1
    rank: int = 0
    local_rank: int = 0
    launcher: str = "none"

    @property
    def multi_rank(self) -> bool:
        """True when more than one process was launched."""
        return self.size > 1


def _int(env: Mapping[str, str], key: str, default: int | None = None) -> int | None:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw.strip())
    except ValueError as exc:
        raise BackendError(f"environment variable {key}={raw!r} is not an integer; "
                           "unset it or fix the launcher configuration") from exc


def detect_launch(environ: Mapping[str, str] | None = None) -> LaunchInfo:
    """Read the launcher's environment variables.

    Checked in order: Horovod's own (``HOROVOD_SIZE``/``HOROVOD_RANK``, set by
    ``horovodrun``), Open MPI (``OMPI_COMM_WORLD_SIZE``), MVAPICH
    (``MV2_COMM_WORLD_SIZE``), PMI (``PMI_SIZE``: MPICH/Intel MPI ``mpirun``,
    ``srun --mpi=pmi2``), and finally SLURM: only inside an ``srun`` step
    (``SLURM_STEP_ID`` set and not the batch/extern pseudo-step) does
    ``SLURM_STEP_NUM_TASKS`` (or ``SLURM_NTASKS``) count ranks. A batch
    script's shell, which also has ``SLURM_NTASKS``, counts as one process, as
    does ``srun -n1``.

    Parameters
    ----------
    environ : mapping, optional
        Environment to inspect; defaults to ``os.environ``.

    Returns
    -------
    LaunchInfo
        ``size == 1`` for a plain (serial) run.
    """
    env = os.environ if environ is None else environ
    if "HOROVOD_SIZE" in env or "HOROVOD_RANK" in env:
        size = _int(env, "HOROVOD_SIZE", 1)
        return LaunchInfo(size, _int(env, "HOROVOD_RANK", 0), _int(env, "HOROVOD_LOCAL_RANK", 0),
                          "horovodrun")
    if "OMPI_COMM_WORLD_SIZE" in env:
        return LaunchInfo(_int(env, "OMPI_COMM_WORLD_SIZE", 1), _int(env, "OMPI_COMM_WORLD_RANK", 0),
                          _int(env, "OMPI_COMM_WORLD_LOCAL_RANK", 0), "openmpi")
    if "MV2_COMM_WORLD_SIZE" in env:
        return LaunchInfo(_int(env, "MV2_COMM_WORLD_SIZE", 1), _int(env, "MV2_COMM_WORLD_RANK", 0),
                          _int(env, "MV2_COMM_WORLD_LOCAL_RANK", 0), "mvapich")
    if "PMI_SIZE" in env:
        local = _int(env, "MPI_LOCALRANKID", None)
        if local is None:
            local = _int(env, "SLURM_LOCALID", 0)
        return LaunchInfo(_int(env, "PMI_SIZE", 1), _int(env, "PMI_RANK", 0), local, "pmi")
    step = env.get("SLURM_STEP_ID", env.get("SLURM_STEPID"))
    if step is not None and step.strip() not in _SLURM_PSEUDO_STEPS:
        size = _int(env, "SLURM_STEP_NUM_TASKS", None)
        if size is None:
            size = _int(env, "SLURM_NTASKS", 1)
        return LaunchInfo(size, _int(env, "SLURM_PROCID", 0), _int(env, "SLURM_LOCALID", 0), "slurm")
    return LaunchInfo()
