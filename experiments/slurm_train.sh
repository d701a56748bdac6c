#!/bin/bash
# Data-parallel ednn training on a SLURM cluster with Horovod.
#
#   sbatch experiments/slurm_train.sh path/to/config.yaml
#
# One rank per GPU (each rank pins GPU local_rank); on CPU-only nodes one rank
# per node or per socket with --cpus-per-task threads each. `train.batch_size`
# in the config is the GLOBAL batch: each rank takes batch_size / ranks, so the
# result is the same as a serial run with that batch (it must divide evenly).
# `train.lr_scaling` (none | linear | sqrt) is applied once at start.
# `--resume` continues from <out>/checkpoint.npz when one exists, so the job
# can be requeued or resubmitted after a time limit or a node failure.
#
# Launchers:
#   EDNN_LAUNCH=srun        srun starts the ranks; needs Horovod built with MPI
#                           (EDNN_HOROVOD_MPI=1 make horovod with an MPI module loaded)
#   EDNN_LAUNCH=horovodrun  horovodrun --gloo over the allocated hosts; needs
#                           passwordless ssh between the nodes (default for a Gloo-only build)
#
#SBATCH --job-name=ednn-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --output=%x-%j.out
set -euo pipefail

CONFIG=${1:?usage: sbatch experiments/slurm_train.sh CONFIG [extra ednn train args]}
shift
cd "${SLURM_SUBMIT_DIR:-$PWD}"
# module load openmpi cuda   # site specific
VENV=${VENV:-.venv}
export PATH="$PWD/$VENV/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL=2
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

python -c "import horovod.tensorflow" 2>/dev/null || {
    echo "Horovod is not installed in $VENV: run 'make horovod' on a login node first" >&2
    exit 1
}
if [ -z "${EDNN_LAUNCH:-}" ]; then
    if python -c "import horovod.tensorflow as h, sys; sys.exit(0 if h.mpi_built() else 1)" 2>/dev/null; then
        EDNN_LAUNCH=srun
    else
        EDNN_LAUNCH=horovodrun
    fi
fi
NTASKS=${SLURM_NTASKS:-$((SLURM_NNODES * SLURM_NTASKS_PER_NODE))}
echo "ednn: $NTASKS ranks on $SLURM_NNODES node(s) via $EDNN_LAUNCH, config $CONFIG"

case "$EDNN_LAUNCH" in
    srun)
        # --mpi=pmix (or pmi2) depends on how the site built SLURM/MPI
        srun --mpi="${SRUN_MPI:-pmix}" --cpu-bind=cores \
            ednn train "$CONFIG" --resume "$@"
        ;;
    horovodrun)
        PER_NODE=${SLURM_NTASKS_PER_NODE:-$((NTASKS / SLURM_NNODES))}
        PER_NODE=${PER_NODE%%(*}   # "4(x2)" -> "4"
        HOSTS=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/\$/:$PER_NODE/" | paste -sd, -)
        horovodrun --gloo -np "$NTASKS" -H "$HOSTS" --start-timeout 300 \
            ednn train "$CONFIG" --resume "$@"
        ;;
    *)
        echo "EDNN_LAUNCH must be srun or horovodrun, got '$EDNN_LAUNCH'" >&2
        exit 2
        ;;
esac
