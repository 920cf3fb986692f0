"""Public test helpers for interatomic potentials: symmetry and derivative checks.

Every potential in entangle (and user code built on it) can be checked with the same
physics tests. A *model* here is anything with
``predict(structure, forces=True, stress=...) -> {"energy": float, "forces": (n, 3),
"stress": (6,)}`` in eV, eV/Å and eV/Å³ (e.g. :class:`entangle.models.etn.ETNPotential`).

>>> from entangle.testing import assert_invariant  # doctest: +SKIP
>>> assert_invariant(model, structure, atol=1e-10)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from entangle.data.atoms import Structure, matrix_to_voigt, voigt_to_matrix
from entangle.so3.wigner import random_rotation

__all__ = ["assert_invariant", "assert_equivariant", "assert_forces_are_gradient",
           "assert_stress_is_strain_derivative", "random_orthogonal"]


class Potential(Protocol):
    def predict(self, structures: Any, *, forces: bool = True,
                stress: bool | None = None) -> dict[str, Any]: ...


def random_orthogonal(seed: int, reflect: bool = False) -> np.ndarray:
    """A Haar-random rotation, times ``-1`` (an improper rotation) if ``reflect``."""
    rot = random_rotation(seed).numpy()
    return -rot if reflect else rot


def _transformed(structure: Structure, rot: np.ndarray, shift: np.ndarray,
                 perm: np.ndarray) -> Structure:
    return structure.replace(positions=(structure.positions @ rot.T + shift)[perm],
                             numbers=structure.numbers[perm], cell=structure.cell @ rot.T,
                             forces=None, stress=None, energy=None)


def _same_species_permutation(numbers: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    perm = np.arange(numbers.shape[0])
    for z in np.unique(numbers):
        idx = np.flatnonzero(numbers == z)
        perm[idx] = rng.permutation(idx)
    return perm


def assert_invariant(model: Potential, structure: Structure, *, n_trials: int = 3,
                     atol: float = 1e-10, rtol: float = 1e-10, seed: int = 0) -> None:
    """Energy unchanged by rotations, reflections, translations and same-species permutations.

    Each trial applies a random proper or improper rotation (to positions and cell), a random
    translation and a random permutation of atoms of equal species.
    """
    rng = np.random.default_rng(seed)
    ref = model.predict(structure, forces=False, stress=False)["energy"]
    for trial in range(n_trials):
        for reflect in (False, True):
            rot = random_orthogonal(seed + trial, reflect)
            shift = rng.normal(size=3) * 3.0
            perm = _same_species_permutation(structure.numbers, rng)
            out = model.predict(_transformed(structure, rot, shift, perm), forces=False,
                                stress=False)["energy"]
            if not abs(out - ref) <= atol + rtol * abs(ref):
                raise AssertionError(f"energy not invariant (trial {trial}, reflect={reflect}): "
                                     f"{out!r} vs {ref!r}, difference {out - ref:.3e}")


def assert_equivariant(model: Potential, structure: Structure, *, seed: int = 0,
                       atol: float = 1e-9) -> None:
    """Forces rotate as vectors and the stress as a rank-2 tensor (proper and improper)."""
    stress = bool(np.all(structure.pbc))
    ref = model.predict(structure, forces=True, stress=stress)
    for reflect in (False, True):
        rot = random_orthogonal(seed, reflect)
        perm = np.arange(structure.n_atoms)
        out = model.predict(_transformed(structure, rot, np.zeros(3), perm), forces=True,
                            stress=stress)
        np.testing.assert_allclose(out["forces"], ref["forces"] @ rot.T, atol=atol,
                                   err_msg="forces are not equivariant")
        if stress:
            expect = matrix_to_voigt(rot @ voigt_to_matrix(ref["stress"]) @ rot.T)
            np.testing.assert_allclose(out["stress"], expect, atol=atol,
                                       err_msg="stress is not equivariant")


def assert_forces_are_gradient(model: Potential, structure: Structure, *, h: float = 1e-5,
                               atol: float = 1e-6, n_atoms: int | None = None) -> None:
    """Forces equal minus the central finite-difference gradient of the energy (step ``h`` Å)."""
    forces = model.predict(structure, forces=True, stress=False)["forces"]
    atoms = range(structure.n_atoms if n_atoms is None else min(n_atoms, structure.n_atoms))
    for i in atoms:
        for a in range(3):
            energies = []
            for sign in (1.0, -1.0):
                pos = structure.positions.copy()
                pos[i, a] += sign * h
                s = structure.replace(positions=pos, forces=None, stress=None, energy=None)
                energies.append(model.predict(s, forces=False, stress=False)["energy"])
            fd = -(energies[0] - energies[1]) / (2 * h)
            if not abs(fd - forces[i, a]) <= atol:
                raise AssertionError(f"force on atom {i}, axis {a}: {forces[i, a]!r} but "
                                     f"-dE/dx by finite differences is {fd!r}")


def assert_stress_is_strain_derivative(model: Potential, structure: Structure, *,
                                       h: float = 1e-5, atol: float = 1e-7) -> None:
    """Stress equals ``(1/V) dE/dε`` by central finite differences of a symmetric strain."""
    stress = model.predict(structure, forces=False, stress=True)["stress"]
    volume = abs(np.linalg.det(structure.cell))
    pairs = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))
    for k, (a, b) in enumerate(pairs):
        energies = []
        for sign in (1.0, -1.0):
            eps = np.zeros((3, 3))
            eps[a, b] += 0.5 * sign * h
            eps[b, a] += 0.5 * sign * h
            deform = np.eye(3) + eps
            s = structure.replace(positions=structure.positions @ deform,
                                  cell=structure.cell @ deform, forces=None, stress=None,
                                  energy=None)
            energies.append(model.predict(s, forces=False, stress=False)["energy"])
        # dE = V Σ_ab σ_ab ε_ab; the symmetric strain puts h/2 on both (a, b) and (b, a)
        fd = (energies[0] - energies[1]) / (2 * h) / volume
        if not abs(fd - stress[k]) <= atol:
            raise AssertionError(f"stress component {k}: {stress[k]!r} but (1/V) dE/dε by "
                                 f"finite differences is {fd!r}")
