"""Prediction: the model object, model files, streaming for any size, the ASE calculator."""

from .artifact import save_model  # noqa: F401
from .calculator import EDNNCalculator  # noqa: F401
from .model import EnergyModel, load  # noqa: F401
from .stream import stream_energy, stream_energy_map, stream_outputs, stream_predict  # noqa: F401
