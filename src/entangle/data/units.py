"""Unit conversion constants: every quantity inside entangle is in eV, Å, eV/Å and eV/Å³.

Multiply a value in the unit named by the constant to get it in entangle's units, e.g.
``stress_ev_a3 = stress_kbar * KBAR``.

The pressure constants follow from the exact SI value of the elementary charge
(e = 1.602176634e-19 C, SI 2019): 1 eV/Å³ = 1.602176634e-19 J / 1e-30 m³ = 160.2176634 GPa.

Stress sign conventions
-----------------------
entangle uses the ASE convention: ``stress = (1/V) dE/dε`` (ε: symmetric strain), so a
*compressed* cell that pushes outwards has a *negative* stress and a stretched cell a positive
one. VASP (OUTCAR "in kB" lines, vasprun.xml), LAMMPS "pressure" and the FitSNAP, mlearn and maml
JSON files all report the opposite sign (positive = compressive, the pressure convention):
``stress_entangle = -value * unit``. This was checked on the data themselves: in the FitSNAP Ta
``Volume_BCC`` series the reported hydrostatic value equals ``-dE/dV`` (positive below the
equilibrium volume), and in the mlearn/maml ``Elastic`` series the energy differences between
neighbouring strains equal ``∫ V σ : dε`` only with the minus sign (see ``tests/data``).
"""

from __future__ import annotations

__all__ = [
    "EV_PER_A3_IN_GPA",
    "GPA",
    "KBAR",
    "BAR",
    "KCAL_PER_MOL",
]

EV_PER_A3_IN_GPA: float = 160.2176634
"""1 eV/Å³ expressed in GPa."""

GPA: float = 1.0 / EV_PER_A3_IN_GPA
"""1 GPa in eV/Å³ (≈ 6.2415e-3)."""

KBAR: float = 0.1 * GPA
"""1 kbar (= 0.1 GPa, VASP's "kB") in eV/Å³ (≈ 6.2415e-4)."""

BAR: float = 1.0e-4 * GPA
"""1 bar (= 1e5 Pa) in eV/Å³ (≈ 6.2415e-7)."""

KCAL_PER_MOL: float = 4184.0 / 6.02214076e23 / 1.602176634e-19
"""1 kcal/mol (thermochemical calorie, exact Avogadro constant) in eV (≈ 0.0433641)."""
