"""Validated structures, dataset loaders, torch batches and neighbour lists.

>>> from entangle.data import load, AtomsBatch, neighbour_list, pair_vectors
>>> train = load("mlearn:Mo:train")                       # doctest: +SKIP
>>> batch = AtomsBatch.from_structures(train[:8])         # doctest: +SKIP
>>> pairs = neighbour_list(batch, cutoff=5.0)             # doctest: +SKIP
>>> r_ij = pair_vectors(batch.positions, batch.cell, pairs)  # doctest: +SKIP
"""

from entangle.data.atoms import (
    MIN_DISTANCE,
    AtomsBatch,
    Dataset,
    Structure,
    matrix_to_voigt,
    symbols_to_numbers,
    voigt_to_matrix,
)
from entangle.data.datasets import (
    DATA_ENV,
    MLEARN_STRESS_ORDER,
    VASP_ORDER,
    VibrationalData,
    attach_jarvis_stress,
    data_root,
    load,
    load_fitsnap,
    load_h2co,
    load_mlearn,
    load_monbtaw,
    load_nomad2018,
    load_qm7,
    load_zuo2020,
    read_aims_geometry,
    read_extxyz,
    read_fitsnap_json,
    read_maml_json,
    read_mlearn_json,
    read_vibrational_npz,
)
from entangle.data.neighbours import Neighbours, neighbour_list, pair_vectors, pairs_within
from entangle.data.units import BAR, EV_PER_A3_IN_GPA, GPA, KBAR, KCAL_PER_MOL

__all__ = [
    # atoms
    "MIN_DISTANCE",
    "Structure",
    "Dataset",
    "AtomsBatch",
    "voigt_to_matrix",
    "matrix_to_voigt",
    "symbols_to_numbers",
    # neighbours
    "Neighbours",
    "neighbour_list",
    "pair_vectors",
    "pairs_within",
    # datasets
    "DATA_ENV",
    "VASP_ORDER",
    "MLEARN_STRESS_ORDER",
    "VibrationalData",
    "data_root",
    "load",
    "read_extxyz",
    "read_mlearn_json",
    "read_maml_json",
    "read_fitsnap_json",
    "read_aims_geometry",
    "read_vibrational_npz",
    "load_mlearn",
    "load_zuo2020",
    "load_monbtaw",
    "load_fitsnap",
    "load_nomad2018",
    "load_qm7",
    "load_h2co",
    "attach_jarvis_stress",
    # units
    "EV_PER_A3_IN_GPA",
    "GPA",
    "KBAR",
    "BAR",
    "KCAL_PER_MOL",
]
