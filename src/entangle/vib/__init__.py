"""Vibrational structure from tensor-train potentials: DVR bases, PES → MPO, vibrational DMRG.

Units are atomic: energies in Hartree, mass-weighted coordinates in ``sqrt(m_e) * bohr``
(see :mod:`entangle.vib.units` for conversions to cm^-1 and eV).
"""

from entangle.vib.dmrg import DMRGResult, check_hermitian, dmrg, expectation
from entangle.vib.dvr import DVRBasis, ho_dvr, sine_dvr
from entangle.vib.exact import apply_hamiltonian, exact_levels
from entangle.vib.levels import VibLevels, VibrationalProblem, latent_frequencies, vib_levels, vibrational_problem
from entangle.vib.pes_mpo import (
    add_mpo,
    diagonal_mpo,
    grid_potential_mpo,
    hamiltonian_mpo,
    kinetic_mpo,
    mpo_diagonal,
    potential_mpo,
)
from entangle.vib.polynomial import PolynomialTT
from entangle.vib.units import EV_TO_CM, HARMONIC_JSON_TO_CM, HARTREE_TO_CM, HARTREE_TO_EV, cm_to_hartree, hartree_to_cm

__all__ = [
    "DVRBasis", "ho_dvr", "sine_dvr",
    "diagonal_mpo", "potential_mpo", "grid_potential_mpo", "kinetic_mpo", "add_mpo", "hamiltonian_mpo", "mpo_diagonal",
    "DMRGResult", "dmrg", "expectation", "check_hermitian",
    "exact_levels", "apply_hamiltonian",
    "PolynomialTT",
    "VibrationalProblem", "VibLevels", "latent_frequencies", "vibrational_problem", "vib_levels",
    "HARTREE_TO_CM", "HARTREE_TO_EV", "EV_TO_CM", "HARMONIC_JSON_TO_CM", "cm_to_hartree", "hartree_to_cm",
]
