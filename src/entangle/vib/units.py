"""Unit conversions for vibrational structure (CODATA 2018 values, rounded as in the NN-MPO notes).

Vibrational Hamiltonians in :mod:`entangle.vib` are written in atomic units: energies in Hartree,
mass-weighted coordinates in ``sqrt(m_e) * bohr``, so ``hbar = 1`` and frequencies are energies.
"""

from __future__ import annotations

__all__ = ["HARTREE_TO_CM", "HARTREE_TO_EV", "EV_TO_CM", "HARMONIC_JSON_TO_CM", "cm_to_hartree", "hartree_to_cm"]

#: 1 Hartree in wavenumbers (cm^-1).
HARTREE_TO_CM = 219474.63
#: 1 Hartree in electronvolts.
HARTREE_TO_EV = 27.211386
#: 1 eV in wavenumbers (cm^-1).
EV_TO_CM = 8065.544
#: Harmonic frequencies stored in sqrt(eV / Å² / amu) (as in the H2CO harmonic JSON) times this give cm^-1.
HARMONIC_JSON_TO_CM = 521.47


def cm_to_hartree(value):
    """Wavenumbers (cm^-1) to Hartree; works on floats and tensors."""
    return value / HARTREE_TO_CM


def hartree_to_cm(value):
    """Hartree to wavenumbers (cm^-1); works on floats and tensors."""
    return value * HARTREE_TO_CM
