"""Structures and their labels: ``ase.Atoms`` builders (:mod:`.structures`), labellers that
attach energies, forces and per-voxel targets (:mod:`.labellers`), and the toy Ising model
(:mod:`.ising`) used to test extensivity on images."""
