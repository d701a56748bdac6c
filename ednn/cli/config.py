"""Verb ``ednn config``, and the configuration help shared with ``ednn train``.

``ednn config --show [CONFIG] [--format yaml|json] [--out DIR] [--epochs N]``
    Print the full resolved training configuration: the file's values,
    the command-line overrides (applied before validation, as ``ednn train``
    does) and every default, validated by :func:`ednn.config.load_config`.
    Without CONFIG, the defaults.

The defaults shown here and in ``ednn train --help`` come from
:data:`ednn.config.DEFAULTS`; nothing is repeated in this module.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ConfigError

__all__ = ["EXAMPLE_CONFIG", "add_arguments", "add_override_arguments", "overrides", "config_text",
           "config_help", "run"]

#: An example configuration file (YAML), shown by ``ednn train --help`` and checked by the tests.
EXAMPLE_CONFIG = """\
out: runs/bnc                       # run folder: checkpoint.npz, log.csv, log.json, model/
seed: 0
data:  {train: data/train.h5, val_fraction: 0.1}
grid:  {spacing: 0.62375, sigma: 0.5}          # species default to those in the data
model: {head: density, layers: 5, filters: 32, kernel: 3, readout: [32]}
train: {epochs: 200, batch_size: 8, learning_rate: 3e-3, schedule: cosine}
"""


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out`` and ``--epochs``: command-line values that replace the config file's before validation."""
    parser.add_argument("--out", metavar="DIR", help="run folder (replaces the config's out)")
    parser.add_argument("--epochs", type=int, metavar="N", help="number of epochs (replaces train.epochs)")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The overrides given on the command line, in the form :func:`ednn.config.load_config` takes."""
    out: dict[str, Any] = {}
    if args.out is not None:
        out["out"] = args.out
    if args.epochs is not None:
        out["train"] = {"epochs": args.epochs}
    return out


def _plain(cfg: dict[str, Any]) -> dict[str, Any]:
    """The configuration as plain JSON types (tuples become lists)."""
    return json.loads(json.dumps(cfg))


def config_text(cfg: dict[str, Any], fmt: str = "yaml") -> str:
    """A configuration as YAML (one key per line, sections in file order) or JSON."""
    if fmt == "json":
        return json.dumps(_plain(cfg), indent=2) + "\n"
    if fmt != "yaml":
        raise ConfigError(f"unknown configuration format {fmt!r}; use 'yaml' or 'json'")
    import yaml

    class Dumper(yaml.SafeDumper):
        """Mappings as blocks (one key per line), lists inline (``readout: [32]``)."""

    Dumper.add_representer(list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))
    return yaml.dump(_plain(cfg), Dumper=Dumper, sort_keys=False, default_flow_style=False)


def config_help() -> str:
    """The text of ``ednn train --help`` after the options: every key with its default, and an example."""
    from ..config import DEFAULTS

    defaults = "".join(f"  {line}\n" for line in config_text(DEFAULTS).splitlines())
    example = "".join(f"  {line}\n" for line in EXAMPLE_CONFIG.splitlines())
    return (
        "configuration (a YAML or JSON file; every key is optional, these are the defaults;\n"
        "null means derived: grid.species from the data, grid.context from the network's\n"
        "receptive radius, grid.heights 1 for 2D grids and 0 for 3D). model.representation\n"
        "auto: the atom-centred energy model (section atoms; exactly invariant, fitted in closed\n"
        "form) unless the config sets a grid, model or train key only the voxel-image CNN uses\n"
        "or names per-voxel targets; then the image CNN (the example below is one):\n\n"
        f"{defaults}\n"
        f"example:\n\n{example}\n"
        "`ednn config --show CONFIG` prints a file's full resolved configuration.\n"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``ednn config``."""
    parser.add_argument("--show", metavar="CONFIG", nargs="?", const="", default=None,
                        help="print the full resolved configuration of CONFIG (without CONFIG: the defaults)")
    parser.add_argument("--format", choices=("yaml", "json"), default="yaml", help="output format (default yaml)")
    add_override_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Print the resolved configuration; returns the exit code."""
    from ..config import load_config

    if args.show is None:
        raise ConfigError("nothing to do: give --show CONFIG to print a configuration resolved with its defaults "
                          "(or --show alone for the defaults)")
    cfg = load_config(args.show or None, overrides=overrides(args))
    sys.stdout.write(config_text(cfg, args.format))
    return 0
