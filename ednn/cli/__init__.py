"""The ``ednn`` command line: ``ednn gen | train | predict | evaluate | demo | bench``.

Each verb lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; this file only dispatches, importing the verb's module
lazily so that ``ednn --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# verb -> (module, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "gen": ("ednn.cli.gen", "generate and label a dataset (HDF5)"),
    "train": ("ednn.cli.model", "train a model from a config file"),
    "predict": ("ednn.cli.model", "predict energies of structures with a trained model"),
    "evaluate": ("ednn.cli.model", "evaluate a trained model on a labelled dataset"),
    "demo": ("ednn.cli.model", "the main job: data, training, evaluation, report"),
}


def _verb_module(verb: str):
    mod = importlib.import_module(VERBS[verb][0])
    return mod


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="ednn", description="Extensive deep neural networks for atomistic systems")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, (_, help_) in VERBS.items():
        sub.add_parser(verb, help=help_, add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    verb = argv[0]
    if verb not in VERBS:
        parser.error(f"unknown verb {verb!r}; choose one of {', '.join(VERBS)}")
    mod = _verb_module(verb)
    vparser = argparse.ArgumentParser(prog=f"ednn {verb}", description=VERBS[verb][1])
    mod.add_arguments(vparser, verb) if _takes_verb(mod) else mod.add_arguments(vparser)
    args = vparser.parse_args(argv[1:])
    args.verb = verb
    from ..errors import EdnnError

    try:
        return int(mod.run(args) or 0)
    except EdnnError as e:
        print(f"ednn {verb}: error: {e}", file=sys.stderr)
        return 2


def _takes_verb(mod) -> bool:
    import inspect

    return len(inspect.signature(mod.add_arguments).parameters) >= 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
