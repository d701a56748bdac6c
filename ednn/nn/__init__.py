"""Networks and outputs: the Keras tile network, output pieces (extensive sum, per-voxel
fields) with their label transforms, and batches."""

from .batch import Batch, make_batch  # noqa: F401
from .network import build_network, n_outputs  # noqa: F401
from .outputs import EnergyOutput, FieldOutput, build_outputs, fit_references  # noqa: F401
