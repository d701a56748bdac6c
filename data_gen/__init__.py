"""Dataset recipes built on :mod:`ednn.atoms.structures` and :mod:`ednn.atoms.labellers`.

``python -m data_gen.reference --out data`` builds the default training set and a
size-transfer test set; ``python -m data_gen.dft_dataset`` builds a small GPAW set.
"""
