# ednn: the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# cpu: tensorflow-cpu wheel; gpu: tensorflow[and-cuda]
TF ?= cpu
EXTRAS ?= $(TF),data,test
export LD_LIBRARY_PATH := $(abspath $(VENV))/lib:$(LD_LIBRARY_PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

.PHONY: venv demo test test-slow lint horovod data data-ising bench-raster bench-predict ising long-train clean help

help:
	@echo "make demo    - set up .venv, build the Tersoff dataset, train, evaluate, write report (runs/demo)"
	@echo "make test    - set up .venv with test extras and Horovod, run lint and the test suite"
	@echo "make data    - build the reference datasets (data/)"
	@echo "make horovod - build/install the patched Horovod wheel into .venv (cached in ~/.cache/ednn/wheels)"

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

venv: $(VENV)/.installed

horovod: venv
	bash scripts/build_horovod.sh $(VENV)

lint: venv
	$(BIN)/ruff check ednn data_gen tests experiments

test: venv horovod lint
	$(BIN)/python -m pytest -q -m "not slow" --durations=10 tests

test-slow: venv
	$(BIN)/python -m pytest -q -m slow tests

data: venv
	$(BIN)/python -m data_gen.reference --out data

data-ising: venv
	$(BIN)/python -m data_gen.ising --out data

demo: venv
	$(BIN)/ednn demo --out runs/demo

bench-raster: venv
	$(BIN)/python experiments/bench_raster.py

bench-predict: venv
	$(BIN)/python experiments/bench_predict.py --config experiments/long_train.yaml

ising: venv
	$(BIN)/python experiments/ising_transfer.py

long-train: venv data
	nice -n 10 $(BIN)/python experiments/long_train.py --config experiments/long_train_heights.yaml --minutes 90

clean:
	rm -rf runs/ .pytest_cache build *.egg-info
