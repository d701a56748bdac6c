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
    With ``factor`` f > 1 (``model.upsample``) the field lives on a grid f
    times finer than the input image along each axis (a DFT grid is finer
    than the image a network needs to see): each image pixel then owns
    ``f**d * channels`` network outputs, one block of ``channels`` per
    sub-voxel ("depth to space"), so tiles, streaming and the whole-image
    path stay pixel-exact and the fine field is reassembled only at the end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError, ModelError
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
    """A per-voxel field: ``scale[c] * y[..., start + c]`` for ``c < channels`` (``factor`` 1), or on a grid
    ``factor`` times finer than the image (see the module docstring)."""

    name: str
    start: int
    channels: int
    scale: np.ndarray | None = None
    factor: int = 1
    dim: int = 3

    def __post_init__(self) -> None:
        self.scale = np.ones(self.channels) if self.scale is None else np.asarray(self.scale, dtype=np.float64)
        if self.scale.shape != (self.channels,):
            raise ModelError(f"field {self.name!r}: {self.channels} channels but scales of shape {self.scale.shape}")
        if isinstance(self.factor, bool) or not isinstance(self.factor, (int, np.integer)) or self.factor < 1:
            raise ModelError(f"field {self.name!r}: upsample factor must be a positive integer, got {self.factor!r}")

    @property
    def prop(self) -> Property:
        return get_property(self.name)

    @property
    def sub_voxels(self) -> int:
        """Field voxels per image pixel (``factor ** dim``)."""
        return int(self.factor) ** self.dim

    @property
    def net_channels(self) -> int:
        """Network output channels this field owns per image pixel."""
        return self.channels * self.sub_voxels

    @property
    def net_scale(self) -> np.ndarray:
        """The scale of each of the field's network channels."""
        return np.tile(self.scale, self.sub_voxels)

    @property
    def stop(self) -> int:
        return self.start + self.net_channels

    def field_shape(self, image_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The field's spatial shape for an image of spatial shape ``image_shape``."""
        return tuple(int(n) * int(self.factor) for n in image_shape)

    def check(self, target: np.ndarray, image_shape: tuple[int, ...], where: str = "") -> np.ndarray:
        """A label as ``field_shape(image_shape) + (channels,)`` float32, or a clear error when its grid differs."""
        t = np.asarray(target, dtype=np.float32)
        shape = self.field_shape(image_shape)
        if t.shape == shape and self.channels == 1:
            t = t[..., None]
        if t.shape != shape + (self.channels,):
            fine = (f" ({self.factor} x the image's {tuple(image_shape)} pixels: model.upsample = {self.factor})"
                    if self.factor > 1 else " pixels")
            raise InputError(
                f"{where}per-voxel target {self.name!r} has shape {t.shape}, but the model's grid gives this "
                f"structure {shape}{fine} and the field has {self.channels} channel(s): expected "
                f"{shape + (self.channels,)}. Sample the target on the model's grid (spacing along each cell "
                "vector = length / round(length / grid.spacing), divided by model.upsample) or change "
                "grid.spacing / model.upsample"
            )
        if not np.all(np.isfinite(t)):
            raise InputError(f"{where}per-voxel target {self.name!r} contains NaN or inf")
        return t

    def fit(self, targets: Sequence[np.ndarray], mode: str = "channel") -> None:
        """Scale per channel: the RMS of the training labels over all their voxels (1 where it is 0); with
        ``mode="field"`` one RMS over all voxels and channels, the same for every channel."""
        sq = np.zeros(self.channels)
        n = 0
        for t in targets:
            t = np.asarray(t, dtype=np.float64).reshape(-1, self.channels)
            sq += (t * t).sum(0)
            n += t.shape[0]
        if mode == "field":
            sq = np.full(self.channels, sq.sum() / self.channels)
        elif mode != "channel":
            raise ConfigError(f"field scale mode must be 'channel' or 'field', got {mode!r}")
        rms = np.sqrt(sq / max(n, 1))
        self.scale = np.where(rms > 1e-12, rms, 1.0)

    def mean_network(self, targets: Sequence[np.ndarray]) -> np.ndarray:
        """The mean training label in network units, per network channel (the output bias that makes an
        untrained network predict the training-mean field: training then learns the deviation from it)."""
        s = np.zeros(self.channels)
        n = 0
        for t in targets:
            t = np.asarray(t, dtype=np.float64).reshape(-1, self.channels)
            s += t.sum(0)
            n += t.shape[0]
        return np.tile(s / max(n, 1) / self.scale, self.sub_voxels)

    def to_network(self, target: np.ndarray) -> np.ndarray:
        """Label ``(fine..., channels)`` -> network units ``(image..., net_channels)`` (space to depth)."""
        t = np.asarray(target, dtype=np.float64) / self.scale
        f, d = int(self.factor), self.dim
        if f > 1:
            n = t.shape[:d]
            if any(m % f for m in n):
                raise InputError(f"per-voxel target {self.name!r} of spatial shape {n} is not a whole number of "
                                 f"{f}-voxel blocks (model.upsample = {f})")
            t = t.reshape(sum(((m // f, f) for m in n), ()) + (self.channels,))
            t = t.transpose(tuple(range(0, 2 * d, 2)) + tuple(range(1, 2 * d, 2)) + (2 * d,))
            t = t.reshape(tuple(m // f for m in n) + (self.net_channels,))
        return t.astype(np.float32)

    def from_network(self, y: np.ndarray) -> np.ndarray:
        """Physical field from all network output channels ``(image..., n_out)`` (depth to space)."""
        y = np.asarray(y[..., self.start : self.stop], dtype=np.float64)
        f, d = int(self.factor), self.dim
        if f > 1:
            n = y.shape[:d]
            y = y.reshape(n + (f,) * d + (self.channels,))
            y = y.transpose(sum(((i, d + i) for i in range(d)), ()) + (2 * d,))
            y = y.reshape(tuple(m * f for m in n) + (self.channels,))
        return y * self.scale

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start, "channels": self.channels, "scale": self.scale.tolist(),
                "upsample": int(self.factor), "property": self.prop.to_dict()}


def build_outputs(model_config: dict[str, Any], n_species: int, saved: dict[str, Any] | None = None,
                  dim: int = 3) -> tuple[EnergyOutput | None, dict[str, FieldOutput]]:
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
    if int(model_config.get("upsample", 1)) > 1 and not model_config["fields"]:
        raise ConfigError(f"model.upsample = {model_config['upsample']} refines per-voxel fields, but the model has "
                          "none; leave it at 1 or add a per-voxel target to data.targets")
    for name, ch in model_config["fields"].items():
        f = (saved.get("fields") or {}).get(name)
        if f is not None:
            register(Property(**f["property"]))
        fields[name] = FieldOutput(name, start, ch, None if f is None else f["scale"],
                                   int(model_config.get("upsample", 1)), int(dim))
        start += fields[name].net_channels
    return energy, fields
