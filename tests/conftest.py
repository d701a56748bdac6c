"""Shared fixtures: tiny ase.Atoms built here, no downloads."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from ase import Atoms
from ase.build import graphene as ase_graphene

A_GRAPHENE = 2.46
A_HBN = 2.50


def hexagonal_cell(a: float, c: float = 0.0) -> np.ndarray:
    return np.array([[a, 0.0, 0.0], [-a / 2, a * np.sqrt(3) / 2, 0.0], [0.0, 0.0, c]])


def make_graphene(a: float = A_GRAPHENE) -> Atoms:
    return ase_graphene(formula="C2", a=a, vacuum=None)


def make_hbn(a: float = A_HBN) -> Atoms:
    return ase_graphene(formula="BN", a=a, vacuum=None)


def make_random_bcn(seed: int = 0, reps=(3, 3), a: float = A_GRAPHENE) -> Atoms:
    rng = np.random.default_rng(seed)
    at = make_graphene(a).repeat((reps[0], reps[1], 1))
    at.numbers = rng.choice([5, 6, 7], size=len(at))
    at.positions[:, :2] += rng.normal(scale=0.05, size=(len(at), 2))
    at.positions[:, 2] = rng.normal(scale=0.1, size=len(at))
    return at


@pytest.fixture
def graphene():
    return make_graphene()


@pytest.fixture
def hbn():
    return make_hbn()


@pytest.fixture
def bcn():
    return make_random_bcn()


def fd_force(model, atoms, i: int, axis: int, h: float = 1e-3) -> float:
    """The force on atom ``i`` along ``axis`` by central finite differences of ``model.predict_energy``."""
    p, q = atoms.copy(), atoms.copy()
    p.positions[i, axis] += h
    q.positions[i, axis] -= h
    return -(model.predict_energy(p) - model.predict_energy(q)) / (2 * h)


@pytest.fixture(scope="session")
def al_ldos_set(tmp_path_factory):
    """Three Al4 snapshots labelled by gpaw-ldos on a coarse setting (ecut 150 eV, Gamma only, a 12^3 grid, a
    0.1 eV energy grid): a few seconds."""
    pytest.importorskip("gpaw", reason="GPAW is installed by `make dft` (part of `make test`)")
    from ednn.atoms.bulk import aluminium_snapshots
    from ednn.atoms.labellers.ldos import GpawLdosLabeller
    from ednn.data import DatasetWriter, label_dataset
    from ednn.electronic import EnergyGrid

    d = tmp_path_factory.mktemp("ldos")
    with DatasetWriter(d / "raw.h5") as w:
        for at in aluminium_snapshots(3, size=1, temperature=600.0, seed=21):
            w.append(at)
    grid = EnergyGrid(start=-5.0, spacing=0.1, n=150)
    lab = GpawLdosLabeller(temperature=600.0, energy_grid=grid, ecut=150.0, kpts=(1, 1, 1), grid_spacing=4.04 / 12)
    label_dataset(d / "raw.h5", d / "al.h5", lab)
    return d / "al.h5", grid
