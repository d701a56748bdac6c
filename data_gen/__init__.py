"""Dataset recipes built on :mod:`ednn.structures` and :mod:`ednn.labellers`.

``python -m data_gen.reference --out data`` builds the default training set and a
size-transfer test set; ``python -m data_gen.dft_dataset`` builds a small GPAW set.
"""
