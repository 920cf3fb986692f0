"""Small structures shared by the descriptor tests (imported by conftest and the tests)."""

import numpy as np
from ase import Atoms
from ase.build import bulk


def cuau_cell(seed: int = 0, repeat: int = 2, jitter: float = 0.1) -> Atoms:
    """Random CuAu fcc alloy (conventional cell repeated), positions jittered."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.8, cubic=True).repeat(repeat)
    atoms.numbers[rng.random(len(atoms)) < 0.5] = 79
    atoms.positions += rng.normal(0.0, jitter, atoms.positions.shape)
    return atoms


def triclinic_cell(seed: int = 1) -> Atoms:
    """Two-species triclinic cell smaller than the cutoffs used (periodic self-images)."""
    rng = np.random.default_rng(seed)
    cell = np.array([[2.9, 0.0, 0.0], [0.8, 3.1, 0.0], [0.4, -0.6, 3.4]])
    fractional = np.array([[0.0, 0.0, 0.0], [0.5, 0.45, 0.55], [0.2, 0.7, 0.3]])
    fractional += rng.normal(0.0, 0.02, fractional.shape)
    return Atoms(numbers=[29, 79, 29], scaled_positions=fractional, cell=cell, pbc=True)


def molecule(seed: int = 2) -> Atoms:
    """A finite cluster of H, C and O atoms at least 1 Å apart."""
    rng = np.random.default_rng(seed)
    points = []
    while len(points) < 7:
        p = rng.uniform(-2.0, 2.0, 3)
        if all(np.linalg.norm(p - q) > 1.0 for q in points):
            points.append(p)
    return Atoms(numbers=[1, 6, 8, 1, 6, 1, 8], positions=np.array(points))
