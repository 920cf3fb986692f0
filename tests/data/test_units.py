"""Unit constants against ASE's independent definitions (CODATA 2014 in ase.units)."""

import pytest
from ase import units

from entangle.data.units import BAR, EV_PER_A3_IN_GPA, GPA, KBAR, KCAL_PER_MOL


def test_pressure_units_agree_with_ase():
    assert GPA == pytest.approx(units.GPa, rel=1e-7)
    assert KBAR == pytest.approx(0.1 * units.GPa, rel=1e-7)
    assert BAR == pytest.approx(units.bar, rel=1e-7)
    assert EV_PER_A3_IN_GPA == pytest.approx(1.0 / units.GPa, rel=1e-7)
    assert KBAR == pytest.approx(1e3 * BAR, rel=1e-14)


def test_kcal_per_mol_agrees_with_ase():
    assert KCAL_PER_MOL == pytest.approx(units.kcal / units.mol, rel=1e-7)
