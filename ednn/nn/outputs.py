"""Output pieces of a model and the small reversible transforms between labels and network units.

A network gives per-pixel channels (:mod:`ednn.nn.network`). Each output piece
owns some of them and knows how they become a physical quantity:

:class:`EnergyOutput` (extensive sum, channel 0)
    ``E = sum_i e_ref[Z_i] + scale * w * sum_pixels y_0``: per-element
    reference energies ``e_ref`` (least squares on the training set) and the
    scale (std of the per-atom residual) are the one place where labels are
    shifted and scaled (:meth:`EnergyOutput.to_network`) and restored
    (:meth:`EnergyOutput.from_network`). Forces and stress are derivatives of
    this sum (:mod:`ednn.predict.model`).
:class:`FieldOutput` (per voxel, any number of channels)
    ``field = scale_c * y_c`` on every pixel of the image grid, one scale per
    channel (the RMS of the training labels). No offset, so that with
    ``vacuum_zero`` a field is exactly zero in vacuum, as a density is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError, ModelError
from ..properties import ENERGY, Property, get_property, register

__all__ = ["fit_references", "EnergyOutput", "FieldOutput", "build_outputs"]


def fit_references(counts: np.ndarray, energies: np.ndarray, n_atoms: np.ndarray | None = None):
    """Per-element reference energies (least squares) and the per-atom scale.

    Parameters
    ----------
    counts : (S, K) array
        Number of atoms of each species (or pixels, in image mode) per structure.
    energies : (S,) array
        Total energies.
    n_atoms : (S,) array, optional
        Atoms per structure (defaults to ``counts.sum(1)``).

    Returns
    -------
    refs : (K,) array
        Reference energy per species (0 for species absent from the data).
    scale : float
        Std of the per-atom residual energy (1 if it is zero).
    """
    counts = np.asarray(counts, dtype=np.float64)
    energies = np.asarray(energies, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != energies.shape[0] or counts.shape[0] == 0:
        raise InputError(f"counts {counts.shape} and energies {energies.shape} do not match")
    n = counts.sum(1) if n_atoms is None else np.asarray(n_atoms, dtype=np.float64)
    present = counts.sum(0) > 0
    refs = np.zeros(counts.shape[1])
    # least squares on per-atom energies (each structure weighted equally per atom)
    sol, *_ = np.linalg.lstsq(counts[:, present] / n[:, None], energies / n, rcond=None)
    refs[present] = sol
    resid = (energies - counts @ refs) / n
    scale = float(np.std(resid))
    if not np.isfinite(scale) or scale < 1e-12:
        scale = 1.0
    return refs, scale


@dataclasses.dataclass
class EnergyOutput:
    """The extensive energy: channel 0 summed over the image, plus per-element references."""

    refs: np.ndarray
    scale: float = 1.0
    channel: int = 0
    prop: Property = ENERGY

    def fit(self, counts: np.ndarray, energies: np.ndarray, n_atoms: np.ndarray | None = None) -> None:
        """Fit the references and the scale to a training set."""
        self.refs, self.scale = fit_references(counts, energies, n_atoms)

    def reference(self, counts: np.ndarray) -> np.ndarray:
        """Reference part ``counts @ refs`` (eV) of each structure."""
        return np.asarray(counts, dtype=np.float64) @ self.refs

    def to_network(self, energies: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Training target in network units: ``(E - counts @ refs) / scale``."""
        return (np.asarray(energies, dtype=np.float64) - self.reference(counts)) / self.scale

    def from_network(self, weighted_sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Energies (eV) from ``w * sum_pixels y_0`` (the inverse of :meth:`to_network`)."""
        return self.reference(counts) + self.scale * np.asarray(weighted_sums, dtype=np.float64)

    def to_dict(self, species: Sequence[str]) -> dict[str, Any]:
        return {"reference_energies": {s: float(e) for s, e in zip(species, self.refs, strict=True)},
                "scale": float(self.scale), "channel": self.channel, "unit": self.prop.unit}


@dataclasses.dataclass
class FieldOutput:
    """A per-voxel field: ``scale[c] * y[..., start + c]`` for ``c < channels``."""

    name: str
    start: int
    channels: int
    scale: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.scale = np.ones(self.channels) if self.scale is None else np.asarray(self.scale, dtype=np.float64)
        if self.scale.shape != (self.channels,):
            raise ModelError(f"field {self.name!r}: {self.channels} channels but scales of shape {self.scale.shape}")

    @property
    def prop(self) -> Property:
        return get_property(self.name)

    @property
    def stop(self) -> int:
        return self.start + self.channels

    def check(self, target: np.ndarray, image_shape: tuple[int, ...], where: str = "") -> np.ndarray:
        """A label as ``image_shape + (channels,)`` float32, or a clear error when its grid differs."""
        t = np.asarray(target, dtype=np.float32)
        if t.shape == tuple(image_shape) and self.channels == 1:
            t = t[..., None]
        if t.shape != tuple(image_shape) + (self.channels,):
            raise InputError(
                f"{where}per-voxel target {self.name!r} has shape {t.shape}, but the model's grid gives this "
                f"structure {tuple(image_shape)} pixels and the field has {self.channels} channel(s): expected "
                f"{tuple(image_shape) + (self.channels,)}. Sample the target on the model's grid (spacing "
                "along each cell vector = length / round(length / grid.spacing)) or change grid.spacing"
            )
        if not np.all(np.isfinite(t)):
            raise InputError(f"{where}per-voxel target {self.name!r} contains NaN or inf")
        return t

    def fit(self, targets: Sequence[np.ndarray]) -> None:
        """Scale per channel: the RMS of the training labels over all their voxels (1 where it is 0)."""
        sq = np.zeros(self.channels)
        n = 0
        for t in targets:
            t = np.asarray(t, dtype=np.float64).reshape(-1, self.channels)
            sq += (t * t).sum(0)
            n += t.shape[0]
        rms = np.sqrt(sq / max(n, 1))
        self.scale = np.where(rms > 1e-12, rms, 1.0)

    def to_network(self, target: np.ndarray) -> np.ndarray:
        return (np.asarray(target, dtype=np.float64) / self.scale).astype(np.float32)

    def from_network(self, y: np.ndarray) -> np.ndarray:
        """Physical field from all network output channels ``(..., n_out)``."""
        return np.asarray(y[..., self.start : self.stop], dtype=np.float64) * self.scale

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "channels": self.channels, "scale": self.scale.tolist(),
                "property": self.prop.to_dict()}


def build_outputs(model_config: dict[str, Any], n_species: int,
                  saved: dict[str, Any] | None = None) -> tuple[EnergyOutput | None, dict[str, FieldOutput]]:
    """The output pieces of a (normalized) model config, with the transforms of a saved model if given."""
    saved = saved or {}
    energy = None
    start = 0
    if model_config["energy"]:
        e = saved.get("energy")
        refs = np.zeros(n_species) if e is None else np.asarray(list(e["reference_energies"].values()), np.float64)
        if refs.shape != (n_species,):
            raise ModelError(f"reference energies have shape {refs.shape}, expected ({n_species},)")
        energy = EnergyOutput(refs, 1.0 if e is None else float(e["scale"]))
        start = 1
    fields: dict[str, FieldOutput] = {}
    for name, ch in model_config["fields"].items():
        f = (saved.get("fields") or {}).get(name)
        if f is not None:
            register(Property(**f["property"]))
        fields[name] = FieldOutput(name, start, ch, None if f is None else f["scale"])
        start += ch
    return energy, fields
