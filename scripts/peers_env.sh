#!/usr/bin/env bash
# The optional environment of the peer models that experiments/peers.py compares ednn with: SchNetPack's PaiNN
# (PyTorch, CPU build) and SOAP + ridge regression (dscribe). Never part of ednn's dependencies: it lives in
# its own virtual environment (default .venv-peers) and reads the data that peers.py exports as extended XYZ.
# usage: scripts/peers_env.sh [PEERS_VENV]     (what `make peers-env` runs)
set -euo pipefail
VENV=${1:-.venv-peers}
PYTHON=${PYTHON:-python3.11}
die() { echo "peers_env: $*" >&2; exit 1; }
command -v "$PYTHON" >/dev/null || die "no $PYTHON on PATH"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# SchNetPack 2.1.1 (2.2 needs Python >= 3.12) resolves to torch 2.4.1 with its CUDA libraries (5.7 GB in all);
# on a machine without a GPU it runs on the CPU
"$VENV/bin/python" -m pip install -q "schnetpack==2.1.1" "dscribe==2.1.2" scikit-learn ase h5py numpy scipy
"$VENV/bin/python" -c "import torch, schnetpack, dscribe, sklearn; print('peers_env:', '$VENV', 'torch', torch.__version__, 'schnetpack 2.1.1, dscribe ok')"
