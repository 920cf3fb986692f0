"""Tensor-network algebra: MPS, MPO, decompositions, two-site moves, entropies.

Knows nothing about atoms; every model of entangle is built from these pieces.
"""

from entangle.tn.contract import einsum
from entangle.tn.decompose import qr_positive, svd, truncated_svd, truncation_rank, tt_svd
from entangle.tn.entropy import renyi_entropy, schmidt_probabilities, von_neumann_entropy
from entangle.tn.mpo import MPO
from entangle.tn.mps import MPS
from entangle.tn.sweep import merge, split
from entangle.tn.tensor_train import TensorTrain

__all__ = [
    "MPS", "MPO", "TensorTrain",
    "einsum", "merge", "split",
    "qr_positive", "svd", "truncated_svd", "truncation_rank", "tt_svd",
    "von_neumann_entropy", "renyi_entropy", "schmidt_probabilities",
]
