"""Training: cached sets (:mod:`.sets`), callbacks (:mod:`.callbacks`), the trainer's compiled steps
(:mod:`.trainer`), the data-parallel loop with resume (:mod:`.loop`) and whole runs from a config
(:mod:`.run`: ``ednn.train.train(config)``)."""

from .callbacks import Callback, EarlyStopping, Logger, LRSchedule, ProgressBar  # noqa: F401
from .loop import fit, get_run_backend, seed_everything, train_images  # noqa: F401
from .run import make_grid, train  # noqa: F401
from .sets import (  # noqa: F401
    TrainSet,
    images_to_set,
    load_forces,
    load_structures,
    load_targets,
    structures_to_set,
)
from .trainer import Trainer  # noqa: F401

__all__ = ["TrainSet", "structures_to_set", "images_to_set", "fit", "train", "train_images", "Callback",
           "ProgressBar", "Logger", "EarlyStopping", "LRSchedule", "load_structures", "load_forces",
           "load_targets", "make_grid", "Trainer", "get_run_backend", "seed_everything"]
