"""The ``ednn`` command line: ``ednn gen | config | train | predict | evaluate | demo``.

Each verb lives in a module exposing ``add_arguments(parser)`` (or
``add_arguments(parser, verb)`` for a module serving several verbs) and
``run(args) -> int``; this file only dispatches, importing the verb's module
lazily so that ``ednn --help`` and ``ednn --version`` are instant. Errors of
the :class:`ednn.EdnnError` family end the command with their message and exit
code 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
from types import ModuleType

from .._version import __version__
from ..errors import EdnnError, InputError

__all__ = ["VERBS", "build_parser", "main"]

#: verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "gen": ("ednn.cli.gen", "generate and label a dataset (HDF5)"),
    "ldos": ("ednn.cli.ldos", "check an LDOS dataset, or derive DOS properties at any electronic temperature"),
    "config": ("ednn.cli.config", "print the full resolved training configuration (--show CONFIG)"),
    "train": ("ednn.cli.model", "train a model from a config file"),
    "predict": ("ednn.cli.model", "predict energies, or LDOS / density and what follows, of structures with a trained model"),
    "evaluate": ("ednn.cli.model", "evaluate a trained model on a labelled dataset"),
    "demo": ("ednn.cli.model", "the main job: data, training, evaluation, report"),
}


def _verb_module(verb: str) -> ModuleType:
    return importlib.import_module(VERBS[verb][0])


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ednn", description="Extensive deep neural networks for atomistic systems")
    parser.add_argument("--version", action="version", version=f"ednn {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (_, help_) in VERBS.items():
        sub.add_parser(verb, help=help_, add_help=False)
    return parser


def build_parser(verb: str) -> argparse.ArgumentParser:
    """The argument parser of ``ednn VERB`` (its module is imported here).

    Raises
    ------
    InputError
        ``verb`` is not one of :data:`VERBS`.
    """
    if verb not in VERBS:
        raise InputError(f"unknown verb {verb!r}; choose one of {', '.join(VERBS)}")
    mod = _verb_module(verb)
    parser = argparse.ArgumentParser(prog=f"ednn {verb}", description=VERBS[verb][1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if len(inspect.signature(mod.add_arguments).parameters) >= 2:
        mod.add_arguments(parser, verb)
    else:
        mod.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``ednn ARGV``; returns the exit code (2 for a usage error or an ednn error)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv:
        top.print_help()
        return 0
    if argv[0].startswith("-"):
        top.parse_args(argv)  # --help, --version (exit 0) or a usage error (exit 2)
        return 0  # pragma: no cover - parse_args exits for every option
    verb = argv[0]
    if verb not in VERBS:
        top.error(f"unknown verb {verb!r}; choose one of {', '.join(VERBS)}")
    args = build_parser(verb).parse_args(argv[1:])
    args.verb = verb
    try:
        return int(_verb_module(verb).run(args) or 0)
    except EdnnError as e:
        print(f"ednn {verb}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
