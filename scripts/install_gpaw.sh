#!/usr/bin/env bash
# Install GPAW (built from PyPI's source) and its PAW setups (the gpaw-data wheel) into a venv.
# GPAW needs libxc and a BLAS at build time: on Debian/Ubuntu they come from apt
# (libxc-dev, libopenblas-dev); as root this script installs them, otherwise it
# says what to install. Offline except for the package registries.
# usage: scripts/install_gpaw.sh VENV
set -euo pipefail
VENV=${1:-.venv}
PY="$VENV/bin/python"
die() { echo "install_gpaw: $*" >&2; exit 1; }
[ -x "$PY" ] || die "no python in $VENV; run make venv first"
if "$PY" -c "import gpaw, gpaw_data, _gpaw" 2>/dev/null; then
    echo "install_gpaw: GPAW $("$PY" -c 'import gpaw; print(gpaw.__version__)') already in $VENV"
    exit 0
fi
have_dev() { dpkg -s libxc-dev libopenblas-dev >/dev/null 2>&1; }
if ! have_dev; then
    # shellcheck source=apt_need.sh
    . "$(dirname "$0")/apt_need.sh"
    apt_need install_gpaw "GPAW needs libxc and OpenBLAS headers" libxc-dev libopenblas-dev
fi
# GPAW compiles its C extension as C++ with this toolchain (CC=g++), as its install notes recommend for gcc 12
CC=g++ "$PY" -m pip install -q "gpaw>=24" gpaw-data || die "pip could not build GPAW"
"$PY" -c "import gpaw, gpaw_data; from gpaw.setup_data import search_for_file; search_for_file('Al.PBE')" \
    || die "GPAW installed but its PAW setups are not found"
echo "install_gpaw: GPAW $("$PY" -c 'import gpaw; print(gpaw.__version__)') with setups in $VENV"
