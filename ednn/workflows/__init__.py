"""Pipelines built from the library: evaluating a trained model, the demo.

The ``ednn evaluate`` and ``ednn demo`` verbs parse their arguments and call
:func:`ednn.workflows.evaluate.evaluate` and :func:`ednn.workflows.demo.run_demo`.
"""
